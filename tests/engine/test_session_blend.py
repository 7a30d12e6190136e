"""The session model's blend over many contexts, and the shortlist that returns only the items that
can still make a user's top-k list: checked against a plain one-context blend and a full ranking."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable

import numpy as np
import pytest

from engine import session_blend
from engine.config import EngineSettings
from engine.evaluation.base import Context
from engine.generator import generate_events
from engine.logic import compute_delta
from engine.recommend import Recommender
from engine.session_blend import Shortlist, merge_add
from engine.session_kernels import AVAILABLE as COMPILED
from engine.sessionknn import PRESETS, SessionKNN, SessionKNNConfig, session_of, sr_sources
from engine.state.memory import MemoryStore

CONFIGS = {
    "sessions": PRESETS["sessions"],
    "users": PRESETS["users"],  # no neighbours: rules (row-normalised, popularity-divided) and trend
    "everything": PRESETS["sessions"].with_(
        trend_weight=0.2, sr_items=3, sr_row_norm=True, sr_pop_norm=0.3, length_norm=0.5
    ),
}


def plain_blend(model: SessionKNN, context: Context) -> dict[str, float]:
    """The blend one context at a time, one dict update per item: the oracle."""
    c = model.config
    out: dict[str, float] = {}
    knn = model.knn_scores(context) if c.k > 0 else {}
    if knn:
        top = max(knn.values())
        out = {item: value / top for item, value in knn.items()}
    if c.sr_weight > 0:
        divide_by = np.maximum(model.session_counts, 1.0) ** c.sr_pop_norm if c.sr_pop_norm else None
        rules = model.rules.votes(sr_sources(c, context.items), c.sr_row_norm, divide_by)
        if rules and max(rules.values()) > 0:
            weight = c.sr_weight / max(rules.values())
            for item, value in rules.items():
                out[item] = out.get(item, 0.0) + weight * value
    if c.reminder_weight:
        items = context.items[-c.max_session_length :]
        last = len(items) - 1
        reminders = {item: math.exp(-(last - p) / c.reminder_decay) for p, item in enumerate(items)}
        for item, value in reminders.items():
            out[item] = out.get(item, 0.0) + c.reminder_weight * value
    if c.trend_weight and model.trend_top > 0:
        weight = c.trend_weight / model.trend_top
        for item in out:
            out[item] += weight * model.trend.get(item, 0.0)
    return out


def trained(config: SessionKNNConfig, n_events: int = 4000) -> tuple[SessionKNN, list[Context]]:
    events = generate_events(n_events, n_users=300, n_items=400, seed=3)
    model = SessionKNN(config)
    key = (lambda e: e.user_id) if config.by_user else session_of
    model.learn(events[: n_events * 3 // 4])
    contexts = []
    for event in events[n_events * 3 // 4 :: 7]:
        items = tuple(model.sessions.get(key(event), ())) + (event.item_id,)
        contexts.append(Context(event.user_id, items, event.ts, key(event)))
    contexts.append(Context("new", ("never-seen", "also-new"), events[-1].ts, "fresh"))
    return model, contexts


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_blend_of_many_contexts_equals_the_plain_blend_exactly(name: str) -> None:
    model, contexts = trained(CONFIGS[name])
    together = model.scores_many(contexts)
    assert sum(bool(scores) for scores in together) > len(contexts) // 2
    for context, scores in zip(contexts, together, strict=True):
        assert scores == plain_blend(model, context)  # the same floats, not approximately
    names_before = len(model.rules.names)
    model.scores_many(contexts)
    assert len(model.rules.names) == names_before  # scoring an unseen item does not grow the model


def top(scores: dict[str, float], k: int, banned: set[str], boost: dict[str, float]) -> list[str]:
    """What the engine does after the session model: boost, drop banned items, best k by (score, id)."""
    raised = {item: value + boost.get(item, 0.0) for item, value in scores.items()}
    for item, value in boost.items():
        raised.setdefault(item, value)
    return [i for _, i in heapq.nsmallest(k, ((-v, i) for i, v in raised.items() if i not in banned))]


def check_shortlist(model: SessionKNN, contexts: list[Context], k: int, seed: int) -> int:
    rng = random.Random(seed)
    names = sorted(set(model.rules.names) | {i for c in contexts for i in c.items})
    full = model.scores_many(contexts)
    banned = [set(rng.sample(list(c.items), min(len(c.items), rng.randint(0, 4)))) for c in contexts]
    protected = [set(rng.sample(names, 5)) | set(rng.sample(list(f), min(len(f), 3))) for f in full]
    always = set(rng.sample(names, 8))
    short = model.scores_many(contexts, Shortlist([k + len(b) for b in banned], protected, always))
    pruned = 0
    for f, s, b, p in zip(full, short, banned, protected, strict=True):
        assert all(f[item] == value for item, value in s.items())  # a subset, same scores
        assert bool(f) == bool(s)
        for sign in (1.0, -1.0):  # raised or lowered: protected items are kept either way
            boost = {item: sign * rng.random() for item in p | always}
            assert top(s, k, b, boost) == top(f, k, b, boost)
        pruned += len(f) - len(s)
    # Items that gain up to a known amount (trending shares): kept only where that can matter.
    gains = {item: rng.choice([0.0, 0.02, 0.1, 0.5]) for item in rng.sample(names, len(names) // 3)}
    short = model.scores_many(contexts, Shortlist([k + len(b) for b in banned], protected, (), gains))
    for f, s, b, p in zip(full, short, banned, protected, strict=True):
        assert all(f[item] == value for item, value in s.items())
        for share in (1.0, rng.random()):  # the whole gain (ties at the cut), or part of it
            boost = {item: share * gain for item, gain in gains.items()}
            boost.update({item: rng.uniform(-1.0, 1.0) for item in p})
            assert top(s, k, b, boost) == top(f, k, b, boost)
    return pruned


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shortlisted_scores_give_the_same_top_k(name: str) -> None:
    model, contexts = trained(CONFIGS[name])
    assert check_shortlist(model, contexts, k=5, seed=1) > 0  # it does drop items


@pytest.mark.parametrize("compiled", [False, True] if COMPILED else [False])
@pytest.mark.parametrize("seed", range(10))
def test_items_with_gains_left_out_only_where_neither_way_they_reach_the_list(
    seed: int, compiled: bool
) -> None:
    """An item with a gain that the shortlist leaves out is still ranked, by its gain alone (a
    trending item scored by trending only): with scores below zero that ranks it higher than its
    score plus the gain would, so it must be kept where its gain alone reaches the cut."""
    rng = random.Random(seed)
    names = [f"i{n:02d}" for n in range(50)]
    full = [
        {
            item: rng.choice([-1.0, -0.25, 0.0, 0.25, 0.5, 1.0, rng.uniform(-1, 1)])
            for item in rng.sample(names, rng.randrange(0, 45))
        }
        for _ in range(30)
    ]
    gains = {item: rng.choice([0.0, 0.25, 0.5, 1.0]) for item in rng.sample(names, 20)}
    protected = [set(rng.sample(names, 2)) for _ in full]
    banned = [set(rng.sample(names, rng.randrange(0, 3))) for _ in full]
    k = rng.choice([1, 3, 8])
    owners = np.array([j for j, scores in enumerate(full) for _ in sorted(scores)], np.int64)
    codes = np.array([names.index(item) for scores in full for item in sorted(scores)], np.int64)
    values = np.array([scores[item] for scores in full for item in sorted(scores)])
    shortlist = Shortlist([k + len(b) for b in banned], protected, (), gains)
    kept = set(
        session_blend._shortlisted(
            owners, codes, values, shortlist, len(names), names.index, compiled
        ).tolist()
    )
    short: list[dict[str, float]] = [{} for _ in full]
    for position, (j, code) in enumerate(zip(owners.tolist(), codes.tolist(), strict=True)):
        if position in kept:
            short[j][names[code]] = float(values[position])
    assert len(kept) < len(values)
    for f, s, b, p in zip(full, short, banned, protected, strict=True):
        boost = dict(gains) | {item: rng.uniform(0.0, 1.0) for item in p}
        assert top(s, k, b, boost) == top(f, k, b, boost)


def test_shortlist_keeps_every_item_tied_at_the_cut() -> None:
    # Reminders that never decay: every context item scores the same, so ids decide the top k.
    model = SessionKNN(k=0, sr_weight=0.0, reminder_weight=1.0, reminder_decay=math.inf)
    items = tuple(f"i{n:02d}" for n in range(30))
    contexts = [Context("u", items[: 5 + n], 0.0, "s") for n in range(0, 25, 6)]
    for best in (1, 3, 10):
        short = model.scores_many(contexts, Shortlist([best] * len(contexts), [()] * len(contexts)))
        assert [len(s) for s in short] == [len(c.items) for c in contexts]
    check_shortlist(model, contexts, k=3, seed=2)


class TinySpace:
    """An exact cosine space over random item vectors (the ANN part of the engine's blend)."""

    version = "v1"
    dim = 8

    def __init__(self, items: Iterable[str]) -> None:
        rng = np.random.default_rng(0)
        self.ids = sorted(items)
        matrix = rng.normal(size=(len(self.ids), self.dim)).astype(np.float32)
        self.matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        self.row = {item: n for n, item in enumerate(self.ids)}

    def vectors(self, items: Iterable[str]) -> dict[str, np.ndarray]:
        return {item: self.matrix[self.row[item]] for item in items if item in self.row}

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        scores = queries @ self.matrix.T
        best = np.argsort(-scores, axis=1)[:, :k]
        return [[self.ids[n] for n in row] for row in best], np.take_along_axis(scores, best, axis=1)


@pytest.mark.parametrize("exclude_history", [False, True])
def test_recommender_lists_equal_the_ranking_of_full_scores(
    exclude_history: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = EngineSettings(session_model="sessions", exclude_history=exclude_history, ann_weight=0.3)
    store = MemoryStore(1, settings)
    log = generate_events(3000, n_users=150, n_items=200, seed=5)
    meta, users = store.load(0, {e.user_id: [e.event_id] for e in log})
    store.apply(compute_delta(0, list(enumerate(log)), users, meta, settings))
    space = TinySpace({e.item_id for e in log})
    everyone = {0: sorted({e.user_id for e in log})}

    def ranked() -> dict[str, list[tuple[str, float]]]:
        return Recommender(store, settings, space).for_partitions(everyone, k=10)[0]

    shortlisted = ranked()
    full_scores = SessionKNN.scores_many
    monkeypatch.setattr(
        SessionKNN, "scores_many", lambda self, contexts, shortlist=None: full_scores(self, contexts)
    )
    assert shortlisted == ranked()
    assert sum(len(items) == 10 for items in shortlisted.values()) > len(shortlisted) // 2


@pytest.mark.parametrize(
    "compiled",
    [False, pytest.param(True, marks=pytest.mark.skipif(not COMPILED, reason="numba is not installed"))],
)
@pytest.mark.parametrize("seed", range(5))
def test_merge_add_sums_each_key_in_order_like_a_dict(seed: int, compiled: bool) -> None:
    rng = np.random.default_rng(seed)
    parts = []
    for size in (int(rng.integers(0, 40)), int(rng.integers(0, 10)), int(rng.integers(0, 10))):
        keys = np.sort(rng.choice(60, size, replace=False)).astype(np.int64)
        parts.append((keys, rng.random(size) * rng.choice([1.0, 1e-9, 1e9], size)))
    expected: dict[int, float] = {}
    for keys, values in parts:
        for key, value in zip(keys.tolist(), values.tolist(), strict=True):
            expected[key] = expected.get(key, 0.0) + value
    keys, values = np.zeros(0, np.int64), np.zeros(0)
    for more in parts:
        keys, values = merge_add(keys, values, *more, compiled)
    assert keys.tolist() == sorted(expected)
    assert values.tolist() == [expected[key] for key in sorted(expected)]  # the same floats
