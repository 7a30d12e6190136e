"""The event schema: what a shop sends, how it is encoded, and why a record is rejected.

Events travel as JSON objects (orjson) on the ``events`` topic, keyed by user id::

    >>> ev = Event(event_id="e1", ts=1700000000.0, user_id="u1", item_id="i9", type="purchase")
    >>> decode_event(encode_event(ev)) == ev
    True
    >>> decode_event(b'{"event_id": "x"}')
    Traceback (most recent call last):
    ...
    engine.errors.InvalidEvent: missing field 'ts'
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import orjson

from engine.errors import InvalidEvent

EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")
_EVENT_TYPE_SET = frozenset(EVENT_TYPES)

# Limits that keep one hostile record from costing more than it is worth.
MAX_ID_LENGTH = 256
MAX_RECORD_BYTES = 64 * 1024
# Timestamps are unix seconds; anything outside [1990, 2100) is a unit mistake (ms) or garbage.
MIN_TS = 631152000.0
MAX_TS = 4102444800.0


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    ts: float
    user_id: str
    item_id: str
    type: str
    session_id: str | None = None
    price: float | None = None
    category: str | None = None
    rating: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "ts": self.ts,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "type": self.type,
        }
        for name in ("session_id", "price", "category", "rating"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def encode_event(event: Event) -> bytes:
    return orjson.dumps(event.to_dict())


def make_event_id(*parts: object) -> str:
    """A deterministic id from the parts that identify an event in its source log.

    The same row of the same file always gets the same id, so a second replay is recognised.
    """
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=10)
    return digest.hexdigest()


def _identifier(raw: dict[str, Any], name: str, required: bool) -> str | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise InvalidEvent(f"missing field '{name}'")
        return None
    if type(value) is str:  # the usual case, first
        text = value
    elif isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidEvent(f"field '{name}' must be a string or integer, got {type(value).__name__}")
    else:
        text = str(value)
    if not text or len(text) > MAX_ID_LENGTH:
        raise InvalidEvent(f"field '{name}' must be 1..{MAX_ID_LENGTH} characters")
    # three substring tests in C, not a generator per id (this runs for every id of every event)
    if "\x00" in text or "\n" in text or "\r" in text:
        raise InvalidEvent(f"field '{name}' contains control characters")
    return text


def _number(raw: dict[str, Any], name: str, required: bool) -> float | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise InvalidEvent(f"missing field '{name}'")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent(f"field '{name}' must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise InvalidEvent(f"field '{name}' must be finite") from None
    if not math.isfinite(number):
        raise InvalidEvent(f"field '{name}' must be finite")
    return number


def validate_event(raw: Any) -> Event:
    """Turn a decoded JSON value into an :class:`Event`, or raise :class:`InvalidEvent` with a reason."""
    if not isinstance(raw, dict):
        raise InvalidEvent(f"record must be a JSON object, got {type(raw).__name__}")
    event_id = _identifier(raw, "event_id", True)
    ts = _number(raw, "ts", True)
    assert ts is not None
    if not MIN_TS <= ts < MAX_TS:
        raise InvalidEvent(f"field 'ts' = {ts!r} is outside unix seconds 1990..2100")
    user_id = _identifier(raw, "user_id", True)
    item_id = _identifier(raw, "item_id", True)
    event_type = raw.get("type")
    if event_type is None:
        raise InvalidEvent("missing field 'type'")
    if not isinstance(event_type, str) or event_type not in _EVENT_TYPE_SET:
        raise InvalidEvent(
            f"unknown event type {str(event_type)[:40]!r}; expected one of {', '.join(EVENT_TYPES)}"
        )
    price = _number(raw, "price", False)
    if price is not None and price < 0:
        raise InvalidEvent("field 'price' must not be negative")
    return Event(
        event_id=event_id,  # type: ignore[arg-type]
        ts=ts,
        user_id=user_id,  # type: ignore[arg-type]
        item_id=item_id,  # type: ignore[arg-type]
        type=event_type,
        session_id=_identifier(raw, "session_id", False),
        price=price,
        category=_identifier(raw, "category", False),
        rating=_number(raw, "rating", False),
    )


def load_record(payload: bytes | None, error: type[Exception], limit: int = MAX_RECORD_BYTES) -> Any:
    """Parse one Kafka record value as JSON; a tombstone, a value over ``limit`` bytes or invalid
    JSON raises ``error`` with a readable reason (events and recs records share these checks)."""
    if payload is None:
        raise error("record has no value (tombstone)")
    if len(payload) > limit:
        raise error(f"record of {len(payload)} bytes exceeds the {limit}-byte limit")
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise error(f"not valid JSON: {exc}") from None


def decode_event(payload: bytes | None) -> Event:
    """Decode one record value; every failure is an :class:`InvalidEvent` with a readable reason."""
    return validate_event(load_record(payload, InvalidEvent))
