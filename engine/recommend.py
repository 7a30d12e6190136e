"""Recommendations for a set of users, read from any state store with a few pipelined reads."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from engine.config import EngineSettings
from engine.embeddings import EmbeddingSpace, vector_from_history
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
        return self._score(profiles, k)

    def for_user(self, user: str, k: int | None = None) -> tuple[UserProfile, Ranked]:
        """Recommendations for one user wherever they live (a cold user gets trending items)."""
        k = k or self.settings.top_k
        partition = self.store.locate_user(user)
        profile = self.store.profiles(partition, [user])[user] if partition is not None else UserProfile()
        return profile, self._score({user: profile}, k)[user]

    def _score(self, profiles: dict[str, UserProfile], k: int) -> dict[str, Ranked]:
        s = self.settings
        wanted = {item for p in profiles.values() for item in recent_items(p, s)}
        # Ask for extra neighbours so that filtering purchased items still leaves k candidates.
        neighbours = self.store.neighbours(wanted, max(k * 2, 50)) if wanted else {}
        trending = self.store.trending(max(s.trending_candidates, k * 2))
        similar = self._similar(profiles)
        return {
            user: score_user(p, neighbours, trending, s, k, similar.get(user)) for user, p in profiles.items()
        }

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
