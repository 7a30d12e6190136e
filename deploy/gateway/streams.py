"""Fan-out of recs records to the streams that subscribed to a user; pure asyncio, no I/O.

A recs record is a full snapshot of a user's list, so a subscriber never needs an older record
once a newer one exists: each subscription is a one-slot :class:`Mailbox` that keeps only the
newest undelivered record. A slow browser therefore costs one record of memory, never a queue,
and always catches up with the latest list.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from typing import Any

from engine.errors import StreamrecError
from engine.events import load_record

MAX_RECORD_BYTES = 1_000_000


class InvalidRecsRecord(StreamrecError, ValueError):
    """A record on the recs topic that is not a recommendation list (it is counted and skipped)."""


def parse_recs_record(value: bytes | None) -> dict[str, Any]:
    """Decode and check the fields a front end relies on; the full contract is recs.schema.json."""
    record = load_record(value, InvalidRecsRecord, MAX_RECORD_BYTES)
    if not isinstance(record, dict):
        raise InvalidRecsRecord(f"expected a JSON object, got {type(record).__name__}")
    user, items, scores = record.get("user_id"), record.get("items"), record.get("scores")
    if not isinstance(user, str) or not user:
        raise InvalidRecsRecord("missing or empty 'user_id'")
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise InvalidRecsRecord("'items' must be a list of strings")
    if not isinstance(scores, list) or len(scores) != len(items):
        raise InvalidRecsRecord("'scores' must be a list as long as 'items'")
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in scores):
        raise InvalidRecsRecord("'scores' must be finite numbers")
    return record


CLOSED = object()  # what a mailbox yields once the hub shuts down


class Mailbox:
    """Holds the newest undelivered message of one subscription (older ones are dropped)."""

    def __init__(self) -> None:
        self._message: Any = None
        self._ready = asyncio.Event()
        self.conflated = 0  # messages superseded before the subscriber took them

    def put(self, message: Any) -> None:
        if self._message is not None and self._message is not CLOSED:
            self.conflated += 1
        if self._message is not CLOSED:
            self._message = message
        self._ready.set()

    def close(self) -> None:
        self._message = CLOSED
        self._ready.set()

    @property
    def pending(self) -> bool:
        return self._message is not None

    async def get(self, timeout: float) -> Any:
        """The newest message, None after ``timeout`` seconds without one, or :data:`CLOSED`."""
        if self._message is None:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
        message = self._message
        if message is not CLOSED:
            self._message = None
            self._ready.clear()
        return message


class Hub:
    """User id -> subscriptions, plus the latest record per user (an LRU of ``cache_users``).

    Call it from the event loop's thread only (the Kafka feed hands records over with
    ``call_soon_threadsafe``).
    """

    def __init__(self, cache_users: int = 100_000) -> None:
        self.cache_users = cache_users
        self._latest: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._subscribers: dict[str, set[Mailbox]] = {}
        self.closed = False

    def publish(self, record: dict[str, Any]) -> int:
        """Remember the record as its user's latest and hand it to their subscribers (how many)."""
        user = record["user_id"]
        self._latest[user] = record
        self._latest.move_to_end(user)
        while len(self._latest) > self.cache_users:
            self._latest.popitem(last=False)
        mailboxes = self._subscribers.get(user, ())
        for mailbox in mailboxes:
            mailbox.put(record)
        return len(mailboxes)

    def latest(self, user: str) -> dict[str, Any] | None:
        return self._latest.get(user)

    def subscribe(self, user: str) -> Mailbox:
        mailbox = Mailbox()
        if self.closed:
            mailbox.close()
        self._subscribers.setdefault(user, set()).add(mailbox)
        return mailbox

    def unsubscribe(self, user: str, mailbox: Mailbox) -> None:
        mailboxes = self._subscribers.get(user)
        if mailboxes is not None:
            mailboxes.discard(mailbox)
            if not mailboxes:
                del self._subscribers[user]

    def subscriber_count(self) -> int:
        return sum(len(m) for m in self._subscribers.values())

    def cached_users(self) -> int:
        return len(self._latest)

    def close(self) -> None:
        """Ends every stream (server shutdown)."""
        self.closed = True
        for mailboxes in self._subscribers.values():
            for mailbox in mailboxes:
                mailbox.close()
