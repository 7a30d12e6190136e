"""Recommendations for a set of users, read from any state store with a few pipelined reads."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from engine.config import EngineSettings
from engine.embeddings import EmbeddingSpace, vector_from_history
from engine.evaluation.base import Context
from engine.scoring import recent_items, score_user
from engine.state.base import StateStore, UserProfile

Ranked = list[tuple[str, float]]


class Recommender:
    """Reads profiles, neighbours and trending items once per call and scores each user."""

    def __init__(
        self, store: StateStore, settings: EngineSettings, space: EmbeddingSpace | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.space = space  # replaced on a model refresh

    def for_users(self, partition: int, users: Iterable[str], k: int | None = None) -> dict[str, Ranked]:
        k = k or self.settings.top_k
        profiles = self.store.profiles(partition, users)
        return self._score(partition, profiles, k)

    def for_user(self, user: str, k: int | None = None) -> tuple[UserProfile, Ranked]:
        """Recommendations for one user wherever they live (a cold user gets trending items)."""
        k = k or self.settings.top_k
        partition = self.store.locate_user(user)
        if partition is None:
            return UserProfile(), self._score(0, {user: UserProfile()}, k)[user]
        profile = self.store.profiles(partition, [user])[user]
        return profile, self._score(partition, {user: profile}, k)[user]

    def _score(self, partition: int, profiles: dict[str, UserProfile], k: int) -> dict[str, Ranked]:
        s = self.settings
        session = self._session_scores(partition, profiles)
        wanted = {item for p in profiles.values() for item in recent_items(p, s)} if session is None else ()
        # Ask for extra neighbours so that filtering purchased items still leaves k candidates.
        neighbours = self.store.neighbours(wanted, max(k * 2, 50)) if wanted else {}
        trending = self.store.trending(max(s.trending_candidates, k * 2))
        similar = self._similar(profiles)
        return {
            user: score_user(
                p, neighbours, trending, s, k, similar.get(user), session.get(user) if session else None
            )
            for user, p in profiles.items()
        }

    def _session_scores(
        self, partition: int, profiles: dict[str, UserProfile]
    ) -> dict[str, dict[str, float]] | None:
        """The session model's scores of each user's current sequence (None when it is off)."""
        mode = self.settings.session_model
        if mode == "off":
            return None
        sids = {user: user if mode == "users" else p.session_id for user, p in profiles.items()}
        located = {sid: partition for sid in sids.values() if sid is not None}
        items = self.store.session_items(located) if located else {}
        contexts: dict[str, Context] = {}
        for user, sid in sids.items():
            sequence = items.get(sid) if sid is not None else None
            if sequence:
                ts = profiles[user].session_ts or time.time()
                contexts[user] = Context(user, tuple(sequence), ts, sid)
        model = self.store.session_model(list(contexts.values())) if contexts else None
        if model is None:
            return {}
        return {user: model.scores(context) for user, context in contexts.items()}

    def _similar(self, profiles: dict[str, UserProfile]) -> dict[str, dict[str, float]]:
        """ANN candidates of each user's vector, one batched search for all users."""
        space = self.space
        if space is None or self.settings.ann_weight == 0:
            return {}
        users, queries = [], []
        for user, profile in profiles.items():
            vector = profile.vector if profile.vector_version == space.version else None
            if vector is None:  # stored in an older space, or never stored: rebuild from history
                vector = vector_from_history(profile.history, space, self.settings.user_vector_decay)
            if vector is not None and vector.shape[0] == space.dim:
                users.append(user)
                queries.append(vector)
        if not users:
            return {}
        ids, scores = space.search(np.stack(queries).astype(np.float32), self.settings.ann_candidates)
        return {user: dict(zip(ids[i], map(float, scores[i]), strict=True)) for i, user in enumerate(users)}
