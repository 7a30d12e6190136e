"""The blend step of :class:`~engine.sessionknn.SessionKNN` over many contexts at once, in item numbers.

Each context's score of an item is its neighbour vote (already divided by the context's largest),
plus ``sr_weight`` times its rule vote over the largest rule vote, plus ``reminder_weight`` times its
reminder, plus ``trend_weight`` times its trend over the top trend; a part an item lacks adds
nothing. Each part is a sorted array of ``(context, item number)`` keys; merging them one after
the other adds each key's parts in that order, the order the one-dict-per-context blend added them
in, so every sum is the same float. (The neighbour votes, the largest part by far, arrive sorted:
a merge costs a pass over them where sorting all the keys again cost most of the blend.)

A :class:`Shortlist` lets the caller ask for only the items that can still make its top-k list, so
that hundreds of scored items per context never become dict entries. The engine ranks a context's
items by score (ties by item id) after removing banned items and adding ANN and trending scores to
some of them. ANN items are protected, kept whatever their score. Any other item keeps its score
here or gains its trending share, and no item loses any, so an item makes the top ``k`` only if
fewer than ``k`` allowed unprotected items rank above its final score: so only if it is among the
``k + banned`` best unprotected items here, which the shortlist keeps (with every item tied with
the last of them), or if its score plus its share reaches the last of those.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np

from engine import rank_kernels, session_kernels
from engine.evaluation.base import Context
from engine.session_votes import as_dicts, decay_weights, group_max, latest_positions

if TYPE_CHECKING:
    from engine.session_votes import Votes
    from engine.sessionknn import SessionKNN


@dataclass(frozen=True, slots=True)
class Shortlist:
    """Which items of each context to return: any of ``protected[j]`` or ``always`` that it scored,
    and of the others its ``best[j]`` highest scores (every item tied with the last of them too),
    and any item of ``gains`` whose score plus its gain, or gain alone, reaches the last of those.

    ``gains``: items that the caller adds exactly that much (not negative) to, whether they are
    returned or not, and no item loses score: an item that falls short of the cut with its gain,
    and with its gain alone (its score when left out), stays below ``best[j]`` items."""

    best: Sequence[int]
    protected: Sequence[Collection[str]]
    always: Collection[str] = ()
    gains: Mapping[str, float] = field(default_factory=dict)


def blend_many(
    model: SessionKNN,
    contexts: Sequence[Context],
    knn: Votes | None,
    rule_sources: Sequence[Sequence[tuple[str, float]]],
    shortlist: Shortlist | None = None,
    latest: Sequence[list[tuple[str, int, int]]] | None = None,
) -> list[dict[str, float]]:
    """Each context's blended scores (see the module doc); ``knn`` holds the normalised neighbour
    votes (None: the neighbourhood part is off), ``rule_sources`` each context's voting items
    (:func:`~engine.sessionknn.sr_sources`), ``latest`` each context's
    :func:`~engine.session_votes.latest_positions` when the caller has them."""
    c = model.config
    names = model.rules.names
    numbers = model.rules.numbers
    # Items the rule store has not numbered (a context item nobody else touched) get numbers past
    # its end, for this call only: scoring must not grow the model.
    extra: dict[str, int] = {}
    n_known = len(names)

    def code_of(item: str) -> int:
        code = numbers.get(item)
        if code is None:
            code = extra.setdefault(item, n_known + len(extra))
        return code

    def known_code(item: str) -> int | None:
        code = numbers.get(item)
        return code if code is not None else extra.get(item)

    reminder_counts: list[int] = []
    reminder_codes: list[int] = []
    reminder_steps: list[int] = []
    if c.reminder_weight:
        if latest is None:
            latest = [latest_positions(context.items[-c.max_session_length :]) for context in contexts]
        for mine in latest:
            items = [item for item, _, _ in mine]
            codes = [*map(numbers.get, items)]
            if None in codes:  # numbered here, in this order (known_code finds them later)
                codes = [*map(code_of, items)]
            reminder_counts.append(len(codes))
            reminder_codes += codes
            reminder_steps += [steps for _, _, steps in mine]
    width = n_known + len(extra)  # key = context * width + item number

    # Added in this order: each key's neighbour vote, then its rule vote, then its reminder.
    keys, scores = np.zeros(0, np.int64), np.zeros(0)
    if knn is not None and len(knn.codes):
        keys, scores = knn.owners * width + knn.codes, knn.scores
    if c.sr_weight > 0:
        keys, scores = merge_add(keys, scores, *_rule_votes(model, rule_sources, width), model.compiled)
    if reminder_codes:
        owner = np.repeat(np.arange(len(contexts), dtype=np.int64), reminder_counts)
        reminder_keys = owner * width + np.array(reminder_codes, np.int64)
        weights = np.array(decay_weights(c.reminder_decay, c.max_session_length))
        values = c.reminder_weight * weights[np.array(reminder_steps, np.int64)]
        order = np.argsort(reminder_keys)
        keys, scores = merge_add(keys, scores, reminder_keys[order], values[order], model.compiled)
    if not len(keys):
        return [{} for _ in contexts]
    owners, codes = np.divmod(keys, width)
    every_name = names + list(extra) if extra else names
    if c.trend_weight and model.trend_top > 0:
        weight = c.trend_weight / model.trend_top
        picked = [every_name[code] for code in codes.tolist()]
        trend = np.fromiter(map(model.trend.get, picked, repeat(0.0)), np.float64, len(picked))
        scores = scores + weight * trend
    if shortlist is not None:
        kept = _shortlisted(owners, codes, scores, shortlist, width, known_code, model.compiled)
        owners, codes, scores = owners[kept], codes[kept], scores[kept]
    return as_dicts(every_name, owners, codes, scores, len(contexts))


def merge_add(
    keys: np.ndarray,
    values: np.ndarray,
    more_keys: np.ndarray,
    more_values: np.ndarray,
    compiled: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The union of two sorted arrays of distinct (int64) keys, each value that of its key in
    ``keys`` plus that in ``more_keys`` (in that order; ``0.0 + x`` is ``x``, so a one-sided key
    keeps its value); ``compiled``: in one pass (:mod:`engine.session_kernels`), the same floats.

    >>> merged = merge_add(np.array([1, 4]), np.array([0.5, 1.0]), np.array([2, 4]), np.array([2.0, 0.25]))
    >>> [array.tolist() for array in merged]
    [[1, 2, 4], [0.5, 2.0, 1.25]]
    """
    if not len(more_keys):
        return keys, values
    if not len(keys):
        return more_keys, more_values
    if compiled:
        return session_kernels.merge_add(keys, values, more_keys, more_values)
    at = np.searchsorted(keys, more_keys)
    hit = keys[np.minimum(at, len(keys) - 1)] == more_keys
    values = values.copy()
    values[at[hit]] += more_values[hit]
    fresh = ~hit
    return np.insert(keys, at[fresh], more_keys[fresh]), np.insert(values, at[fresh], more_values[fresh])


def _rule_votes(
    model: SessionKNN, sources: Sequence[Sequence[tuple[str, float]]], width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each context's rule votes times ``sr_weight`` over the context's largest (contexts whose
    largest is not positive add none): keys and values."""
    c = model.config
    divide_by = np.maximum(model.session_counts, 1.0) ** c.sr_pop_norm if c.sr_pop_norm else None
    owners, targets, totals = model.rules.votes_many(sources, c.sr_row_norm, divide_by)
    if not len(totals):
        return targets, totals
    top = group_max(owners, totals)
    positive = top > 0
    weight = c.sr_weight / np.where(positive, top, 1.0)
    return (owners * width + targets)[positive], (weight * totals)[positive]


def _shortlisted(
    owners: np.ndarray,
    codes: np.ndarray,
    scores: np.ndarray,
    shortlist: Shortlist,
    width: int,
    known_code: Callable[[str], int | None],
    compiled: bool = False,
) -> np.ndarray:
    """Positions of the entries to keep: protected items, and per context the others scoring at
    least the ``best``-th highest of the others; ``compiled``: in one pass
    (:func:`engine.rank_kernels.shortlist_many`), the same positions."""
    n_contexts = len(shortlist.best)
    protected = np.zeros(len(codes), bool)
    numbers = _known_codes(shortlist.always, known_code)
    if numbers:
        always = np.zeros(width, bool)
        always[numbers] = True
        protected |= always[codes]
    wanted = [
        j * width + code
        for j, items in enumerate(shortlist.protected)
        for code in _known_codes(items, known_code)
    ]
    if wanted:
        protected |= np.isin(owners * width + codes, np.array(wanted, np.int64))
    gain = None
    if shortlist.gains:
        pairs = [
            (code, value)
            for code, value in zip(map(known_code, shortlist.gains), shortlist.gains.values(), strict=True)
            if code is not None
        ]
        if pairs:
            gain_of = np.full(width, -1.0)  # negative: no gain
            gain_of[[code for code, _ in pairs]] = [value for _, value in pairs]
            gain = gain_of[codes]
    bounds = np.searchsorted(owners, np.arange(n_contexts + 1))
    if compiled:
        return rank_kernels.shortlist_many(
            scores, protected, bounds, np.array(shortlist.best, np.int64), gain
        )
    others = np.where(protected, -math.inf, scores)
    bounds = bounds.tolist()
    cut = np.full(n_contexts, -math.inf)
    for j in range(n_contexts):
        lo, hi = bounds[j], bounds[j + 1]
        best = max(1, shortlist.best[j])  # never none: the caller tells "scored" from "not scored"
        if hi - lo > best:
            cut[j] = np.partition(others[lo:hi], hi - lo - best)[hi - lo - best]
    kept = protected | (scores >= cut[owners])
    if gain is not None:
        cut = cut[owners]
        with np.errstate(invalid="ignore"):  # inf + -inf is NaN, which falls short of nothing: kept
            kept |= (gain >= 0.0) & ~((scores + gain < cut) & (gain < cut))
    return np.flatnonzero(kept)


def _known_codes(items: Collection[str], known_code: Callable[[str], int | None]) -> list[int]:
    """The numbers of those ``items`` that have one (an item without one was not scored)."""
    return [code for code in map(known_code, items) if code is not None]
