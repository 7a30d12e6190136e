"""The loops behind :class:`engine.sequential_rules.RuleStore`: rule rows in one arena of arrays
and a hash table from ``(source, target)`` to a rule's place in its row, so that a compiled loop
adds a poll's rules with no Python object per rule (a dict and two numpy arrays per row cost ~1 µs
a rule at a mature state, mostly cache misses across scattered objects).

Rows: the targets of source ``s`` (item numbers) are ``targets[offset[s] : offset[s] + size[s]]``,
in order of first sight, their weights the same slice of ``weights``, with room for ``room[s]``
entries; ``size[s]`` is -1 for a source without a row, and ``top[s]`` is its largest weight. A row
that fills moves to the arena's end with twice the room (at most what a row holds before its trim);
the caller compacts a full arena into one with half as much room again as the rows hold.

Table: open addressing with linear probing over a power-of-two number of entries; ``keys[h]`` is
``source << 31 | target`` (-1: free) and ``slots[h]`` the rule's place within its row, so that a
row that moves keeps its entries. Removal shifts the entries after it back (no tombstones). The
hash uses products that stay below 2**63, so the plain-Python loops (without numba) hash alike.

``counts`` holds :data:`USED` (arena entries handed out), :data:`LIVE` (the rows' room),
:data:`FILLED` (table entries) and :data:`ROWS`. Without numba the same loops run as plain Python
over numpy scalars: the same rows, many times slower (numba is a dependency; this is a fallback).

>>> import numpy as np
>>> table = RuleTable.empty()
>>> table.fit(n_sources=2, more_rules=3)
>>> table.add(np.array([0, 0, 1]), np.array([1, 1, 0]), np.array([1.0, 0.5, 2.0]), keep=10)
>>> table.row(0), table.row(1), table.top[:2].tolist()
(([1], [1.5]), ([0], [2.0]), [1.5, 2.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.segments import extended, key_capacity
from engine.session_kernels import AVAILABLE, compiled_loop

USED, LIVE, FILLED, ROWS = range(4)
_NOTHING = np.zeros(0)
_LOW = (1 << 31) - 1  # a key's target bits


def home(source: int, target: int, mask: int) -> int:
    """Where rule ``source -> target`` is first looked for in a table of ``mask + 1`` entries
    (the loops below inline this, as numba's cached loops cannot call a plain function)."""
    h = (source * 0x9E3779B1) ^ (target * 0x85EBCA77)
    return (h ^ (h >> 29)) & mask


def _add_rules(
    offset: np.ndarray,
    size: np.ndarray,
    room: np.ndarray,
    top: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    keys: np.ndarray,
    slots: np.ndarray,
    counts: np.ndarray,
    sources: np.ndarray,
    dests: np.ndarray,
    amounts: np.ndarray,
    start: int,
    cap: int,
) -> tuple[int, int]:
    """Add rule ``sources[i] -> dests[i]`` of weight ``amounts[i]`` for ``i`` from ``start`` on,
    in order, until a row must move and the arena has no room: then ``(i, -1)``, nothing of that
    rule done; or a row holds more than ``cap`` rules: then ``(i + 1, its source)``, to be
    trimmed before going on. ``(len(sources), -1)`` when all are added. The table must have room
    for every new rule."""
    mask = len(keys) - 1
    for i in range(start, len(sources)):
        s = sources[i]
        t = dests[i]
        key = (s << 31) | t
        h = (s * 0x9E3779B1) ^ (t * 0x85EBCA77)
        h = (h ^ (h >> 29)) & mask
        while keys[h] != key and keys[h] != -1:
            h = (h + 1) & mask
        if keys[h] == key:
            at = offset[s] + slots[h]
            value = weights[at] + amounts[i]
            weights[at] = value
        else:
            n = max(size[s], 0)
            if n == room[s]:
                grown = min(max(8, 2 * n), cap + 1)  # a row never holds more than cap + 1
                used = counts[USED]
                if used + grown > len(targets):
                    return i, -1
                old = offset[s]
                for j in range(n):
                    targets[used + j] = targets[old + j]
                    weights[used + j] = weights[old + j]
                counts[LIVE] += grown - room[s]
                counts[USED] = used + grown
                offset[s] = used
                room[s] = grown
            if size[s] < 0:
                counts[ROWS] += 1
            value = amounts[i]
            targets[offset[s] + n] = t
            weights[offset[s] + n] = value
            size[s] = n + 1
            keys[h] = key
            slots[h] = n
            counts[FILLED] += 1
        if value > top[s]:
            top[s] = value
        if size[s] > cap:
            return i + 1, s
    return len(sources), -1


def _trim(
    offset: np.ndarray,
    size: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    keys: np.ndarray,
    slots: np.ndarray,
    counts: np.ndarray,
    s: int,
    keep: int,
) -> None:
    """Keep the ``keep`` strongest rules of row ``s``, in their order (ties: the earlier-seen
    target); the others leave the table. The strongest stays, so the row's ``top`` stays right."""
    mask = len(keys) - 1
    start, n = offset[s], size[s]
    order = np.argsort(-weights[start : start + n], kind="mergesort")  # stable: ties by slot
    for j in order[keep:]:
        t = int(targets[start + j])  # int64 arithmetic below (an int32 product would overflow)
        key = (s << 31) | t
        h = (s * 0x9E3779B1) ^ (t * 0x85EBCA77)
        h = (h ^ (h >> 29)) & mask
        while keys[h] != key:
            h = (h + 1) & mask
        # Shift back each following entry whose home is not cyclically in (free, probe].
        free = h
        probe = (h + 1) & mask
        while keys[probe] != -1:
            other = keys[probe]
            os, ot = other >> 31, other & _LOW
            wanted = (os * 0x9E3779B1) ^ (ot * 0x85EBCA77)
            wanted = (wanted ^ (wanted >> 29)) & mask
            if (free < probe and (wanted <= free or wanted > probe)) or (
                free > probe and wanted <= free and wanted > probe
            ):
                keys[free] = other
                slots[free] = slots[probe]
                free = probe
            probe = (probe + 1) & mask
        keys[free] = -1
    kept = np.sort(order[:keep])
    for j in range(keep):
        t = int(targets[start + kept[j]])
        targets[start + j] = t
        weights[start + j] = weights[start + kept[j]]
        key = (s << 31) | t
        h = (s * 0x9E3779B1) ^ (t * 0x85EBCA77)
        h = (h ^ (h >> 29)) & mask
        while keys[h] != key:
            h = (h + 1) & mask
        slots[h] = j
    size[s] = keep
    counts[FILLED] -= n - keep


def _rehash(
    offset: np.ndarray, size: np.ndarray, targets: np.ndarray, keys: np.ndarray, slots: np.ndarray
) -> None:
    """Fill the (free) table ``keys``/``slots`` with every row's rules."""
    mask = len(keys) - 1
    for s in range(len(size)):
        start = offset[s]
        for j in range(size[s]):
            t = int(targets[start + j])
            h = (s * 0x9E3779B1) ^ (t * 0x85EBCA77)
            h = (h ^ (h >> 29)) & mask
            while keys[h] != -1:
                h = (h + 1) & mask
            keys[h] = (s << 31) | t
            slots[h] = j


def _compact(
    offset: np.ndarray,
    size: np.ndarray,
    room: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    new_targets: np.ndarray,
    new_weights: np.ndarray,
) -> int:
    """Copy every row into the new arena side by side, keeping its room; returns the room used."""
    used = 0
    for s in range(len(size)):
        if size[s] >= 0:
            start = offset[s]
            for j in range(size[s]):
                new_targets[used + j] = targets[start + j]
                new_weights[used + j] = weights[start + j]
            offset[s] = used
            used += room[s]
    return used


def _votes(
    offset: np.ndarray,
    size: np.ndarray,
    top: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    sources: np.ndarray,
    source_weights: np.ndarray,
    counts: np.ndarray,
    row_norm: bool,
    divide_by: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of each list's sources summed (see :meth:`RuleTable.votes`): list ``j`` is the
    next ``counts[j]`` of ``sources`` (-1: none) and their ``source_weights``. A target's votes
    are added in the order its rows list them (a stable sort of the list's entries by target), so
    each sum is the float numpy's ``bincount`` over the same entries gives."""
    total = 0
    for i in range(len(sources)):
        s = sources[i]
        if 0 <= s < len(size) and size[s] > 0:
            total += size[s]
    out_owner = np.empty(total, np.int64)
    out_target = np.empty(total, np.int64)
    out_vote = np.empty(total)
    entry_target = np.empty(total, np.int64)
    entry_vote = np.empty(total)
    n_out = 0
    i = 0
    for j in range(len(counts)):
        n = 0
        for _ in range(counts[j]):
            s = sources[i]
            weight = source_weights[i]
            i += 1
            if s < 0 or s >= len(size) or size[s] <= 0:
                continue
            if row_norm and top[s] > 0:
                weight = weight / top[s]
            start = offset[s]
            for k in range(size[s]):
                entry_target[n] = targets[start + k]
                entry_vote[n] = weight * weights[start + k]
                n += 1
        order = np.argsort(entry_target[:n], kind="mergesort")
        k = 0
        while k < n:
            t = entry_target[order[k]]
            vote = 0.0
            while k < n and entry_target[order[k]] == t:
                vote += entry_vote[order[k]]
                k += 1
            if t < len(divide_by):
                vote = vote / divide_by[t]
            if vote != 0.0:
                out_owner[n_out] = j
                out_target[n_out] = t
                out_vote[n_out] = vote
                n_out += 1
    return out_owner[:n_out], out_target[:n_out], out_vote[:n_out]


_LOOPS = (_add_rules, _trim, _rehash, _compact, _votes)


def _loops(compiled: bool) -> tuple:
    """The loops, compiled (:func:`engine.session_kernels.compiled_loop`) or as plain Python."""
    return tuple(map(compiled_loop, _LOOPS)) if compiled else _LOOPS


@dataclass
class RuleTable:
    """The arrays (see the module doc); ``compiled``: run the loops compiled (numba), the same
    result."""

    offset: np.ndarray
    size: np.ndarray
    room: np.ndarray
    top: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    keys: np.ndarray
    slots: np.ndarray
    counts: np.ndarray
    compiled: bool = AVAILABLE

    @classmethod
    def empty(cls, compiled: bool = AVAILABLE) -> RuleTable:
        return cls(
            offset=np.zeros(0, np.int64),
            size=np.zeros(0, np.int64),
            room=np.zeros(0, np.int64),
            top=np.zeros(0),
            targets=np.zeros(1024, np.int32),
            weights=np.zeros(1024),
            keys=np.full(1024, -1, np.int64),
            slots=np.zeros(1024, np.int32),
            counts=np.zeros(4, np.int64),
            compiled=compiled,
        )

    def fit(self, n_sources: int, more_rules: int) -> None:
        """Make sources ``0 .. n_sources - 1`` valid and leave the table room for ``more_rules``
        new rules at a load of at most a half."""
        if n_sources > _LOW + 1:  # a key holds a source and a target in 31 bits each
            raise OverflowError(f"the rule table numbers at most 2**31 items, not {n_sources:,}")
        if n_sources > len(self.size):
            length = key_capacity(len(self.size), n_sources)
            self.offset = extended(self.offset, length)
            self.size = extended(self.size, length, -1)
            self.room = extended(self.room, length)
            self.top = extended(self.top, length)
        wanted = 2 * (int(self.counts[FILLED]) + more_rules)
        if wanted > len(self.keys):  # doubled at least: a load of a quarter to a half
            capacity = 1 << max(10, (wanted - 1).bit_length())
            self.keys = np.full(capacity, -1, np.int64)
            self.slots = np.zeros(capacity, np.int32)
            _loops(self.compiled)[2](self.offset, self.size, self.targets, self.keys, self.slots)

    def add(self, sources: np.ndarray, dests: np.ndarray, amounts: np.ndarray, keep: int) -> None:
        """Add the rules in order (:func:`_add_rules`); :meth:`fit` them first."""
        add_rules, trim, _, compact, _ = _loops(self.compiled)
        start = 0
        while True:
            start, full = add_rules(
                self.offset,
                self.size,
                self.room,
                self.top,
                self.targets,
                self.weights,
                self.keys,
                self.slots,
                self.counts,
                sources,
                dests,
                amounts,
                start,
                2 * keep,
            )
            if full >= 0:
                trim(
                    self.offset,
                    self.size,
                    self.targets,
                    self.weights,
                    self.keys,
                    self.slots,
                    self.counts,
                    full,
                    keep,
                )
                continue
            if start == len(sources):
                return
            # room for the row that has to move, and half as much again as the live rows hold
            wanted = min(max(8, 2 * int(self.size[sources[start]])), 2 * keep + 1)
            live = int(self.counts[LIVE]) + wanted
            length = max(1024, live + live // 2)
            targets, weights = np.zeros(length, np.int32), np.zeros(length)
            used = compact(self.offset, self.size, self.room, self.targets, self.weights, targets, weights)
            self.targets, self.weights = targets, weights
            self.counts[USED] = used

    def votes(
        self,
        sources: np.ndarray,
        source_weights: np.ndarray,
        counts: np.ndarray,
        row_norm: bool,
        divide_by: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per list of sources, ``sum(weight * row(source))`` (each row first divided by its
        largest weight with ``row_norm``), divided by ``divide_by[target]`` where the target has
        one, non-zero votes only: (list, target, vote), sorted by list, then target (see
        :func:`_votes`)."""
        return _loops(self.compiled)[4](
            self.offset,
            self.size,
            self.top,
            self.targets,
            self.weights,
            sources,
            source_weights,
            counts,
            row_norm,
            _NOTHING if divide_by is None else divide_by,
        )

    def row(self, source: int) -> tuple[list[int], list[float]]:
        """Row ``source``'s targets and weights (empty without a row)."""
        if source >= len(self.size) or self.size[source] <= 0:
            return [], []
        start, end = int(self.offset[source]), int(self.offset[source] + self.size[source])
        return self.targets[start:end].tolist(), self.weights[start:end].tolist()


def warm_up() -> None:
    """Compile (or load from numba's cache) the loops now (see :func:`engine.session_kernels.warm_up`)."""
    table = RuleTable.empty(compiled=True)
    table.fit(1, 2048)  # a table of more than 1,024 entries: rehashed
    table.add(np.zeros(3, np.int64), np.arange(3, dtype=np.int64), np.ones(3), keep=1)  # 3 > 2: trimmed
    _loops(True)[3](
        table.offset, table.size, table.room, table.targets, table.weights, np.zeros(8, np.int32), np.zeros(8)
    )
    ones = np.ones(1, np.int64)
    for divide_by in (None, np.ones(3)):
        table.votes(ones - 1, np.ones(1), ones, True, divide_by)
