"""Pure ranking and rating metrics, and an accumulator that adds one target at a time.

Every function takes the ranked list (best first) and what was relevant; no I/O.

>>> hit_rate(["a", "b", "c"], "b", 2), reciprocal_rank(["a", "b", "c"], "b", 2)
(1.0, 0.5)
>>> round(ndcg(["a", "b", "c"], "b", 3), 4)  # 1 / log2(3)
0.6309
>>> acc = Accumulator(ks=(1, 2))
>>> acc.add(["a", "b"], "b"), acc.add(["c", "d"], "c")  # the targets' ranks
(2, 1)
>>> acc.summary()["HR@1"], acc.summary()["MRR@2"]
(0.5, 0.75)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

Relevant = str | Collection[str]


def _as_set(relevant: Relevant) -> set[str]:
    return {relevant} if isinstance(relevant, str) else set(relevant)


def rank_of(ranked: Sequence[str], target: str, n: int | None = None) -> int:
    """1-based position of ``target`` in the first ``n`` of ``ranked``; 0 when absent."""
    top = ranked if n is None else ranked[:n]
    for position, item in enumerate(top, start=1):
        if item == target:
            return position
    return 0


def hit_rate(ranked: Sequence[str], relevant: Relevant, n: int) -> float:
    """1.0 when any relevant item is in the top ``n`` (HR@N for one target)."""
    wanted = _as_set(relevant)
    return 1.0 if any(item in wanted for item in ranked[:n]) else 0.0


def reciprocal_rank(ranked: Sequence[str], relevant: Relevant, n: int) -> float:
    """1/rank of the first relevant item within the top ``n``; 0.0 outside (MRR@N for one target)."""
    wanted = _as_set(relevant)
    for position, item in enumerate(ranked[:n], start=1):
        if item in wanted:
            return 1.0 / position
    return 0.0


def ndcg(ranked: Sequence[str], relevant: Relevant, n: int) -> float:
    """Binary-relevance NDCG@N: DCG of the top ``n`` over the DCG of an ideal list."""
    wanted = _as_set(relevant)
    if not wanted:
        return 0.0
    dcg = sum(1.0 / math.log2(p + 1) for p, item in enumerate(ranked[:n], start=1) if item in wanted)
    ideal = sum(1.0 / math.log2(p + 1) for p in range(1, min(len(wanted), n) + 1))
    return dcg / ideal


def precision(ranked: Sequence[str], relevant: Relevant, n: int) -> float:
    """Relevant items in the top ``n``, divided by ``n``."""
    wanted = _as_set(relevant)
    return sum(1 for item in ranked[:n] if item in wanted) / n


def recall(ranked: Sequence[str], relevant: Relevant, n: int) -> float:
    """Relevant items in the top ``n``, divided by the number of relevant items."""
    wanted = _as_set(relevant)
    if not wanted:
        return 0.0
    return sum(1 for item in ranked[:n] if item in wanted) / len(wanted)


def catalogue_coverage(lists: Iterable[Sequence[str]], catalogue_size: int, n: int | None = None) -> float:
    """Share of the catalogue that appears in at least one of the (top-``n``) lists."""
    if catalogue_size <= 0:
        return 0.0
    shown: set[str] = set()
    for ranked in lists:
        shown.update(ranked if n is None else ranked[:n])
    return len(shown) / catalogue_size


def popularity_bias(ranked: Sequence[str], popularity: Mapping[str, float], n: int | None = None) -> float:
    """Mean popularity of the recommended items (0 for unknown items); 0.0 for an empty list.

    Pass popularity normalised to [0, 1] (count / largest count) to compare across datasets.
    """
    top = ranked if n is None else ranked[:n]
    if not top:
        return 0.0
    return sum(popularity.get(item, 0.0) for item in top) / len(top)


def intra_list_diversity(
    ranked: Sequence[str],
    vectors: Mapping[str, np.ndarray] | None = None,
    categories: Mapping[str, str | Collection[str]] | None = None,
    n: int | None = None,
) -> float | None:
    """Mean pairwise distance of the listed items; ``None`` when it cannot be measured.

    With ``vectors`` the distance is ``1 - cosine``; with ``categories`` (an item's label or set of
    labels) it is ``1 - Jaccard`` of the label sets (1 for two different single labels). Items
    without a vector/category are left out; fewer than two measurable items give ``None``.
    """
    top = ranked if n is None else ranked[:n]
    if vectors is not None:
        known = [np.asarray(vectors[i], dtype=np.float64) for i in top if i in vectors]
        if len(known) < 2:
            return None
        matrix = np.stack(known)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.where(norms > 0, norms, 1.0)
        cosine = matrix @ matrix.T
        m = len(known)
        off_diagonal = cosine.sum() - np.trace(cosine)
        return float(1.0 - off_diagonal / (m * (m - 1)))
    if categories is not None:
        labels = [_as_set(categories[i]) for i in top if i in categories]
        if len(labels) < 2:
            return None
        distances = [1.0 - (len(a & b) / len(a | b) if a | b else 1.0) for a, b in combinations(labels, 2)]
        return sum(distances) / len(distances)
    return None


def rmse(predicted: Sequence[float], actual: Sequence[float]) -> float:
    if len(predicted) != len(actual):
        raise ValueError(f"{len(predicted)} predictions for {len(actual)} actual values")
    if not actual:
        return 0.0
    return math.sqrt(sum((p - a) ** 2 for p, a in zip(predicted, actual, strict=True)) / len(actual))


def mae(predicted: Sequence[float], actual: Sequence[float]) -> float:
    if len(predicted) != len(actual):
        raise ValueError(f"{len(predicted)} predictions for {len(actual)} actual values")
    if not actual:
        return 0.0
    return sum(abs(p - a) for p, a in zip(predicted, actual, strict=True)) / len(actual)


class Popularity(Mapping[str, float]):
    """Interaction counts read as popularity normalised to [0, 1] (count / largest count).

    >>> pop = Popularity(); pop.add("a"); pop.add("a"); pop.add("b")
    >>> pop["b"], pop.get("zzz", 0.0), len(pop)
    (0.5, 0.0, 2)
    """

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}
        self.top = 0.0

    def add(self, item: str, weight: float = 1.0) -> None:
        value = self.counts.get(item, 0.0) + weight
        self.counts[item] = value
        if value > self.top:
            self.top = value

    def __getitem__(self, item: str) -> float:
        return self.counts[item] / self.top

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.counts)

    def __len__(self) -> int:
        return len(self.counts)


# --- accumulation --------------------------------------------------------------------------------

# Per-target metrics that follow from the target's rank alone (single relevant item).
_FROM_RANK: dict[str, Callable[[int, int], float]] = {
    "HR": lambda r, n: 1.0 if 0 < r <= n else 0.0,
    "MRR": lambda r, n: 1.0 / r if 0 < r <= n else 0.0,
    "NDCG": lambda r, n: 1.0 / math.log2(r + 1) if 0 < r <= n else 0.0,
    "Precision": lambda r, n: 1.0 / n if 0 < r <= n else 0.0,
    "Recall": lambda r, n: 1.0 if 0 < r <= n else 0.0,
}


def metric_from_ranks(ranks: np.ndarray, name: str, n: int) -> np.ndarray:
    """Per-target values of ``name`` (HR, MRR, NDCG, Precision, Recall) at ``n`` from 1-based ranks
    (0 = not recommended); vectorised form of the functions above for one relevant item."""
    ranks = np.asarray(ranks)
    inside = (ranks > 0) & (ranks <= n)
    safe = np.where(inside, ranks, 1).astype(np.float64)
    if name in ("HR", "Recall"):
        values = np.ones_like(safe)
    elif name == "MRR":
        values = 1.0 / safe
    elif name == "NDCG":
        values = 1.0 / np.log2(safe + 1.0)
    elif name == "Precision":
        values = np.full_like(safe, 1.0 / n)
    else:
        raise ValueError(f"unknown metric {name!r}; expected one of {', '.join(_FROM_RANK)}")
    return np.where(inside, values, 0.0)


@dataclass
class Accumulator:
    """Adds one target at a time (its ranked list and the relevant item); summarises at the end.

    Keeps each target's rank (enough for HR/MRR/NDCG/precision/recall at every N and for sliding
    windows), the union of recommended items per N (coverage), the running popularity bias and, when
    ``categories`` or ``vectors`` are given, intra-list diversity at the largest N. ``segment`` labels
    (e.g. ``"cold"``) get their own summaries.
    """

    ks: Sequence[int] = (10, 20)
    popularity: Mapping[str, float] | None = None  # item -> popularity in [0, 1], read at add() time
    categories: Mapping[str, str | Collection[str]] | None = None
    vectors: Mapping[str, np.ndarray] | None = None
    ranks: list[int] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    _shown: dict[int, set[str]] = field(default_factory=dict)
    _popularity_sum: dict[int, float] = field(default_factory=dict)
    _diversity_sum: float = 0.0
    _diversity_n: int = 0
    predicted: list[float] = field(default_factory=list)
    actual: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ks = tuple(sorted(set(self.ks)))
        if not self.ks or self.ks[0] < 1:
            raise ValueError(f"cut-offs must be positive integers, got {self.ks}")
        self._shown = {n: set() for n in self.ks}
        self._popularity_sum = dict.fromkeys(self.ks, 0.0)

    @property
    def depth(self) -> int:
        """How many recommendations a target needs (the largest N)."""
        return self.ks[-1]

    def __len__(self) -> int:
        return len(self.ranks)

    def add(
        self,
        ranked: Sequence[str],
        target: str,
        segment: str = "",
        popularity: Mapping[str, float] | None = None,
    ) -> int:
        """Record one target; returns its rank within the top ``depth`` (0 = missed)."""
        rank = rank_of(ranked, target, self.depth)
        self.ranks.append(rank)
        self.segments.append(segment)
        pop = popularity if popularity is not None else self.popularity
        for n in self.ks:
            top = ranked[:n]
            self._shown[n].update(top)
            if pop is not None:
                self._popularity_sum[n] += popularity_bias(top, pop)
        if self.categories is not None or self.vectors is not None:
            diversity = intra_list_diversity(ranked, self.vectors, self.categories, self.depth)
            if diversity is not None:
                self._diversity_sum += diversity
                self._diversity_n += 1
        return rank

    def add_rating(self, predicted: float, actual: float) -> None:
        """Record one rating prediction (for RMSE/MAE)."""
        self.predicted.append(float(predicted))
        self.actual.append(float(actual))

    def summary(self, catalogue_size: int | None = None, segment: str | None = None) -> dict[str, float]:
        """Metric name (``HR@20``, ``MRR@20``, ...) -> mean over targets (of one ``segment``).

        Coverage needs ``catalogue_size``; popularity bias and diversity are only given when the
        accumulator had what they need. Segment summaries hold the rank-based metrics only.
        """
        ranks = np.asarray(self.ranks, dtype=np.int64)
        if segment is not None:
            ranks = ranks[np.asarray(self.segments) == segment] if len(ranks) else ranks
        out: dict[str, float] = {}
        for name in _FROM_RANK:
            for n in self.ks:
                values = metric_from_ranks(ranks, name, n)
                out[f"{name}@{n}"] = float(values.mean()) if len(values) else 0.0
        if segment is not None:
            return out
        count = len(self.ranks)
        for n in self.ks:
            if catalogue_size:
                out[f"Coverage@{n}"] = len(self._shown[n]) / catalogue_size
            if count and (self.popularity is not None or any(self._popularity_sum.values())):
                out[f"PopBias@{n}"] = self._popularity_sum[n] / count
        if self._diversity_n:
            out[f"ILD@{self.depth}"] = self._diversity_sum / self._diversity_n
        if self.actual:
            out["RMSE"] = rmse(self.predicted, self.actual)
            out["MAE"] = mae(self.predicted, self.actual)
        return out

    def curve(
        self, name: str, n: int, window: int = 1000, points: int = 200
    ) -> tuple[list[int], list[float]]:
        """Sliding-window mean of ``name@n`` over the targets in order: (target index, value) pairs.

        The first point is at ``min(window, count)`` targets; at most ``points`` points.
        """
        values = metric_from_ranks(np.asarray(self.ranks, dtype=np.int64), name, n)
        count = len(values)
        if count == 0:
            return [], []
        window = max(1, min(window, count))
        sums = np.concatenate(([0.0], np.cumsum(values)))
        ends = np.unique(np.linspace(window, count, num=min(points, count - window + 1)).astype(int))
        means = (sums[ends] - sums[ends - window]) / window
        return ends.tolist(), means.tolist()
