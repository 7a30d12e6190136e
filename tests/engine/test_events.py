"""The event schema: decoding, every rejection reason, and the never-crash property."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import InvalidEvent
from engine.events import (
    EVENT_TYPES,
    MAX_ID_LENGTH,
    MAX_RECORD_BYTES,
    MAX_TS,
    MIN_TS,
    Event,
    decode_event,
    encode_event,
    make_event_id,
    validate_event,
)
from engine.pipeline import RawRecord, decode_batch

TS = 1_700_000_000.0


def raw(**overrides: Any) -> dict[str, Any]:
    """A valid raw record; ``None`` in ``overrides`` removes a field."""
    base: dict[str, Any] = {"event_id": "e1", "ts": TS, "user_id": "u1", "item_id": "i1", "type": "view"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def reason(value: Any) -> str:
    with pytest.raises(InvalidEvent) as info:
        validate_event(value)
    return str(info.value)


# --- valid records ------------------------------------------------------------------------------


def test_round_trip_with_all_fields() -> None:
    event = Event(
        "e1", TS + 0.25, "u1", "i9", "purchase", session_id="s1", price=9.5, category="c2", rating=4.0
    )
    assert decode_event(encode_event(event)) == event


def test_round_trip_minimal_omits_optional_fields() -> None:
    event = Event("e1", TS, "u1", "i9", "view")
    assert orjson.loads(encode_event(event)) == {
        "event_id": "e1",
        "ts": TS,
        "user_id": "u1",
        "item_id": "i9",
        "type": "view",
    }
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_is_accepted(event_type: str) -> None:
    assert validate_event(raw(type=event_type)).type == event_type


def test_integer_ids_and_timestamp_become_strings_and_float() -> None:
    event = validate_event(raw(event_id=7, user_id=42, item_id=-3, session_id=5, category=0, ts=int(TS)))
    assert (event.event_id, event.user_id, event.item_id, event.session_id, event.category) == (
        "7",
        "42",
        "-3",
        "5",
        "0",
    )
    assert event.ts == TS and isinstance(event.ts, float)


def test_optional_numbers_and_null_fields() -> None:
    event = validate_event(raw(price=0, rating=-1.5))
    assert event.price == 0.0 and event.rating == -1.5
    nulls = validate_event({**raw(), "session_id": None, "price": None, "category": None, "rating": None})
    assert (nulls.session_id, nulls.price, nulls.category, nulls.rating) == (None, None, None, None)


def test_unknown_extra_fields_are_ignored() -> None:
    assert validate_event(raw(extra={"x": [1, 2]}, shop="s")) == Event("e1", TS, "u1", "i1", "view")


def test_ts_bounds_are_half_open() -> None:
    assert validate_event(raw(ts=MIN_TS)).ts == MIN_TS
    assert validate_event(raw(ts=math.nextafter(MAX_TS, 0))).ts < MAX_TS
    assert "outside unix seconds" in reason(raw(ts=MAX_TS))
    assert "outside unix seconds" in reason(raw(ts=math.nextafter(MIN_TS, 0)))


def test_id_length_limit() -> None:
    assert validate_event(raw(user_id="u" * MAX_ID_LENGTH)).user_id == "u" * MAX_ID_LENGTH
    assert f"1..{MAX_ID_LENGTH} characters" in reason(raw(user_id="u" * (MAX_ID_LENGTH + 1)))
    assert f"1..{MAX_ID_LENGTH} characters" in reason(raw(item_id=""))


def test_record_exactly_at_size_limit_is_accepted() -> None:
    body = encode_event(Event("e1", TS, "u1", "i1", "view"))
    filler = MAX_RECORD_BYTES - len(body[:-1] + b',"pad":""}')
    padded = body[:-1] + b',"pad":"' + b"x" * filler + b'"}'
    assert len(padded) == MAX_RECORD_BYTES
    assert decode_event(padded).event_id == "e1"
    with pytest.raises(InvalidEvent, match="exceeds the 65536-byte limit"):
        decode_event(padded[:-2] + b'x"}')


# --- rejections ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["event_id", "ts", "user_id", "item_id", "type"])
def test_missing_required_field(name: str) -> None:
    assert reason(raw(**{name: None})) == f"missing field '{name}'"


def test_explicit_null_required_field_is_missing() -> None:
    assert reason({**raw(), "user_id": None}) == "missing field 'user_id'"


@pytest.mark.parametrize("name", ["event_id", "user_id", "item_id", "session_id", "category"])
@pytest.mark.parametrize("value", [1.5, [1], {"a": 1}])
def test_identifier_of_wrong_type(name: str, value: Any) -> None:
    assert reason(raw(**{name: value})).startswith(f"field '{name}' must be a string or integer, got ")


@pytest.mark.parametrize("name", ["event_id", "user_id", "item_id", "session_id", "category"])
@pytest.mark.parametrize("value", [True, False])
def test_bool_is_not_an_identifier(name: str, value: bool) -> None:
    assert reason(raw(**{name: value})) == f"field '{name}' must be a string or integer, got bool"


@pytest.mark.parametrize("name", ["ts", "price", "rating"])
@pytest.mark.parametrize("value", ["1700000000", [1.0], {"v": 1}, True])
def test_number_of_wrong_type(name: str, value: Any) -> None:
    got = type(value).__name__
    assert reason(raw(**{name: value})) == f"field '{name}' must be a number, got {got}"


@pytest.mark.parametrize("name", ["ts", "price", "rating"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers(name: str, value: float) -> None:
    assert reason(raw(**{name: value})) == f"field '{name}' must be finite"


def test_non_finite_numbers_in_json_text() -> None:
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        decode_event(b'{"event_id":"e","ts":1e400,"user_id":"u","item_id":"i","type":"view"}')
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        decode_event(b'{"event_id":"e","ts":NaN,"user_id":"u","item_id":"i","type":"view"}')


@pytest.mark.parametrize("ts", [0, 1_700_000_000_000, -1.0, 631151999.999])
def test_ts_out_of_range(ts: float) -> None:
    assert "is outside unix seconds 1990..2100" in reason(raw(ts=ts))


@pytest.mark.parametrize("event_type", ["VIEW", "buy", "", "view "])
def test_unknown_type(event_type: str) -> None:
    message = reason(raw(type=event_type))
    assert message.startswith("unknown event type") and "expected one of view, click" in message


def test_unknown_type_message_is_truncated() -> None:
    assert "x" * 41 not in reason(raw(type="x" * 500))


@pytest.mark.parametrize("event_type", [1, True, 2.5])
def test_scalar_type_of_wrong_kind_is_unknown(event_type: Any) -> None:
    assert reason(raw(type=event_type)).startswith("unknown event type")


@pytest.mark.parametrize("payload", [b'"type":[]', b'"type":{"a":1}'])
def test_unhashable_type_is_rejected_not_crashing(payload: bytes) -> None:
    record = b'{"event_id":"e","ts":1700000000,"user_id":"u","item_id":"i",' + payload + b"}"
    with pytest.raises(InvalidEvent, match="event type"):
        decode_event(record)


def test_unhashable_type_is_dead_lettered_by_the_pipeline() -> None:
    poison = RawRecord(0, 5, b'{"event_id":"e","ts":1700000000,"user_id":"u","item_id":"i","type":[]}')
    good, bad = decode_batch([poison])
    assert good == [] and bad[0][0] == poison and "event type" in bad[0][1]


def test_huge_integer_number_is_rejected_not_crashing() -> None:
    with pytest.raises(InvalidEvent):
        validate_event(raw(ts=10**400))


@pytest.mark.parametrize("price", [-0.01, -1, -math.inf])
def test_negative_price(price: float) -> None:
    expected = "field 'price' must be finite" if math.isinf(price) else "field 'price' must not be negative"
    assert reason(raw(price=price)) == expected


def test_oversize_payload() -> None:
    payload = b'{"event_id":"' + b"x" * MAX_RECORD_BYTES + b'"}'
    with pytest.raises(InvalidEvent, match=rf"record of {len(payload)} bytes exceeds the {MAX_RECORD_BYTES}"):
        decode_event(payload)


@pytest.mark.parametrize("value", [[], [raw()], "x", 3, 2.5, True, None])
def test_non_object_json(value: Any) -> None:
    name = type(value).__name__
    assert reason(value) == f"record must be a JSON object, got {name}"
    with pytest.raises(InvalidEvent, match=f"record must be a JSON object, got {name}"):
        decode_event(orjson.dumps(value))


@pytest.mark.parametrize("payload", [b"", b"{", b"\xff\xfe", b'{"a": 1} x', b"{'a': 1}", b'"\xed\xa0\x80"'])
def test_invalid_bytes(payload: bytes) -> None:
    with pytest.raises(InvalidEvent, match="^not valid JSON: "):
        decode_event(payload)


def test_none_payload_is_a_tombstone() -> None:
    with pytest.raises(InvalidEvent, match=r"record has no value \(tombstone\)"):
        decode_event(None)


@pytest.mark.parametrize("name", ["event_id", "user_id", "item_id", "session_id", "category"])
@pytest.mark.parametrize("char", ["\x00", "\n", "\r"])
def test_control_characters_in_ids(name: str, char: str) -> None:
    assert reason(raw(**{name: f"a{char}b"})) == f"field '{name}' contains control characters"
    record = orjson.dumps(raw(**{name: f"a{char}b"}))
    with pytest.raises(InvalidEvent, match="contains control characters"):
        decode_event(record)


def test_invalid_event_is_a_value_error() -> None:
    assert issubclass(InvalidEvent, ValueError)


# --- event ids ----------------------------------------------------------------------------------


def test_make_event_id_is_deterministic_and_distinguishing() -> None:
    first = make_event_id("file.csv", 12, "u1", "i1", TS, "view")
    assert first == make_event_id("file.csv", 12, "u1", "i1", TS, "view")
    assert len(first) == 20 and int(first, 16) >= 0
    assert first != make_event_id("file.csv", 13, "u1", "i1", TS, "view")
    assert first != make_event_id("other.csv", 12, "u1", "i1", TS, "view")
    # Parts are joined with a separator, not concatenated.
    assert make_event_id("ab", "c") != make_event_id("a", "bc")
    # Stable across runs and versions: a replayed log must map to the same ids.
    assert make_event_id("gen", 0, 0) == make_event_id("gen", "0", "0")


# --- properties ---------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
identifiers = st.one_of(st.text(min_size=0, max_size=300), st.integers(-(2**63), 2**64 - 1), json_values)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=MIN_TS - 10, max_value=MAX_TS + 10),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    json_values,
)


@st.composite
def record_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Dicts near the schema: each field valid, absent, or replaced by an arbitrary JSON value."""
    out: dict[str, Any] = {}
    fields = {
        "event_id": identifiers,
        "ts": numbers,
        "user_id": identifiers,
        "item_id": identifiers,
        # Containers for "type" are covered by test_unhashable_type_is_rejected_not_crashing (a known bug).
        "type": st.one_of(st.sampled_from(EVENT_TYPES), json_scalars),
        "session_id": identifiers,
        "price": numbers,
        "category": identifiers,
        "rating": numbers,
    }
    valid = raw(session_id="s", price=1.0, category="c", rating=3.0)
    for name, strategy in fields.items():
        choice = draw(st.integers(0, 3))
        if choice <= 1:
            out[name] = valid[name]
        elif choice == 2:
            out[name] = draw(strategy)
    out.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    return out


def check_event(event: Event) -> None:
    assert isinstance(event, Event)
    assert MIN_TS <= event.ts < MAX_TS
    assert event.type in EVENT_TYPES
    for name in ("event_id", "user_id", "item_id"):
        value = getattr(event, name)
        assert isinstance(value, str) and 1 <= len(value) <= MAX_ID_LENGTH
        assert not set(value) & {"\x00", "\n", "\r"}
    assert event.price is None or (math.isfinite(event.price) and event.price >= 0)
    # A valid event survives its own encoding unchanged.
    assert decode_event(encode_event(event)) == event


# Derandomized: the same examples on every run, so the suite is deterministic.
PROPERTY = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_invalid_event(payload: bytes) -> None:
    try:
        event = decode_event(payload)
    except InvalidEvent:
        return
    check_event(event)


@PROPERTY
@given(st.one_of(record_dicts().map(orjson.dumps), json_values.map(orjson.dumps)))
def test_arbitrary_json_text_decodes_or_raises_invalid_event(payload: bytes) -> None:
    try:
        event = decode_event(payload)
    except InvalidEvent:
        return
    check_event(event)


@PROPERTY
@given(record_dicts())
def test_arbitrary_dicts_validate_or_raise_invalid_event(value: dict[str, Any]) -> None:
    try:
        event = validate_event(value)
    except InvalidEvent:
        return
    check_event(event)


@PROPERTY
@given(
    st.builds(
        Event,
        event_id=st.text(min_size=1, max_size=MAX_ID_LENGTH).filter(lambda s: not set(s) & set("\x00\n\r")),
        ts=st.floats(min_value=MIN_TS, max_value=MAX_TS, exclude_max=True),
        user_id=st.sampled_from(["u", "ü", "u:1", "user with spaces"]),
        item_id=st.text(min_size=1, max_size=20).filter(lambda s: not set(s) & set("\x00\n\r")),
        type=st.sampled_from(EVENT_TYPES),
        session_id=st.none() | st.just("s1"),
        price=st.none() | st.floats(min_value=0, max_value=1e12),
        category=st.none() | st.just("c"),
        rating=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    )
)
def test_valid_events_round_trip(event: Event) -> None:
    assert decode_event(encode_event(event)) == event
