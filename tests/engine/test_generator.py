"""The synthetic event generator: deterministic, valid, and shaped like an e-commerce funnel."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from engine.events import EVENT_TYPES, Event, make_event_id, validate_event
from engine.generator import generate_events
from engine.loaders import load_events, write_events_csv


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return generate_events(20_000, n_users=300, n_items=1000, seed=7)


def by_session(events: list[Event]) -> dict[str, list[Event]]:
    sessions: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        assert event.session_id is not None
        sessions[event.session_id].append(event)
    return sessions


def test_deterministic_for_a_seed() -> None:
    first = generate_events(2000, n_users=50, n_items=200, seed=3)
    assert first == generate_events(2000, n_users=50, n_items=200, seed=3)
    other = generate_events(2000, n_users=50, n_items=200, seed=4)
    assert [e.item_id for e in first] != [e.item_id for e in other]
    assert not {e.event_id for e in first} & {e.event_id for e in other}


def test_counts_and_ranges(events: list[Event]) -> None:
    assert len(events) == 20_000
    users = {e.user_id for e in events}
    items = {e.item_id for e in events}
    assert users <= {f"u{i}" for i in range(300)} and len(users) > 250
    assert items <= {f"i{i}" for i in range(1000)} and len(items) > 500
    assert all(e.category is not None and e.category.startswith("c") for e in events)
    assert all(e.price is not None and e.price > 0 for e in events)
    assert len({e.event_id for e in events}) == len(events)
    assert generate_events(0) == []
    assert len(generate_events(7, n_users=1, n_items=1)) == 7


def test_ids_are_make_event_id_of_the_sorted_index(events: list[Event]) -> None:
    for index in (0, 1, 999, len(events) - 1):
        e = events[index]
        assert e.event_id == make_event_id("gen", 7, index, e.user_id, e.item_id, e.ts, e.type)


def test_sorted_and_after_start() -> None:
    evs = generate_events(5000, n_users=100, n_items=500, seed=1, start_ts=1_600_000_000.0)
    assert evs[0].ts >= 1_600_000_000.0
    assert all(a.ts <= b.ts for a, b in zip(evs, evs[1:], strict=False))


def test_every_event_is_valid(events: list[Event]) -> None:
    for event in events:
        assert validate_event(event.to_dict()) == event
    assert {e.type for e in events} == set(EVENT_TYPES)


def test_funnel_shape(events: list[Event]) -> None:
    counts = Counter(e.type for e in events)
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"] > 0
    assert 0.6 < counts["view"] / len(events) < 0.9
    assert 0.005 < counts["purchase"] / len(events) < 0.08


def test_sessions_belong_to_one_user_and_have_a_few_events(events: list[Event]) -> None:
    sessions = by_session(events)
    assert all(len({e.user_id for e in evs}) == 1 for evs in sessions.values())
    mean_length = len(events) / len(sessions)
    assert 3 < mean_length < 10
    # a user's sessions do not overlap in time
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for evs in sessions.values():
        spans[evs[0].user_id].append((evs[0].ts, evs[-1].ts))
    for user_spans in spans.values():
        user_spans.sort()
        assert all(
            end < next_start for (_, end), (next_start, _) in zip(user_spans, user_spans[1:], strict=False)
        )


def test_actions_follow_a_view_of_the_same_item_in_the_session(events: list[Event]) -> None:
    purchases = 0
    for evs in by_session(events).values():
        assert evs[0].type == "view"
        viewed: set[str] = set()
        for e in evs:  # events are in time order, and a session's ties keep their order
            if e.type == "view":
                viewed.add(e.item_id)
            else:
                assert e.item_id in viewed, (e, evs)
                purchases += e.type == "purchase"
    assert purchases > 0


def test_popularity_is_skewed_and_users_prefer_categories(events: list[Event]) -> None:
    views = Counter(e.item_id for e in events if e.type == "view")
    top = sum(n for _, n in views.most_common(len(views) // 10))
    assert top / sum(views.values()) > 0.3  # the top 10% of items take far more than 10% of views
    shares = []
    for user_events in _by_user(events).values():
        if len(user_events) >= 20:
            categories = Counter(e.category for e in user_events)
            shares.append(sum(n for _, n in categories.most_common(2)) / len(user_events))
    assert sum(shares) / len(shares) > 0.5


def _by_user(events: list[Event]) -> dict[str, list[Event]]:
    users: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        users[e.user_id].append(e)
    return users


def test_round_trips_through_the_events_csv(tmp_path: Path) -> None:
    evs = generate_events(500, n_users=20, n_items=100, seed=2)
    path = tmp_path / "gen.csv"
    write_events_csv(evs, path)
    assert load_events(path, "events") == evs


def test_a_shorter_session_gap_keeps_more_sessions_open() -> None:
    def users_per_window(evs: list[Event]) -> float:
        windows = [len({e.user_id for e in evs[i : i + 500]}) for i in range(0, len(evs), 500)]
        return sum(windows) / len(windows)

    replay = generate_events(5000, n_users=50_000, n_items=1000, seed=4)
    live = generate_events(5000, n_users=50_000, n_items=1000, seed=4, session_gap_s=0.01)
    # ~6 events a session: a replayed log's window holds whole sessions, a live one interleaves them
    assert users_per_window(replay) < 120 < 250 < users_per_window(live)
    assert [e.type for e in replay].count("view") > 0 and len(live) == 5000


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="session_gap_s"):
        generate_events(10, session_gap_s=0.0)
    for kwargs in ({"n_events": -1}, {"n_events": 1, "n_users": 0}, {"n_events": 1, "n_items": 0}):
        with pytest.raises(ValueError):
            generate_events(**kwargs)


def test_fast_enough() -> None:
    started = time.perf_counter()
    evs = generate_events(200_000)
    elapsed = time.perf_counter() - started
    assert len(evs) == 200_000
    assert elapsed < 10.0  # about 1.2 s on one laptop core
