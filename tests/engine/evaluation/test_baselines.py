"""Baselines: popularity, recent popularity, the production co-occurrence path, ALS and biased MF."""

from __future__ import annotations

import random

import numpy as np
import pytest

from engine.config import EngineSettings
from engine.evaluation.base import Context, top_k
from engine.evaluation.baselines import (
    ALSModel,
    BiasedMFModel,
    CooccurrenceModel,
    ItemIndex,
    PopularityModel,
    RecentPopularityModel,
)
from engine.evaluation.peers import VSKNNPeer
from engine.events import Event
from engine.recommend import Recommender

T0 = 1_400_000_000.0


def click(n: int, user: str, item: str, ts: float) -> Event:
    return Event(f"e{n}", ts, user, item, "click", user)


def random_sessions(n_sessions: int = 200, n_items: int = 40, seed: int = 7) -> list[Event]:
    """Sessions that walk a ring of items (i -> i+1 mostly), so neighbours are learnable."""
    rng = random.Random(seed)
    events: list[Event] = []
    ts = T0
    for s in range(n_sessions):
        item = rng.randrange(n_items)
        for _ in range(rng.randint(2, 6)):
            events.append(click(len(events), f"s{s}", f"i{item}", ts))
            ts += 10
            item = (item + (1 if rng.random() < 0.8 else rng.randrange(n_items))) % n_items
    return events


def test_top_k_orders_by_score_then_id_and_excludes() -> None:
    scores = {"b": 1.0, "a": 1.0, "c": 3.0, "d": 0.5}
    assert top_k(scores, 3) == ["c", "a", "b"]
    assert top_k(scores, 2, exclude={"c"}) == ["a", "b"]
    big = {f"i{n:03d}": float(n % 7) for n in range(200)}
    assert top_k(big, 5) == sorted(big, key=lambda i: (-big[i], i))[:5]


def test_item_index_top_handles_ties_exclusions_and_short_score_arrays() -> None:
    index = ItemIndex()
    for item in "abcd":
        index.row(item)
    scores = np.array([1.0, 3.0, 3.0, 0.0])
    assert index.top(scores, 2) == ["b", "c"]
    assert index.top(scores, 2, exclude={"b", "zzz"}) == ["c", "a"]
    assert index.top(scores[:2], 5) == ["b", "a"]  # items beyond the scores are not ranked
    assert index.top(scores, 0) == []


def test_popularity_counts_everything_learned() -> None:
    model = PopularityModel()
    model.learn([click(0, "u", "a", T0), click(1, "u", "b", T0), click(2, "v", "b", T0)])
    assert model.recommend(Context("x"), 5) == ["b", "a"]
    model.learn_one(click(3, "v", "a", T0))
    model.learn_one(click(4, "v", "a", T0))
    assert model.recommend(Context("x"), 1) == ["a"]


def test_recent_popularity_forgets_old_clicks_and_survives_long_gaps() -> None:
    model = RecentPopularityModel(half_life_s=3600)
    model.learn([click(n, "u", "old", T0) for n in range(10)])
    model.learn([click(10 + n, "u", "new", T0 + 4 * 3600) for n in range(2)])
    assert model.recommend(Context("x"), 2) == ["new", "old"]  # 2 > 10 / 16
    model.learn_one(click(99, "u", "later", T0 + 400 * 86400))  # far beyond the rebase point
    assert model.recommend(Context("x"), 1) == ["later"]
    assert np.isfinite(model.scores).all()
    with pytest.raises(ValueError):
        RecentPopularityModel(half_life_s=0)


def test_cooccurrence_model_ranks_exactly_as_the_production_recommender() -> None:
    settings = EngineSettings(session_model="off")
    model = CooccurrenceModel(settings, batch_size=37, trending_refresh=1)
    events = random_sessions()
    model.learn(events)
    recommender = Recommender(model.store, settings)
    for user in ("s3", "s50", "s199"):
        profile, expected = recommender.for_user(user, k=10)
        context = Context(user, tuple(reversed(profile.history)), events[-1].ts, user)
        assert model.recommend(context, 10) == [item for item, _ in expected]


def test_cooccurrence_model_learns_one_event_at_a_time_like_a_batch() -> None:
    events = random_sessions(60)
    batch, single = CooccurrenceModel(batch_size=1000), CooccurrenceModel(trending_refresh=1)
    batch.learn(events)
    for event in events:
        single.learn_one(event)
    context = Context("new", ("i3", "i4"), events[-1].ts)
    assert batch.recommend(context, 10) == single.recommend(context, 10)
    assert "i4" not in batch.recommend(context, 10)  # production excludes the recent history
    assert "i5" in batch.recommend(context, 3)


def test_als_learns_the_ring_structure_and_folds_in_new_users() -> None:
    events = random_sessions(300)
    model = ALSModel(factors=16, iterations=10, retrain_every=50)
    model.learn(events)
    assert model.recommend(Context("new"), 5) == []  # nothing known about this user
    ranked = model.recommend(Context("new", ("i10", "i11")), 10)
    assert len(ranked) == 10
    assert {"i9", "i12"} & set(ranked[:6])
    assert "i11" not in model.recommend(Context("new", ("i10", "i11")), 10, exclude={"i11"})
    factors = model.item_factors
    for n in range(50):
        model.learn_one(click(10_000 + n, "late", "brand-new", T0 + 1e6 + n))
    assert model.item_factors is not factors  # retrained after 50 events
    assert "brand-new" in model.items.rows


def test_biased_mf_predicts_ratings_in_range_and_learns_user_bias() -> None:
    rng = random.Random(3)
    events = []
    for n in range(3000):
        user, item = f"u{rng.randrange(30)}", f"i{rng.randrange(50)}"
        value = 5.0 if user in ("u0", "u1") else float(rng.choice([1, 2, 3]))
        events.append(Event(f"r{n}", T0 + n, user, item, "view", rating=value))
    model = BiasedMFModel(epochs=5)
    model.learn(events[:2000])
    for event in events[2000:]:
        model.learn_one(event)
    assert model.predict_rating("u0", "i1") > model.predict_rating("u5", "i1") + 1.0
    assert 1.0 <= model.predict_rating("u5", "unknown") <= 5.0
    assert model.predict_rating("stranger", "i1") == pytest.approx(
        model.mean + model.item_bias[model.items.rows["i1"]], abs=1e-9
    )
    assert len(model.recommend(Context("u0"), 5, exclude={"i1"})) == 5


def test_vsknn_peer_votes_with_neighbour_sessions_and_skips_its_own() -> None:
    model = VSKNNPeer(k=10, sample=10)
    model.learn([click(0, "s1", "a", T0), click(1, "s1", "b", T0 + 1), click(2, "s2", "c", T0 + 2)])
    model.learn_one(click(3, "live", "a", T0 + 3))
    model.learn_one(click(4, "live", "z", T0 + 4))
    ranked = model.recommend(Context("live", ("a",), T0 + 5, "live"), 5)
    assert set(ranked) == {"a", "b"}  # z only occurs in the live session itself
    assert model.recommend(Context("q"), 5) == []
