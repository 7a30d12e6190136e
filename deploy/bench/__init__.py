"""``streamrec bench``: the speed report (ingest, latency, ann, train); see docs/performance.md."""

from __future__ import annotations

import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploy.bench.common import StreamShape, bench_stack, cpu_count
from engine.errors import StreamrecError

SUITES = ("ingest", "latency", "ann", "train")


@dataclass
class BenchOptions:
    """What to run and how big (CLI defaults finish in a few minutes on two cores)."""

    events: int = 200_000
    workers: int = 1
    partitions: int = 4
    peers: bool = True
    peer_events: int = 20_000
    profile: Path | None = None
    rates: list[float] = field(default_factory=lambda: [2000.0, 10000.0])
    duration_s: float = 10.0
    warmup_events: int = 50_000
    poll_timeout_s: float | None = None
    fetch_wait_ms: int | None = None
    reader_fetch_wait_ms: int = 5
    ann_sizes: list[int] = field(default_factory=lambda: [100_000])
    ann_queries: int = 1000
    hnsw_m: int = 32
    ef_construction: int = 100
    ef_search: list[int] = field(default_factory=lambda: [32, 64, 96, 128])
    nprobe: list[int] = field(default_factory=lambda: [8, 16, 32, 48])
    train_events: int = 200_000
    train_epochs: int = 10
    use_existing_stack: bool = False
    seed: int = 0
    stream: StreamShape = field(default_factory=StreamShape)


def _git_revision() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()  # fmt: skip
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _guarded(fn: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """One suite's result, or ``{"error": ...}``: a failed suite must not lose the others' figures."""
    try:
        return fn(*args, **kwargs)
    except StreamrecError as exc:
        return {"error": str(exc)}


def run_benchmarks(suites: list[str], options: BenchOptions) -> dict[str, Any]:
    """Run the chosen suites in order; returns the report (the JSON ``--json`` writes)."""
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ValueError(f"unknown benchmark {unknown[0]!r}; expected one of {', '.join(SUITES)} or all")
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "revision": _git_revision(),
            "cpus": cpu_count(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        }
    }
    started = time.monotonic()
    if "ingest" in suites or "latency" in suites:
        with bench_stack(options.use_existing_stack, options.partitions) as stack:
            results["meta"]["stack"] = "existing" if not stack.started_here else "embedded (started by bench)"
            if "ingest" in suites:
                from deploy.bench.ingest import run_ingest

                results["ingest"] = _guarded(
                    run_ingest,
                    stack, options.events, options.workers, options.peers, options.peer_events,
                    options.profile, seed=options.seed, shape=options.stream,
                )  # fmt: skip
            if "latency" in suites:
                from deploy.bench.latency import run_latency

                results["latency"] = _guarded(
                    run_latency,
                    stack, options.rates, options.duration_s, options.warmup_events,
                    options.poll_timeout_s, options.fetch_wait_ms, options.seed, options.stream,
                    options.reader_fetch_wait_ms,
                )  # fmt: skip
    if "ann" in suites:
        from deploy.bench.ann import run_ann

        results["ann"] = _guarded(
            run_ann,
            options.ann_sizes, n_queries=options.ann_queries, hnsw_m=options.hnsw_m,
            ef_construction=options.ef_construction, ef_search=options.ef_search, nprobe=options.nprobe,
            seed=options.seed,
        )  # fmt: skip
    if "train" in suites:
        from deploy.bench.train import run_train

        results["train"] = _guarded(
            run_train, options.train_events, ["item2vec", "mf"], options.train_epochs, options.seed
        )
    results["meta"]["total_s"] = round(time.monotonic() - started, 1)
    results["meta"]["failed"] = [
        s for s in SUITES if isinstance(results.get(s), dict) and "error" in results[s]
    ]
    return results
