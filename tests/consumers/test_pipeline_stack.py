"""The whole streaming path on the real embedded broker and Redis, with the Taobao sample."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from consumers.reader import read_topic
from consumers.worker import Worker, WorkerSettings
from engine.config import EngineSettings
from engine.loaders import load_events
from engine.state.redis_store import RedisSettings, RedisStore
from engine.verify import compare_partition, verify_store
from producers.kafka import KafkaSettings, client_config
from producers.replay import replay_events

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TAOBAO = DATA / "taobao-sample" / "UserBehavior.csv"

pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(not TAOBAO.is_file(), reason=f"shared dataset not present at {TAOBAO}"),
]

MALFORMED = [
    b"not json at all",
    b'{"event_id": "m1", "ts": 1511544070, "user_id": "1", "item_id": "9"}',  # no type
    b'{"event_id": "m2", "ts": 1511544070, "user_id": "1", "item_id": "9", "type": "teleport"}',
    b'{"event_id": "m3", "ts": "yesterday", "user_id": "1", "item_id": "9", "type": "view"}',
    b"[1, 2, 3]",
    b'{"event_id": "m4", "ts": 1511544070, "user_id": "1", "item_id": "'
    + b"x" * 70_000
    + b'", "type": "view"}',
    b"\xff\xfe\x00garbage",
]


def _inject(settings: KafkaSettings) -> None:
    producer = Producer(client_config(settings))
    for i, value in enumerate(MALFORMED):
        producer.produce(settings.events_topic, key=f"bad-{i}".encode(), value=value)
    producer.flush(30)


def _run(settings: KafkaSettings, store: RedisStore, engine: EngineSettings) -> Worker:
    worker = Worker(settings, store, engine, WorkerSettings(batch_size=500, poll_timeout_s=0.3))
    worker.run(until_idle=True, max_seconds=120)
    return worker


def test_taobao_replay_end_to_end(kafka_settings: KafkaSettings, redis_url: str) -> None:
    engine = EngineSettings()
    store = RedisStore(RedisSettings(url=redis_url), kafka_settings.partitions, engine)
    events = load_events(TAOBAO, "taobao")
    replay_events(events, kafka_settings)
    _inject(kafka_settings)

    worker = _run(kafka_settings, store, engine)
    assert worker.stats.applied == len(events)
    assert worker.stats.dead_lettered == len(MALFORMED)

    # Dead letters: exactly the injected records, each with a reason and its source coordinates.
    dlq = [r for rows in read_topic(kafka_settings, kafka_settings.dlq_topic).values() for r in rows]
    assert sorted(r.value for r in dlq) == sorted(MALFORMED)
    source = read_topic(kafka_settings, kafka_settings.events_topic)
    by_coords = {(r.partition, r.offset): r.value for rows in source.values() for r in rows}
    consumer_view = _dlq_headers(kafka_settings)
    assert len(consumer_view) == len(MALFORMED)
    for headers, value in consumer_view:
        assert headers["reason"]
        assert headers["source_topic"] == kafka_settings.events_topic
        assert by_coords[(int(headers["source_partition"]), int(headers["source_offset"]))] == value

    # Every user with events got a recs record; no list ever holds an item bought before it.
    recs = [
        orjson.loads(r.value)
        for rows in read_topic(kafka_settings, kafka_settings.recs_topic).values()
        for r in rows
    ]
    assert {e.user_id for e in events} <= {r["user_id"] for r in recs}
    bought_at: dict[tuple[str, int], list[tuple[int, str]]] = defaultdict(list)
    for partition, rows in source.items():
        for row in rows:
            try:
                event = orjson.loads(row.value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("type") == "purchase":
                bought_at[(event["user_id"], partition)].append((row.offset, event["item_id"]))
    checked = 0
    for rec in recs:
        src = rec["source"]
        bought = {
            item for offset, item in bought_at[(rec["user_id"], src["partition"])] if offset <= src["offset"]
        }
        assert not bought & set(rec["items"]), rec["user_id"]
        assert len(rec["items"]) == len(rec["scores"]) > 0
        checked += bool(bought)
    assert checked > 0, "the sample has purchases, so some lists must have been filtered"

    # The oracle agrees with Redis.
    _, mismatches = verify_store(
        read_topic(kafka_settings, kafka_settings.events_topic, store.watermarks()), store, engine
    )
    assert mismatches == []

    # Replaying the same file again changes nothing: every event is recognised by its id.
    before = [store.snapshot(p) for p in range(store.partitions)]
    replay_events(events, kafka_settings)
    again = _run(kafka_settings, store, engine)
    assert again.stats.applied == 0
    assert again.stats.duplicates == len(events)
    # Lists may be republished where other users' activity moved them since they were last sent,
    # but only for users the replay touched.
    assert again.stats.recs_published <= len({e.user_id for e in events})
    for p in range(store.partitions):
        after = store.snapshot(p)
        assert after.duplicates - before[p].duplicates == sum(
            1
            for r in read_topic(kafka_settings, kafka_settings.events_topic)[p]
            if r.offset > before[p].watermark
        )
        after.duplicates, after.watermark = before[p].duplicates, before[p].watermark
        assert compare_partition(p, before[p], after, engine) == []


def _dlq_headers(settings: KafkaSettings) -> list[tuple[dict[str, str], bytes]]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(client_config(settings) | {"group.id": "dlq-check", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(settings.dlq_topic, p, 0) for p in range(settings.partitions)])
        out: list[tuple[dict[str, str], bytes]] = []
        for _ in range(10):
            for msg in consumer.consume(100, 0.5):
                if msg.error() is None:
                    out.append(({k: v.decode() for k, v in msg.headers() or []}, msg.value()))
            if len(out) >= len(MALFORMED):
                break
        return out
    finally:
        consumer.close()
