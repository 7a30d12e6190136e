"""The history cache against the in-memory store: after any poll it gives the store's histories."""

from __future__ import annotations

import random

import pytest

from engine import history_cache
from engine.config import EngineSettings
from engine.events import Event
from engine.history_cache import HistoryCache
from engine.logic import compute_delta
from engine.state.base import UserProfile
from engine.state.memory import MemoryStore

T0 = 1.7e9


def _poll(rng: random.Random, n: int, users: int, items: int, start: int) -> list[tuple[int, Event]]:
    return [
        (
            start + k,
            Event(
                f"e{start + k}",
                T0 + start + k,
                f"u{rng.randrange(users)}",
                f"i{rng.randrange(items)}",
                "click",
            ),
        )
        for k in range(n)
    ]


@pytest.mark.parametrize("capacity", [3, 10, 1000])
def test_filled_histories_are_the_stores_after_every_poll(capacity: int) -> None:
    settings = EngineSettings(history_length=6, session_model="off")
    store = MemoryStore(1, settings)
    cache = HistoryCache(settings.history_length, capacity)
    rng = random.Random(capacity)
    offset = 0
    for _ in range(60):
        events = _poll(rng, rng.randrange(1, 12), users=12, items=15, start=offset)
        offset += len(events)
        wanted: dict[str, list[str]] = {}
        for _, event in events:
            wanted.setdefault(event.user_id, []).append(event.event_id)
        meta, loaded = store.load(0, wanted)
        delta = compute_delta(0, events, loaded, meta, settings, last_offset=offset - 1)
        store.apply(delta)
        # scored: most of the poll's users (the pushes of the others still count), and now and
        # then some it did not touch
        scored = [u for u in wanted if rng.random() < 0.8]
        scored += [f"u{rng.randrange(12)}" for _ in range(rng.randrange(3))]
        held = cache.held(scored)
        inputs = store.recs_inputs({0: scored}, 0, without_history=held)
        cache.pushed(delta.history)
        cache.fill(inputs.profiles[0], held)
        expected = store.profiles(0, scored)
        assert {u: p.history for u, p in inputs.profiles[0].items()} == {
            u: p.history for u, p in expected.items()
        }
        assert len(cache) <= capacity
    assert held, "some users were held"


def test_users_not_held_are_left_to_the_store() -> None:
    cache = HistoryCache(length=3, capacity=10)
    cache.pushed({"u": ["a"]})  # not held: a later read returns it with "a"
    assert cache.held(["u"]) == set() and len(cache) == 0


def test_the_least_recently_scored_users_go_first() -> None:
    cache = HistoryCache(length=3, capacity=2)
    cache.fill({"a": UserProfile(["x"]), "b": UserProfile(["y"])}, set())
    cache.fill({"a": UserProfile()}, cache.held(["a"]))  # a used again: b is now the oldest
    cache.fill({"c": UserProfile(["z"])}, set())
    assert cache.held(["a", "b", "c"]) == {"a", "c"}


def test_a_filled_history_is_a_copy() -> None:
    cache = HistoryCache(length=3, capacity=2)
    cache.fill({"a": UserProfile(["x"])}, set())
    profile = UserProfile()
    cache.fill({"a": profile}, cache.held(["a"]))
    profile.history.append("changed by a caller")
    again = UserProfile()
    cache.fill({"a": again}, cache.held(["a"]))
    assert again.history == ["x"]


def test_items_are_shared_between_histories() -> None:
    cache = HistoryCache(length=3, capacity=10)
    cache.fill({"a": UserProfile(["item-" + "1"]), "b": UserProfile(["item-" + str(1)])}, set())
    first, second = UserProfile(), UserProfile()
    cache.fill({"a": first, "b": second}, cache.held(["a", "b"]))
    assert first.history[0] is second.history[0]


def test_items_no_longer_held_are_let_go(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history_cache, "_MIN_REBUILD", 3)
    cache = HistoryCache(length=2, capacity=1)
    for n in range(6):  # each user pushes the one before out: their items go with them
        cache.fill({f"u{n}": UserProfile([f"a{n}", f"b{n}"])}, set())
    assert cache.held([f"u{n}" for n in range(6)]) == {"u5"}
    assert set(cache._items) <= {f"{x}{n}" for x in "ab" for n in (3, 4, 5)}
