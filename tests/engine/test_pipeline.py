"""BatchProcessor: the watermark, the before-apply hook, dead letters, and the dedup window."""

from __future__ import annotations

import copy

import pytest

from engine.config import EngineSettings
from engine.errors import WatermarkConflict
from engine.events import Event, encode_event
from engine.pipeline import BatchOutcome, BatchProcessor, RawRecord, decode_batch
from engine.state.memory import MemoryStore
from engine.verify import compare_partition, rebuild

T0 = 1_700_000_000.0
SETTINGS = EngineSettings()


def ev(eid: str, item: str, user: str = "u", ts: float = T0, kind: str = "view") -> Event:
    return Event(eid, ts, user, item, kind)


def rec(offset: int, value: Event | bytes | None, partition: int = 0) -> RawRecord:
    return RawRecord(partition, offset, encode_event(value) if isinstance(value, Event) else value)


def test_empty_batch_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        BatchProcessor(MemoryStore(1), SETTINGS).process(0, [])


def test_decode_batch_splits_good_and_bad_in_order() -> None:
    records = [rec(0, ev("e1", "a")), rec(1, b"{"), rec(2, None), rec(3, ev("e2", "b"))]
    good, bad = decode_batch(records)
    assert [(offset, event.event_id) for offset, event in good] == [(0, "e1"), (3, "e2")]
    assert [(record.offset, reason.split(":")[0]) for record, reason in bad] == [
        (1, "not valid JSON"),
        (2, "record has no value (tombstone)"),
    ]


def test_before_apply_runs_after_decoding_and_before_the_write() -> None:
    store = MemoryStore(1)
    seen: list[tuple[int, int, list[int]]] = []

    def hook(outcome: BatchOutcome) -> None:
        # The state is untouched while the hook runs: dead letters go out before the watermark passes them.
        seen.append((store.watermarks()[0], outcome.applied, [r.offset for r, _ in outcome.dead_letters]))

    outcome = BatchProcessor(store, SETTINGS).process(
        0, [rec(0, ev("e1", "a")), rec(1, b"junk"), rec(2, ev("e2", "b"))], before_apply=hook
    )
    assert seen == [(-1, 2, [1])]
    assert store.watermarks() == {0: 2}
    assert (outcome.last_offset, outcome.applied, outcome.duplicates, outcome.already_applied) == (2, 2, 0, 0)
    assert store.snapshot(0).invalid == 1


def test_a_failing_before_apply_hook_writes_nothing() -> None:
    store = MemoryStore(1)
    before = copy.deepcopy(store.snapshot(0))

    def hook(outcome: BatchOutcome) -> None:
        raise RuntimeError("DLQ unreachable")

    with pytest.raises(RuntimeError, match="DLQ unreachable"):
        BatchProcessor(store, SETTINGS).process(
            0, [rec(0, b"junk"), rec(1, ev("e1", "a"))], before_apply=hook
        )
    assert store.snapshot(0) == before  # the invalid record will be seen again, and dead-lettered then


def test_a_batch_at_or_below_the_watermark_is_skipped_whole() -> None:
    store = MemoryStore(1)
    processor = BatchProcessor(store, SETTINGS)
    batch = [rec(0, ev("e1", "a", user="u1")), rec(1, b"junk"), rec(2, ev("e2", "b", user="u2"))]
    processor.process(0, batch)
    before = copy.deepcopy(store.snapshot(0))
    hooked: list[BatchOutcome] = []
    outcome = processor.process(0, batch, before_apply=hooked.append)
    assert (outcome.already_applied, outcome.applied, outcome.dead_letters, outcome.events) == (3, 0, [], [])
    # Its users are still reported: their recommendations are republished (crash repair).
    assert outcome.touched_users == ["u1", "u2"]
    assert hooked == []  # nothing to dead-letter, nothing written
    assert store.snapshot(0) == before


def test_a_batch_straddling_the_watermark_applies_and_dead_letters_only_the_new_part() -> None:
    store = MemoryStore(1)
    processor = BatchProcessor(store, SETTINGS)
    processor.process(0, [rec(0, ev("e1", "a")), rec(1, b"old junk")])
    outcome = processor.process(
        0, [rec(0, ev("e1", "a")), rec(1, b"old junk"), rec(2, b"new junk"), rec(3, ev("e2", "b"))]
    )
    assert outcome.already_applied == 2
    assert [r.offset for r, _ in outcome.dead_letters] == [2]
    assert [offset for offset, _ in outcome.events] == [3]
    snap = store.snapshot(0)
    assert (snap.watermark, snap.applied, snap.duplicates, snap.invalid) == (3, 2, 0, 2)
    assert snap.history == {"u": ["b", "a"]}


def test_replayed_events_at_new_offsets_are_duplicates_and_their_users_touched() -> None:
    store = MemoryStore(1)
    processor = BatchProcessor(store, SETTINGS)
    processor.process(0, [rec(0, ev("e1", "a", user="u1")), rec(1, ev("e2", "b", user="u2"))])
    outcome = processor.process(0, [rec(2, ev("e1", "a", user="u1")), rec(3, ev("e3", "c", user="u2"))])
    assert (outcome.applied, outcome.duplicates) == (1, 1)
    assert outcome.touched_users == ["u1", "u2"]
    snap = store.snapshot(0)
    assert snap.history == {"u1": ["a"], "u2": ["c", "b"]}
    assert (snap.applied, snap.duplicates, snap.watermark) == (3, 1, 3)


def test_a_write_by_another_owner_meanwhile_is_a_conflict() -> None:
    store = MemoryStore(1)
    mine, theirs = BatchProcessor(store, SETTINGS), BatchProcessor(store, SETTINGS)

    def another_worker_wins(outcome: BatchOutcome) -> None:
        theirs.process(0, [rec(0, ev("t1", "x", user="other")), rec(1, ev("t2", "y", user="other"))])

    with pytest.raises(WatermarkConflict, match="watermark is 1, expected -1"):
        mine.process(0, [rec(0, ev("m1", "a"))], before_apply=another_worker_wins)
    snap = store.snapshot(0)
    assert snap.history == {"other": ["y", "x"]} and snap.applied == 2  # only the winner's write


# --- the dedup window and batch boundaries -------------------------------------------------------


def test_dedup_does_not_depend_on_batch_boundaries() -> None:
    settings = EngineSettings(dedup_window=2)
    events = [ev(f"e{i}", f"i{i}", ts=T0 + i) for i in range(3)]
    records = [rec(offset, event) for offset, event in enumerate([*events, events[0]])]
    oracle = rebuild({0: records}, 1, settings)  # one batch: the replay of e0 is a duplicate
    live = MemoryStore(1, settings)
    processor = BatchProcessor(live, settings)
    processor.process(0, records[:3])
    processor.process(0, records[3:])  # e0 left the 2-id window: applied a second time
    assert compare_partition(0, oracle.snapshot(0), live.snapshot(0), settings) == []
