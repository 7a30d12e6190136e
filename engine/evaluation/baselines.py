"""Baselines under the evaluation interface: popularity, recent popularity, the engine's own
co-occurrence logic, and implicit ALS matrix factorisation retrained periodically.

>>> from engine.events import Event
>>> model = PopularityModel()
>>> model.learn([Event(str(n), 1e9 + n, "u", item, "click") for n, item in enumerate("abbccc")])
>>> model.recommend(Context("v"), 2), model.recommend(Context("v"), 2, exclude={"c"})
(['c', 'b'], ['b', 'a'])
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence

import numpy as np

from engine.config import EngineSettings
from engine.evaluation.base import Context, LearnsOneByOne
from engine.events import Event
from engine.logic import compute_delta
from engine.scoring import recent_items, score_user
from engine.state.base import UserProfile, keep_strongest
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
    store's neighbours and trending items, as :class:`engine.recommend.Recommender` does.

    The request's context (the session or user so far) becomes the profile's history, so a frozen
    evaluation, which never writes test events to the store, still scores with them. Two things
    only make it faster, not different: an item's merged neighbour row is cached until a delta
    touches that item (exact), and the trending list is re-read at most every
    ``trending_refresh`` learned events, as a worker reads it once per batch of that many events.
    Neighbours are fetched ``max(2 * (k + excluded), 50)`` deep so that the protocol's exclusions
    still leave ``k`` candidates (the worker asks ``max(2 * k, 50)`` and excludes nothing more).
    """

    name = "cooccurrence"

    def __init__(
        self, settings: EngineSettings | None = None, batch_size: int = 500, trending_refresh: int = 100
    ) -> None:
        # The co-occurrence scorer alone: the session model is evaluated as a model of its own.
        self.settings = settings or EngineSettings(session_model="off", cooccurrence_rows="on")
        if not self.settings.keeps_cooccurrence:
            raise ValueError("the co-occurrence baseline needs settings that keep the co-occurrence rows")
        self.store = MemoryStore(1, self.settings)
        self.batch_size = batch_size
        self.trending_refresh = trending_refresh
        self._offset = 0
        self._trending: list[tuple[str, float]] | None = None
        self._since_trending = 0
        self._rows: dict[str, dict[str, float]] = {}

    def learn(self, events: Iterable[Event]) -> None:
        batch: list[Event] = []
        for event in events:
            batch.append(event)
            if len(batch) >= self.batch_size:
                self._apply(batch)
                batch = []
        if batch:
            self._apply(batch)
        self._trending = None

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
        delta = compute_delta(0, records, users, meta, self.settings)
        self.store.apply(delta)
        for item in delta.cooccurrence:
            self._rows.pop(item, None)
        self._since_trending += len(events)
        if self._since_trending >= self.trending_refresh:
            self._trending = None

    def _neighbours(self, items: Sequence[str], n: int) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for item in items:
            row = self._rows.get(item)
            if row is None:
                row = self._rows[item] = self.store.neighbours([item], 1 << 30)[item]
            if len(row) > n:
                row = dict(row)
                keep_strongest(row, n)
            out[item] = row
        return out

    def recommend(self, context: Context, k: int, exclude: Collection[str] = ()) -> list[str]:
        s = self.settings
        profile = UserProfile(history=list(reversed(context.items))[: s.history_length])
        wanted = recent_items(profile, s)
        neighbours = self._neighbours(wanted, max((k + len(exclude)) * 2, 50)) if wanted else {}
        if self._trending is None:
            self._trending = self.store.trending(max(s.trending_candidates, k * 2))
            self._since_trending = 0
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


# --- rating prediction ---------------------------------------------------------------------------


class BiasedMFModel:
    """Biased matrix factorisation of explicit ratings (Funk-SVD style: ``mu + b_u + b_i + p_u . q_i``),
    trained by SGD: ``epochs`` passes over the first batch, then one update per streamed event.

    It predicts ratings (RMSE/MAE in the prequential protocol) and ranks items by ``b_i + p_u . q_i``.
    Events without a rating are learned as implicit interactions only for popularity of the ranking.
    """

    name = "svd"

    def __init__(
        self,
        factors: int = 32,
        learning_rate: float = 0.01,
        regularization: float = 0.05,
        epochs: int = 10,
        seed: int = 0,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.epochs = epochs
        self.rng = np.random.default_rng(seed)
        self.items = ItemIndex()
        self.users: dict[str, int] = {}
        self.item_bias = np.zeros(0)
        self.item_factors = np.zeros((0, factors))
        self.user_bias = np.zeros(0)
        self.user_factors = np.zeros((0, factors))
        self.total = 0.0
        self.count = 0
        self.low = math.inf
        self.high = -math.inf

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 3.0

    def _user(self, user: str) -> int:
        row = self.users.get(user)
        if row is None:
            row = self.users[user] = len(self.users)
            if row >= len(self.user_bias):
                size = max(64, 2 * len(self.user_bias))
                self.user_bias = _grow(self.user_bias, size)
                self.user_factors = _grow_rows(self.user_factors, size, self.rng)
        return row

    def _item(self, item: str) -> int:
        row = self.items.row(item)
        if row >= len(self.item_bias):
            size = max(64, 2 * len(self.item_bias))
            self.item_bias = _grow(self.item_bias, size)
            self.item_factors = _grow_rows(self.item_factors, size, self.rng)
        return row

    def _update(self, u: int, i: int, rating: float) -> None:
        lr, reg = self.learning_rate, self.regularization
        pu, qi = self.user_factors[u], self.item_factors[i]
        error = rating - (self.mean + self.user_bias[u] + self.item_bias[i] + pu @ qi)
        self.user_bias[u] += lr * (error - reg * self.user_bias[u])
        self.item_bias[i] += lr * (error - reg * self.item_bias[i])
        self.user_factors[u] = pu + lr * (error * qi - reg * pu)
        self.item_factors[i] = qi + lr * (error * pu - reg * qi)

    def _observe(self, event: Event) -> tuple[int, int, float | None]:
        u, i = self._user(event.user_id), self._item(event.item_id)
        if event.rating is not None:
            self.total += event.rating
            self.count += 1
            self.low, self.high = min(self.low, event.rating), max(self.high, event.rating)
        return u, i, event.rating

    def learn(self, events: Iterable[Event]) -> None:
        rated = [(u, i, r) for u, i, r in map(self._observe, events) if r is not None]
        for _ in range(self.epochs):
            for n in self.rng.permutation(len(rated)).tolist():
                self._update(*rated[n])

    def learn_one(self, event: Event) -> None:
        u, i, rating = self._observe(event)
        if rating is not None:
            self._update(u, i, rating)

    def predict_rating(self, user_id: str, item_id: str) -> float:
        value = self.mean
        u, i = self.users.get(user_id), self.items.rows.get(item_id)
        if u is not None:
            value += self.user_bias[u]
        if i is not None:
            value += self.item_bias[i]
        if u is not None and i is not None:
            value += float(self.user_factors[u] @ self.item_factors[i])
        if self.count:
            value = min(max(value, self.low), self.high)
        return value

    def recommend(self, context: Context, k: int, exclude: Collection[str] = ()) -> list[str]:
        n = len(self.items)
        scores = self.item_bias[:n].copy()
        u = self.users.get(context.user_id)
        if u is not None:
            scores += self.item_factors[:n] @ self.user_factors[u]
        return self.items.top(scores, k, exclude)


def _grow_rows(matrix: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if size <= len(matrix):
        return matrix
    extra = rng.normal(0.0, 0.1, (size - len(matrix), matrix.shape[1]))
    return np.vstack([matrix, extra])
