"""Prometheus metrics and structured (JSON) logs for the engine workers.

The worker calls :meth:`WorkerMetrics.on_batch` after each handled batch (its only hook); the
counters advance by the difference between the worker's cumulative stats and the last snapshot,
so the worker keeps a single source of truth for its counts. Redis latency is measured by
:class:`TimedStore`, a pass-through around the state store. Each worker process exposes its own
registry over HTTP (``--metrics-port``; worker ``i`` of ``--workers N`` listens on port + i).

What the metrics mean (``rate()`` of the counters gives events/s and DLQ rate):

- ``streamrec_events_total{outcome}``: consumed, applied, duplicate, already_applied, dead_lettered
- ``streamrec_batch_seconds``: wall time of one poll's batch (state write, recs, flush, commit)
- ``streamrec_consumer_lag{partition}``: high watermark minus next offset, from the last fetch
- ``streamrec_redis_seconds{op}``: latency of each state-store call
- ``streamrec_index_info{model_version,index_version}``: 1 for the version being served
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("streamrec.metrics")

# WorkerStats field -> events_total outcome label
_EVENT_FIELDS = {
    "consumed": "consumed",
    "applied": "applied",
    "duplicates": "duplicate",
    "already_applied": "already_applied",
    "dead_lettered": "dead_lettered",
}
_OTHER_FIELDS = ("recs_published", "conflicts", "store_outages", "scorer_failures", "model_swaps")


class ObservabilitySettings(BaseSettings):
    """Environment: ``STREAMREC_WORKER_METRICS_PORT``, ``STREAMREC_WORKER_LOG_JSON``."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_WORKER_", extra="ignore")

    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Prometheus /metrics port (worker i of N: port + i); unset = off"
    )
    log_json: bool = Field(False, description="one JSON object per log line (for log shippers)")


class WorkerMetrics:
    """The metrics of one worker process, in their own registry (tests create several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("streamrec_events", "Records by outcome", ["outcome"], registry=r)
        self.batches = Counter("streamrec_batches", "Batches handled", registry=r)
        self.batch_seconds = Histogram(
            "streamrec_batch_seconds",
            "Wall time of one batch: state write, recs, flush and commit",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.other = {
            name: Counter(f"streamrec_{name}", f"WorkerStats.{name}", registry=r) for name in _OTHER_FIELDS
        }
        self.lag = Gauge(
            "streamrec_consumer_lag", "Records behind the high watermark", ["partition"], registry=r
        )
        self.redis_seconds = Histogram(
            "streamrec_redis_seconds",
            "Latency of state-store calls",
            ["op"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.redis_errors = Counter(
            "streamrec_redis_errors", "State-store calls that raised", ["op"], registry=r
        )
        self.index_info = Gauge(
            "streamrec_index_info",
            "The version being served (value 1)",
            ["model_version", "index_version"],
            registry=r,
        )
        self._last: dict[str, int] = {}
        self._served: tuple[str, str] | None = None

    # -- the worker hook --------------------------------------------------------------------------

    def on_batch(self, worker: Any, consumer: Any, seconds: float | None) -> None:
        """Record one handled batch of ``worker`` (a consumers.worker.Worker), or with ``seconds``
        None only the counters (a poll scored in the background was published); never raises."""
        try:
            self.record(worker.stats, seconds, worker.versions)
            self.record_lag(consumer)
        except Exception as exc:  # observability must never stop consumption
            log.warning("metrics update failed: %s", exc)

    def record(self, stats: Any, seconds: float | None, versions: dict[str, str | None]) -> None:
        if seconds is not None:
            self.batches.inc()
            self.batch_seconds.observe(seconds)
        for field, outcome in _EVENT_FIELDS.items():
            self.events.labels(outcome).inc(self._advance(stats, field))
        for field in _OTHER_FIELDS:
            self.other[field].inc(self._advance(stats, field))
        served = (str(versions.get("model_version")), str(versions.get("index_version")))
        if served != self._served:
            if self._served is not None:
                self.index_info.remove(*self._served)
            self.index_info.labels(*served).set(1)
            self._served = served

    def store_call(self, op: str, seconds: float, failed: bool) -> None:
        if failed:
            self.redis_errors.labels(op).inc()
        self.redis_seconds.labels(op).observe(seconds)

    def _advance(self, stats: Any, field: str) -> int:
        value = int(getattr(stats, field))
        step = value - self._last.get(field, 0)
        self._last[field] = value
        return max(step, 0)

    def record_lag(self, consumer: Any) -> None:
        """Lag per assigned partition from the consumer's cached high watermark (no broker call)."""
        assignment = consumer.assignment()
        if not assignment:
            return
        for tp, pos in zip(assignment, consumer.position(assignment), strict=True):
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and pos.offset >= 0:
                self.lag.labels(str(tp.partition)).set(max(high - pos.offset, 0))

    def serve(self, port: int) -> None:
        """Expose this registry at ``http://0.0.0.0:port/metrics`` (a daemon thread)."""
        start_http_server(port, registry=self.registry)
        log.info("metrics on port %d", port)


class TimedStore:
    """Wraps a state store; times every method call into ``streamrec_redis_seconds{op}``."""

    def __init__(self, store: Any, metrics: WorkerMetrics) -> None:
        self._store = store
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr) or name.startswith("_"):
            return attr
        return self._timed(name, attr)

    def store_call(self, op: str, seconds: float, failed: bool) -> None:
        """Record a call made elsewhere (the worker's scoring process times its own store)."""
        self._metrics.store_call(op, seconds, failed)

    def _timed(self, op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        record = self._metrics.store_call

        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            except Exception:
                record(op, time.perf_counter() - started, True)
                raise
            record(op, time.perf_counter() - started, False)
            return result

        return call


class StoreCallLog:
    """Collects ``(op, seconds, failed)`` of a :class:`TimedStore`'s calls, to be sent elsewhere."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, bool]] = []

    def store_call(self, op: str, seconds: float, failed: bool) -> None:
        self.calls.append((op, seconds, failed))

    def take(self) -> list[tuple[str, float, bool]]:
        calls, self.calls = self.calls, []
        return calls


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, process, message (+ exc when present)."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


def configure_logging(level: int, as_json: bool, fmt: str) -> None:
    """Root logging: ``fmt`` text lines, or JSON lines when ``as_json``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
