"""Human tables (rich) for each benchmark's result, and the JSON file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table


def _stream_line(stream: dict[str, Any], batch_size: int) -> str:
    return (
        f"stream: generator, {stream['users']:,} users, a session started every {stream['session_gap_s']:g} s "
        f"on average; {stream['users_per_batch']:,.0f} distinct users per {batch_size:,} events"
    )


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def show(console: Console, results: dict[str, Any]) -> None:
    for suite in results.get("meta", {}).get("failed", []):
        console.print(f"[red]{suite} failed:[/red] {results.pop(suite)['error']}")
    if "ingest" in results:
        r = results["ingest"]
        table = Table("pipeline", "events", "events/s", "ours / peer", title="ingest (end to end)")
        table.add_row("streamrec worker", _f(r["consumed"]), _f(r["events_per_s"], 0), "")
        for name, peer in r.get("peers", {}).items():
            table.add_row(name, _f(peer["events"]), _f(peer["events_per_s"], 0), f"{peer['ratio']:.1f}x")
        console.print(table)
        console.print(
            f"workers {r['workers']}, partitions {r['partitions']}, batch {r['batch_size']}; "
            f"processing {r['processing_s']:.1f} s, wall {r['wall_s']:.1f} s; "
            f"peak RSS {r['peak_rss_mb']:.0f} MB (worker + scoring process, {r.get('scorer_peak_rss_mb', 0):.0f} of it); Redis used_memory {r['redis_used_memory_mb']:.1f} MB "
            f"(+{r['redis_state_mb']:.1f} MB, {r['redis_keys']:,} keys); recs published {r['recs_published']:,}"
        )
        if r.get("cpu_us_per_event"):
            parts = ", ".join(f"{name} {us:.0f}" for name, us in r["cpu_us_per_event"].items())
            console.print(f"CPU per event (µs): {parts}")
        if r.get("stream"):
            console.print(_stream_line(r["stream"], r["batch_size"]))
        if "profile" in r:
            prof = Table("function", "calls", "own %", "cumulative %", title="worker profile (cProfile)")
            for row in r["profile"]:
                prof.add_row(row["function"], _f(row["calls"]), _f(row["own_pct"]), _f(row["cum_pct"]))
            console.print(prof)
    if "latency" in results:
        r = results["latency"]
        table = Table(
            "offered ev/s", "samples", "p50 ms", "p95 ms", "p99 ms", "suppr. p50", "suppr. p99", "probes", "kept up",
            title="latency: event produced -> user's recs record; purchase -> suppression",
        )  # fmt: skip
        for phase in r["rates"].values():
            s = phase["suppression"]
            table.add_row(
                _f(phase["offered_rate"], 0), _f(phase["samples"]), _f(phase["p50_ms"]), _f(phase["p95_ms"]),
                _f(phase["p99_ms"]), _f(s["p50_ms"]), _f(s["p99_ms"]), f"{s['samples']}/{s['probes']}",
                "yes" if phase["kept_up"] else f"no (lag {phase['backlog']:,})",
            )  # fmt: skip
        console.print(table)
        if r.get("stream"):
            console.print(_stream_line(r["stream"], r["worker_batch_size"]))
        for phase in r["rates"].values():
            parts = [
                ("event -> worker", phase.get("to_worker")),
                ("in the worker", phase.get("in_worker")),
                ("recs topic hop", phase.get("recs_topic_hop")),
            ]
            split = ", ".join(
                f"{name} p50 {_f(part.get('p50_ms'))} / p99 {_f(part.get('p99_ms'))} ms"
                for name, part in parts
                if part
            )
            cpu = ", ".join(f"{name} {pct:.0f}%" for name, pct in (phase.get("cpu_pct") or {}).items())
            console.print(f"{_f(phase['offered_rate'], 0)} ev/s: {split}; CPU (% of a core) {cpu or 'n/a'}")
        console.print(
            f"worker poll timeout {r['worker_poll_timeout_s']} s, batch {r['worker_batch_size']}, "
            f"fetch.wait.max.ms {r['worker_fetch_wait_ms'] or 'default'} (recs reader "
            f"{r.get('reader_fetch_wait_ms', 5)}), producer linger.ms {r.get('producer_linger_ms', 5)}"
        )
    if "ann" in results:
        r = results["ann"]
        for n, size in r["sizes"].items():
            table = Table(
                "index", "params", "recall@10", "qps single", "qps batch", "build s", "RSS MB",
                title=f"ANN, {int(n):,} items x {r['dim']}",
            )  # fmt: skip
            for row in size["runs"]:
                params = ", ".join(
                    f"{k}={v}" for k, v in row.items()
                    if k not in ("kind", "recall_at_10", "qps_single", "qps_batch", "build_s", "memory_mb")
                )  # fmt: skip
                table.add_row(
                    row["kind"], params, _f(row["recall_at_10"], 4), _f(row["qps_single"], 0),
                    _f(row["qps_batch"], 0), _f(row["build_s"]), _f(row["memory_mb"], 0),
                )  # fmt: skip
            console.print(table)
    if "train" in results:
        r = results["train"]
        table = Table(
            "model", "device", "epochs", "samples/s", "train s", "best HR", "usable after s",
            title=f"training on {r['events']:,} generator events",
        )  # fmt: skip
        for run in r["runs"]:
            table.add_row(
                run["model"], run["device"], _f(run["epochs_run"]), _f(run["samples_per_s"], 0),
                _f(run["train_s"]), _f(run["best_validation_hr"], 4), _f(run["time_to_usable_s"]),
            )  # fmt: skip
        console.print(table)


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
