"""The neighbour-vote step of :class:`~engine.sessionknn.SessionKNN`, vectorised over many contexts.

Given each context's neighbours (session, similarity, anchor position), every neighbour votes for
its items: ``similarity x exp(-steps of the anchor from the context's end / anchor_decay)`` times
``exp(-|distance to the anchor| / item_decay)`` (``before_weight`` more before it), once per item
with ``distinct_votes``, then times the item's idf factor. All neighbours of all contexts become
flat arrays of item numbers; a handful of numpy calls then serve a whole poll of users, instead of
a Python loop per neighbour item or a round of numpy calls per user. The votes of one item add up
in neighbour order, as a plain loop over the neighbours would add them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from engine import rank_kernels
from engine.evaluation.base import Context

if TYPE_CHECKING:
    from engine.sessionknn import SessionKNN, SessionKNNConfig


class Neighbourhood(NamedTuple):
    """A context's neighbour sessions, best first, with their similarities, the position in the
    context of each one's anchor (its most recent shared item), and their numbers in the model's
    numbered view (:mod:`engine.session_numbers`)."""

    sids: list[str] | None  # None where the caller did not ask for them
    similarities: np.ndarray  # float64
    anchors: np.ndarray  # int64
    numbers: np.ndarray  # int32


class Votes(NamedTuple):
    """Scores of ``(context, item number)`` pairs, sorted by context, then item number."""

    owners: np.ndarray  # int64: the context's position in its chunk
    codes: np.ndarray  # int64: item numbers of the model's rule store
    scores: np.ndarray  # float64


EMPTY_NEIGHBOURHOOD = Neighbourhood([], np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int32))


def ranked_neighbourhoods(
    values: np.ndarray,
    anchors: np.ndarray,
    numbers: np.ndarray,
    context_of: np.ndarray,
    n_contexts: int,
    k: int,
    keys: np.ndarray,
    ids_of: Callable[[np.ndarray], list[str]],
    with_ids: bool = True,
    compiled: bool = False,
) -> list[Neighbourhood]:
    """Each context's ``k`` best of parallel candidates (grouped by ``context_of``, ascending),
    best first by (value, id) as heapq.nlargest would order them. Ties are common (neighbours
    seen after the context's own timestamp all get the full recency weight, and many share one
    item and so their similarity) and ids are unique, so nothing else decides. One numpy sort by
    context, value and ``keys`` (:func:`engine.session_numbers.id_key` of the ids, two columns) ranks the
    whole chunk; the ids themselves (``ids_of(numbers)``) are compared only where keys are equal
    too. Without ``with_ids`` the neighbourhoods' ``sids`` are None (the vote step reads numbers);
    ``compiled``: sorted per context (:func:`engine.rank_kernels.rank_many`), the same order.

    >>> from engine.session_numbers import id_key
    >>> values = np.array([0.5, 2.0, 0.5, 1.0, 0.5, 0.5, 3.0])
    >>> ids = np.array(["a", "b", "c", "d", "session-00000002", "session-00000001", "f"])
    >>> keys = np.array([id_key(sid) for sid in ids], np.uint64)
    >>> found = ranked_neighbourhoods(values, np.arange(7), np.arange(7), np.array([0, 0, 0, 0, 0, 0, 1]),
    ...                               2, 5, keys, lambda numbers: ids[numbers].tolist())
    >>> [one.sids for one in found]
    [['b', 'd', 'session-00000002', 'session-00000001', 'c'], ['f']]
    """
    if len(context_of) > 1 and (context_of[1:] < context_of[:-1]).any():
        raise ValueError("context_of must be ascending")
    bounds = np.searchsorted(context_of, np.arange(n_contexts + 1))
    # lexsort is stable: entries equal in every key keep their order, and are sorted by id below
    if compiled:
        order = rank_kernels.rank_many(values, keys, bounds)
    else:
        order = np.lexsort((~keys[:, 1], ~keys[:, 0], -values, context_of))
    rank = np.arange(len(order)) - bounds[context_of]  # context_of[order] is context_of
    ranked, ranked_keys = values[order], keys[order]
    same = (
        (ranked[1:] == ranked[:-1])
        & (ranked_keys[1:] == ranked_keys[:-1]).all(axis=1)
        & (context_of[1:] == context_of[:-1])
    )
    if same.any():  # ids that share their first 16 bytes
        starts = np.flatnonzero(np.concatenate(([True], ~same)))
        ends = np.append(starts[1:], len(ranked))
        tied = np.flatnonzero((ends - starts > 1) & (rank[starts] < k))
        if len(tied):
            positions = order.tolist()
            runs = list(zip(starts[tied].tolist(), ends[tied].tolist(), strict=True))
            members = [p for lo, hi in runs for p in positions[lo:hi]]
            id_of = dict(zip(members, ids_of(numbers[members]), strict=True))
            for lo, hi in runs:
                positions[lo:hi] = sorted(positions[lo:hi], key=id_of.__getitem__, reverse=True)
            order = np.array(positions, np.int64)
    order = order[rank < k]
    kept_bounds = np.searchsorted(context_of[order], np.arange(n_contexts + 1)).tolist()
    kept_values, kept_anchors, kept_numbers = values[order], anchors[order], numbers[order]
    sids = ids_of(kept_numbers) if with_ids else None
    out = []
    for j in range(n_contexts):
        lo, hi = kept_bounds[j], kept_bounds[j + 1]
        if lo == hi:
            out.append(EMPTY_NEIGHBOURHOOD)
        else:
            out.append(
                Neighbourhood(
                    sids[lo:hi] if sids is not None else None,
                    kept_values[lo:hi],
                    kept_anchors[lo:hi],
                    kept_numbers[lo:hi],
                )
            )
    return out


@lru_cache(maxsize=16)
def gap_weights(config: SessionKNNConfig) -> np.ndarray:
    """``exp(-|gap| / item_decay)`` (times ``before_weight`` before the anchor) for every gap from
    the anchor, at index ``gap + max_session_length``."""
    span = config.max_session_length
    weights = [math.exp(-abs(gap) / config.item_decay) for gap in range(-span, span + 1)]
    return np.array(
        [
            w * config.before_weight if gap < 0 else w
            for gap, w in zip(range(-span, span + 1), weights, strict=True)
        ]
    )


@lru_cache(maxsize=16)
def anchor_weights(config: SessionKNNConfig) -> np.ndarray:
    """``exp(-steps / anchor_decay)`` for every anchor distance from the context's end (1 when off)."""
    return np.array(decay_weights(config.anchor_decay or math.inf, config.max_session_length + 1))


@lru_cache(maxsize=16)
def position_weights(config: SessionKNNConfig) -> tuple[float, ...]:
    """``exp(-steps / position_decay)``: the weight of a context item ``steps`` from its end."""
    return decay_weights(config.position_decay, config.max_session_length)


@lru_cache(maxsize=64)
def decay_weights(decay: float, n: int) -> tuple[float, ...]:
    """``math.exp(-steps / decay)`` for ``steps = 0 .. n - 1`` (the floats of the expression)."""
    return tuple(math.exp(-steps / decay) for steps in range(n))


def latest_positions(items: Sequence[str]) -> list[tuple[str, int, int]]:
    """The distinct ``items`` (oldest first) as (item, position of its last occurrence, steps
    from that to the end), in order of that position.

    >>> latest_positions(["a", "b", "a", "c"])
    [('b', 1, 2), ('a', 2, 1), ('c', 3, 0)]
    """
    last = {item: position for position, item in enumerate(items)}
    end = len(items) - 1
    ordered = last.items() if len(last) == len(items) else sorted(last.items(), key=itemgetter(1))
    return [(item, position, end - position) for item, position in ordered]


def neighbour_votes(
    model: SessionKNN, contexts: Sequence[Context], neighbours: Sequence[Neighbourhood]
) -> list[dict[str, float]]:
    """Each context's votes per item from its neighbours in ``model``."""
    votes = vote_arrays(model, contexts, neighbours)
    return as_dicts(model.rules.names, votes.owners, votes.codes, votes.scores, len(contexts))


def as_dicts(
    names: Sequence[str], owners: np.ndarray, codes: np.ndarray, scores: np.ndarray, n_contexts: int
) -> list[dict[str, float]]:
    """Per-context ``{item name: score}`` of entries sorted by context (``owners``)."""
    out: list[dict[str, float]] = [{} for _ in range(n_contexts)]
    if not len(codes):
        return out
    bounds = np.searchsorted(owners, np.arange(n_contexts + 1)).tolist()
    code_list = codes.tolist()
    picked = itemgetter(*code_list)(names) if len(code_list) > 1 else (names[code_list[0]],)
    values = scores.tolist()
    for j in range(n_contexts):
        lo, hi = bounds[j], bounds[j + 1]
        if hi > lo:
            out[j] = dict(zip(picked[lo:hi], values[lo:hi], strict=True))
    return out


def group_max(owners: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each entry's group maximum, for entries sorted by group (``owners``, non-empty)."""
    starts = np.flatnonzero(np.diff(owners, prepend=-1))
    return np.repeat(np.maximum.reduceat(values, starts), np.diff(np.append(starts, len(owners))))


def idf_factors(model: SessionKNN, codes: np.ndarray | None = None) -> np.ndarray:
    """``1 + idf_weight * log(sessions / sessions with the item)`` of the items numbered ``codes``
    (of every item number when None)."""
    counts = model.idf_counts()
    if codes is not None:
        counts = counts[codes]
    return 1.0 + model.config.idf_weight * np.log(max(model.n_sessions, 1) / np.maximum(counts, 1.0))


def vote_arrays(
    model: SessionKNN,
    contexts: Sequence[Context],
    neighbours: Sequence[Neighbourhood],
    normalise: bool = False,
    idf: np.ndarray | None = None,
) -> Votes:
    """The votes of :func:`neighbour_votes` as arrays; with ``normalise``, each context's divided by
    its largest. ``idf``: :func:`idf_factors` of the model as it is (computed here when None)."""
    c = model.config
    numbers = model.rules.numbers
    context_codes: list[int] = []  # every context's item numbers, one context after the other
    anchor_at: list[np.ndarray] = []  # each row's anchor's place in context_codes
    anchor_steps: list[np.ndarray] = []
    sims: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    counts: list[int] = []
    for context, found in zip(contexts, neighbours, strict=True):
        counts.append(len(found.numbers))
        if not len(found.numbers):
            continue
        items = context.items[-c.max_session_length :]
        anchor_at.append(found.anchors + len(context_codes))
        # An anchor item no compared session lists (trimmed from them) may have no number in a
        # store-backed reader's model: -1 matches nothing, as an absent anchor should.
        context_codes.extend(map(numbers.get, items, repeat(-1)))
        anchor_steps.append(len(items) - 1 - found.anchors)
        sims.append(found.similarities)
        rows.append(found.numbers)
    if not rows:
        return Votes(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    arena, starts, lengths = model._numbers.item_rows(np.concatenate(rows), model.session_codes)
    anchor_codes = np.array(context_codes, np.int64)[np.concatenate(anchor_at)]
    row_owner = np.repeat(np.arange(len(counts)), counts)
    row_weight = np.concatenate(sims) * anchor_weights(c)[np.concatenate(anchor_steps)]
    n_names = len(model.rules.names)
    # The compiled loop also applies the idf factors and the division, when it has every factor.
    in_loop = model.compiled and (idf is not None or not c.idf_weight)
    if model.compiled:
        voted_owner, voted_codes, scores = model.vote_scratch.vote(
            arena,
            starts,
            lengths,
            row_weight,
            anchor_codes,
            row_owner,
            gap_weights(c),
            c.max_session_length,
            c.distinct_votes,
            n_names,
            factor=idf if in_loop and c.idf_weight else None,
            normalise=in_loop and normalise,
        )
    else:
        voted_owner, voted_codes, scores = _vote_passes(
            c, arena, starts, lengths, row_weight, anchor_codes, row_owner, n_names
        )
    if c.idf_weight and not in_loop:
        # Without ``idf``, per vote: fewer logs than one per catalogue item for a few contexts.
        # Either way each item's factor is computed alike, so the floats are the same.
        scores = scores * (idf[voted_codes] if idf is not None else idf_factors(model, voted_codes))
    if normalise and not in_loop and len(scores):
        scores = scores / group_max(voted_owner, scores)
    return Votes(voted_owner, voted_codes, scores)


def _vote_passes(
    c: SessionKNNConfig,
    arena: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    row_weight: np.ndarray,
    anchor_codes: np.ndarray,
    row_owner: np.ndarray,
    n_names: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The numpy passes of the vote step (what :mod:`engine.session_kernels` compiles): row ``r``
    holds the item numbers ``arena[starts[r] : starts[r] + lengths[r]]``; returns
    ``(owner, item number, vote)`` sorted by owner, then item number."""
    n_rows = len(lengths)
    total = int(lengths.sum())
    rows = np.repeat(np.arange(n_rows), lengths)
    first_of_row = np.cumsum(lengths) - lengths  # where each row starts in the flat codes
    positions_in_row = np.arange(total) - first_of_row[rows]
    codes = arena[starts[rows] + positions_in_row].astype(np.int64)
    # the anchor's last occurrence in each neighbour (its first item when absent)
    hit = codes == anchor_codes[rows]
    anchor_at = np.maximum.reduceat(np.where(hit, positions_in_row, 0), first_of_row)
    weights = gap_weights(c)[c.max_session_length + positions_in_row - anchor_at[rows]]
    if c.distinct_votes:
        # one vote per (neighbour, item): its strongest occurrence; sorted by neighbour after
        pair = rows * n_names + codes
        order = np.argsort(pair, kind="stable")  # rows are in order already: runs for timsort
        pair = pair[order]
        first = np.ones(total, bool)
        first[1:] = pair[1:] != pair[:-1]
        starts_of_pairs = np.flatnonzero(first)
        weights = np.maximum.reduceat(weights[order], starts_of_pairs)
        keep = order[starts_of_pairs]
        codes, rows = codes[keep], rows[keep]
    owner = row_owner[rows]
    # bincount adds in array order, which is neighbour order within each context
    voted, slot = np.unique(owner * n_names + codes, return_inverse=True)
    scores = np.bincount(slot, weights=row_weight[rows] * weights, minlength=len(voted))
    voted_owner, voted_codes = np.divmod(voted, n_names)
    return voted_owner, voted_codes, scores
