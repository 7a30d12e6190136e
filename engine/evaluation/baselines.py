"""Baselines under the evaluation interface: popularity, recent popularity, the engine's own
co-occurrence logic, and implicit ALS matrix factorisation retrained periodically.

>>> from engine.events import Event
>>> model = PopularityModel()
>>> model.learn([Event(str(n), 1e9 + n, "u", item, "click") for n, item in enumerate("abbccc")])
>>> model.recommend(Context("v"), 2), model.recommend(Context("v"), 2, exclude={"c"})
(['c', 'b'], ['b', 'a'])
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import numpy as np

from engine.config import EngineSettings
from engine.evaluation.base import Context, LearnsOneByOne
from engine.events import Event
from engine.logic import compute_delta
from engine.scoring import recent_items, score_user
from engine.state.base import UserProfile
from engine.state.memory import MemoryStore


class ItemIndex:
    """Item id <-> dense row number, and a growing float array of per-item scores."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, item: str) -> int:
        row = self.rows.get(item)
        if row is None:
            row = self.rows[item] = len(self.ids)
            self.ids.append(item)
        return row

    def top(self, scores: np.ndarray, k: int, exclude: Collection[str] = ()) -> list[str]:
        """The ``k`` best rows of ``scores`` (one per known item) as item ids; ties by row number."""
        n = min(len(self.ids), len(scores))
        scores = scores[:n]
        banned = [r for i in exclude if (r := self.rows.get(i, n)) < n] if exclude else []
        want = min(n, k + len(banned))
        if want <= 0:
            return []
        if want < n:
            part = np.argpartition(-scores, want - 1)[:want]
        else:
            part = np.arange(n)
        order = part[np.lexsort((part, -scores[part]))]
        if banned:
            blocked = set(banned)
            order = np.array([r for r in order.tolist() if r not in blocked], dtype=np.int64)
        return [self.ids[r] for r in order[:k].tolist()]


def _grow(array: np.ndarray, size: int) -> np.ndarray:
    if size <= len(array):
        return array
    bigger = np.zeros(max(size, 2 * len(array), 64), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


class PopularityModel(LearnsOneByOne):
    """Most interacted-with items so far."""

    name = "popularity"

    def __init__(self) -> None:
        self.index = ItemIndex()
        self.counts = np.zeros(0)

    def learn_one(self, event: Event) -> None:
        row = self.index.row(event.item_id)
        self.counts = _grow(self.counts, row + 1)
        self.counts[row] += 1.0

    def recommend(self, context: Context, k: int, exclude: Collection[str] = ()) -> list[str]:
        return self.index.top(self.counts, k, exclude)


class RecentPopularityModel(LearnsOneByOne):
    """Exponentially decayed interaction counts (half-life in seconds of event time)."""

    name = "recent-popularity"

    def __init__(self, half_life_s: float = 86_400.0) -> None:
        if half_life_s <= 0:
            raise ValueError("half-life must be positive")
        self.half_life_s = half_life_s
        self.index = ItemIndex()
        self.scores = np.zeros(0)
        self.epoch: float | None = None

    def learn_one(self, event: Event) -> None:
        if self.epoch is None:
            self.epoch = event.ts
        exponent = (event.ts - self.epoch) / self.half_life_s
        if exponent > 60.0:  # rebase before the weights overflow
            self.scores *= 2.0**-exponent
            self.epoch, exponent = event.ts, 0.0
        row = self.index.row(event.item_id)
        self.scores = _grow(self.scores, row + 1)
        self.scores[row] += 2.0**exponent

    def recommend(self, context: Context, k: int, exclude: Collection[str] = ()) -> list[str]:
        return self.index.top(self.scores, k, exclude)


class CooccurrenceModel:
    """The production logic itself: :func:`engine.logic.compute_delta` applied to a
    :class:`~engine.state.memory.MemoryStore`, ranked by :func:`engine.scoring.score_user` with the
    store's neighbours and trending items, exactly as :class:`engine.recommend.Recommender` does.

    The request's context (the session or user so far) becomes the profile's history, so a frozen
    evaluation, which never writes test events to the store, still scores with them.
    """

    name = "cooccurrence"

    def __init__(self, settings: EngineSettings | None = None, batch_size: int = 500) -> None:
        self.settings = settings or EngineSettings()
        self.store = MemoryStore(1, self.settings)
        self.batch_size = batch_size
        self._offset = 0
        self._trending: list[tuple[str, float]] | None = None

    def learn(self, events: Iterable[Event]) -> None:
        batch: list[Event] = []
        for event in events:
            batch.append(event)
            if len(batch) >= self.batch_size:
                self._apply(batch)
                batch = []
        if batch:
            self._apply(batch)

    def learn_one(self, event: Event) -> None:
        self._apply([event])

    def _apply(self, events: Sequence[Event]) -> None:
        records = []
        for event in events:
            records.append((self._offset, event))
            self._offset += 1
        wanted: dict[str, list[str]] = {}
        for event in events:
            wanted.setdefault(event.user_id, []).append(event.event_id)
        meta, users = self.store.load(0, wanted)
        self.store.apply(compute_delta(0, records, users, meta, self.settings))
        self._trending = None

    def recommend(self, context: Context, k: int, exclude: Collection[str] = ()) -> list[str]:
        s = self.settings
        profile = UserProfile(history=list(reversed(context.items))[: s.history_length])
        wanted = recent_items(profile, s)
        neighbours = self.store.neighbours(wanted, max((k + len(exclude)) * 2, 50)) if wanted else {}
        if self._trending is None:  # unchanged until the next learn
            self._trending = self.store.trending(max(s.trending_candidates, k * 2))
        trending = self._trending
        if exclude:
            trending = [(i, v) for i, v in trending if i not in exclude]
        ranked = score_user(profile, neighbours, trending, s, k + len(exclude))
        return [item for item, _ in ranked if item not in exclude][:k]


# --- implicit ALS --------------------------------------------------------------------------------


class _Side:
    """The interactions (row, column, confidence) from one side's point of view, with the flat
    indices that let ``np.bincount`` sum per-interaction vectors into their rows."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, conf: np.ndarray, n_rows: int, f: int) -> None:
        self.rows, self.cols, self.conf = rows, cols, conf
        self.n_rows, self.f = n_rows, f
        self.flat = (rows[:, None] * f + np.arange(f)[None, :]).ravel()

    def row_sums(self, values: np.ndarray) -> np.ndarray:
        """Sum the per-interaction rows of ``values`` into one row per entity."""
        out = np.bincount(self.flat, weights=values.ravel(), minlength=self.n_rows * self.f)
        return out.reshape(self.n_rows, self.f)


def _cg_solve(side: _Side, x: np.ndarray, y: np.ndarray, reg: float, steps: int) -> None:
    """A few conjugate-gradient steps on every row of ``x`` at once (Hu, Koren and Volinsky's
    normal equations with confidence ``conf``; Takacs et al.'s CG), in place."""
    f = y.shape[1]
    yty = y.T @ y + reg * np.eye(f)
    yc = np.take(y, side.cols, axis=0)
    extra_conf = side.conf - 1.0

    def times_a(p: np.ndarray) -> np.ndarray:
        dots = np.einsum("nf,nf->n", yc, np.take(p, side.rows, axis=0))
        return p @ yty + side.row_sums((extra_conf * dots)[:, None] * yc)

    r = side.row_sums(side.conf[:, None] * yc) - times_a(x)
    p = r.copy()
    rs = np.einsum("nf,nf->n", r, r)
    for _ in range(steps):
        ap = times_a(p)
        denom = np.einsum("nf,nf->n", p, ap)
        alpha = np.divide(rs, denom, out=np.zeros_like(rs), where=denom > 1e-20)
        x += alpha[:, None] * p
        r -= alpha[:, None] * ap
        rs_new = np.einsum("nf,nf->n", r, r)
        beta = np.divide(rs_new, rs, out=np.zeros_like(rs), where=rs > 1e-20)
        p = r + beta[:, None] * p
        rs = rs_new


class ALSModel:
    """Implicit-feedback ALS (confidence ``1 + alpha * count``), retrained from scratch on all events
    learned so far every ``retrain_every`` events; the request's user factor is recomputed from the
    context's items at each request (fold-in), so new sessions and fresh history count at once.
    Items first seen after the last training cannot be recommended until the next one."""

    name = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        cg_steps: int = 3,
        retrain_every: int = 5000,
        seed: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.cg_steps = cg_steps
        self.retrain_every = retrain_every
        self.seed = seed
        self.items = ItemIndex()
        self.users: dict[str, int] = {}
        self.pairs: dict[tuple[int, int], float] = {}
        self.item_factors: np.ndarray | None = None  # rows of items known at the last training
        self._yty: np.ndarray | None = None
        self._since = 0

    def _add(self, event: Event) -> None:
        user = self.users.setdefault(event.user_id, len(self.users))
        key = (user, self.items.row(event.item_id))
        self.pairs[key] = self.pairs.get(key, 0.0) + 1.0

    def learn(self, events: Iterable[Event]) -> None:
        for event in events:
            self._add(event)
        self.fit()

    def learn_one(self, event: Event) -> None:
        self._add(event)
        self._since += 1
        if self._since >= self.retrain_every:
            self.fit()

    def fit(self) -> None:
        self._since = 0
        if not self.pairs:
            return
        keys = np.array(list(self.pairs), dtype=np.int64)
        counts = np.fromiter(self.pairs.values(), dtype=np.float64, count=len(self.pairs))
        conf = 1.0 + self.alpha * counts
        n_users, n_items = len(self.users), len(self.items)
        rng = np.random.default_rng(self.seed)
        x = rng.normal(0, 0.01, (n_users, self.factors))
        y = rng.normal(0, 0.01, (n_items, self.factors))
        by_user = _Side(keys[:, 0], keys[:, 1], conf, n_users, self.factors)
        by_item = _Side(keys[:, 1], keys[:, 0], conf, n_items, self.factors)
        for _ in range(self.iterations):
            _cg_solve(by_user, x, y, self.regularization, self.cg_steps)
            _cg_solve(by_item, y, x, self.regularization, self.cg_steps)
        self.item_factors = y
        self._yty = y.T @ y

    def user_factor(self, items: Sequence[str]) -> np.ndarray | None:
        """The least-squares user factor for these interactions, the item factors held fixed."""
        y = self.item_factors
        if y is None or self._yty is None:
            return None
        counts: dict[int, float] = {}
        known = y.shape[0]
        for item in items:
            row = self.items.rows.get(item)
            if row is not None and row < known:
                counts[row] = counts.get(row, 0.0) + 1.0
        if not counts:
            return None
        rows = np.fromiter(counts, dtype=np.int64, count=len(counts))
        conf = 1.0 + self.alpha * np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        yu = y[rows]
        a = self._yty + (yu.T * (conf - 1.0)) @ yu + self.regularization * np.eye(self.factors)
        return np.linalg.solve(a, yu.T @ conf)

    def recommend(self, context: Context, k: int, exclude: Collection[str] = ()) -> list[str]:
        factor = self.user_factor(context.items)
        if factor is None or self.item_factors is None:
            return []
        scores = self.item_factors @ factor
        return self.items.top(scores, k, exclude)
