"""The neighbour search of :class:`~engine.sessionknn.SessionKNN` for a chunk of contexts at once,
with the compiled loops of :mod:`engine.session_kernels`: the same neighbours, similarities and
order as :meth:`~engine.sessionknn.SessionKNN.neighbourhood` gives one context at a time.

Per context that method pays ~20 numpy calls of fixed cost (the sample and top-k choices, the
recency factor); on a live stream, where every event's user is scored, that cost is paid per
event. Here two compiled passes serve the whole chunk: the candidates of every context, cut to
its ``sample`` most recent, then its ``k`` best; the recency factor is one numpy expression over
the chunk (numpy's, not libm's, so the floats are the per-context ones). Ids are looked up only
for the chosen neighbours and where ties at the sample's cut need them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from engine import rank_kernels
from engine.evaluation.base import Context
from engine.session_votes import Neighbourhood, ranked_neighbourhoods

if TYPE_CHECKING:
    from engine.session_numbers import SessionNumbers
    from engine.sessionknn import SessionKNN


def neighbourhoods(
    model: SessionKNN,
    contexts: Sequence[Context],
    with_ids: bool = True,
    latest: Sequence[list[tuple[str, int, int]]] | None = None,
) -> list[Neighbourhood]:
    """:meth:`SessionKNN.neighbourhood` of each context (``sids`` None without ``with_ids``);
    ``latest``: each context's :func:`~engine.session_votes.latest_positions`, when the caller has
    them."""
    c = model.config
    # The compiled path tells held sessions by their timestamps and needs no sizes: the presets'
    # case. A store-backed reader, or a length norm, takes the per-context path.
    if not (model.compiled and model.stamped_when_held and not c.length_norm):
        return [model.neighbourhood(context) for context in contexts]
    numbers = model._numbers
    numbers.rebuild_if_outgrown(len(model.session_ts))
    if latest is None:
        parts = [model.index_parts(context) for context in contexts]
    else:
        parts = [model.index_parts(context, mine) for context, mine in zip(contexts, latest, strict=True)]
    every = [part for context_parts in parts for part in context_parts]
    slots, weights, positions = zip(*every, strict=True) if every else ((), (), ())
    counts = [len(context_parts) for context_parts in parts]
    owns = [context.session_id for context in contexts]
    chosen, context_of, tied = numbers.candidates_many(slots, weights, positions, counts, owns, c.sample)
    if tied.any():
        keep = _break_ties_at_the_cut(numbers, chosen.numbers, chosen.stamps, context_of, tied, c.sample)
        chosen, context_of = chosen.take(keep), context_of[keep]
    values = chosen.similarities
    if c.recency_half_life_s is not None:
        now = np.array([context.ts for context in contexts])[context_of]
        # a session without a timestamp counts as seen now
        seen = np.where(chosen.stamps == -math.inf, now, chosen.stamps)
        values = values * 0.5 ** (np.maximum(0.0, now - seen) / c.recency_half_life_s)
    bounds = np.searchsorted(context_of, np.arange(len(contexts) + 1))
    best = rank_kernels.best_many(values, chosen.stamps > -math.inf, bounds, c.k)
    kept = chosen.numbers[best]
    return ranked_neighbourhoods(
        values[best],
        chosen.anchors[best],
        kept,
        context_of[best],
        len(contexts),
        c.k,
        numbers.keys(kept),
        numbers.ids,
        with_ids,
        compiled=True,
    )


def _break_ties_at_the_cut(
    numbers: SessionNumbers,
    chosen: np.ndarray,
    stamps: np.ndarray,
    context_of: np.ndarray,
    tied: np.ndarray,
    sample: int,
) -> np.ndarray:
    """Positions to keep where a context's sessions tied at its sample's cut outnumber the places
    left: the newer ones, and of the tied ones the greatest ids (as a store-backed reader, whose
    numbers differ, would also pick)."""
    keep = np.ones(len(chosen), bool)
    for j in np.flatnonzero(tied).tolist():
        mine = np.flatnonzero(context_of == j)
        cut = stamps[mine].min()  # only candidates at least as recent as the cut were kept
        newer = int((stamps[mine] > cut).sum())
        at_cut = mine[stamps[mine] == cut]
        by_id = sorted(zip(numbers.ids(chosen[at_cut]), at_cut.tolist(), strict=True), reverse=True)
        keep[at_cut] = False
        keep[[position for _, position in by_id[: sample - newer]]] = True
    return np.flatnonzero(keep)
