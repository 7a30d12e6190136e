"""score_user: known rankings and scores for small, hand-computed cases."""

from __future__ import annotations

import math

import pytest

from engine.config import EngineSettings
from engine.scoring import TrendingPrior, rank_session_user, recent_items, score_user
from engine.state.base import UserProfile

S = EngineSettings()  # recency_decay 0.7, trending_weight 0.05, ann_weight 0.5

Ranked = list[tuple[str, float]]


def profile(*history: str, purchased: tuple[str, ...] = ()) -> UserProfile:
    return UserProfile(history=list(history), purchased=set(purchased))


def same(ranked: Ranked, expected: Ranked) -> bool:
    """Same items in the same order, scores equal up to float rounding."""
    assert [i for i, _ in ranked] == [i for i, _ in expected]
    assert [w for _, w in ranked] == pytest.approx([w for _, w in expected], rel=1e-12)
    return True


def items(ranked: Ranked) -> list[str]:
    return [item for item, _ in ranked]


def test_recency_weighting() -> None:
    neighbours = {"a": {"x": 2.0, "y": 1.0}, "b": {"y": 10.0, "z": 5.0}}
    # x = 2/2; y = 1/2 + 0.7 * 10/10; z = 0.7 * 5/10
    assert same(score_user(profile("a", "b"), neighbours, [], S, 10), [("y", 1.2), ("x", 1.0), ("z", 0.35)])
    # The same neighbours with the history reversed: b is now the recent one.
    # y = 0.7 * 1/2 + 10/10; z = 5/10; x = 0.7 * 2/2
    assert same(score_user(profile("b", "a"), neighbours, [], S, 10), [("y", 1.35), ("x", 0.7), ("z", 0.5)])


def test_normalisation_by_each_items_top_weight() -> None:
    neighbours = {"a": {"x": 1000.0, "y": 500.0}, "b": {"z": 3.0, "w": 1.0}}
    ranked = score_user(profile("b", "a"), neighbours, [], S, 10)
    # A popular item's large raw weights do not drown the recent item's neighbours.
    assert same(ranked, [("z", 1.0), ("x", 0.7), ("y", 0.35), ("w", 1 / 3)])


def test_recent_items_are_distinct_and_cut() -> None:
    assert recent_items(profile("a", "a", "b", "a", "c"), S) == ["a", "b", "c"]
    assert recent_items(profile("a", "b", "c"), EngineSettings(recent_items=2)) == ["a", "b"]
    neighbours = {"a": {"x": 1.0}, "b": {"y": 1.0}, "c": {"z": 1.0}}
    # A repeated item does not push the next one further back.
    assert same(score_user(profile("a", "a", "b"), neighbours, [], S, 10), [("x", 1.0), ("y", 0.7)])
    only_two = score_user(profile("a", "b", "c"), neighbours, [], EngineSettings(recent_items=2), 10)
    assert items(only_two) == ["x", "y"]


def test_items_without_neighbours_still_age_the_later_ones() -> None:
    neighbours = {"a": {"x": 1.0}, "c": {"z": 1.0}, "b": {"q": 0.0}}
    ranked = score_user(profile("a", "b", "c"), neighbours, [], S, 10)
    assert same(ranked, [("x", 1.0), ("z", 0.49)])  # b's all-zero row contributes nothing


def test_purchased_items_are_never_returned() -> None:
    neighbours = {"a": {"x": 9.0, "y": 1.0}}
    trending = [("x", 5.0), ("t", 4.0)]
    for exclude in (True, False):
        settings = EngineSettings(exclude_history=exclude)
        ranked = score_user(profile("a", purchased=("x", "t")), neighbours, trending, settings, 10)
        assert items(ranked) == ["y"]
    assert same(score_user(profile(purchased=("x",)), {}, trending, S, 10), [("t", 0.8)])


def test_exclude_history_on_and_off() -> None:
    neighbours = {"a": {"b": 5.0, "x": 1.0}, "b": {"a": 2.0, "x": 2.0}}
    # x = 1/5 + 0.7 * 2/2; b = 5/5; a = 0.7 * 2/2
    assert same(score_user(profile("a", "b"), neighbours, [], S, 10), [("x", 0.9)])
    off = score_user(profile("a", "b"), neighbours, [], EngineSettings(exclude_history=False), 10)
    assert same(off, [("b", 1.0), ("x", 0.9), ("a", 0.7)])


def test_exclude_history_covers_items_beyond_the_recent_window() -> None:
    settings = EngineSettings(recent_items=1)
    assert same(score_user(profile("a", "b"), {"a": {"b": 2.0, "x": 1.0}}, [], settings, 10), [("x", 0.5)])


def test_cold_user_gets_trending_only() -> None:
    trending = [("t1", 10.0), ("t2", 5.0), ("t3", 1.0)]
    assert same(score_user(UserProfile(), {}, trending, S, 10), [("t1", 1.0), ("t2", 0.5), ("t3", 0.1)])
    # A user with history whose items have no neighbours is cold too.
    assert same(score_user(profile("a"), {"a": {}}, trending, S, 2), [("t1", 1.0), ("t2", 0.5)])
    assert score_user(UserProfile(), {}, [], S, 10) == []


def test_warm_user_gets_trending_as_a_small_prior() -> None:
    neighbours = {"a": {"x": 1.0, "y": 1.0}}
    trending = [("t", 10.0), ("y", 5.0)]
    # y = 1 + 0.05 * 5/10 breaks the tie with x; t = 0.05 * 10/10 comes last.
    ranked = score_user(profile("a"), neighbours, trending, S, 10)
    assert same(ranked, [("y", 1.025), ("x", 1.0), ("t", 0.05)])


def test_embedding_candidates_are_blended() -> None:
    ranked = score_user(profile("a"), {"a": {"x": 1.0}}, [], S, 10, similar={"s": 0.8, "x": 0.2, "n": -0.5})
    assert same(ranked, [("x", 1.1), ("s", 0.4)])  # negative cosines are ignored


def test_k_cut() -> None:
    neighbours = {"a": {f"i{n}": float(n) for n in range(1, 11)}}
    assert same(score_user(profile("a"), neighbours, [], S, k=3), [("i10", 1.0), ("i9", 0.9), ("i8", 0.8)])
    assert len(score_user(profile("a"), neighbours, [], S, k=100)) == 10


def test_ties_are_broken_by_item_id_whatever_the_input_order() -> None:
    first = score_user(profile("a"), {"a": {"c": 1.0, "b": 1.0, "d": 1.0, "e": 2.0}}, [], S, 10)
    second = score_user(profile("a"), {"a": {"e": 2.0, "d": 1.0, "b": 1.0, "c": 1.0}}, [], S, 10)
    assert items(first) == ["e", "b", "c", "d"]
    assert first == second
    assert score_user(UserProfile(), {}, [("z", 1.0), ("y", 1.0)], S, 1) == [("y", 1.0)]


def test_docstring_example() -> None:
    neighbours = {"a": {"b": 4.0, "c": 9.0, "d": 2.0}}
    ranked = score_user(profile("a", purchased=("c",)), neighbours, [("z", 10.0)], S, 3)
    assert same(ranked, [("b", 4 / 9), ("d", 2 / 9), ("z", 0.05)])


@pytest.mark.parametrize("seed", range(6))
def test_top_k_of_many_candidates_equals_a_full_sort(seed: int) -> None:
    """With hundreds of candidates only those at or above a cut are ranked; the cut must never
    drop one of the k best allowed items, also when banned items crowd the top and many items tie
    exactly at the cut."""
    import random

    rng = random.Random(seed)
    levels = [rng.choice([1.0, 2.0, 3.0, 0.5]) if seed % 2 else rng.random() for _ in range(600)]
    session = {f"i{n:03d}": value for n, value in enumerate(levels)}
    best = sorted(session, key=lambda item: (-session[item], item))
    bought = tuple(best[: 5 + seed])  # the very best are banned
    user = profile(*best[40:43], purchased=bought)
    for k in (1, 10, 20):
        for settings in (S, S.model_copy(update={"exclude_history": False})):
            got = score_user(user, {}, [], settings, k, session=session)
            banned = set(bought) | (set(user.history) if settings.exclude_history else set())
            expected = [(i, session[i]) for i in best if i not in banned][:k]
            assert got == expected


def random_ranking_case(rng, catalogue: int = 60) -> tuple[UserProfile, dict, list, dict]:
    """A user, session scores, a trending list and ANN scores over a small catalogue, with ties
    (values on a coarse grid), overlaps between the three, and banned items among them."""

    def value() -> float:
        return rng.choice([0.0, 0.25, 0.5, 1.0, 2.0]) if rng.random() < 0.5 else rng.random() * 3

    names = [f"i{n:02d}" for n in range(catalogue)]
    session = {item: value() for item in rng.sample(names, rng.randrange(0, 40))}
    trending = sorted(
        ((item, value()) for item in rng.sample(names, rng.randrange(0, 45))), key=lambda kv: -kv[1]
    )
    similar = {item: rng.uniform(-0.5, 1.0) for item in rng.sample(names, rng.randrange(0, 12))}
    user = profile(
        *rng.sample(names, rng.randrange(0, 15)), purchased=tuple(rng.sample(names, rng.randrange(0, 4)))
    )
    return user, session, trending, similar


@pytest.mark.parametrize("seed", range(40))
def test_rank_session_user_equals_score_user(seed: int) -> None:
    """The session path's ranking gives score_user's list, item for item and float for float:
    ties at the k-th place, items scoring by trending alone, banned trending items, ANN items,
    an empty session, a list out of order or with NaN (score_user's way then)."""
    import random

    rng = random.Random(seed)
    for _ in range(25):
        user, session, trending, similar = random_ranking_case(rng)
        if seed % 5 == 1 and session:
            session[next(iter(session))] = math.nan
        if seed % 5 == 2 and len(trending) > 2:
            trending[0], trending[-1] = trending[-1], trending[0]
        for k in (1, 5, 20):
            for settings in (S, S.model_copy(update={"exclude_history": False, "trending_weight": 0.0})):
                for ann in (None, similar):
                    expected = score_user(user, {}, trending, settings, k, ann, session)
                    got = rank_session_user(user, dict(session), TrendingPrior(trending), settings, k, ann)
                    assert repr(got) == repr(expected)


def test_trending_prior_takes_only_a_list_ranked_down_from_a_positive_top() -> None:
    assert TrendingPrior([("a", 3.0), ("b", 3.0), ("c", 0.0)]).ordered
    assert TrendingPrior([]).ordered
    assert not TrendingPrior([("a", 1.0), ("b", 2.0)]).ordered
    assert not TrendingPrior([("a", -1.0), ("b", -2.0)]).ordered
    assert not TrendingPrior([("a", 2.0), ("a", 1.0)]).ordered
    assert not TrendingPrior([("a", math.inf), ("b", 1.0)]).ordered
    assert not TrendingPrior([("a", 2.0), ("b", math.nan)]).ordered


def test_trending_shares_are_what_the_ranking_adds_to_a_user_with_scores() -> None:
    trending = [("a", 4.0), ("b", 1.0), ("c", 0.0)]
    shares = TrendingPrior(trending).shares(S)
    assert shares == {"a": 0.05, "b": 0.0125, "c": 0.0}
    ranked = rank_session_user(profile(), {"a": 1.0, "b": 1.0, "c": 1.0}, TrendingPrior(trending), S, 3)
    assert ranked == [(item, 1.0 + shares[item]) for item in ("a", "b", "c")]
    assert TrendingPrior([("a", 1.0), ("b", -1.0)]).shares(S) is None  # a share below zero
    assert TrendingPrior(trending).shares(S.model_copy(update={"trending_weight": -0.1})) is None
    assert TrendingPrior([("a", 1.0), ("b", 2.0)]).shares(S) is None  # out of order
