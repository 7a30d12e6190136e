"""Session ids as dense integers, so that the neighbour search of
:class:`~engine.sessionknn.SessionKNN` runs as a few numpy passes instead of dict and set work.

The model keeps its state keyed by session id (the stores read and write ids); this is a derived
view of it: a number per session id met in an item's index, each number's last timestamp
(``-inf`` for a session the model does not stamp), and each item's index as an array of numbers,
built when the item is first searched and then kept in step: the model tells it of every session
an index gains or loses (``touch``, ``_forget``), and an array holds its index as a set (a leaving
session's place goes to the last one). A store-backed reader fills the model before it scores, so
its view is built after the fill.

Similarities are summed in a scratch array indexed by number, one item at a time in the order
the dict version added them (an item's index lists a session once), so every similarity is the
same float.

>>> numbers = SessionNumbers()
>>> index = {"a": {"s1": None, "s2": None}, "b": {"s2": None}}
>>> stamps = {"s1": 10.0, "s2": 20.0}
>>> found = numbers.gather([(numbers.of_item("a", index["a"], stamps), 1.0, 0),
...                         (numbers.of_item("b", index["b"], stamps), 0.5, 1)], own=None)
>>> numbers.ids(found.numbers), found.similarities.tolist(), found.anchors.tolist()
(['s1', 's2'], [1.0, 1.5], [0, 1])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from engine import session_kernels

# Numbers are never reused while numbered; the view is rebuilt once the numbered ids outgrow the
# stamped ones by this factor (evicted sessions that some item's index still lists, or gone).
REBUILD_FACTOR = 2
MIN_REBUILD = 65_536


class Candidates(NamedTuple):
    """Sessions sharing items with a context: numbers (in no set order), summed similarity, the position
    in the context of the most recent shared item (the anchor), and last timestamps."""

    numbers: np.ndarray  # int32
    similarities: np.ndarray  # float64
    anchors: np.ndarray  # int64
    stamps: np.ndarray  # float64, -inf where the model has no timestamp

    def take(self, positions: np.ndarray) -> Candidates:
        return Candidates(
            self.numbers[positions],
            self.similarities[positions],
            self.anchors[positions],
            self.stamps[positions],
        )


EMPTY = Candidates(np.zeros(0, np.int32), np.zeros(0), np.zeros(0, np.int64), np.zeros(0))


class SessionNumbers:
    """The numbered view of a model's item -> sessions index (see the module doc)."""

    def __init__(self, compiled: bool = session_kernels.AVAILABLE) -> None:
        self.compiled = compiled  # gather with the compiled loop (same result)
        self.clear()

    def clear(self) -> None:
        self._number: dict[str, int] = {}
        self._ids: list[str] = []
        self._stamps = np.full(0, -math.inf)
        # item -> [its sessions' numbers in a buffer with room to grow, how many]
        self._arrays: dict[str, list] = {}
        self._sim = np.zeros(0)
        self._anchor = np.zeros(0, np.int64)
        self._slot = np.zeros(0, np.int64)
        self._mark = np.zeros(0, np.int64)
        self._searches = 0

    def __len__(self) -> int:
        return len(self._ids)

    def stamp(self, sid: str, ts: float) -> None:
        """A session's timestamp changed (``-inf``: the model forgot it)."""
        number = self._number.get(sid)
        if number is not None:
            self._stamps[number] = ts

    def gained(self, item: str, sid: str) -> None:
        """``sid`` joined the index of ``item`` (stamp it after)."""
        cached = self._arrays.get(item)
        if cached is None:
            return
        number = self._number.get(sid)
        if number is None:
            number = self._add(sid, -math.inf)
        buffer, size = cached
        if size == len(buffer):
            buffer = cached[0] = np.concatenate([buffer, np.empty(max(8, size), np.int32)])
        buffer[size] = number
        cached[1] = size + 1

    def lost(self, item: str, sid: str) -> None:
        """``sid`` left the index of ``item``."""
        cached = self._arrays.get(item)
        if cached is None:
            return
        buffer, size = cached
        number = self._number.get(sid)
        found = np.flatnonzero(buffer[:size] == number) if number is not None else ()
        if len(found) != 1:  # not numbered when the array was built: cannot be (build it again)
            del self._arrays[item]
            return
        # an index is a set here: the last number takes the leaving one's place
        buffer[found[0]] = buffer[size - 1]
        cached[1] = size - 1

    def rebuild_if_outgrown(self, stamped: int) -> None:
        """Start over once the numbered ids outgrow the ``stamped`` ones (bounds the memory of a
        long-lived model whose sessions come and go); call it before a search, not during one."""
        if len(self._ids) > max(MIN_REBUILD, REBUILD_FACTOR * stamped):
            self.clear()

    def of_item(self, item: str, index: Mapping[str, None], stamps: Mapping[str, float]) -> np.ndarray:
        """``index`` (the item's sessions) as numbers; ``stamps`` gives new numbers their time."""
        cached = self._arrays.get(item)
        if cached is not None:
            return cached[0][: cached[1]]
        known = self._number
        if not all(map(known.__contains__, index)):
            for sid in index:
                if sid not in known:
                    self._add(sid, stamps.get(sid, -math.inf))
        # int32: the cache holds an entry per (item, session) pair of the index
        numbers = np.fromiter(map(known.__getitem__, index), np.int32, len(index))
        self._arrays[item] = [numbers, len(numbers)]
        return numbers

    def _add(self, sid: str, ts: float) -> int:
        number = self._number[sid] = len(self._ids)
        self._ids.append(sid)
        if number >= len(self._stamps):
            size = max(1024, 2 * len(self._stamps))
            self._stamps = np.concatenate([self._stamps, np.full(size - len(self._stamps), -math.inf)])
            self._sim = np.zeros(size)
            self._anchor = np.zeros(size, np.int64)
            self._slot = np.zeros(size, np.int64)
            self._mark = np.zeros(size, np.int64)
            self._searches = 0
        self._stamps[number] = ts
        return number

    def gather(self, parts: Sequence[tuple[np.ndarray, float, int]], own: str | None) -> Candidates:
        """The union of ``parts`` (numbers, weight, anchor position), in the order they are given
        (a later part's position wins the anchor), without the session ``own``."""
        if not parts:
            return EMPTY
        if self.compiled:
            self._searches += 1
            number = self._number.get(own, -1) if own is not None else -1
            return Candidates(
                *session_kernels.gather(
                    parts, self._stamps, number, self._sim, self._anchor, self._mark, self._searches
                )
            )
        sim, anchor = self._sim, self._anchor
        for numbers, weight, position in parts:
            sim[numbers] += weight  # an index lists a session once: no repeated index here
            anchor[numbers] = position
        union = parts[0][0]
        if len(parts) > 1:
            # one position per number: each number's slot ends as one of its positions
            every = np.concatenate([numbers for numbers, _, _ in parts])
            positions = np.arange(len(every))
            slot = self._slot
            slot[every] = positions
            union = every[slot[every] == positions]
        found = Candidates(union, sim[union], anchor[union], self._stamps[union])
        sim[union] = 0.0
        number = self._number.get(own) if own is not None else None
        if number is not None:
            found = found.take(np.flatnonzero(found.numbers != number))
        return found

    def candidates_many(
        self,
        parts: Sequence[Sequence[tuple[np.ndarray, float, int]]],
        owns: Sequence[str | None],
        sample: int,
    ) -> tuple[Candidates, np.ndarray, np.ndarray]:
        """:meth:`gather` of each context's ``parts`` (without its session ``owns[j]``), cut to
        its ``sample`` most recent, compiled: the candidates of all contexts, each one's context,
        and per context whether ties at the cut are left for ids to break (see
        :func:`engine.session_kernels.candidates_many`)."""
        every = [part for context_parts in parts for part in context_parts]
        numbers = np.concatenate([numbers for numbers, _, _ in every]) if every else np.zeros(0, np.int32)
        base = self._searches + 1
        self._searches += len(parts)
        found = session_kernels.candidates_many(
            numbers,
            np.array([len(numbers) for numbers, _, _ in every], np.int64),
            np.array([weight for _, weight, _ in every], np.float64),
            np.array([position for _, _, position in every], np.int64),
            np.array([len(context_parts) for context_parts in parts], np.int64),
            np.array([self._number.get(own, -1) if own is not None else -1 for own in owns], np.int64),
            self._stamps,
            self._sim,
            self._anchor,
            self._mark,
            base,
            sample,
        )
        return Candidates(*found[:4]), found[4], found[5]

    def ids(self, numbers: np.ndarray) -> list[str]:
        """The session ids of ``numbers``."""
        if len(numbers) == 0:
            return []
        if len(numbers) == 1:
            return [self._ids[int(numbers[0])]]
        return list(itemgetter(*numbers.tolist())(self._ids))
