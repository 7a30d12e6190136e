"""Compiled loops (numba) for the session model's hot steps, each giving the same floats as the
numpy passes beside it (:mod:`engine.session_votes`, :mod:`engine.session_numbers`).

The numpy passes pay a fixed cost per call and sort where a loop over a scratch array would do;
on a live stream every event's user is scored, so that cost is paid per event. These loops add
the same products in the same order (no fast-math, so no fused multiply-add and no reordering);
transcendental functions stay in numpy, whose results may differ from libm's in the last bit.

Without numba (:data:`AVAILABLE` false) the model runs the numpy passes alone (the loops are
plain Python functions here, compiled on first use); the tests run both
and compare them bit for bit.

>>> import numpy as np
>>> scratch = VoteScratch()
>>> votes = scratch.vote(
...     codes=np.array([0, 1, 1], np.int32), starts=np.array([0, 2]), lengths=np.array([2, 1]),
...     row_weight=np.array([1.0, 0.5]), anchor_codes=np.array([1, 1]),
...     row_owner=np.array([0, 0]), gap=np.array([0.5, 1.0, 0.5]), span=1, distinct=True, n_names=2)
>>> [array.tolist() for array in votes]
[[0, 0], [0, 1], [0.5, 1.5]]
"""

from __future__ import annotations

import functools
import importlib.util
import time
from typing import Any

import numpy as np

# Found, not imported: numba (with LLVM) adds ~100 MB to a process, and a worker whose scoring
# runs in a child process never needs it.
AVAILABLE = importlib.util.find_spec("numba") is not None


@functools.cache
def compiled_loop(function: Any) -> Any:
    """``function`` compiled, on first use (``cache=True``: once per machine, not per process)."""
    from numba import njit

    return njit(cache=True, nogil=True)(function)


# De Bruijn multiplier for 64-bit words: (lowest set bit x this) >> 58 is unique per bit, so a
# 64-entry table turns it into the bit's index (numba has no count-trailing-zeros).
_DE_BRUIJN = 0x03F79D71B4CB0A89
_NO_FACTOR = np.zeros(0)
_BIT_OF = np.zeros(64, np.int64)
for _bit in range(64):
    _BIT_OF[((1 << _bit) * _DE_BRUIJN % (1 << 64)) >> 58] = _bit


def _vote_rows(
    codes: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    row_weight: np.ndarray,
    anchor_codes: np.ndarray,
    row_owner: np.ndarray,
    gap: np.ndarray,
    span: int,
    distinct: bool,
    score: np.ndarray,
    best: np.ndarray,
    row_mark: np.ndarray,
    voted: np.ndarray,
    bit_of: np.ndarray,
    mark_base: int,
    factor: np.ndarray,
    normalise: bool,
    nearest_first: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour votes of rows grouped by owner (see :func:`engine.session_votes.vote_arrays`), row
    ``r`` being the item numbers ``codes[starts[r] : starts[r] + lengths[r]]``:
    ``(owner, item number, vote)`` sorted by owner, then item number. ``score`` and ``voted`` (a
    bit per item number, uint64 words) must be zero (they are left zero); ``row_mark`` must hold no
    value from ``mark_base`` on; ``bit_of`` is :data:`_BIT_OF`. Each vote is then multiplied by
    its item's ``factor`` (unless empty) and, with ``normalise``, divided by its owner's largest.

    An owner's voted items are read back in item order from its bits, word by word: sorting them
    (~2,000 an owner at a mature state) cost more than the votes themselves."""
    total = 0
    for row in range(len(lengths)):
        total += lengths[row]
    out_owner = np.empty(total, np.int64)
    out_code = np.empty(total, np.int64)
    out_score = np.empty(total)
    row_items = np.empty(total, np.int64)
    one = np.uint64(1)
    multiplier = np.uint64(_DE_BRUIJN)
    n_out = 0
    first_word = len(voted)  # the owner's words with bits set lie in [first_word, last_word]
    last_word = -1
    for row in range(len(lengths)):
        start = starts[row]
        length = lengths[row]
        # the anchor's last occurrence in the row (its first item when absent)
        anchor_at = 0
        for position in range(length):
            if codes[start + position] == anchor_codes[row]:
                anchor_at = position
        weight = row_weight[row]
        n_row = 0
        if distinct and nearest_first:
            # Outward from the anchor: an item's nearest occurrence is its strongest (the weights
            # fall off with the distance, alike on both sides), so it votes when first seen, in
            # the same pass (a pass of its own cost the time this saves).
            for distance in range(max(anchor_at + 1, length - anchor_at)):
                for position in (anchor_at - distance, anchor_at + distance):
                    if position < 0 or position >= length:
                        continue
                    code = codes[start + position]
                    if row_mark[code] != mark_base + row:
                        row_mark[code] = mark_base + row
                        word = code >> 6
                        voted[word] |= one << np.uint64(code & 63)
                        first_word = min(first_word, word)
                        last_word = max(last_word, word)
                        score[code] += weight * gap[span + position - anchor_at]
        else:  # two passes: each item's strongest vote, then the adds
            for position in range(length):
                code = codes[start + position]
                vote = gap[span + position - anchor_at]
                if distinct:
                    # one vote per (row, item), its strongest occurrence: added once the row is read
                    if row_mark[code] != mark_base + row:
                        row_mark[code] = mark_base + row
                        best[code] = vote
                        row_items[n_row] = code
                        n_row += 1
                    elif vote > best[code]:
                        best[code] = vote
                else:
                    word = code >> 6
                    voted[word] |= one << np.uint64(code & 63)
                    first_word = min(first_word, word)
                    last_word = max(last_word, word)
                    score[code] += weight * vote
            for i in range(n_row):
                code = row_items[i]
                word = code >> 6
                voted[word] |= one << np.uint64(code & 63)
                first_word = min(first_word, word)
                last_word = max(last_word, word)
                score[code] += weight * best[code]
        if row + 1 == len(lengths) or row_owner[row + 1] != row_owner[row]:
            owner_start = n_out
            top = -np.inf
            for word in range(first_word, last_word + 1):
                bits = voted[word]
                if bits == 0:
                    continue
                voted[word] = np.uint64(0)
                while bits != 0:
                    lowest = bits & (~bits + one)
                    code = word * 64 + bit_of[(lowest * multiplier) >> np.uint64(58)]
                    out_owner[n_out] = row_owner[row]
                    out_code[n_out] = code
                    value = score[code]
                    if len(factor):
                        value = value * factor[code]
                    out_score[n_out] = value
                    top = max(top, value)
                    score[code] = 0.0
                    n_out += 1
                    bits ^= lowest
            if normalise:  # as numpy divides (numba's division by zero raises instead)
                for i in range(owner_start, n_out):
                    if top != 0.0:
                        out_score[i] = out_score[i] / top
                    elif out_score[i] != 0.0:
                        out_score[i] = np.inf if out_score[i] > 0.0 else -np.inf
                    else:
                        out_score[i] = np.nan
            first_word, last_word = len(voted), -1
    return out_owner[:n_out], out_code[:n_out], out_score[:n_out]


class VoteScratch:
    """The scratch arrays of :func:`_vote_rows` for one model, grown with its catalogue (a numpy
    array per call would cost a zeroing pass over the catalogue per chunk of contexts)."""

    def __init__(self) -> None:
        self._score = np.zeros(0)
        self._best = np.zeros(0)
        self._row_mark = np.zeros(0, np.int64)
        self._voted = np.zeros(0, np.uint64)
        self._base = 0

    def vote(
        self,
        codes: np.ndarray,
        starts: np.ndarray,
        lengths: np.ndarray,
        row_weight: np.ndarray,
        anchor_codes: np.ndarray,
        row_owner: np.ndarray,
        gap: np.ndarray,
        span: int,
        distinct: bool,
        n_names: int,
        factor: np.ndarray | None = None,
        normalise: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(owner, item number, vote)`` of rows of ``codes`` (item numbers below ``n_names``),
        from ``starts``, ``lengths`` long, grouped by ``row_owner``, sorted by owner, then item
        number; each vote times its item's ``factor`` and, with ``normalise``, over its owner's
        largest."""
        if n_names > len(self._score):
            size = max(1024, 2 * n_names)
            self._score = np.zeros(size)
            self._best = np.zeros(size)
            self._row_mark = np.full(size, -1, np.int64)
            self._voted = np.zeros((size + 63) // 64, np.uint64)
            self._base = 0
        base = self._base
        self._base += len(lengths)
        return compiled_loop(_vote_rows)(
            codes,
            starts,
            lengths,
            row_weight,
            anchor_codes,
            row_owner,
            gap,
            span,
            distinct,
            self._score,
            self._best,
            self._row_mark,
            self._voted,
            _BIT_OF,
            base,
            _NO_FACTOR if factor is None else factor,
            normalise,
            _falls_off_alike(gap, span),
        )


def _falls_off_alike(gap: np.ndarray, span: int) -> bool:
    """Whether the vote weights by distance from the anchor (``gap[span + d]``) are the same on
    both sides and never grow with the distance: then an item's nearest occurrence in a row is its
    strongest."""
    after, before = gap[span:], gap[span::-1]
    return bool(np.array_equal(after, before) and (np.diff(after) <= 0).all())


def warm_up() -> float:
    """Compile (or load from numba's cache) every loop now, not on the first poll a worker scores;
    returns the seconds it took (0 without numba)."""
    if not AVAILABLE:
        return 0.0
    started = time.monotonic()
    one = np.zeros(1, np.int32)
    ones = np.ones(1, np.int64)
    VoteScratch().vote(one, ones - 1, ones, np.ones(1), ones - 1, ones - 1, np.ones(3), 1, True, 1)
    candidates_many(
        one,
        ones - 1,
        ones,
        ones - 1,
        np.ones(1),
        ones - 1,
        ones,
        ones - 2,
        np.zeros(1),
        np.zeros(1),
        ones - 1,
        ones - 1,
        1,
        1,
    )
    merge_add(ones, np.ones(1), ones, np.ones(1))
    from engine import rank_kernels, rule_table  # both import this module

    rank_kernels.warm_up()
    rule_table.warm_up()
    return time.monotonic() - started


def _candidates_many(
    arena: np.ndarray,
    offsets: np.ndarray,
    sizes: np.ndarray,
    part_slots: np.ndarray,
    part_weights: np.ndarray,
    part_positions: np.ndarray,
    context_parts: np.ndarray,
    owns: np.ndarray,
    stamps: np.ndarray,
    sim: np.ndarray,
    anchor: np.ndarray,
    mark: np.ndarray,
    mark_base: int,
    sample: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The union of each context's parts (``context_parts[j]`` parts, each the session numbers of
    an item's slot, ``arena[offsets[slot] : offsets[slot] + sizes[slot]]``, with one weight and
    anchor position; see :meth:`engine.session_numbers.SessionNumbers.candidates_many`) without
    ``owns[j]``, cut to its ``sample`` most recent: flat numbers, summed weights, anchors (the last
    part's position), stamps and context of the kept candidates, and per context whether sessions
    tied at the cut outnumber the places left (it then keeps every candidate at least as recent,
    for ids to decide). Context ``j`` marks with ``mark_base + j``; ``mark`` holds no such value yet."""
    total = 0
    for part in range(len(part_slots)):
        total += sizes[part_slots[part]]
    out_numbers = np.empty(total, np.int32)
    out_sim = np.empty(total)
    out_anchor = np.empty(total, np.int64)
    out_stamps = np.empty(total)
    out_context = np.empty(total, np.int64)
    tied = np.zeros(len(context_parts), np.bool_)
    union = np.empty(total, np.int32)
    n_out = 0
    part = 0
    for j in range(len(context_parts)):
        mark_value = mark_base + j
        n = 0
        for _ in range(context_parts[j]):
            weight = part_weights[part]
            position = part_positions[part]
            start = offsets[part_slots[part]]
            for i in range(start, start + sizes[part_slots[part]]):
                number = arena[i]
                if mark[number] != mark_value:
                    mark[number] = mark_value
                    sim[number] = 0.0
                    union[n] = number
                    n += 1
                sim[number] += weight
                anchor[number] = position
            part += 1
        m = 0
        for i in range(n):
            if union[i] != owns[j]:
                union[m] = union[i]
                m += 1
        cut = -np.inf
        limited = m > sample
        if limited:
            recent = np.empty(m)
            for i in range(m):
                recent[i] = stamps[union[i]]
            cut = np.partition(recent, m - sample)[m - sample]  # the sample-th most recent
            at_least = 0
            for i in range(m):
                if recent[i] >= cut:
                    at_least += 1
            tied[j] = at_least > sample
        for i in range(m):
            number = union[i]
            if limited and not stamps[number] >= cut:
                continue
            out_numbers[n_out] = number
            out_sim[n_out] = sim[number]
            out_anchor[n_out] = anchor[number]
            out_stamps[n_out] = stamps[number]
            out_context[n_out] = j
            n_out += 1
    return (
        out_numbers[:n_out],
        out_sim[:n_out],
        out_anchor[:n_out],
        out_stamps[:n_out],
        out_context[:n_out],
        tied,
    )


def candidates_many(*args: Any) -> tuple[np.ndarray, ...]:
    """:func:`_candidates_many`, compiled."""
    return compiled_loop(_candidates_many)(*args)


def _merge_add(
    keys: np.ndarray, values: np.ndarray, more_keys: np.ndarray, more_values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`engine.session_blend.merge_add` in one pass over both arrays."""
    n, m = len(keys), len(more_keys)
    out_keys = np.empty(n + m, np.int64)
    out_values = np.empty(n + m)
    i = j = size = 0
    while i < n or j < m:
        if j == m or (i < n and keys[i] < more_keys[j]):
            out_keys[size], out_values[size] = keys[i], values[i]
            i += 1
        elif i == n or more_keys[j] < keys[i]:
            out_keys[size], out_values[size] = more_keys[j], more_values[j]
            j += 1
        else:
            out_keys[size], out_values[size] = keys[i], values[i] + more_values[j]
            i += 1
            j += 1
        size += 1
    return out_keys[:size], out_values[:size]


def merge_add(
    keys: np.ndarray, values: np.ndarray, more_keys: np.ndarray, more_values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_merge_add`, compiled."""
    return compiled_loop(_merge_add)(keys, values, more_keys, more_values)
