"""Pure scoring: a user's recent items, their neighbours and trending items -> ranked top-K.

>>> from engine.config import EngineSettings
>>> from engine.state.base import UserProfile
>>> profile = UserProfile(history=["a"], purchased={"c"})
>>> neighbours = {"a": {"b": 4.0, "c": 9.0, "d": 2.0}}
>>> [item for item, _ in score_user(profile, neighbours, [("z", 10.0)], EngineSettings(), k=3)]
['b', 'd', 'z']
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

import numpy as np

from engine.config import EngineSettings
from engine.state.base import UserProfile


def recent_items(profile: UserProfile, settings: EngineSettings) -> list[str]:
    """The distinct recent items whose neighbours are candidates, most recent first."""
    return list(dict.fromkeys(profile.history))[: settings.recent_items]


def banned_items(profile: UserProfile, settings: EngineSettings) -> set[str]:
    """Items never recommended to this user: what they bought (and saw, with ``exclude_history``)."""
    banned = set(profile.purchased)
    if settings.exclude_history:
        banned.update(profile.history)
    return banned


def score_user(
    profile: UserProfile,
    neighbours: Mapping[str, Mapping[str, float]],
    trending: Sequence[tuple[str, float]],
    settings: EngineSettings,
    k: int,
    similar: Mapping[str, float] | None = None,
    session: Mapping[str, float] | None = None,
) -> list[tuple[str, float]]:
    """Blend co-occurrence neighbours of the recent items, embedding neighbours of the user
    vector (``similar``: item -> cosine) and trending items; best first.

    Each item's neighbour weights are scaled by that item's strongest weight, so a very popular
    item does not drown the others; the n-th most recent item counts ``recency_decay**n``.
    Purchased items are never returned. ``session`` (the session model's scores, when it runs)
    takes the place of the co-occurrence part.
    """
    scores: dict[str, float] = dict(session) if session is not None else {}
    factor = 1.0
    for item in recent_items(profile, settings) if session is None else ():
        row = neighbours.get(item)
        if row:
            top = max(row.values())
            if top > 0:
                for other, weight in row.items():
                    scores[other] = scores.get(other, 0.0) + factor * weight / top
        factor *= settings.recency_decay
    if similar:
        for item, cosine in similar.items():
            if cosine > 0:
                scores[item] = scores.get(item, 0.0) + settings.ann_weight * cosine
    if trending:
        top = trending[0][1] or 1.0
        # Cold users get trending items alone; warm users get them as a small tie-breaking prior.
        blend = settings.trending_weight if scores else 1.0
        for item, value in trending:
            scores[item] = scores.get(item, 0.0) + blend * value / top
    banned = banned_items(profile, settings)
    # best first, ties by item id
    need = k + len(banned)
    if len(scores) > 2 * need + 16:
        # Only items scoring at least the need-th best can make the list: at most len(banned) of
        # them are banned, so the k best allowed ones are among them, ties at the cut included.
        values = np.fromiter(scores.values(), np.float64, len(scores))
        cut = float(np.partition(values, len(values) - need)[len(values) - need])
        pool = [(-s, i) for i, s in scores.items() if s >= cut and i not in banned]
    else:
        pool = [(-s, i) for i, s in scores.items() if i not in banned]
    # a sort is several times faster than a heap for the pool sizes the cut leaves (~k to ~4k);
    # many items tied at the cut can leave a long pool, where the heap wins
    ranked = sorted(pool)[:k] if len(pool) <= 4 * need + 64 else heapq.nsmallest(k, pool)
    return [(item, -negated) for negated, item in ranked]
