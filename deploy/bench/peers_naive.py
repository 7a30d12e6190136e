"""Peer (b): the naive loop, one event at a time with a Redis round trip per command.

What a first version of a streaming recommender often looks like: poll one record, decode it,
read the user's recent items, bump the co-occurrence of each pair and the item's popularity, push
the item onto the history, read the item's strongest neighbours as the user's new list, produce
it, and commit the offset synchronously, all one call after another. It keeps the same weights,
window and decay as the engine, but no batching, no pipelining, no atomic watermark.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import redis
from confluent_kafka import Consumer, KafkaError, Producer

from deploy.bench.common import BenchError, drop_keys
from engine.config import EngineSettings
from engine.errors import InvalidEvent
from engine.events import decode_event
from producers.kafka import KafkaSettings, client_config


def run_naive_peer(
    kafka: KafkaSettings, redis_url: str, n_events: int, timeout_s: float = 300.0
) -> dict[str, Any]:
    """Process the first ``n_events`` records of ``kafka.events_topic``; events/s from the first."""
    engine = EngineSettings()
    prefix = f"naive:{uuid.uuid4().hex[:8]}:"
    consumer = Consumer(
        client_config(kafka)
        | {
            "group.id": f"naive-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": kafka.session_timeout_ms,
        }
    )
    producer = Producer(client_config(kafka) | {"linger.ms": 5})
    client = redis.Redis.from_url(redis_url, protocol=2)
    recs_topic = kafka.recs_topic + "-naive"
    consumer.subscribe([kafka.events_topic])
    count = published = invalid = commands = 0
    first: float | None = None
    deadline = time.monotonic() + timeout_s
    try:
        while count < n_events:
            if time.monotonic() > deadline:
                raise BenchError(f"naive peer processed {count} of {n_events} events in {timeout_s:.0f} s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise BenchError(f"naive peer: consume error {msg.error()}")
                continue
            if first is None:
                first = time.monotonic()
            count += 1
            try:
                event = decode_event(msg.value())
            except InvalidEvent:
                invalid += 1
                consumer.commit(message=msg, asynchronous=False)
                continue
            weight = engine.type_weight(event.type)
            history_key = f"{prefix}h:{event.user_id}"
            history = client.lrange(history_key, 0, engine.cooccurrence_window - 1)
            commands += 1
            factor = 1.0
            for raw in history:
                earlier = raw.decode()
                if earlier != event.item_id:
                    client.zincrby(f"{prefix}co:{earlier}", weight * factor, event.item_id)
                    client.zincrby(f"{prefix}co:{event.item_id}", weight * factor, earlier)
                    commands += 2
                factor *= engine.cooccurrence_decay
            client.lpush(history_key, event.item_id)
            client.ltrim(history_key, 0, engine.history_length - 1)
            client.zincrby(f"{prefix}pop", weight, event.item_id)
            commands += 3
            if event.type == "purchase":
                client.sadd(f"{prefix}b:{event.user_id}", event.item_id)
                commands += 1
            top = client.zrevrange(f"{prefix}co:{event.item_id}", 0, engine.top_k - 1)
            commands += 1
            payload = {"user_id": event.user_id, "items": [i.decode() for i in top], "ts": time.time()}
            producer.produce(recs_topic, key=event.user_id.encode(), value=orjson.dumps(payload))
            producer.poll(0)
            published += 1
            consumer.commit(message=msg, asynchronous=False)
        elapsed = time.monotonic() - (first or time.monotonic())
        producer.flush(30)
    finally:
        consumer.close()
        client.close()
        drop_keys(redis_url, prefix)
    return {
        "events": count,
        "seconds": elapsed,
        "events_per_s": count / max(elapsed, 1e-9),
        "recs_published": published,
        "invalid": invalid,
        "redis_commands_per_event": commands / max(count - invalid, 1),
    }
