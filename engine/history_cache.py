"""Users' recent histories held by a worker's scoring step, kept equal to the store's.

Scoring reads each touched user's profile from the store every poll, and with the default
``exclude_history`` the whole history (up to ``history_length`` items) is part of it: the items a
user must not be shown again. Reading 50-item histories was most of that read: ~23 of ~30 ms of
Redis CPU and ~5 of ~7 ms of client CPU for a poll of 330 users (docs/performance.md).

A worker that owns every partition sees every write to its users' histories: the items each
applied delta pushed (:attr:`engine.pipeline.BatchOutcome.history`). So scoring can keep the
histories it has read, apply the same pushes (:func:`engine.logic.push_history`, as the stores do),
and read only the users it does not hold. The cache is valid only while every write of a held user
goes through :meth:`HistoryCache.pushed`; the scoring step drops it with the session replica (on
every assignment, write conflict, store or broker outage, and restart). Bounded: past
``capacity`` users the least recently scored ones are dropped (and read again when they return).

One poll, in this order: :meth:`held` (which users need no history read), then, in any order, the
store read of the others and :meth:`pushed` with the poll's writes, then :meth:`fill`.

>>> from engine.state.base import UserProfile
>>> cache = HistoryCache(length=3, capacity=100)
>>> held = cache.held(["u"])  # nothing held yet: u's history is read from the store
>>> cache.pushed({"u": ["c"]})  # a write of this poll, already in what the store returns
>>> profiles = {"u": UserProfile(history=["c", "b", "a"])}
>>> cache.fill(profiles, held)
>>> held = cache.held(["u"])  # the next poll
>>> cache.pushed({"u": ["d", "e"]})  # oldest first
>>> profiles = {"u": UserProfile()}  # read without its history
>>> cache.fill(profiles, held)
>>> profiles["u"].history
['e', 'd', 'c']
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import islice

from engine.logic import push_history
from engine.state.base import UserProfile

_MIN_REBUILD = 100_000  # items


class HistoryCache:
    """Up to ``capacity`` users' histories (most recent first, ``length`` items kept)."""

    def __init__(self, length: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.length = length
        self.capacity = capacity
        # user -> history; insertion order is recency of use (the first entry goes first)
        self._histories: dict[str, list[str]] = {}
        # One string object per item: histories share them instead of holding one copy each
        # (50 pointers a user instead of 50 strings). Rebuilt from the held histories whenever it
        # doubles, so items no longer held are let go.
        self._items: dict[str, str] = {}
        self._rebuild_at = _MIN_REBUILD

    def __len__(self) -> int:
        return len(self._histories)

    def get(self, user: str) -> list[str] | None:
        """A copy of ``user``'s held history (most recent first), or None."""
        history = self._histories.get(user)
        return list(history) if history is not None else None

    def held(self, users: Iterable[str]) -> set[str]:
        """The users whose histories are held: the store read may leave theirs out."""
        histories = self._histories
        return {user for user in users if user in histories}

    def pushed(self, pushes: Mapping[str, Sequence[str]]) -> None:
        """A poll's writes: user -> items pushed onto their history, oldest first. Users not held
        are skipped (a later read returns their history with these items)."""
        histories = self._histories
        items = self._items
        for user, pushed in pushes.items():
            history = histories.get(user)
            if history is not None and pushed:
                push_history(history, [items.setdefault(item, item) for item in pushed], self.length)

    def fill(self, profiles: Mapping[str, UserProfile], held: Collection[str]) -> None:
        """Complete a poll's profiles: those of ``held`` users (read without their histories) get
        the held history; the others' histories, read from the store, are kept from now on."""
        histories = self._histories
        for user in held:
            profile = profiles.get(user)
            history = histories.pop(user, None)  # re-inserted: the most recently used last
            if history is None:
                raise KeyError(f"history of {user!r} was dropped between held() and fill()")
            histories[user] = history
            if profile is not None:
                profile.history = list(history)
        items = self._items
        for user, profile in profiles.items():
            if user not in held:
                histories.pop(user, None)
                histories[user] = [items.setdefault(item, item) for item in profile.history]
        excess = len(histories) - self.capacity
        if excess > 0:
            for user in list(islice(histories, excess)):
                del histories[user]
        if len(items) > self._rebuild_at:
            self._items = {item: item for history in histories.values() for item in history}
            self._rebuild_at = max(_MIN_REBUILD, 2 * len(self._items))
