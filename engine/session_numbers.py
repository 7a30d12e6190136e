"""Session ids as dense integers, so that the neighbour search of
:class:`~engine.sessionknn.SessionKNN` runs as a few numpy passes instead of dict and set work.

The model keeps its state keyed by session id (the stores read and write ids); this is a derived
view of it: a number per session id met in an item's index, each number's last timestamp
(``-inf`` for a session the model does not stamp), and each item's index as an array of numbers,
built when the item is first searched and then kept in step: the model tells it of every session
an index gains or loses (``touch``, ``_forget``), and an array holds its index as a set (a leaving
session's place goes to the last one). A store-backed reader fills the model before it scores, so
its view is built after the fill.

The arrays are segments of one arena, an item's segment found by its slot (a small integer), so
that a search passes the compiled loop slots instead of an array view per item: making a numpy
view cost more than the rest of an item's share of the search. A segment that fills moves to the
arena's end with twice the room; the arena is compacted when it is full.

Similarities are summed in a scratch array indexed by number, one item at a time in the order
the dict version added them (an item's index lists a session once), so every similarity is the
same float.

>>> numbers = SessionNumbers()
>>> index = {"a": {"s1": None, "s2": None}, "b": {"s2": None}}
>>> stamps = {"s1": 10.0, "s2": 20.0}
>>> found = numbers.gather([(numbers.slot("a", index["a"], stamps), 1.0, 0),
...                         (numbers.slot("b", index["b"], stamps), 0.5, 1)], own=None)
>>> numbers.ids(found.numbers), found.similarities.tolist(), found.anchors.tolist()
(['s1', 's2'], [1.0, 1.5], [0, 1])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from engine import session_kernels
from engine.segments import Segments, extended, key_capacity

# Numbers are never reused while numbered; the view is rebuilt once the numbered ids outgrow the
# stamped ones by this factor (evicted sessions that some item's index still lists, or gone).
REBUILD_FACTOR = 2
MIN_REBUILD = 65_536


def id_key(sid: str) -> tuple[int, int]:
    """The first 16 bytes of ``sid`` in UTF-8 (zero-padded), as two big-endian 64-bit integers:
    ids in string order have keys in the same order, or equal ones (UTF-8 keeps code point order
    bytewise; an id and the same id with trailing NULs tie), so ids need comparing only where
    keys are equal.

    >>> [id_key(sid) < id_key(other) for sid, other in [("a", "b"), ("s10", "s9"), ("é", "z")]]
    [True, True, False]
    >>> id_key("session-00000001") < id_key("session-00000002"), id_key("a") == id_key("a\\0")
    (True, True)
    """
    head = sid.encode("utf-8", "surrogatepass")[:16].ljust(16, b"\0")
    return int.from_bytes(head[:8], "big"), int.from_bytes(head[8:], "big")


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
        self._keys = np.zeros((0, 2), np.uint64)  # by number: id_key of its session id
        # item -> its slot in _index, for items searched since the view was built (read it, never
        # write it); a slot's segment holds the numbers of the item's sessions
        self.slot_of: dict[str, int] = {}
        self._index = Segments()
        self._slots = 0
        # by session number: the session's item numbers (the model's rule store numbers), oldest
        # first, from when it is first a neighbour; kept in step after that
        self._items = Segments()
        self._sim = np.zeros(0)
        self._anchor = np.zeros(0, np.int64)
        self._where = np.zeros(0, np.int64)
        self._mark = np.zeros(0, np.int64)
        self._searches = 0

    def __len__(self) -> int:
        return len(self._ids)

    def touched(self, sid: str, ts: float, code: int, trimmed: bool) -> None:
        """Session ``sid`` was touched at ``ts``: item number ``code`` joined its end, and with
        ``trimmed`` its first item left (after ``gained``, if its item's index gained it)."""
        number = self._number.get(sid)
        if number is None:
            return
        self._stamps[number] = ts
        items = self._items
        if items.size[number] >= 0:
            if trimmed:
                items.pop_first(number)
            items.append(number, code)

    def forgot(self, sid: str) -> None:
        """The model forgot session ``sid``."""
        number = self._number.get(sid)
        if number is not None:
            self._stamps[number] = -math.inf
            if self._items.size[number] >= 0:
                self._items.drop(number)

    def gained(self, item: str, sid: str) -> None:
        """``sid`` joined the index of ``item``."""
        slot = self.slot_of.get(item)
        if slot is None:
            return
        number = self._number.get(sid)
        if number is None:
            number = self._add(sid, -math.inf)
        self._index.append(slot, number)

    def lost(self, item: str, sid: str) -> None:
        """``sid`` left the index of ``item``."""
        slot = self.slot_of.get(item)
        if slot is None:
            return
        number = self._number.get(sid)
        # an index is a set here: the last number takes the leaving one's place
        if number is None or not self._index.remove(slot, number):
            # not numbered when the segment was built: cannot be (build it again)
            del self.slot_of[item]
            self._index.drop(slot)

    def rebuild_if_outgrown(self, stamped: int) -> None:
        """Start over once the numbered ids outgrow the ``stamped`` ones (bounds the memory of a
        long-lived model whose sessions come and go); call it before a search, not during one."""
        if len(self._ids) > max(MIN_REBUILD, REBUILD_FACTOR * stamped):
            self.clear()

    def slot(self, item: str, index: Mapping[str, None], stamps: Mapping[str, float]) -> int:
        """The slot of ``index`` (the item's sessions), numbered when it has none yet; ``stamps``
        gives new numbers their time."""
        slot = self.slot_of.get(item)
        if slot is not None:
            return slot
        known = self._number
        if not all(map(known.__contains__, index)):
            for sid in index:
                if sid not in known:
                    self._add(sid, stamps.get(sid, -math.inf))
        slot = self.slot_of[item] = self._slots  # a dropped slot is not reused
        self._slots += 1
        self._index.ensure(self._slots)
        numbers = np.fromiter(map(known.__getitem__, index), np.int32, len(index))
        self._index.put(slot, numbers, spare=4 + len(index) // 4)
        return slot

    def sessions(self, slot: int) -> np.ndarray:
        """The session numbers of a slot (a view: valid until the index next changes)."""
        return self._index.view(slot)

    def item_rows(
        self, numbers: np.ndarray, items_of: Callable[[str], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where the items of sessions ``numbers`` lie: (arena, starts, lengths);
        ``items_of(sid)`` gives the item numbers of a session not yet held."""
        rows = self._items
        lengths = rows.size[numbers]
        missing = lengths < 0
        if missing.any():
            for number in np.unique(numbers[missing]).tolist():
                rows.put(number, items_of(self._ids[number]), spare=4)
            lengths = rows.size[numbers]
        return rows.data, rows.offset[numbers], lengths

    def _add(self, sid: str, ts: float) -> int:
        number = self._number[sid] = len(self._ids)
        self._ids.append(sid)
        if number >= len(self._stamps):
            size = key_capacity(len(self._stamps), number + 1)
            self._stamps = extended(self._stamps, size, -math.inf)
            self._keys = extended(self._keys, size)
            self._sim = np.zeros(size)
            self._anchor = np.zeros(size, np.int64)
            self._where = np.zeros(size, np.int64)
            self._mark = np.zeros(size, np.int64)
            self._searches = 0
            self._items.ensure(size)
        self._stamps[number] = ts
        self._keys[number] = id_key(sid)
        return number

    def gather(self, parts: Sequence[tuple[int, float, int]], own: str | None) -> Candidates:
        """The union of ``parts`` (an item's slot, weight, anchor position), in the order they are
        given (a later part's position wins the anchor), without the session ``own``."""
        if not parts:
            return EMPTY
        if self.compiled:
            slots, weights, positions = zip(*parts, strict=True)
            found = self.candidates_many(slots, weights, positions, [len(parts)], [own], len(self._ids))
            return found[0]
        sim, anchor = self._sim, self._anchor
        for slot, weight, position in parts:
            numbers = self.sessions(slot)
            sim[numbers] += weight  # an index lists a session once: no repeated index here
            anchor[numbers] = position
        every = np.concatenate([self.sessions(slot) for slot, _, _ in parts])
        # one position per number: each number's place ends as one of its positions
        positions = np.arange(len(every))
        where = self._where
        where[every] = positions
        union = every[where[every] == positions]
        found = Candidates(union, sim[union], anchor[union], self._stamps[union])
        sim[union] = 0.0
        number = self._number.get(own) if own is not None else None
        if number is not None:
            found = found.take(np.flatnonzero(found.numbers != number))
        return found

    def candidates_many(
        self,
        slots: Sequence[int],
        weights: Sequence[float],
        positions: Sequence[int],
        counts: Sequence[int],
        owns: Sequence[str | None],
        sample: int,
    ) -> tuple[Candidates, np.ndarray, np.ndarray]:
        """:meth:`gather` of many contexts, compiled: context ``j``'s parts are the next
        ``counts[j]`` of (``slots``, ``weights``, ``positions``); its candidates leave out its
        session ``owns[j]`` and are cut to its ``sample`` most recent. Returns the candidates of
        all contexts, each one's context, and per context whether ties at the cut are left for ids
        to break (see :func:`engine.session_kernels.candidates_many`)."""
        base = self._searches + 1
        self._searches += len(counts)
        number = self._number.get
        found = session_kernels.candidates_many(
            self._index.data,
            self._index.offset,
            self._index.size,
            np.array(slots, np.int64),
            np.array(weights, np.float64),
            np.array(positions, np.int64),
            np.array(counts, np.int64),
            np.array([number(own, -1) if own is not None else -1 for own in owns], np.int64),
            self._stamps,
            self._sim,
            self._anchor,
            self._mark,
            base,
            sample,
        )
        return Candidates(*found[:4]), found[4], found[5]

    def keys(self, numbers: np.ndarray) -> np.ndarray:
        """The :func:`id_key` of the session ids of ``numbers`` (uint64, two columns)."""
        return self._keys[numbers]

    def ids(self, numbers: np.ndarray) -> list[str]:
        """The session ids of ``numbers``."""
        if len(numbers) == 0:
            return []
        if len(numbers) == 1:
            return [self._ids[int(numbers[0])]]
        return list(itemgetter(*numbers.tolist())(self._ids))
