"""The production recommender ranks with the session model when it is on."""

from __future__ import annotations

import pytest

from engine.config import EngineSettings
from engine.evaluation.base import Context
from engine.events import Event
from engine.logic import compute_delta
from engine.recommend import Recommender
from engine.sessionknn import PRESETS, SessionKNN
from engine.state.memory import MemoryStore

T0 = 1_700_000_000.0


def events() -> list[Event]:
    """Ten shoppers walk a, b, c, d in order; u-last has just looked at a and b."""
    out = []
    for n in range(10):
        for step, item in enumerate("abcd"):
            out.append(Event(f"e{n}-{step}", T0 + 100 * n + step, f"u{n}", item, "click", session_id=f"s{n}"))
    out += [
        Event("x1", T0 + 5000, "u-last", "a", "click", session_id="s-last"),
        Event("x2", T0 + 5001, "u-last", "b", "purchase", session_id="s-last"),
    ]
    return out


def write(store: MemoryStore, log: list[Event], settings: EngineSettings) -> None:
    meta, users = store.load(0, {e.user_id: [e.event_id] for e in log})
    store.apply(compute_delta(0, list(enumerate(log)), users, meta, settings))


@pytest.mark.parametrize("preset", ["sessions", "users"])
def test_recs_are_the_session_models_ranking_minus_purchases(preset: str) -> None:
    settings = EngineSettings(session_model=preset, exclude_history=False, ann_weight=0, trending_weight=0)
    store = MemoryStore(1, settings)
    log = events()
    write(store, log, settings)

    reference = SessionKNN(PRESETS[preset])
    reference.learn(log)
    key = "u-last" if preset == "users" else "s-last"
    expected = reference.recommend(Context("u-last", ("a", "b"), T0 + 5001, key), 3, exclude={"b"})
    _, ranked = Recommender(store, settings).for_user("u-last", k=3)
    assert [item for item, _ in ranked] == expected
    assert "c" in expected  # the next step of everyone else's walk
    assert "b" not in expected  # bought


def test_session_model_off_uses_cooccurrence() -> None:
    settings = EngineSettings(session_model="off", trending_weight=0)
    store = MemoryStore(1, settings)
    log = events()
    write(store, log, settings)
    assert store.session_model([]) is None
    _, ranked = Recommender(store, settings).for_user("u-last", k=2)
    assert [item for item, _ in ranked] == ["c", "d"]


def test_scoring_reads_the_trending_items_again_only_when_they_are_old() -> None:
    settings = EngineSettings(session_model="sessions", trending_refresh_s=1.0)
    store = MemoryStore(1, settings)
    log = events()
    write(store, log, settings)
    now = [100.0]
    recommender = Recommender(store, settings, clock=lambda: now[0])
    before = recommender.read_inputs({0: ["u-last"]})
    assert before.trending and "z" not in dict(before.trending) and before.profiles[0]["u-last"].history

    # "z" becomes the most popular item; within the refresh interval the held list is served
    burst = [Event(f"z{n}", T0 + 6000 + n, f"w{n}", "z", "purchase", session_id=f"w{n}") for n in range(40)]
    write(store, burst, settings)
    now[0] += 0.9
    held = recommender.read_inputs({0: ["w1"]})
    assert held.trending == before.trending and held.profiles[0]["w1"].history == ["z"]
    now[0] += 0.2
    fresh = recommender.read_inputs({0: ["w1"]})
    assert fresh.trending == store.trending(recommender.trending_wanted()) and fresh.trending[0][0] == "z"

    every_poll = Recommender(
        store, settings.model_copy(update={"trending_refresh_s": 0.0}), clock=lambda: 0.0
    )
    every_poll.read_inputs({0: ["w1"]})
    more = [Event(f"y{n}", T0 + 7000 + n, f"v{n}", "y", "purchase", session_id=f"v{n}") for n in range(80)]
    write(store, more, settings)
    assert every_poll.read_inputs({0: ["w1"]}).trending[0][0] == "y"


def test_an_empty_trending_list_is_not_held() -> None:
    settings = EngineSettings(session_model="sessions", trending_refresh_s=60.0)
    store = MemoryStore(1, settings)
    recommender = Recommender(store, settings, clock=lambda: 0.0)
    assert recommender.read_inputs({0: ["u0"]}).trending == []  # a fresh stream: nothing yet
    write(store, events(), settings)
    assert recommender.read_inputs({0: ["u0"]}).trending == store.trending(recommender.trending_wanted())
