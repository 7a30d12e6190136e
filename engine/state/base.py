"""The state-store protocol that the Redis backend and the in-memory backend both implement."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from engine.errors import WatermarkConflict
from engine.evaluation.base import Context
from engine.logic import PartitionMeta, StateDelta, UserState
from engine.sessionknn import SessionKNN


@dataclass(slots=True)
class UserProfile:
    """What scoring needs to know about a user."""

    history: list[str] = field(default_factory=list)  # most recent first
    purchased: set[str] = field(default_factory=set)
    vector: np.ndarray | None = None
    vector_version: str | None = None
    session_id: str | None = None  # the engine's current session of the user
    session_ts: float | None = None


@dataclass(slots=True)
class PartitionSnapshot:
    """The whole state of one partition, for ``streamrec verify`` and tests."""

    watermark: int = -1
    applied: int = 0
    duplicates: int = 0
    invalid: int = 0
    popularity_epoch: float | None = None
    history: dict[str, list[str]] = field(default_factory=dict)
    purchases: dict[str, set[str]] = field(default_factory=dict)
    seen: dict[str, dict[str, float]] = field(default_factory=dict)  # user -> event id -> ts
    sessions: dict[str, tuple[str, float]] = field(default_factory=dict)
    cooccurrence: dict[str, dict[str, float]] = field(default_factory=dict)
    popularity: dict[str, float] = field(default_factory=dict)
    # Derived from the model live when each event arrived, so verify does not compare them.
    user_vectors: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)


@dataclass(slots=True)
class RecsInputs:
    """What one scoring pass over a worker's poll reads: the users' profiles and the digests of
    their last published lists (both by partition), and the trending items."""

    profiles: dict[int, dict[str, UserProfile]]
    digests: dict[int, dict[str, str | None]]
    trending: list[tuple[str, float]]


class StateStore(Protocol):
    """Per-partition state: everything one partition's batch writes shares that partition's slot.

    Item state (co-occurrence, popularity) is kept per partition so that a batch's atomic write
    never spans partitions; readers merge the partitions.
    """

    partitions: int

    def load(
        self, partition: int, wanted: Mapping[str, Iterable[str]], history: bool = True
    ) -> tuple[PartitionMeta, dict[str, UserState]]:
        """Partition meta and the prior state of ``wanted`` users (user -> ids of events to check);
        without ``history`` their histories are left empty (a delta that does not read them,
        see :func:`engine.logic.needs_history`)."""
        ...

    def apply(self, delta: StateDelta) -> None:
        """Apply atomically, with the watermark; raise WatermarkConflict if it moved meanwhile."""
        ...

    def load_many(
        self, wanted: Mapping[int, Mapping[str, Iterable[str]]], history: bool = True
    ) -> dict[int, tuple[PartitionMeta, dict[str, UserState]]]:
        """:meth:`load` for several partitions at once (one round trip for the Redis store)."""
        ...

    def apply_many(self, deltas: Sequence[StateDelta]) -> list[WatermarkConflict | None]:
        """:meth:`apply` each delta (each atomically, with its own watermark; together in one round
        trip for the Redis store); a delta whose watermark moved gets its conflict, not a raise."""
        ...

    def watermarks(self) -> dict[int, int]: ...

    def profiles(self, partition: int, users: Iterable[str]) -> dict[str, UserProfile]: ...

    def neighbours(self, items: Iterable[str], n: int) -> dict[str, dict[str, float]]:
        """The strongest ``n`` neighbours of each item, merged over partitions: its co-occurrence
        row, or its session model's rule row (the items that followed it) where the co-occurrence
        rows are not kept (``EngineSettings.cooccurrence_rows``)."""
        ...

    def trending(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` most popular items now (decayed), best first."""
        ...

    def locate_user(self, user: str) -> int | None:
        """The partition holding a user's state, or None for an unknown user."""
        ...

    def recs_digests(self, partition: int, users: Iterable[str]) -> dict[str, str | None]: ...

    def recs_inputs(
        self, users: Mapping[int, Iterable[str]], trending: int, without_history: Collection[str] = ()
    ) -> RecsInputs:
        """Profiles and digests of ``users`` (partition -> users) and the ``trending`` most popular
        items (none read when 0), read together (one round trip for the Redis store). The profiles
        of users in ``without_history`` come with empty histories (the caller holds them, see
        :mod:`engine.history_cache`)."""
        ...

    def set_recs_digests(self, digests: Mapping[int, Mapping[str, str]]) -> None:
        """Record the digests of published lists (partition -> user -> digest)."""
        ...

    def snapshot(self, partition: int) -> PartitionSnapshot: ...

    def session_model(self, contexts: list[Context]) -> SessionKNN | None:
        """A session model that can score ``contexts`` (None when ``session_model`` is off)."""
        ...

    def session_items(self, located: Mapping[str, int]) -> dict[str, list[str]]:
        """Items of the session-model sessions given as session -> partition, oldest first."""
        ...

    def whole_session_model(self) -> SessionKNN | None:
        """Every partition's session model in one in-memory copy (None when the model is off)."""
        ...


def keep_strongest(weights: dict[str, float], keep: int) -> None:
    """Drop all but the ``keep`` largest entries, ties broken as a Redis sorted set orders them."""
    if len(weights) <= keep:
        return
    ranked = sorted(weights.items(), key=lambda kv: (kv[1], kv[0].encode()))
    for key, _ in ranked[: len(ranked) - keep]:
        del weights[key]


def gather_recs_inputs(
    store: StateStore,
    users: Mapping[int, Iterable[str]],
    trending: int,
    without_history: Collection[str] = (),
) -> RecsInputs:
    """:meth:`StateStore.recs_inputs` from the store's single reads, for stores without round trips."""
    members = {partition: list(group) for partition, group in users.items()}
    inputs = RecsInputs(
        {partition: store.profiles(partition, group) for partition, group in members.items()},
        {partition: store.recs_digests(partition, group) for partition, group in members.items()},
        store.trending(trending),
    )
    for profiles in inputs.profiles.values():
        for user in without_history:
            if user in profiles:
                profiles[user].history = []
    return inputs


def load_each(
    store: StateStore, wanted: Mapping[int, Mapping[str, Iterable[str]]], history: bool = True
) -> dict[int, tuple[PartitionMeta, dict[str, UserState]]]:
    """:meth:`StateStore.load_many` from single loads, for stores without round trips."""
    return {partition: store.load(partition, users, history) for partition, users in wanted.items()}


def apply_each(store: StateStore, deltas: Sequence[StateDelta]) -> list[WatermarkConflict | None]:
    """:meth:`StateStore.apply_many` from single applies, for stores without round trips."""
    conflicts: list[WatermarkConflict | None] = []
    for delta in deltas:
        try:
            store.apply(delta)
            conflicts.append(None)
        except WatermarkConflict as exc:
            conflicts.append(exc)
    return conflicts
