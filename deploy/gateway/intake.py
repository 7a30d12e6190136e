"""Event intake: what a browser may post to ``/events``, and the Kafka sink that takes it.

A posted event is the topic's event (engine/events.py) with two conveniences: ``event_id`` may be
left out (the gateway assigns a random one, so a retried POST of the same body counts twice: a
client that retries should send its own id) and ``ts`` may be left out (the gateway's clock).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaException

from engine.errors import BrokerError, InvalidEvent
from engine.events import MAX_RECORD_BYTES, Event, encode_event, validate_event
from producers.kafka import KafkaSettings
from producers.recs import make_producer


def events_from_body(
    body: Any,
    max_batch: int,
    now: Callable[[], float] = time.time,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> list[Event]:
    """One event object or a list of them; InvalidEvent names the first bad one (all or nothing)."""
    batch = body if isinstance(body, list) else [body]
    if not batch:
        raise InvalidEvent("no events in the request")
    if len(batch) > max_batch:
        raise InvalidEvent(f"{len(batch)} events in one request; at most {max_batch}")
    events = []
    for n, raw in enumerate(batch):
        where = f"event {n}: " if isinstance(body, list) else ""
        if isinstance(raw, dict):
            raw = {"event_id": new_id(), "ts": now()} | {k: v for k, v in raw.items() if v is not None}
        try:
            event = validate_event(raw)
        except InvalidEvent as exc:
            raise InvalidEvent(f"{where}{exc}") from None
        if len(encode_event(event)) > MAX_RECORD_BYTES:
            raise InvalidEvent(f"{where}event exceeds {MAX_RECORD_BYTES} bytes")
        events.append(event)
    return events


class KafkaEventSink:
    """Produces events to the events topic keyed by user id (same partitioner as replay)."""

    def __init__(self, kafka: KafkaSettings, timeout_s: float = 10.0) -> None:
        self.topic = kafka.events_topic
        self.timeout_s = timeout_s
        self.producer = make_producer(kafka)
        self._stop = threading.Event()
        # Delivery callbacks run inside poll(); a thread keeps polling so acknowledgements flow.
        self._poller = threading.Thread(target=self._poll, name="events-producer", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    async def send(self, events: Sequence[Event]) -> None:
        loop = asyncio.get_running_loop()
        pending = []
        for event in events:
            future = loop.create_future()

            def delivered(err: Any, _msg: Any, future: asyncio.Future = future) -> None:
                loop.call_soon_threadsafe(_settle, future, err)

            while True:
                try:
                    self.producer.produce(
                        self.topic,
                        key=event.user_id.encode(),
                        value=encode_event(event),
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    await asyncio.sleep(0.05)  # local queue full: let the poller drain it
                except KafkaException as exc:
                    raise BrokerError(f"cannot produce to {self.topic!r}: {exc}") from exc
            pending.append(future)
        try:
            await asyncio.wait_for(asyncio.gather(*pending), self.timeout_s)
        except TimeoutError:
            raise BrokerError(
                f"the broker did not acknowledge {len(pending)} events within {self.timeout_s:.0f} s"
            ) from None

    def close(self) -> None:
        self._stop.set()
        self._poller.join(5)
        self.producer.flush(5)
        close = getattr(self.producer, "close", None)  # newer clients: release the connections now
        if close is not None:
            close()


def _settle(future: asyncio.Future, err: Any) -> None:
    if future.done():  # the request already gave up (timeout)
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(BrokerError(f"event not delivered: {err}"))
