"""Redis going away mid-stream: the worker pauses, keeps its group membership, and catches up."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlparse

import pytest

from consumers.offsets import group_lag
from consumers.reader import read_topic
from consumers.worker import Worker, WorkerSettings
from engine.config import EngineSettings
from engine.generator import generate_events
from engine.state.redis_store import RedisSettings, RedisStore
from engine.verify import verify_store
from producers.kafka import KafkaSettings
from producers.replay import replay_events
from tests.support.proxy import ChaosProxy

pytestmark = pytest.mark.stack


def test_redis_outage_pauses_and_catches_up(kafka_settings: KafkaSettings, redis_url: str) -> None:
    target = urlparse(redis_url)
    proxy = ChaosProxy(target.hostname or "127.0.0.1", target.port or 6379)
    engine = EngineSettings()
    settings = RedisSettings(
        url=f"redis://127.0.0.1:{proxy.port}/0", retry_attempts=2, retry_backoff_s=0.1, socket_timeout_s=1.0
    )
    store = RedisStore(settings, kafka_settings.partitions, engine)
    events = generate_events(6000, n_users=200, n_items=500, seed=5)
    worker = Worker(kafka_settings, store, engine, WorkerSettings(batch_size=200, poll_timeout_s=0.2))
    producer = threading.Thread(target=replay_events, args=(events, kafka_settings), kwargs={"rate": 500})
    try:
        producer.start()
        # Not --until-idle: a rate-limited producer can leave the lag at zero for a moment.
        runner = threading.Thread(target=worker.run, kwargs={"max_seconds": 120})
        runner.start()
        time.sleep(5)  # group joined, part of the stream applied
        proxy.cut()
        time.sleep(4)
        proxy.restore()
        producer.join()
        deadline = time.monotonic() + 60
        while any(group_lag(kafka_settings).values()) and time.monotonic() < deadline:
            time.sleep(0.5)
        worker.stop()
        runner.join()
    finally:
        proxy.close()

    assert worker.stats.store_outages >= 1
    assert worker.stats.applied == len(events)
    direct = RedisStore(RedisSettings(url=redis_url), kafka_settings.partitions, engine)
    records = read_topic(kafka_settings, kafka_settings.events_topic, direct.watermarks())
    assert sum(len(r) for r in records.values()) == len(events)
    _, mismatches = verify_store(records, direct, engine)
    assert mismatches == []
