"""Ingest throughput: events/s through the whole worker path, and the peers on the same records.

The events are produced first (generator, as fast as the producer goes), then the engine workers
run as production runs them (``consumers.worker.Worker`` wired like ``deploy.runner.run_worker``,
``until_idle``) in child processes of their own, so their peak RSS is theirs alone. The rate is
consumed records over the time from the start of the first batch to the end of the last (consume
-> decode -> one Lua write per partition -> recs computed and produced -> flush -> commit); the
group join before the first batch and the idle checks after the last are reported separately
as ``wall_s``.
"""

from __future__ import annotations

import cProfile
import logging
import multiprocessing
import pstats
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from consumers.worker import Worker
from deploy.bench.common import (
    BenchError,
    BenchStack,
    StreamShape,
    child_pids,
    drop_keys,
    own_cpu_s,
    peak_rss_mb,
    process_cpu_s,
    produce_events,
    run_settings,
    users_per_batch,
)
from deploy.settings import Settings
from engine.state.redis_store import connect

log = logging.getLogger("streamrec.bench")


class TimedWorker(Worker):
    """The production worker; it only notes when its first batch began and its last one ended."""

    first_batch: float | None = None
    last_batch: float | None = None

    def _handle(self, *args: Any, **kwargs: Any) -> None:
        started = time.time()
        if self.first_batch is None:
            self.first_batch = started
        super()._handle(*args, **kwargs)
        self.last_batch = time.time()

    def _finish_pending(self, *args: Any, **kwargs: Any) -> None:
        pending = self._pending
        super()._finish_pending(*args, **kwargs)
        if pending is not None:  # the last poll's recs are published after its _handle returned
            self.last_batch = time.time()


def worker_child(
    settings: Settings,
    max_seconds: float,
    profile_path: str | None,
    results: multiprocessing.Queue,
    workers: int = 1,
) -> None:
    """One worker process: run until idle, then report stats, batch times and peak RSS."""
    from deploy.models import ModelWatcher
    from deploy.runner import make_store, scoring_store

    store = make_store(settings)
    watcher = ModelWatcher(store.client, settings.redis.key_prefix, settings.model.check_interval_s)
    worker = TimedWorker(
        settings.kafka,
        store,
        settings.engine,
        settings.worker,
        space_source=watcher.poll,
        scorer_store=scoring_store(settings, store.partitions, workers),
    )
    started = time.time()
    profiler = cProfile.Profile() if profile_path else None
    if profiler is not None:
        profiler.enable()
    try:
        stats = worker.run(until_idle=True, max_seconds=max_seconds)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_path)
        store.close()
    report = asdict(stats)
    report.update(
        first_batch=worker.first_batch,
        last_batch=worker.last_batch,
        started=started,
        ended=time.time(),
        # the worker and its scoring process (the largest child that ended: it is the only one)
        peak_rss_mb=peak_rss_mb() + peak_rss_mb(children=True),
        scorer_peak_rss_mb=peak_rss_mb(children=True),
        cpu_s=own_cpu_s(),
        scorer_cpu_s=own_cpu_s(children=True),
    )
    results.put(report)


def process_rss_mb(pid: int) -> float:
    """Another process's current resident set size, from /proc (0 where there is none)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def memory_sample(settings: Settings, pids: list[int], started: float) -> dict[str, float]:
    """One point of the run's timeline: records still to consume, Redis and worker memory."""
    from consumers.offsets import group_lag
    from engine.errors import BrokerError

    point: dict[str, float] = {"elapsed_s": round(time.monotonic() - started, 1)}
    try:
        point["lag"] = float(sum(group_lag(settings.kafka).values()))
    except BrokerError:
        pass
    point.update(redis_memory(settings))
    # each worker and its scoring process
    every = [*pids, *(child for pid in pids for child in child_pids(pid))]
    point["workers_rss_mb"] = round(sum(process_rss_mb(pid) for pid in every), 1)
    return point


def run_workers(
    settings: Settings,
    workers: int,
    max_seconds: float,
    profile: Path | None = None,
    sample_every_s: float = 30.0,
    timeline: list[dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Run ``workers`` worker processes in one group until the topic is drained.

    Every ``sample_every_s`` the lag, Redis memory and the workers' RSS are appended to
    ``timeline`` and logged (long runs: the memory-bound check)."""
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = ctx.Queue()
    procs = []
    for i in range(workers):
        path = str(profile.with_suffix(f".{i}.prof")) if profile is not None else None
        procs.append(ctx.Process(target=worker_child, args=(settings, max_seconds, path, results, workers)))
    for proc in procs:
        proc.start()
    reports: list[dict[str, Any]] = []
    started = time.monotonic()
    next_sample = started + sample_every_s
    try:
        # Read before join: a child blocks on exit until its queued report is consumed.
        while len(reports) < workers:
            if timeline is not None and time.monotonic() >= next_sample:
                next_sample += sample_every_s
                point = memory_sample(settings, [p.pid for p in procs if p.pid is not None], started)
                timeline.append(point)
                log.info(
                    "ingest %.0f s: lag %s, Redis %.0f MB (%d keys), worker RSS %.0f MB",
                    point["elapsed_s"], f"{point.get('lag', float('nan')):,.0f}", point["used_memory_mb"],
                    point["keys"], point["workers_rss_mb"],
                )  # fmt: skip
            if not any(p.is_alive() for p in procs) and results.empty():
                break
            try:
                reports.append(results.get(timeout=1.0))
            except Exception:  # queue.Empty: keep waiting while a child runs
                continue
    except BaseException:  # interrupted (Ctrl-C) or failed: stop the workers now, not after max_seconds
        for proc in procs:
            proc.terminate()
        raise
    finally:
        for proc in procs:
            proc.join(max_seconds + 30)
            if proc.is_alive():
                proc.terminate()
                proc.join(10)
    if len(reports) < workers:
        codes = [p.exitcode for p in procs]
        raise BenchError(f"{workers - len(reports)} worker process(es) failed (exit codes {codes})")
    return reports


def redis_memory(settings: Settings) -> dict[str, float]:
    client = connect(settings.redis)
    try:
        info = client.info("memory")
        return {"used_memory_mb": info["used_memory"] / 2**20, "keys": float(client.dbsize())}
    finally:
        client.close()


def summarise_workers(reports: list[dict[str, Any]]) -> dict[str, Any]:
    consumed = sum(r["consumed"] for r in reports)
    firsts = [r["first_batch"] for r in reports if r["first_batch"] is not None]
    lasts = [r["last_batch"] for r in reports if r["last_batch"] is not None]
    busy = (max(lasts) - min(firsts)) if firsts else 0.0
    wall = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    keys = ("consumed", "applied", "duplicates", "already_applied", "dead_lettered", "recs_published")
    return {
        "events_per_s": consumed / busy if busy > 0 else 0.0,
        "processing_s": busy,
        "wall_s": wall,
        "wall_events_per_s": consumed / wall if wall > 0 else 0.0,
        "batches": sum(r["batches"] for r in reports),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in reports),
        "scorer_peak_rss_mb": max(r["scorer_peak_rss_mb"] for r in reports),
        **{k: sum(r[k] for r in reports) for k in keys},
    }


def run_ingest(
    stack: BenchStack,
    n_events: int,
    workers: int = 1,
    peers: bool = True,
    peer_events: int = 20_000,
    profile: Path | None = None,
    max_seconds: float | None = None,
    seed: int = 0,
    sample_every_s: float = 30.0,
    shape: StreamShape = StreamShape(),
) -> dict[str, Any]:
    settings = run_settings(stack, "ingest", stack.partitions)
    memory_before = redis_memory(settings)
    started = time.monotonic()
    batches: list[int] = []
    produced = produce_events(
        n_events,
        settings.kafka,
        seed,
        shape,
        lambda chunk: batches.extend(users_per_batch(chunk, settings.worker.batch_size)),
    )
    produce_s = time.monotonic() - started
    # Generous: a worker far slower than the slowest measured one (~1,000 events/s) is a failure.
    max_seconds = max_seconds or max(3600.0, n_events / 200.0)
    timeline: list[dict[str, float]] = []
    servers_before = {name: process_cpu_s(pid) for name, pid in stack.pids.items()}
    reports = run_workers(settings, workers, max_seconds, profile, sample_every_s, timeline)
    servers_after = {name: process_cpu_s(pid) for name, pid in stack.pids.items()}
    result: dict[str, Any] = {
        "events": n_events,
        "produced": produced,
        "produce_events_per_s": produced / max(produce_s, 1e-9),
        "workers": workers,
        "partitions": stack.partitions,
        "batch_size": settings.worker.batch_size,
        "stream": shape.describe(batches),
        **summarise_workers(reports),
    }
    result["memory_timeline"] = timeline
    # CPU per consumed event, per process (the workers' include their group join and idle checks;
    # the broker's and Redis's everything they did while the workers ran): what limits a 2-core box.
    cpu = {"worker": sum(r["cpu_s"] for r in reports), "scorer": sum(r["scorer_cpu_s"] for r in reports)}
    for name, before in servers_before.items():
        after = servers_after.get(name)
        if before is not None and after is not None:
            cpu[name] = after - before
    consumed = max(result["consumed"], 1)
    result["cpu_us_per_event"] = {name: round(1e6 * seconds / consumed, 1) for name, seconds in cpu.items()}
    memory_after = redis_memory(settings)
    result["redis_used_memory_mb"] = memory_after["used_memory_mb"]
    result["redis_state_mb"] = memory_after["used_memory_mb"] - memory_before["used_memory_mb"]
    result["redis_keys"] = int(memory_after["keys"] - memory_before["keys"])
    if result["consumed"] != produced:
        result["warning"] = f"consumed {result['consumed']:,} of {produced:,} produced events"
    if peers:
        from deploy.bench.peers_faust import run_faust_peer
        from deploy.bench.peers_naive import run_naive_peer

        n_peer = min(peer_events, produced)
        result["peers"] = {
            "faust": run_faust_peer(settings.kafka, n_peer),
            "naive": run_naive_peer(settings.kafka, stack.redis_url, n_peer),
        }
        for peer in result["peers"].values():
            peer["ratio"] = result["events_per_s"] / max(peer["events_per_s"], 1e-9)
    if not stack.started_here:
        drop_keys(stack.redis_url, settings.redis.key_prefix + ":")
    if profile is not None:
        result["profile"] = top_functions([profile.with_suffix(f".{i}.prof") for i in range(workers)])
    return result


def top_functions(paths: list[Path], n: int = 25) -> list[dict[str, Any]]:
    """The functions with the most cumulative and own time in the workers' cProfile dumps."""
    stats = pstats.Stats(*[str(p) for p in paths if p.exists()])
    total = stats.total_tt or 1.0  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(filename).name}:{line}({name})",
                "calls": calls,
                "own_pct": 100.0 * tottime / total,
                "cum_pct": 100.0 * cumtime / total,
            }
        )
    rows.sort(key=lambda r: -r["cum_pct"])
    return rows[:n]
