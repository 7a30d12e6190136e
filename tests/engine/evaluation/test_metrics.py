"""Metrics on hand-computed lists, and the accumulator's summaries, segments and curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.evaluation.metrics import (
    Accumulator,
    Popularity,
    catalogue_coverage,
    hit_rate,
    intra_list_diversity,
    mae,
    metric_from_ranks,
    ndcg,
    popularity_bias,
    precision,
    rank_of,
    recall,
    reciprocal_rank,
    rmse,
)

RANKED = ["a", "b", "c", "d", "e"]


def test_rank_of() -> None:
    assert rank_of(RANKED, "a") == 1
    assert rank_of(RANKED, "d") == 4
    assert rank_of(RANKED, "d", 3) == 0
    assert rank_of(RANKED, "zzz") == 0


def test_hit_rate_and_reciprocal_rank() -> None:
    assert hit_rate(RANKED, "c", 3) == 1.0
    assert hit_rate(RANKED, "c", 2) == 0.0
    assert reciprocal_rank(RANKED, "c", 3) == pytest.approx(1 / 3)
    assert reciprocal_rank(RANKED, "c", 2) == 0.0
    assert reciprocal_rank(RANKED, {"e", "b"}, 5) == 0.5  # the first relevant item counts


def test_ndcg_single_and_multiple_relevant() -> None:
    assert ndcg(RANKED, "a", 5) == 1.0
    assert ndcg(RANKED, "c", 5) == pytest.approx(1 / math.log2(4))
    assert ndcg(RANKED, "e", 4) == 0.0
    # two relevant at ranks 2 and 4; ideal puts them at 1 and 2
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3)
    assert ndcg(RANKED, {"b", "d"}, 5) == pytest.approx(dcg / ideal)
    assert ndcg(RANKED, set(), 5) == 0.0


def test_precision_and_recall() -> None:
    assert precision(RANKED, {"a", "c", "z"}, 4) == 0.5
    assert recall(RANKED, {"a", "c", "z"}, 4) == pytest.approx(2 / 3)
    assert precision(RANKED, "e", 5) == 0.2
    assert recall(RANKED, "e", 5) == 1.0
    assert recall(RANKED, set(), 5) == 0.0


def test_coverage_and_popularity_bias() -> None:
    assert catalogue_coverage([["a", "b"], ["b", "c"]], 10) == 0.3
    assert catalogue_coverage([["a", "b"], ["c", "d"]], 10, n=1) == 0.2
    assert catalogue_coverage([], 0) == 0.0
    pop = {"a": 1.0, "b": 0.5}
    assert popularity_bias(["a", "b", "z"], pop) == pytest.approx(0.5)
    assert popularity_bias(["a", "b", "z"], pop, n=2) == pytest.approx(0.75)
    assert popularity_bias([], pop) == 0.0


def test_popularity_mapping_normalises_by_the_largest_count() -> None:
    pop = Popularity()
    for item in "aaab":
        pop.add(item)
    assert pop["a"] == 1.0
    assert pop["b"] == pytest.approx(1 / 3)
    assert pop.get("zzz", 0.0) == 0.0
    assert set(pop) == {"a", "b"}


def test_intra_list_diversity_with_categories_and_vectors() -> None:
    cats = {"a": "x", "b": "x", "c": "y"}
    # pairs: (a,b) same -> 0, (a,c) and (b,c) different -> 1
    assert intra_list_diversity(["a", "b", "c"], categories=cats) == pytest.approx(2 / 3)
    # label sets: 1 - Jaccard
    sets = {"a": ("x", "y"), "b": ("y",)}
    assert intra_list_diversity(["a", "b"], categories=sets) == pytest.approx(0.5)
    vectors = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 2.0]), "c": np.array([1.0, 0.0])}
    # cosines: a-b 0, a-c 1, b-c 0 -> distances 1, 0, 1
    assert intra_list_diversity(["a", "b", "c"], vectors=vectors) == pytest.approx(2 / 3)
    assert intra_list_diversity(["a", "zzz"], categories=cats) is None
    assert intra_list_diversity(["a", "b"]) is None


def test_rmse_and_mae() -> None:
    assert rmse([3.0, 5.0], [4.0, 4.0]) == 1.0
    assert mae([3.0, 5.0, 4.0], [4.0, 4.0, 4.0]) == pytest.approx(2 / 3)
    assert rmse([], []) == 0.0
    with pytest.raises(ValueError):
        mae([1.0], [])


def test_vectorised_metrics_match_the_functions() -> None:
    ranks = np.array([1, 3, 0, 7, 2])
    lists = {
        1: ["t", "x"],
        3: ["x", "y", "t"],
        0: ["x"],
        7: ["1", "2", "3", "4", "5", "6", "t"],
        2: ["x", "t"],
    }
    for n in (1, 2, 5, 10):
        hr = metric_from_ranks(ranks, "HR", n)
        mrr = metric_from_ranks(ranks, "MRR", n)
        nd = metric_from_ranks(ranks, "NDCG", n)
        pr = metric_from_ranks(ranks, "Precision", n)
        for i, r in enumerate(ranks.tolist()):
            assert hr[i] == hit_rate(lists[r], "t", n)
            assert mrr[i] == pytest.approx(reciprocal_rank(lists[r], "t", n))
            assert nd[i] == pytest.approx(ndcg(lists[r], "t", n))
            assert pr[i] == pytest.approx(precision(lists[r], "t", n))
    with pytest.raises(ValueError):
        metric_from_ranks(ranks, "nope", 3)


def test_accumulator_summary_segments_and_curve() -> None:
    pop = Popularity()
    for item in "aab":
        pop.add(item)
    acc = Accumulator(ks=(2, 1), popularity=pop, categories={"a": "x", "b": "y"})
    assert acc.ks == (1, 2) and acc.depth == 2
    assert acc.add(["a", "b"], "a", segment="warm") == 1
    assert acc.add(["b", "a"], "a", segment="warm") == 2
    assert acc.add(["b", "c"], "z", segment="cold") == 0
    acc.add_rating(4.0, 5.0)
    acc.add_rating(3.0, 3.0)
    summary = acc.summary(catalogue_size=4)
    assert len(acc) == 3
    assert summary["HR@1"] == pytest.approx(1 / 3)
    assert summary["HR@2"] == pytest.approx(2 / 3)
    assert summary["MRR@2"] == pytest.approx((1 + 0.5) / 3)
    assert summary["NDCG@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert summary["Precision@2"] == pytest.approx((0.5 + 0.5) / 3)
    assert summary["Coverage@2"] == 0.75  # a, b, c of 4
    assert summary["Coverage@1"] == 0.5  # a, b
    # popularity a = 1, b = 0.5, c = 0: lists (1 + .5)/2, (.5 + 1)/2, (.5 + 0)/2
    assert summary["PopBias@2"] == pytest.approx((0.75 + 0.75 + 0.25) / 3)
    assert summary["ILD@2"] == pytest.approx(1.0)  # a/b and b/a differ; c has no category
    assert summary["RMSE"] == pytest.approx(math.sqrt(0.5))
    assert summary["MAE"] == pytest.approx(0.5)
    warm = acc.summary(segment="warm")
    assert warm["HR@2"] == 1.0 and warm["MRR@2"] == 0.75
    assert "Coverage@2" not in warm
    xs, ys = acc.curve("HR", 2, window=2)
    assert xs == [2, 3] and ys == pytest.approx([1.0, 0.5])
    assert acc.curve("HR", 2, window=10) == ([3], [pytest.approx(2 / 3)])


def test_accumulator_rejects_bad_cutoffs() -> None:
    with pytest.raises(ValueError):
        Accumulator(ks=(0, 5))
    with pytest.raises(ValueError):
        Accumulator(ks=())


def test_empty_accumulator() -> None:
    acc = Accumulator(ks=(5,))
    assert acc.summary()["HR@5"] == 0.0
    assert acc.curve("HR", 5) == ([], [])
