"""Replay a recorded event log into the ``events`` topic, in timestamp order, keyed by user."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from engine.events import Event, encode_event
from producers.kafka import KafkaSettings
from producers.recs import RecsPublisher, flush, make_producer


def replay_events(
    events: Sequence[Event],
    settings: KafkaSettings,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    topic: str | None = None,
) -> int:
    """Produce ``events`` (already in timestamp order); ``rate`` caps events per second.

    Returns the number produced once every record is acknowledged by the broker.
    """
    producer = make_producer(settings, **{"linger.ms": 20, "batch.num.messages": 10_000})
    sink = RecsPublisher(producer, topic or settings.events_topic)
    started = time.monotonic()
    step = 1000
    for index, event in enumerate(events, 1):
        sink._produce(key=event.user_id.encode(), value=encode_event(event))
        if rate and index % 100 == 0:
            # Sleep just enough to stay on the schedule of `rate` events per second.
            ahead = index / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        if index % step == 0:
            producer.poll(0)
            if progress:
                progress(step)
    flush(producer, timeout_s=120)
    sink.check()
    if progress:
        progress(len(events) % step)
    return len(events)
