"""Many small growable arrays of int32, each a segment of one numpy array, found by a key (a small
integer): what the compiled loops of :mod:`engine.session_kernels` read, given keys, where a numpy
view per small array cost more to make than the loop's work on it.

A segment that fills moves to the end of the arena with twice the room; a full arena is compacted
into a new one with room for as many entries again as the live segments hold.

>>> rows = Segments()
>>> rows.ensure(2)
>>> rows.put(0, [5, 6])
>>> rows.append(0, 7)
>>> rows.view(0).tolist(), int(rows.size[1])  # key 1 was never put: it has no segment
([5, 6, 7], -1)
>>> rows.remove(0, 5), rows.view(0).tolist()
(True, [7, 6])
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def key_capacity(have: int, wanted: int) -> int:
    """How many keys arrays of ``have`` entries grow to, to hold ``wanted``: doubled at least,
    so that growing key by key costs amortised O(1)."""
    return max(1024, 2 * have, wanted)


def extended(array: np.ndarray, length: int, fill: float = 0) -> np.ndarray:
    """``array`` followed by ``fill`` up to ``length`` entries (along its first axis)."""
    more = np.full((length - len(array), *array.shape[1:]), fill, array.dtype)
    return np.concatenate([array, more])


class Segments:
    """int32 segments by key: ``data[offset[key] : offset[key] + size[key]]``, with room for
    ``room[key]`` entries; ``size[key]`` is -1 for a key without a segment."""

    def __init__(self) -> None:
        self.offset = np.zeros(0, np.int64)
        self.size = np.zeros(0, np.int64)
        self.room = np.zeros(0, np.int64)
        self.data = np.zeros(0, np.int32)
        self._used = 0  # entries handed out, to live segments or to ones since moved
        self._live = 0  # room of the live segments

    def ensure(self, n_keys: int) -> None:
        """Make keys ``0 .. n_keys - 1`` valid (new ones without a segment)."""
        if n_keys > len(self.size):
            length = key_capacity(len(self.size), n_keys)
            self.offset = extended(self.offset, length)
            self.size = extended(self.size, length, -1)
            self.room = extended(self.room, length)

    def put(self, key: int, values: np.ndarray | Iterable[int], spare: int = 0) -> None:
        """Give ``key`` a segment holding ``values``, with room for ``spare`` more."""
        values = np.asarray(values, np.int32)
        self.drop(key)
        self.size[key] = 0
        self._move(key, max(1, len(values) + spare))
        start = int(self.offset[key])
        self.data[start : start + len(values)] = values
        self.size[key] = len(values)

    def append(self, key: int, value: int) -> None:
        """Add ``value`` at the end of ``key``'s segment (which must exist)."""
        size = int(self.size[key])
        if size == self.room[key]:
            self._move(key, max(4, 2 * size))
        self.data[self.offset[key] + size] = value
        self.size[key] = size + 1

    def remove(self, key: int, value: int) -> bool:
        """Remove ``value`` from ``key``'s segment, the last entry taking its place; False (and
        nothing removed) unless it is there exactly once."""
        start, size = int(self.offset[key]), int(self.size[key])
        segment = self.data[start : start + size]
        found = np.flatnonzero(segment == value)
        if len(found) != 1:
            return False
        segment[found[0]] = segment[size - 1]
        self.size[key] = size - 1
        return True

    def pop_first(self, key: int) -> None:
        """Remove the first entry of ``key``'s (non-empty) segment, keeping the others' order."""
        start, size = int(self.offset[key]), int(self.size[key])
        self.data[start : start + size - 1] = self.data[start + 1 : start + size]
        self.size[key] = size - 1

    def drop(self, key: int) -> None:
        """``key`` has no segment from now on."""
        self._live -= int(self.room[key])
        self.size[key], self.room[key] = -1, 0

    def view(self, key: int) -> np.ndarray:
        """``key``'s segment (a view, valid until the next change to any segment)."""
        start = self.offset[key]
        return self.data[start : start + self.size[key]]

    def _move(self, key: int, room: int) -> None:
        """Give ``key`` ``room`` entries at the arena's end, keeping its entries."""
        if self._used + room > len(self.data):
            self._compact(room)
        start, size = int(self.offset[key]), max(0, int(self.size[key]))
        self.data[self._used : self._used + size] = self.data[start : start + size]
        self._live += room - int(self.room[key])
        self.offset[key], self.room[key] = self._used, room
        self._used += room

    def _compact(self, wanted: int) -> None:
        """A new arena with the live segments side by side and room for ``wanted`` more entries
        and as many again as the live ones hold."""
        room = self.room
        sizes = np.maximum(self.size, 0)
        offsets = np.cumsum(room) - room
        data = np.empty(max(1024, 2 * (self._live + wanted)), np.int32)
        within = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        data[np.repeat(offsets, sizes) + within] = self.data[np.repeat(self.offset, sizes) + within]
        self.data = data
        self.offset = offsets
        self._used = int(room.sum())
