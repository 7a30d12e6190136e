"""Recommendations for a set of users, read from any state store with a few pipelined reads."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from typing import TypeVar

import numpy as np

from engine.config import EngineSettings
from engine.embeddings import EmbeddingSpace, vector_from_history
from engine.evaluation.base import Context
from engine.history_cache import HistoryCache
from engine.scoring import TrendingPrior, banned_items, rank_session_user, recent_items, score_user
from engine.session_blend import Shortlist
from engine.sessionknn import SessionKNN
from engine.state.base import RecsInputs, StateStore, UserProfile

Ranked = list[tuple[str, float]]
K = TypeVar("K", bound=Hashable)


class Recommender:
    """Reads profiles, neighbours and trending items once per call and scores each user."""

    def __init__(
        self,
        store: StateStore,
        settings: EngineSettings,
        space: EmbeddingSpace | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self.space = space  # replaced on a model refresh
        self._clock = clock
        self._trending: list[tuple[str, float]] = []  # the last read, for read_inputs
        self._trending_read_at = 0.0
        # The worker's in-memory copy of the whole session model, kept in step with its writes
        # while it owns every partition; scoring then reads nothing back from the store.
        self.replica: SessionKNN | None = None
        # ... and of the histories of the users it scored (engine.history_cache), likewise.
        self.histories: HistoryCache | None = None

    def for_users(self, partition: int, users: Iterable[str], k: int | None = None) -> dict[str, Ranked]:
        return self.for_partitions({partition: users}, k).get(partition, {})

    def for_partitions(
        self, users: Mapping[int, Iterable[str]], k: int | None = None
    ) -> dict[int, dict[str, Ranked]]:
        """Recommendations for users of several partitions with one pass of shared reads (the
        session model's state, trending, neighbours, one ANN search): a worker's whole poll."""
        k = k or self.settings.top_k
        return self.rank(self.store.recs_inputs(users, self.trending_wanted(k)), k)

    def read_inputs(
        self, users: Mapping[int, Iterable[str]], without_history: Collection[str] = ()
    ) -> RecsInputs:
        """What :meth:`rank` needs for ``users`` (partition -> users), in one store read (the
        histories of ``without_history`` left out: the caller holds them). The trending
        items are read again only once those held are ``trending_refresh_s`` old: a worker polls
        many times a second, and re-reading (and merging) every partition's top popularity rows for
        each poll was most of a small poll's read, for a list that moves over hours."""
        now = self._clock()
        held = self._trending
        # an empty list (nothing popular yet, a fresh stream) is read again at once
        if held and now - self._trending_read_at < self.settings.trending_refresh_s:
            inputs = self.store.recs_inputs(users, 0, without_history)
            inputs.trending = held
            return inputs
        inputs = self.store.recs_inputs(users, self.trending_wanted(), without_history)
        self._trending, self._trending_read_at = inputs.trending, now
        return inputs

    def trending_wanted(self, k: int | None = None) -> int:
        """How many trending items scoring reads (extra, so that filtering still leaves k)."""
        return max(self.settings.trending_candidates, (k or self.settings.top_k) * 2)

    def rank(self, inputs: RecsInputs, k: int | None = None) -> dict[int, dict[str, Ranked]]:
        """Recommendations for the users of ``inputs`` (read with :meth:`StateStore.recs_inputs`)."""
        return self._score(inputs.profiles, k or self.settings.top_k, inputs.trending)

    def for_user(self, user: str, k: int | None = None) -> tuple[UserProfile, Ranked]:
        """Recommendations for one user wherever they live (a cold user gets trending items)."""
        k = k or self.settings.top_k
        partition = self.store.locate_user(user)
        profile = self.store.profiles(partition, [user])[user] if partition is not None else UserProfile()
        trending = self.store.trending(self.trending_wanted(k))
        return profile, self._score({partition or 0: {user: profile}}, k, trending)[partition or 0][user]

    def _score(
        self, profiles: dict[int, dict[str, UserProfile]], k: int, trending: list[tuple[str, float]]
    ) -> dict[int, dict[str, Ranked]]:
        s = self.settings
        everyone = [
            (partition, user, p) for partition, group in profiles.items() for user, p in group.items()
        ]
        similar = self._similar({(partition, user): p for partition, user, p in everyone})
        prior = TrendingPrior(trending)
        session = self._session_scores(everyone, k, similar, prior)
        wanted = {item for _, _, p in everyone for item in recent_items(p, s)} if session is None else ()
        # Ask for extra neighbours so that filtering purchased items still leaves k candidates.
        neighbours = self.store.neighbours(wanted, max(k * 2, 50)) if wanted else {}
        out: dict[int, dict[str, Ranked]] = {partition: {} for partition in profiles}
        for partition, user, p in everyone:
            key = (partition, user)
            mine = session.get(key) if session else None
            if mine is not None:
                out[partition][user] = rank_session_user(p, mine, prior, s, k, similar.get(key))
            else:
                out[partition][user] = score_user(p, neighbours, trending, s, k, similar.get(key), None)
        return out

    def _session_scores(
        self,
        everyone: list[tuple[int, str, UserProfile]],
        k: int,
        similar: Mapping[tuple[int, str], Mapping[str, float]],
        trending: TrendingPrior,
    ) -> dict[tuple[int, str], dict[str, float]] | None:
        """The session model's scores of each user's current sequence (None when it is off): only
        the items that can still make the user's top ``k`` once :func:`score_user` has removed the
        banned items and added the ANN and trending scores (see :mod:`engine.session_blend`)."""
        mode = self.settings.session_model
        if mode == "off":
            return None
        sids = [
            (partition, user, user if mode == "users" else p.session_id, p) for partition, user, p in everyone
        ]
        located = {sid: partition for partition, _, sid, _ in sids if sid is not None}
        replica = self.replica
        if replica is not None:
            items = {sid: replica.sessions.get(sid, ()) for sid in located}
        else:
            items = self.store.session_items(located) if located else {}
        contexts: dict[tuple[int, str], Context] = {}
        for partition, user, sid, p in sids:
            sequence = items.get(sid) if sid is not None else None
            if sequence:
                contexts[(partition, user)] = Context(user, tuple(sequence), p.session_ts or time.time(), sid)
        if replica is not None:
            model = replica
        else:
            model = self.store.session_model(list(contexts.values())) if contexts else None
        if model is None:
            return {}
        profile_of = {(partition, user): p for partition, user, p in everyone}
        best = [k + len(banned_items(profile_of[key], self.settings)) for key in contexts]
        protected = [similar.get(key, ()) for key in contexts]
        shares = trending.shares(self.settings)
        if shares is not None:  # what rank_session_user adds to a user with session scores
            shortlist = Shortlist(best, protected, gains=shares)
        else:
            shortlist = Shortlist(best, protected, [item for item, _ in trending.items])
        return dict(zip(contexts, model.scores_many(list(contexts.values()), shortlist), strict=True))

    def _similar(self, profiles: Mapping[K, UserProfile]) -> dict[K, dict[str, float]]:
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
