"""The verify oracle: rebuild from the log, compare exactly where it can and one-sided where trimmed."""

from __future__ import annotations

import copy

import pytest

from engine.config import EngineSettings
from engine.events import decode_event, encode_event
from engine.generator import generate_events
from engine.logic import PartitionMeta, compute_delta
from engine.pipeline import BatchProcessor, RawRecord
from engine.state.base import PartitionSnapshot
from engine.state.memory import MemoryStore
from engine.verify import Mismatch, compare_partition, rebuild, verify_store

SETTINGS = EngineSettings(max_neighbours=2, history_length=5, dedup_window=50, cooccurrence_rows="on")
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def records() -> dict[int, list[RawRecord]]:
    values: dict[int, list[bytes | None]] = {0: [], 1: []}
    for event in generate_events(800, n_users=30, n_items=60, seed=5):
        values[int(event.user_id[1:]) % 2].append(encode_event(event))
    values[1].append(b"{}")
    return {p: [RawRecord(p, o, v) for o, v in enumerate(rows)] for p, rows in values.items()}


def live_store(
    records: dict[int, list[RawRecord]], batch: int, settings: EngineSettings = SETTINGS
) -> MemoryStore:
    """A production-like store: trimmed neighbour lists, batches of ``batch`` records."""
    store = MemoryStore(2, settings)
    processor = BatchProcessor(store, settings)
    for partition, rows in records.items():
        for start in range(0, len(rows), batch):
            processor.process(partition, rows[start : start + batch])
    return store


def whats(mismatches: list[Mismatch]) -> set[str]:
    return {m.what for m in mismatches}


def test_rebuild_matches_itself(records: dict[int, list[RawRecord]]) -> None:
    oracle = rebuild(records, 2, SETTINGS)
    again = rebuild(records, 2, SETTINGS, batch_size=17)
    # compare_partition takes `actual` to be a trimmed store; compare two oracles with a high bound.
    untrimmed = EngineSettings(max_neighbours=1000, history_length=5, dedup_window=50, cooccurrence_rows="on")
    for p in range(2):
        assert compare_partition(p, oracle.snapshot(p), again.snapshot(p), untrimmed) == []
    assert oracle.snapshot(1).invalid == 1
    assert oracle.watermarks() == {0: len(records[0]) - 1, 1: len(records[1]) - 1}
    # The oracle never trims: some rows are longer than a live store keeps.
    assert max(len(row) for row in oracle.snapshot(0).cooccurrence.values()) > 2 * SETTINGS.max_neighbours


def test_a_trimmed_live_store_passes(records: dict[int, list[RawRecord]]) -> None:
    store = live_store(records, batch=23)
    oracle, mismatches = verify_store(records, store, SETTINGS)
    assert mismatches == []
    # ... although its trimmed rows differ from the oracle's.
    assert store.snapshot(0).cooccurrence != oracle.snapshot(0).cooccurrence


def test_an_event_applied_twice_is_reported(records: dict[int, list[RawRecord]]) -> None:
    store = live_store(records, batch=50)
    # A stale writer re-applies the last 10 events of partition 0 without their dedup state.
    tail = [(r.offset, decode_event(r.value)) for r in records[0][-10:]]
    meta, _ = store.load(0, {})
    delta = compute_delta(
        0,
        tail,
        {},
        PartitionMeta(meta.watermark, meta.popularity_epoch),
        SETTINGS,
        last_offset=meta.watermark,
    )
    store.apply(delta)
    _, mismatches = verify_store(records, store, SETTINGS)
    # (The history may end up the same: these are one user's events, re-pushed onto a short list.)
    assert {"applied", "popularity", "cooccurrence"} <= whats(mismatches)
    assert all(m.partition == 0 for m in mismatches)


@pytest.fixture
def pair(records: dict[int, list[RawRecord]]) -> tuple[PartitionSnapshot, PartitionSnapshot]:
    """(expected, actual) for partition 0; actual is a copy safe to tamper with."""
    expected = rebuild(records, 2, SETTINGS).snapshot(0)
    actual = copy.deepcopy(live_store(records, batch=31).snapshot(0))
    assert compare_partition(0, expected, actual, SETTINGS) == []
    return expected, actual


def short_row(snapshot: PartitionSnapshot) -> str:
    """An item whose untrimmed row is short enough to be compared exactly."""
    return next(i for i, row in snapshot.cooccurrence.items() if len(row) <= 2 * SETTINGS.max_neighbours)


def test_tampered_snapshots_are_reported(pair: tuple[PartitionSnapshot, PartitionSnapshot]) -> None:
    expected, actual = pair
    user = next(iter(actual.history))
    item = short_row(expected)
    other = next(iter(actual.cooccurrence[item]))
    cases = {
        "watermark": lambda s: setattr(s, "watermark", s.watermark + 1),
        "applied": lambda s: setattr(s, "applied", s.applied + 1),
        "duplicates": lambda s: setattr(s, "duplicates", 1),
        "invalid": lambda s: setattr(s, "invalid", 3),
        "history": lambda s: s.history[user].insert(0, "i0"),
        "purchases": lambda s: s.purchases.setdefault(user, set()).add("zz"),
        "seen": lambda s: s.seen[user].update({"extra": T0}),
        "session": lambda s: s.sessions.__setitem__(user, ("other", s.sessions[user][1])),
        "popularity": lambda s: s.popularity.__setitem__(item, s.popularity[item] * 1.001),
        "cooccurrence": lambda s: s.cooccurrence[item].__setitem__(other, s.cooccurrence[item][other] * 2),
    }
    for what, tamper in cases.items():
        tampered = copy.deepcopy(actual)
        tamper(tampered)
        found = compare_partition(0, expected, tampered, SETTINGS)
        assert whats(found) == {what}, what
    # A missing neighbour, an extra one, and a lost popularity key are reported too.
    for tamper in (
        lambda s: s.cooccurrence[item].pop(other),
        lambda s: s.cooccurrence[item].__setitem__("ghost", 0.1),
        lambda s: s.popularity.pop(item),
    ):
        tampered = copy.deepcopy(actual)
        tamper(tampered)
        assert compare_partition(0, expected, tampered, SETTINGS) != []


def test_popularity_is_compared_at_one_time() -> None:
    settings = EngineSettings(popularity_half_life_s=100.0, cooccurrence_rows="on")
    expected = PartitionSnapshot(popularity={"a": 8.0, "b": 1.0}, popularity_epoch=T0)
    same_later = PartitionSnapshot(popularity={"a": 2.0, "b": 0.25}, popularity_epoch=T0 + 200)
    assert compare_partition(0, expected, same_later, settings) == []
    off = PartitionSnapshot(popularity={"a": 2.0, "b": 0.5}, popularity_epoch=T0 + 200)
    assert [(m.what, m.key) for m in compare_partition(0, expected, off, settings)] == [("popularity", "b")]


def row(**weights: float) -> dict[str, float]:
    return dict(weights)


def test_trimmed_lists_are_compared_one_sided() -> None:
    # max_neighbours 2: the bound is 4, the exact list has 6 entries.
    exact = row(a=6.0, b=5.0, c=4.0, d=3.0, e=2.0, f=1.0)
    expected = PartitionSnapshot(cooccurrence={"x": exact})

    def check(actual_row: dict[str, float]) -> list[Mismatch]:
        return compare_partition(0, expected, PartitionSnapshot(cooccurrence={"x": actual_row}), SETTINGS)

    assert check(row(a=6.0, b=5.0)) == []
    # Trimmed and re-grown: less than the exact weight is fine.
    assert check(row(a=6.0, b=5.0, f=0.5, e=1.0)) == []
    assert check({}) == []
    higher = check(row(a=6.0, c=4.5))
    assert [(m.what, m.key, m.expected, m.actual) for m in higher] == [("cooccurrence", "x->c", 4.0, 4.5)]
    assert [m.key for m in check(row(a=6.0, zz=0.1))] == ["x->zz"]  # never a neighbour at all
    assert [m.key for m in check(row(a=6.0, b=5.0, c=4.0, d=3.0, e=2.0))] == ["x-><size>"]
    # Within rounding tolerance is not a mismatch.
    assert check(row(a=6.0 * (1 + 1e-9))) == []


def test_short_lists_are_compared_exactly() -> None:
    expected = PartitionSnapshot(cooccurrence={"x": row(a=2.0, b=1.0)})
    lower = PartitionSnapshot(cooccurrence={"x": row(a=2.0, b=0.5)})
    assert [m.key for m in compare_partition(0, expected, lower, SETTINGS)] == ["x->b"]
    missing = PartitionSnapshot(cooccurrence={"x": row(a=2.0)})
    assert [(m.key, m.expected, m.actual) for m in compare_partition(0, expected, missing, SETTINGS)] == [
        ("x", 2, 1)
    ]


def test_mismatch_to_dict_is_plain() -> None:
    mismatch = Mismatch(1, "purchases", "u1", {"b", "a"}, {"z": {"y": 1}})
    assert mismatch.to_dict() == {
        "partition": 1,
        "what": "purchases",
        "key": "u1",
        "expected": ["a", "b"],
        "actual": {"z": {"y": 1}},
    }
