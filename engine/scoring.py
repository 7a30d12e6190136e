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
import math
from collections.abc import Mapping, Sequence
from itertools import pairwise

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


class TrendingPrior:
    """One scoring pass's trending list, prepared once for :func:`rank_session_user` of each of its
    users: each item's trending value, and whether the list runs from the largest value down (as
    the stores return it), which that function needs."""

    __slots__ = ("items", "ordered", "top", "value")

    def __init__(self, trending: Sequence[tuple[str, float]]) -> None:
        self.items = trending
        self.top = (trending[0][1] or 1.0) if trending else 1.0
        self.value = dict(trending)
        values = [value for _, value in trending]
        # finite, positive at the top (a share then falls with its value), one entry an item
        self.ordered = (
            self.top > 0
            and len(self.value) == len(trending)
            and all(map(math.isfinite, values))
            and all(higher >= lower for higher, lower in pairwise(values))
        )

    def shares(self, settings: EngineSettings) -> dict[str, float] | None:
        """What :func:`rank_session_user` adds to each trending item of a user with scores, the
        same floats; None where a share could be negative (a shortlist then keeps every item)."""
        weight = settings.trending_weight
        if not self.ordered or weight < 0 or any(value < 0 for value in self.value.values()):
            return None
        return {item: weight * value / self.top for item, value in self.items}


def rank_session_user(
    profile: UserProfile,
    session: dict[str, float],
    trending: TrendingPrior,
    settings: EngineSettings,
    k: int,
    similar: Mapping[str, float] | None = None,
) -> list[tuple[str, float]]:
    """``score_user(profile, {}, trending.items, settings, k, similar, session)``: the same list
    and floats, in less time.

    score_user adds every trending item to the user's scores and sorts them all. Here only the
    session's (and ANN) items get their trending share added; of the items that score by trending
    alone, only the ``k`` best can make the list, and they come first in the list's order (each
    one's score, ``blend * value / top``, falls with its value), so the walk down the list stops
    after them, and after any tied with the last. A score that is NaN, which sorts by position,
    or a list out of order, takes score_user's way instead."""
    if not trending.ordered or settings.trending_weight < 0:
        return score_user(profile, {}, trending.items, settings, k, similar, session)
    scores = dict(session) if similar else session  # only read unless copied
    if similar:
        for item, cosine in similar.items():
            if cosine > 0:
                scores[item] = scores.get(item, 0.0) + settings.ann_weight * cosine
    banned = banned_items(profile, settings)
    blend = settings.trending_weight if scores else 1.0
    top = trending.top
    value_of = trending.value
    pool = []
    for item, score in scores.items():
        if score != score:  # NaN
            return score_user(profile, {}, trending.items, settings, k, similar, session)
        value = value_of.get(item)
        if value is not None:  # the float TrendingPrior.shares gives, for a user with scores
            score = score + blend * value / top
        if item not in banned:
            pool.append((-score, item))
    taken, last = 0, None
    for item, value in trending.items:
        if item in scores or item in banned:
            continue
        score = 0.0 + blend * value / top
        if taken >= k and score != last:
            break
        pool.append((-score, item))
        taken, last = taken + 1, score
    pool.sort()
    return [(item, -negated) for negated, item in pool[:k]]
