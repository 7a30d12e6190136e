"""Worker metrics without a broker: counters follow the worker's stats, the store is timed,
the registry is scraped over real HTTP, and JSON logs are one object per line."""

from __future__ import annotations

import json
import logging
import socket
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumers.metrics import JsonFormatter, ObservabilitySettings, TimedStore, WorkerMetrics
from consumers.worker import WorkerStats
from engine.errors import StateStoreError
from engine.state.memory import MemoryStore


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    value = metrics.registry.get_sample_value(name, labels or None)
    return value


class FakeConsumer:
    """The three consumer calls record_lag makes, answering like confluent-kafka does."""

    def __init__(self, positions: dict[int, int], highs: dict[int, int]) -> None:
        self.positions, self.highs = positions, highs

    def assignment(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(partition=p) for p in self.positions]

    def position(self, tps: list[SimpleNamespace]) -> list[SimpleNamespace]:
        return [SimpleNamespace(partition=tp.partition, offset=self.positions[tp.partition]) for tp in tps]

    def get_watermark_offsets(self, tp: SimpleNamespace, cached: bool) -> tuple[int, int]:
        assert cached  # never a broker round trip per batch
        return 0, self.highs[tp.partition]


def test_counters_advance_by_the_stats_difference() -> None:
    metrics = WorkerMetrics()
    stats = WorkerStats(consumed=10, applied=8, duplicates=1, dead_lettered=1, recs_published=5)
    worker = SimpleNamespace(stats=stats, versions={"model_version": "m1", "index_version": None})
    metrics.on_batch(worker, FakeConsumer({0: 10, 1: -1001}, {0: 25, 1: 7}), 0.05)
    stats.consumed, stats.applied, stats.dead_lettered = 30, 27, 2
    worker.versions = {"model_version": "m1", "index_version": "v2"}
    metrics.on_batch(worker, FakeConsumer({0: 30}, {0: 30}), 0.2)

    assert sample(metrics, "streamrec_events_total", outcome="consumed") == 30
    assert sample(metrics, "streamrec_events_total", outcome="applied") == 27
    assert sample(metrics, "streamrec_events_total", outcome="duplicate") == 1
    assert sample(metrics, "streamrec_events_total", outcome="dead_lettered") == 2
    assert sample(metrics, "streamrec_recs_published_total") == 5
    assert sample(metrics, "streamrec_batches_total") == 2
    assert sample(metrics, "streamrec_batch_seconds_count") == 2
    assert sample(metrics, "streamrec_batch_seconds_sum") == pytest.approx(0.25)
    # Lag from the cached high watermark; a partition without a position yet is not reported.
    assert sample(metrics, "streamrec_consumer_lag", partition="0") == 0
    assert sample(metrics, "streamrec_consumer_lag", partition="1") is None
    # Only the version being served is exported.
    assert sample(metrics, "streamrec_index_info", model_version="m1", index_version="v2") == 1
    assert sample(metrics, "streamrec_index_info", model_version="m1", index_version="None") is None


def test_a_poll_published_in_the_background_advances_counters_not_batches() -> None:
    metrics = WorkerMetrics()
    stats = WorkerStats(consumed=10, recs_published=5)
    worker = SimpleNamespace(stats=stats, versions={"model_version": "m1", "index_version": None})
    metrics.on_batch(worker, FakeConsumer({0: 10}, {0: 10}), 0.05)
    stats.recs_published, stats.scorer_failures = 9, 1
    metrics.on_batch(worker, FakeConsumer({0: 10}, {0: 10}), None)

    assert sample(metrics, "streamrec_recs_published_total") == 9
    assert sample(metrics, "streamrec_scorer_failures_total") == 1
    assert sample(metrics, "streamrec_batches_total") == 1
    assert sample(metrics, "streamrec_batch_seconds_count") == 1


def test_a_broken_hook_input_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    metrics = WorkerMetrics()
    with caplog.at_level(logging.WARNING, "streamrec.metrics"):
        metrics.on_batch(SimpleNamespace(stats=None, versions={}), None, 0.1)
    assert "metrics update failed" in caplog.text


def test_timed_store_times_calls_and_counts_errors() -> None:
    metrics = WorkerMetrics()
    store = TimedStore(MemoryStore(2), metrics)
    assert store.watermarks() == {0: -1, 1: -1}
    assert store.partitions == 2  # plain attributes pass through untimed
    assert sample(metrics, "streamrec_redis_seconds_count", op="watermarks") == 1

    class Failing:
        def watermarks(self) -> dict[int, int]:
            raise StateStoreError("down")

    failing = TimedStore(Failing(), metrics)
    with pytest.raises(StateStoreError):
        failing.watermarks()
    assert sample(metrics, "streamrec_redis_errors_total", op="watermarks") == 1
    assert sample(metrics, "streamrec_redis_seconds_count", op="watermarks") == 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_metrics_are_scraped_over_http() -> None:
    metrics = WorkerMetrics()
    metrics.record(WorkerStats(consumed=3, applied=3), 0.01, {"model_version": "m", "index_version": "i"})
    port = free_port()
    metrics.serve(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    consumed = [s for s in families["streamrec_events"].samples if s.labels.get("outcome") == "consumed"]
    assert consumed[0].value == 3
    assert "streamrec_batch_seconds" in families and "streamrec_redis_seconds" in families


def test_json_log_lines() -> None:
    record = logging.LogRecord("streamrec.worker", logging.WARNING, __file__, 1, "lag %d", (7,), None)
    line = JsonFormatter().format(record)
    payload = json.loads(line)
    assert payload["message"] == "lag 7" and payload["level"] == "WARNING"
    assert payload["logger"] == "streamrec.worker" and "\n" not in line


def test_observability_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_WORKER_METRICS_PORT", "9400")
    monkeypatch.setenv("STREAMREC_WORKER_LOG_JSON", "true")
    settings = ObservabilitySettings()
    assert settings.metrics_port == 9400 and settings.log_json
    monkeypatch.setenv("STREAMREC_WORKER_METRICS_PORT", "0")
    with pytest.raises(ValueError):
        ObservabilitySettings()
