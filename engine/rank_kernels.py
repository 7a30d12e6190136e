"""Compiled loops (numba) that choose and order each context's entries in a chunk of contexts:
the neighbours that make a context's ``k`` best, their order, and the scores a shortlist keeps.

Each gives exactly what the numpy pass it replaces gives (``np.partition`` per context, a
``np.lexsort`` of the chunk); those passes stay beside them for a model without numba, and the
tests compare the two. A numpy call costs ~10 µs of fixed cost per context here, about as much as
the work itself, which is why one loop over the chunk wins.

>>> import numpy as np
>>> bounds = np.array([0, 3, 4])  # context 0: entries 0-2, context 1: entry 3
>>> keys = np.array([[1, 0], [1, 0], [2, 0], [0, 0]], np.uint64)
>>> rank_many(np.array([1.0, 3.0, 3.0, 2.0]), keys, bounds).tolist()  # by value, then key
[2, 1, 0, 3]
>>> protected = np.array([False, False, False, True])
>>> shortlist_many(np.array([0.5, 2.0, 1.0, 0.1]), protected, np.array([0, 4]), np.array([2])).tolist()
[1, 2, 3]
"""

from __future__ import annotations

import numpy as np

from engine.session_kernels import compiled_loop

_NO_GAIN = np.zeros(0)


def _best_many(values: np.ndarray, held: np.ndarray, bounds: np.ndarray, k: int) -> np.ndarray:
    """Per context (entries ``bounds[j]:bounds[j + 1]``), the held entries whose value is at
    least the ``k``-th largest held value (all held ones when fewer): their positions, in order."""
    out = np.empty(len(values), np.int64)
    n_out = 0
    for j in range(len(bounds) - 1):
        lo, hi = bounds[j], bounds[j + 1]
        count = 0
        for i in range(lo, hi):
            if held[i]:
                count += 1
        cut = -np.inf
        if count > k:
            kept = np.empty(count)
            c = 0
            for i in range(lo, hi):
                if held[i]:
                    kept[c] = values[i]
                    c += 1
            cut = np.partition(kept, count - k)[count - k]
        for i in range(lo, hi):
            if held[i] and values[i] >= cut:
                out[n_out] = i
                n_out += 1
    return out[:n_out]


def best_many(values: np.ndarray, held: np.ndarray, bounds: np.ndarray, k: int) -> np.ndarray:
    """:func:`_best_many`, compiled."""
    return compiled_loop(_best_many)(values, held, bounds, k)


def _shortlist_many(
    scores: np.ndarray, protected: np.ndarray, bounds: np.ndarray, best: np.ndarray, gain: np.ndarray
) -> np.ndarray:
    """Per context (entries ``bounds[j]:bounds[j + 1]``), the protected entries and those scoring
    at least the ``best[j]``-th largest score of the others (every entry when there are no more
    than ``best[j]`` entries), and those with a ``gain`` (not negative; an empty ``gain``: none)
    unless both the score plus the gain and the gain alone fall short of it: their positions, in
    order.

    The cut is the value ``np.partition`` finds with the protected entries at -inf, NaN ranking
    above every number (a NaN cut keeps only the protected entries); a min-heap of the
    ``best[j]`` largest finds it in one pass, where a partition per context cost ~10 µs of fixed
    cost. ``a`` ranks above ``b`` when ``a > b or (a != a and b == b)``."""
    out = np.empty(len(scores), np.int64)
    largest = 1
    for j in range(len(best)):
        largest = max(largest, best[j])
    heap = np.empty(largest)
    n_out = 0
    for j in range(len(bounds) - 1):
        lo, hi = bounds[j], bounds[j + 1]
        wanted = max(1, best[j])
        cut = -np.inf
        if hi - lo > wanted:
            size = 0
            for i in range(lo, hi):
                value = -np.inf if protected[i] else scores[i]
                if size < wanted:  # push, then sift up
                    at = size
                    size += 1
                    while at > 0:
                        parent = (at - 1) // 2
                        top = heap[parent]
                        if not (top > value or (top != top and value == value)):
                            break
                        heap[at] = top
                        at = parent
                    heap[at] = value
                elif value > heap[0] or (value != value and heap[0] == heap[0]):
                    at = 0  # the smallest of the heap goes: sift the value down from the root
                    while True:
                        child = 2 * at + 1
                        if child >= size:
                            break
                        left = heap[child]
                        if child + 1 < size:
                            right = heap[child + 1]
                            if left > right or (left != left and right == right):
                                child += 1
                                left = right
                        if not (value > left or (value != value and left == left)):
                            break
                        heap[at] = left
                        at = child
                    heap[at] = value
            cut = heap[0]
        for i in range(lo, hi):
            if (
                protected[i]
                or scores[i] >= cut
                or (len(gain) > 0 and gain[i] >= 0.0 and not (scores[i] + gain[i] < cut and gain[i] < cut))
            ):
                out[n_out] = i
                n_out += 1
    return out[:n_out]


def shortlist_many(
    scores: np.ndarray,
    protected: np.ndarray,
    bounds: np.ndarray,
    best: np.ndarray,
    gain: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`_shortlist_many`, compiled."""
    return compiled_loop(_shortlist_many)(scores, protected, bounds, best, _NO_GAIN if gain is None else gain)


def _rank_many(values: np.ndarray, keys: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """The order of ``np.lexsort((~keys[:, 1], ~keys[:, 0], -values, context))`` for entries
    grouped by context (entries ``bounds[j]:bounds[j + 1]`` are context ``j``'s): per context, by
    value from the largest (NaN last), then by ``keys`` from the largest; entries equal in all of
    these keep their order. A merge sort per context: lexsort's four passes over the whole chunk
    cost more than the ~100 entries a context keeps need."""
    order = np.arange(len(values))
    spare = np.empty(len(values), np.int64)
    for j in range(len(bounds) - 1):
        lo, hi = bounds[j], bounds[j + 1]
        width = 1
        while width < hi - lo:
            for left in range(lo, hi, 2 * width):
                middle = min(left + width, hi)
                right_end = min(left + 2 * width, hi)
                a, b, out = left, middle, left
                while a < middle and b < right_end:
                    x, y = order[a], order[b]
                    # y strictly before x? (then y goes first; ties keep x first: stable)
                    vx, vy = values[x], values[y]
                    if vy > vx:
                        y_first = True
                    elif vy < vx:
                        y_first = False
                    elif vy != vy and vx == vx:
                        y_first = False  # NaN after a number
                    elif vx != vx and vy == vy:
                        y_first = True
                    elif keys[y, 0] != keys[x, 0]:
                        y_first = keys[y, 0] > keys[x, 0]
                    else:
                        y_first = keys[y, 1] > keys[x, 1]
                    if y_first:
                        spare[out] = y
                        b += 1
                    else:
                        spare[out] = x
                        a += 1
                    out += 1
                while a < middle:
                    spare[out] = order[a]
                    a += 1
                    out += 1
                while b < right_end:
                    spare[out] = order[b]
                    b += 1
                    out += 1
            for i in range(lo, hi):
                order[i] = spare[i]
            width *= 2
    return order


def rank_many(values: np.ndarray, keys: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """:func:`_rank_many`, compiled."""
    return compiled_loop(_rank_many)(values, keys, bounds)


def warm_up() -> None:
    """Compile (or load from numba's cache) the loops now (see :func:`engine.session_kernels.warm_up`)."""
    bounds = np.array([0, 1])
    best_many(np.ones(1), np.ones(1, np.bool_), bounds, 1)
    for gain in (None, np.zeros(1)):
        shortlist_many(np.ones(1), np.zeros(1, np.bool_), bounds, np.ones(1, np.int64), gain)
    rank_many(np.ones(1), np.ones((1, 2), np.uint64), bounds)
