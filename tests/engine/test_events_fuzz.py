"""Hostile input through the whole batch path: every record is applied, a duplicate, or dead-lettered.

The decoder's own properties live in test_events.py; here mixed batches of good and bad records
(random bytes, huge payloads, wrong types, unicode, negative and far-future timestamps, unknown
types, deep nesting) go through :class:`BatchProcessor` batch after batch, and the accounting must
close: processed + dead-lettered = consumed, each bad record with a reason, the watermark at the
last offset (no partition stalls), and the state equal to the oracle rebuilt in other batch sizes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import EngineSettings
from engine.errors import InvalidEvent
from engine.events import EVENT_TYPES, MAX_RECORD_BYTES, MIN_TS, decode_event
from engine.pipeline import BatchProcessor, RawRecord
from engine.state.memory import MemoryStore
from engine.verify import compare_partition, rebuild

SETTINGS = EngineSettings()
TS = 1_700_000_000.0

valid = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=1, max_size=12),
        "ts": st.floats(min_value=MIN_TS, max_value=4.1e9),
        "user_id": st.sampled_from(["u1", "ü2", "用户3", "u 4", "👤5"]),
        "item_id": st.text(min_size=1, max_size=8),
        "type": st.sampled_from(EVENT_TYPES),
    }
)
wrong_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def broken(draw: st.DrawFn) -> dict[str, Any]:
    """A valid record with one field replaced by a wrong type, a bad timestamp or a bad event type."""
    record = dict(draw(valid))
    field = draw(st.sampled_from(["event_id", "ts", "user_id", "item_id", "type"]))
    record[field] = draw(
        st.one_of(
            wrong_values,
            st.sampled_from([-1.0, 0.0, -TS, TS * 1000, 1e300, 4102444800.0, "1700000000"]),
            st.sampled_from(["", "VIEW", "refund", "view\x00", "x" * 300, "\u202eview"]),
        )
    )
    return record


def _json(value: Any) -> bytes:
    # The standard library writes what orjson refuses to: NaN, huge integers, lone surrogates.
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _padded(extra: int) -> bytes:
    head = b'{"event_id": "big", "ts": 1700000000, "user_id": "u1", "type": "view", "item_id": "'
    return head + b"i" * (MAX_RECORD_BYTES - len(head) - 2 + extra) + b'"}'


payloads = st.one_of(
    valid.map(_json),
    valid.map(_json),
    broken().map(_json),
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda s: s.encode("utf-8", "surrogatepass")),
    wrong_values.map(_json),
    # Huge: a valid event padded past the size limit (built lazily, so reprs stay short).
    st.integers(min_value=1, max_value=4 * MAX_RECORD_BYTES).map(_padded),
    st.integers(min_value=1, max_value=5000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.just(b'{"event_id": "n", "ts": NaN, "user_id": "u", "item_id": "i", "type": "view"}'),
    st.just(b"\xef\xbb\xbf{}"),
    st.none(),
)

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@FUZZ
@given(st.lists(st.lists(payloads, min_size=1, max_size=25), min_size=1, max_size=6))
def test_every_record_is_processed_or_dead_lettered(batches: list[list[bytes | None]]) -> None:
    store = MemoryStore(1, SETTINGS, trim=False)
    processor = BatchProcessor(store, SETTINGS)
    offset = 0
    consumed = processed = dead = 0
    records: list[RawRecord] = []
    for payloads_ in batches:
        batch = [RawRecord(0, offset + i, value) for i, value in enumerate(payloads_)]
        offset += len(batch)
        records += batch
        outcome = processor.process(0, batch)
        consumed += len(batch)
        processed += outcome.applied + outcome.duplicates
        dead += len(outcome.dead_letters)
        for record, reason in outcome.dead_letters:
            assert reason and isinstance(reason, str)
            with pytest.raises(InvalidEvent):
                decode_event(record.value)
        # No stall: the watermark passes every record of the batch, good or bad.
        assert store.snapshot(0).watermark == offset - 1
    assert processed + dead == consumed
    snap = store.snapshot(0)
    assert (snap.applied, snap.duplicates, snap.invalid) == (
        processed - snap.duplicates,
        snap.duplicates,
        dead,
    )
    # The same records in one batch and in single-record batches give the same state.
    for size in (1, len(records)):
        oracle = rebuild({0: records}, 1, SETTINGS, batch_size=size)
        assert compare_partition(0, oracle.snapshot(0), snap, SETTINGS) == []


@pytest.mark.parametrize("size", [MAX_RECORD_BYTES + 1, 1_000_000, 8 * 1024 * 1024])
def test_oversized_records_are_rejected_by_the_limit_without_parsing(size: int) -> None:
    # A syntactically valid event: only the size limit can reject it.
    head = b'{"event_id": "e", "ts": 1700000000, "user_id": "u", "item_id": "i", "type": "view", "pad": "'
    payload = head + b"p" * (size - len(head) - 2) + b'"}'
    assert len(payload) == size
    with pytest.raises(InvalidEvent, match="exceeds the 65536-byte limit"):
        decode_event(payload)


@pytest.mark.parametrize(
    "payload, reason",
    [
        (
            b'{"event_id": "e", "ts": -5, "user_id": "u", "item_id": "i", "type": "view"}',
            "outside unix seconds",
        ),
        (
            b'{"event_id": "e", "ts": 1.7e12, "user_id": "u", "item_id": "i", "type": "view"}',
            "outside unix seconds",
        ),
        (b'{"event_id": "e", "ts": 1e400, "user_id": "u", "item_id": "i", "type": "view"}', "not valid JSON"),
        (
            b'{"event_id": "e", "ts": 1700000000, "user_id": "u", "item_id": "i", "type": "refund"}',
            "unknown event type",
        ),
        (
            b'{"event_id": ["e"], "ts": 1700000000, "user_id": "u", "item_id": "i", "type": "view"}',
            "string or integer",
        ),
        (
            b'{"event_id": "e", "ts": 1700000000, "user_id": "\xed\xa0\x80", "item_id": "i", "type": "view"}',
            "not valid JSON",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "exceeds"),
        (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
    ],
)
def test_hostile_records_have_a_clear_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        decode_event(payload)


def test_unicode_identifiers_are_kept_exactly() -> None:
    payload = (
        '{"event_id": "é1", "ts": 1700000000, "user_id": "用户👤", "item_id": "ï\u202e", "type": "click"}'
    )
    event = decode_event(payload.encode())
    assert (event.event_id, event.user_id, event.item_id) == ("é1", "用户👤", "ï\u202e")
