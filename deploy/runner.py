"""Runs engine workers: one in this process, or N worker processes that share the consumer group."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from dataclasses import asdict, dataclass

from consumers.metrics import TimedStore, WorkerMetrics, configure_logging
from consumers.worker import Worker, WorkerStats
from deploy.models import ModelWatcher, Refresher
from deploy.settings import Settings
from engine.errors import StreamrecError
from engine.state.redis_store import RedisStore, connect
from producers.admin import topic_partitions

log = logging.getLogger("streamrec.runner")

# Logged (with the pid) once a worker handles SIGTERM gracefully: see run_worker.
WORKER_STARTED = "worker started"


def make_store(settings: Settings) -> RedisStore:
    partitions = topic_partitions(settings.kafka, settings.kafka.events_topic)
    return RedisStore(settings.redis, partitions, settings.engine)


@dataclass(frozen=True)
class ScoringStore:
    """Opens the worker's state store again in its scoring process (picklable: settings only),
    with this process's logging set-up."""

    settings: Settings
    partitions: int
    log_level: int = logging.INFO

    def __call__(self) -> RedisStore:
        configure_logging(
            self.log_level,
            self.settings.observability.log_json,
            "%(asctime)s %(processName)s %(name)s %(message)s",
        )
        return RedisStore(self.settings.redis, self.partitions, self.settings.engine)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which container limits often set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def scoring_store(settings: Settings, partitions: int, workers_on_host: int = 1) -> ScoringStore | None:
    """The store factory of a worker's scoring process, or None to score in the worker: with
    scorer "auto", a scoring process per worker only while there is a CPU for each."""
    if settings.worker.scorer == "auto" and usable_cpus() <= workers_on_host:
        return None
    return ScoringStore(settings, partitions, logging.getLogger().getEffectiveLevel())


def run_worker(
    settings: Settings,
    until_idle: bool,
    max_seconds: float | None = None,
    index: int = 0,
    workers_on_host: int = 1,
) -> WorkerStats:
    store = make_store(settings)
    watcher = ModelWatcher(store.client, settings.redis.key_prefix, settings.model.check_interval_s)
    port = settings.observability.metrics_port
    metrics = WorkerMetrics() if port else None
    timed = TimedStore(store, metrics) if metrics else store
    worker = Worker(
        settings.kafka,
        timed,  # type: ignore[arg-type]
        settings.engine,
        settings.worker,
        space_source=watcher.poll,
        scorer_store=scoring_store(settings, store.partitions, workers_on_host),
    )
    if metrics is not None and port:
        metrics.serve(port + index)  # one port per worker process of this host
        worker.on_batch = metrics.on_batch

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %s: finishing the current batch, then stopping", signum)
        worker.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    # Until here a SIGTERM ends the process at once (nothing is in flight yet); from here on it
    # finishes the current batch first. Supervisors and tests wait for this line.
    log.info("%s (pid %d); SIGTERM stops it after the current batch", WORKER_STARTED, os.getpid())
    try:
        return worker.run(until_idle=until_idle, max_seconds=max_seconds)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        store.close()


def _child(
    settings: Settings,
    until_idle: bool,
    max_seconds: float | None,
    results: multiprocessing.Queue,
    index: int,
    workers_on_host: int,
) -> None:
    configure_logging(
        logging.INFO, settings.observability.log_json, "%(asctime)s %(processName)s %(name)s %(message)s"
    )
    stats = run_worker(settings, until_idle, max_seconds, index, workers_on_host)
    results.put(asdict(stats))


def run_workers(
    settings: Settings, workers: int, until_idle: bool, max_seconds: float | None = None
) -> list[dict]:
    """Start ``workers`` processes and wait for them; SIGTERM/SIGINT are passed on to each.

    With ``model.refresh_interval_s`` set, this process also retrains and publishes periodically.
    """
    refresher = None
    if settings.model.refresh_interval_s > 0 and not until_idle:
        refresher = Refresher(settings, connect(settings.redis))
        refresher.start()
    try:
        return _run_workers(settings, workers, until_idle, max_seconds)
    finally:
        if refresher is not None:
            refresher.stop()


def _run_workers(settings: Settings, workers: int, until_idle: bool, max_seconds: float | None) -> list[dict]:
    if workers == 1:
        return [asdict(run_worker(settings, until_idle, max_seconds))]
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=_child, args=(settings, until_idle, max_seconds, results, i, workers), name=f"worker-{i}"
        )
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: each worker finishes its batch and leaves the group

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for proc in procs:
            proc.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stats = []
    while not results.empty():
        stats.append(results.get())
    failed = [proc.name for proc in procs if proc.exitcode not in (0, -signal.SIGTERM)]
    if failed:
        raise StreamrecError(f"workers failed: {', '.join(failed)} (see the log above)")
    return stats
