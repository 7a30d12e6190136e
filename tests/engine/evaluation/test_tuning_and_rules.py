"""The coordinate search behind the presets, the rule store, and the model registry."""

from __future__ import annotations

import numpy as np
import pytest

from engine.evaluation.registry import MODELS, default_baselines, model_factory
from engine.evaluation.tuning import coordinate_search
from engine.sequential_rules import RuleStore
from engine.sessionknn import PRESETS, SessionKNN


def test_coordinate_search_climbs_one_parameter_at_a_time_and_caches() -> None:
    calls: list[dict] = []

    def objective(p: dict) -> float:
        calls.append(p)
        return -((p["x"] - 3) ** 2) - (p["y"] - 1) ** 2

    best, score = coordinate_search(objective, {"x": 0, "y": 0}, {"x": [1, 2, 3, 4], "y": [0, 1, 2]})
    assert best == {"x": 3, "y": 1} and score == 0
    keys = [tuple(sorted(c.items())) for c in calls]
    assert len(keys) == len(set(keys))  # no setting evaluated twice


def test_rule_store_rows_votes_and_trimming() -> None:
    rules = RuleStore(max_rules=2)
    for target, weight in [("b", 3.0), ("c", 1.0), ("d", 1.0), ("e", 0.5)]:
        rules.add("a", target, weight)
    # 4 > 2 x 2 is false: nothing trimmed yet
    assert rules.row("a") == {"b": 3.0, "c": 1.0, "d": 1.0, "e": 0.5}
    rules.add("a", "f", 0.1)  # 5 > 4: keep the 2 strongest; c and d tie, the earlier c stays
    assert rules.row("a") == {"b": 3.0, "c": 1.0}
    assert rules.top("a") == 3.0
    rules.add("x", "c", 2.0)
    assert rules.votes([("a", 1.0), ("x", 0.5)]) == {"b": 3.0, "c": 2.0}
    assert rules.votes([("a", 1.0), ("x", 1.0)], row_norm=True) == pytest.approx({"b": 1.0, "c": 1 / 3 + 1.0})
    divide = np.ones(len(rules.names))
    divide[rules.numbers["b"]] = 4.0
    assert rules.votes([("a", 1.0)], divide_by=divide) == {"b": 0.75, "c": 1.0}
    assert rules.votes([("unknown", 1.0)]) == {} and rules.row("unknown") == {} and rules.top("q") == 0.0
    with pytest.raises(ValueError):
        RuleStore(max_rules=0)


def test_registry_makes_fresh_models_with_the_protocols_preset() -> None:
    for name in MODELS:
        factory = model_factory(name, "next-item")
        assert factory() is not factory()
    sessions = model_factory("default", "next-item")()
    users = model_factory("session-knn", "prequential")()
    assert isinstance(sessions, SessionKNN) and sessions.config == PRESETS["sessions"]
    assert isinstance(users, SessionKNN) and users.config == PRESETS["users"]
    assert default_baselines("next-item", rated=False) == (
        "popularity", "recent-popularity", "cooccurrence", "als", "vsknn",
    )  # fmt: skip
    assert default_baselines("prequential", rated=True)[-1] == "svd"
    with pytest.raises(KeyError):
        model_factory("magic", "next-item")
