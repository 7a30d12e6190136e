"""Worker metrics on the real embedded broker and Redis: the hook sees every batch."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from consumers.metrics import TimedStore, WorkerMetrics
from consumers.worker import Worker, WorkerSettings
from engine.config import EngineSettings
from engine.generator import generate_events
from engine.state.redis_store import RedisSettings, RedisStore
from producers.kafka import KafkaSettings, client_config
from producers.replay import replay_events

pytestmark = pytest.mark.stack


def test_metrics_follow_a_real_worker(kafka_settings: KafkaSettings, redis_url: str) -> None:
    engine = EngineSettings()
    events = generate_events(600, n_users=40, n_items=50, seed=3)
    replay_events(events, kafka_settings)
    producer = Producer(client_config(kafka_settings))
    producer.produce(kafka_settings.events_topic, key=b"bad", value=b"not json")
    producer.flush(30)

    metrics = WorkerMetrics()
    store = RedisStore(RedisSettings(url=redis_url), kafka_settings.partitions, engine)
    worker = Worker(kafka_settings, TimedStore(store, metrics), engine, WorkerSettings(batch_size=100))  # type: ignore[arg-type]
    worker.on_batch = metrics.on_batch
    try:
        worker.run(until_idle=True, max_seconds=120)
    finally:
        store.close()

    get = metrics.registry.get_sample_value
    assert worker.stats.applied == len(events)
    assert get("streamrec_events_total", {"outcome": "consumed"}) == worker.stats.consumed == len(events) + 1
    assert get("streamrec_events_total", {"outcome": "applied"}) == len(events)
    assert get("streamrec_events_total", {"outcome": "dead_lettered"}) == 1
    assert get("streamrec_batches_total") == worker.stats.batches >= 2
    assert get("streamrec_recs_published_total") == worker.stats.recs_published > 0
    # Caught up: every partition this worker owned reports zero lag.
    lags = [get("streamrec_consumer_lag", {"partition": str(p)}) for p in range(kafka_settings.partitions)]
    assert [lag for lag in lags if lag is not None] == [0.0] * kafka_settings.partitions
    # a poll's partitions share one state read, one write call and one recs read
    writes = get("streamrec_redis_seconds_count", {"op": "apply_many"})
    assert 1 <= writes <= worker.stats.batches
    assert get("streamrec_redis_seconds_count", {"op": "load_many"}) == worker.stats.batches
    assert 1 <= get("streamrec_redis_seconds_count", {"op": "recs_inputs"}) <= worker.stats.batches
    assert get("streamrec_index_info", {"model_version": "cooccurrence-v1", "index_version": "None"}) == 1


def test_run_worker_serves_metrics_on_the_configured_port(
    kafka_settings: KafkaSettings, redis_url: str, tmp_path
) -> None:
    """The runner's wiring: --metrics-port starts the exposition and times the real Redis store."""
    import socket
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from consumers.metrics import ObservabilitySettings
    from deploy.models import ModelSettings
    from deploy.runner import run_worker
    from deploy.settings import Settings
    from index.factory import IndexSettings
    from models.settings import TrainSettings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    events = generate_events(200, n_users=20, n_items=30, seed=4)
    replay_events(events, kafka_settings)
    settings = Settings(
        kafka=kafka_settings,
        redis=RedisSettings(url=redis_url),
        engine=EngineSettings(),
        worker=WorkerSettings(batch_size=100),
        model=ModelSettings(dir=tmp_path),
        train=TrainSettings(),
        index=IndexSettings(),
        observability=ObservabilitySettings(metrics_port=port),
    )
    stats = run_worker(settings, until_idle=True, max_seconds=120)
    assert stats.applied == len(events)
    # The exposition thread outlives the worker loop, so the final counts can be scraped.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        families = {f.name: f for f in text_string_to_metric_families(reply.read().decode())}
    applied = [s.value for s in families["streamrec_events"].samples if s.labels.get("outcome") == "applied"]
    assert applied == [len(events)]
    ops = {s.labels.get("op") for s in families["streamrec_redis_seconds"].samples}
    assert {"load_many", "apply_many", "recs_inputs", "set_recs_digests", "watermarks"} <= ops
