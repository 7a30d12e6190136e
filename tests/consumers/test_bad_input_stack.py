"""Hostile records on the real topic: each one is applied or dead-lettered, and no partition stalls.

Random bytes, wrong types, unicode, bad timestamps, unknown types, deep nesting and records up to
the broker's size limit go through a real worker between valid events. processed + dead-lettered
= consumed, the DLQ holds every bad record with a reason and its coordinates, and the state equals
the oracle.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from consumers.reader import read_topic
from consumers.worker import Worker, WorkerSettings
from engine.config import EngineSettings
from engine.errors import InvalidEvent
from engine.events import decode_event, encode_event
from engine.generator import generate_events
from engine.state.redis_store import RedisSettings, RedisStore
from producers.kafka import KafkaSettings, client_config
from tests.support.oracle import exactly_once, recs_users, verify_cli
from tests.support.workers import stack_env

pytestmark = [pytest.mark.stack, pytest.mark.slow]

EVENTS = 3000
BAD = 600


def _hostile(rng: random.Random, n: int) -> bytes:
    valid = {"event_id": f"h{n}", "ts": 1_700_000_000 + n, "user_id": "u1", "item_id": "i1", "type": "view"}
    kind = n % 10
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 200))
    if kind == 1:
        field = rng.choice(list(valid))
        return json.dumps(valid | {field: rng.choice([None, True, [1], {"a": 1}, 1.5e300])}).encode()
    if kind == 2:
        return json.dumps(valid | {"ts": rng.choice([-1, 0, 1.7e12, 5e9, "now", float("nan")])}).encode()
    if kind == 3:
        return json.dumps(valid | {"type": rng.choice(["", "View", "refund", "view ", "🛒", 7])}).encode()
    if kind == 4:
        return json.dumps(valid | {"user_id": rng.choice(["", "a\x00b", "x" * 257, "\ud800"])}).encode(
            "utf-8", "surrogatepass"
        )
    if kind == 5:
        depth = rng.randrange(600, 3000)
        return b"[" * depth + b"]" * depth
    if kind == 6:
        return json.dumps(rng.choice([[], "event", 42, None, [valid]])).encode()
    if kind == 7:
        return json.dumps(valid | {"item_id": "i" * rng.randrange(70_000, 200_000)}).encode()
    if kind == 8:
        return b'{"event_id": "x", "ts": 1700000000, "user_id": "u", "item_id": "i", "type": "view"'
    return "\u00e9\u00e8".encode("latin-1") + b"{}"


def test_every_bad_record_is_dead_lettered_and_nothing_stalls(
    kafka_settings: KafkaSettings, redis_url: str, tmp_path: Path
) -> None:
    rng = random.Random(99)
    events = generate_events(EVENTS, n_users=150, n_items=400, seed=61)
    producer = Producer(client_config(kafka_settings) | {"partitioner": "murmur2_random", "linger.ms": 20})
    bad_values: list[bytes] = []
    for i, event in enumerate(events):
        producer.produce(kafka_settings.events_topic, key=event.user_id.encode(), value=encode_event(event))
        if i % (EVENTS // BAD) == 0:
            value = _hostile(rng, len(bad_values))
            bad_values.append(value)
            producer.produce(kafka_settings.events_topic, key=b"bad-%d" % i, value=value)
        producer.poll(0)
    # The largest record the broker takes: its dead-letter copy must still fit (headers and all).
    near_limit = b'{"pad": "' + b"x" * 999_000 + b'"}'
    bad_values.append(near_limit)
    producer.produce(kafka_settings.events_topic, key=b"bad-huge", value=near_limit)
    assert producer.flush(60) == 0
    for value in bad_values:
        with pytest.raises(InvalidEvent):
            decode_event(value)

    engine = EngineSettings()
    store = RedisStore(RedisSettings(url=redis_url), kafka_settings.partitions, engine)
    worker = Worker(kafka_settings, store, engine, WorkerSettings(batch_size=250, poll_timeout_s=0.2))
    stats = worker.run(until_idle=True, max_seconds=180)

    total = EVENTS + len(bad_values)
    assert stats.consumed == total
    assert (stats.applied + stats.duplicates, stats.dead_lettered) == (EVENTS, len(bad_values))
    counts = exactly_once(kafka_settings, redis_url)
    assert counts.watermarks_at_end, "a partition stalled"
    assert (counts.applied + counts.duplicates, counts.invalid, counts.duplicates_applied) == (
        EVENTS,
        len(bad_values),
        0,
    )
    report = verify_cli(stack_env(kafka_settings, redis_url), tmp_path)
    assert report["exit_code"] == 0 and report["ok"], report["mismatches"][:5]
    assert {e.user_id for e in events} <= recs_users(kafka_settings)

    # The DLQ: one record per bad record, with its reason and source coordinates.
    source = read_topic(kafka_settings, kafka_settings.events_topic)
    bad_coords = {
        (r.partition, r.offset) for rows in source.values() for r in rows if r.key.startswith(b"bad")
    }
    consumer = Consumer(client_config(kafka_settings) | {"group.id": "dlq-read", "enable.auto.commit": False})
    seen: dict[tuple[int, int], dict[str, bytes]] = {}
    try:
        consumer.assign(
            [TopicPartition(kafka_settings.dlq_topic, p, 0) for p in range(kafka_settings.partitions)]
        )
        for _ in range(60):
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None:
                    headers = dict(msg.headers() or [])
                    seen[(int(headers["source_partition"]), int(headers["source_offset"]))] = headers
            if len(seen) >= len(bad_coords):
                break
    finally:
        consumer.close()
    assert set(seen) == bad_coords
    assert all(headers["reason"] for headers in seen.values())
    huge = [h for h in seen.values() if h.get("source_key") == b"bad-huge"]
    assert len(huge) == 1 and b"exceeds" in huge[0]["reason"]
