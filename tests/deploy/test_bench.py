"""`streamrec bench` at tiny sizes: each benchmark runs and reports plausible, self-consistent values.

Nothing here asserts on speed (the figures depend on the machine); the checks are that the
counts add up (consumed == produced), rates are positive, recall lies in [0, 1] and equals 1 for
the exact index, and that purchased items disappear from the buyer's recommendations.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from deploy.bench.ann import clustered_vectors, recall_at_k, run_ann
from deploy.bench.common import (
    BenchStack,
    StreamShape,
    event_chunks,
    percentile,
    process_cpu_s,
    produce_events,
    run_settings,
    users_per_batch,
)
from deploy.bench.latency import _cpu_shares, _latencies
from deploy.bench.train import run_train
from deploy.stack import StackInfo, _proc_stat
from engine.events import Event
from producers.kafka import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]


def _stack(stack: StackInfo, redis_url: str) -> BenchStack:
    return BenchStack(stack.kafka_bootstrap, redis_url, stack.partitions, started_here=False)


# -- pure helpers ---------------------------------------------------------------------------------


def test_stream_shape_counts_distinct_users_per_batch() -> None:
    events = [Event(f"e{n}", 1e9 + n, f"u{n % 3}", "i", "view") for n in range(7)]
    assert users_per_batch(events, 4) == [3, 3]  # u0 u1 u2 u0 | u1 u2 u0
    assert users_per_batch([], 4) == []
    shape = StreamShape(users=10, session_gap_s=0.5)
    assert shape.describe([3, 2]) == {"users": 10, "session_gap_s": 0.5, "users_per_batch": 2.5}
    assert shape.describe([])["users_per_batch"] == 0.0


def test_event_chunks_follow_the_stream_shape() -> None:
    (replay,) = event_chunks(20_000)
    (live,) = event_chunks(20_000, shape=StreamShape(users=50_000, session_gap_s=0.01))
    assert {e.user_id for e in live} - {f"u{n}" for n in range(50_000)} == set()
    replay_mean = StreamShape().describe(users_per_batch(replay, 2000))["users_per_batch"]
    live_mean = StreamShape().describe(users_per_batch(live, 2000))["users_per_batch"]
    assert replay_mean < 500 < 1000 < live_mean  # ~6 events a user a poll, against ~1-2


def test_percentile_interpolates_and_handles_empty() -> None:
    assert percentile([], 99) is None
    assert percentile([5.0], 50) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)


def test_recall_counts_shared_ids_per_query() -> None:
    truth = [["a", "b"], ["c", "d"]]
    assert recall_at_k([["b", "a"], ["c", "x"]], truth, k=2) == pytest.approx(0.75)
    assert recall_at_k([["x", "y"], ["z", "w"]], truth, k=2) == 0.0


def test_latency_matching_uses_the_users_latest_event_at_or_below_the_source_offset() -> None:
    produced = {
        (0, 10): (100.0, "u1"),
        (0, 11): (100.5, "u2"),
        (0, 12): (101.0, "u1"),  # u1's latest event up to offset 12
        (1, 5): (102.0, "u3"),
    }
    probes = {(0, 11): (100.5, "u2", "i9")}
    records = [
        # -> event (0, 12): 200 ms: 20 to the worker, 130 in it, 50 to the reader
        (101.2, "u1", 0, 12, ["i1"], 101.15, 101.02),
        (101.3, "u1", 0, 12, ["i2"], 101.25, 101.2),  # same event again: not a second sample
        # -> event (0, 11): 400 ms: 40 + 260 + 100; still holds the bought item
        (100.9, "u2", 0, 11, ["i9"], 100.8, 100.54),
        # no new event: no sample; the probe is suppressed: 1000 ms
        (101.5, "u2", 0, 13, ["i3"], 101.4, 101.3),
        (103.0, "u3", 1, 4, ["i4"], 102.9, 102.8),  # source offset below u3's only event: no sample
    ]
    got = _latencies(produced, probes, records)
    assert sorted(round(s) for s in got.event_to_recs) == [200, 400]
    assert sorted(round(s) for s in got.event_to_worker_produce) == [150, 300]
    assert sorted(round(s) for s in got.event_to_worker) == [20, 40]
    assert sorted(round(s) for s in got.in_worker) == [130, 260]
    assert sorted(round(s) for s in got.recs_topic_hop) == [50, 100]
    assert [round(s) for s in got.suppression] == [1000]
    assert got.missed == 0


def test_latency_without_a_create_time_is_counted_but_not_split() -> None:
    produced = {(0, 1): (10.0, "u")}
    got = _latencies(produced, {}, [(10.2, "u", 0, 1, ["i"], None, 10.05)])
    assert [round(s) for s in got.event_to_recs] == [200]
    assert got.event_to_worker_produce == [] and got.recs_topic_hop == [] and got.in_worker == []
    # a record without received_at (not from the worker's loop): split at the produce only
    got = _latencies(produced, {}, [(10.2, "u", 0, 1, ["i"], 10.15, None)])
    assert [round(s) for s in got.recs_topic_hop] == [50] and got.event_to_worker == got.in_worker == []


def test_cpu_shares_of_a_phase() -> None:
    pid = os.getpid()
    before = {"me": process_cpu_s(pid), "gone": None}
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    shares = _cpu_shares({"me": pid, "gone": 2**22 + 1}, before, 0.05)
    assert set(shares) == {"me"} and shares["me"] > 50.0


def test_latency_counts_a_probe_never_suppressed() -> None:
    produced = {(0, 1): (10.0, "u")}
    probes = {(0, 1): (10.0, "u", "i")}
    got = _latencies(produced, probes, [(10.1, "u", 0, 1, ["i", "j"], 10.05, 10.02)])
    assert got.suppression == [] and got.missed == 1


# -- ann and train (no stack) -------------------------------------------------------------------


def test_ann_bench_reports_recall_and_throughput() -> None:
    result = run_ann([3000], n_queries=60, hnsw_m=8, ef_construction=40)
    assert 0.0 <= result["recall_at_10"] <= 1.0
    assert result["qps_single"] > 0 and result["qps_batch"] > 0
    runs = result["sizes"]["3000"]["runs"]
    assert {r["kind"] for r in runs} == {"exact", "hnsw", "ivf"}
    exact = next(r for r in runs if r["kind"] == "exact")
    assert exact["recall_at_10"] == 1.0
    for run in runs:
        assert 0.0 <= run["recall_at_10"] <= 1.0 and run["build_s"] >= 0


def test_clustered_vectors_are_deterministic_and_shaped() -> None:
    a, b = clustered_vectors(500, 16, seed=3), clustered_vectors(500, 16, seed=3)
    assert a.shape == (500, 16) and a.dtype.name == "float32"
    assert (a == b).all()


def test_train_bench_reports_both_models() -> None:
    result = run_train(3000, ["item2vec", "mf"], epochs=2)
    assert {r["model"] for r in result["runs"]} == {"item2vec", "mf"}
    for run in result["runs"]:
        assert run["samples"] > 0 and run["samples_per_s"] > 0
        assert 1 <= run["epochs_run"] <= 2
        assert run["best_validation_hr"] is None or 0.0 <= run["best_validation_hr"] <= 1.0


def test_cli_bench_ann_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "bench", "ann", "--ann-sizes", "2000", "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(out.read_bytes())
    assert 0.0 <= report["ann"]["recall_at_10"] <= 1.0
    assert report["ann"]["qps_single"] > 0
    assert report["meta"]["cpus"] >= 1


def test_cli_bench_rejects_an_unknown_suite(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "bench", "speed"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown benchmark 'speed'" in done.stderr


# -- on the embedded stack ------------------------------------------------------------------------


@pytest.mark.stack
def test_ingest_bench_consumes_every_produced_event(stack: StackInfo, redis_url: str) -> None:
    from deploy.bench.ingest import run_ingest

    result = run_ingest(_stack(stack, redis_url), 3000, peers=False, sample_every_s=0.2)
    assert result["produced"] == 3000
    assert result["consumed"] == result["produced"] == result["applied"]
    assert result["events_per_s"] > 0 and result["peak_rss_mb"] > 0
    assert result["recs_published"] > 0
    assert result["cpu_us_per_event"]["worker"] > 0
    if (os.cpu_count() or 1) > 1:  # the worker scored in a scoring process: counted in RSS and CPU
        assert 0 < result["scorer_peak_rss_mb"] < result["peak_rss_mb"]
        assert result["cpu_us_per_event"]["scorer"] > 0
    assert result["redis_keys"] > 0 and result["redis_used_memory_mb"] > 0
    assert "warning" not in result
    # what the stream was: the default shape, 3,000 events in one window of the batch size
    stream = result["stream"]
    assert (stream["users"], stream["session_gap_s"]) == (20_000, 30.0)
    assert 0 < stream["users_per_batch"] < 3000 // 2
    # the long-replay timeline: lag, Redis memory and the workers' RSS while they run
    timeline = result["memory_timeline"]
    assert timeline and all(p["used_memory_mb"] > 0 and p["workers_rss_mb"] > 0 for p in timeline)
    assert [p["elapsed_s"] for p in timeline] == sorted(p["elapsed_s"] for p in timeline)


@pytest.mark.stack
@pytest.mark.slow
def test_peers_process_the_same_events(stack: StackInfo, redis_url: str) -> None:
    from deploy.bench.peers_faust import run_faust_peer
    from deploy.bench.peers_naive import run_naive_peer

    settings = run_settings(_stack(stack, redis_url), "peers", stack.partitions)
    assert produce_events(400, settings.kafka) == 400
    faust = run_faust_peer(settings.kafka, 400, timeout_s=240)
    naive = run_naive_peer(settings.kafka, redis_url, 400, timeout_s=120)
    for peer in (faust, naive):
        assert peer["events"] == 400 and peer["events_per_s"] > 0
        assert peer["invalid"] == 0 and peer["recs_published"] > 0
    assert naive["redis_commands_per_event"] >= 4


@pytest.mark.stack
@pytest.mark.slow
def test_latency_bench_measures_recs_and_suppression(stack: StackInfo, redis_url: str) -> None:
    from deploy.bench.latency import run_latency

    result = run_latency(_stack(stack, redis_url), [300.0], duration_s=3.0, warmup_events=1000)
    phase = result["rates"]["300"]
    assert phase["events"] == 900 and phase["samples"] > 0
    assert 0 < phase["p50_ms"] <= phase["p95_ms"] <= phase["p99_ms"] <= phase["max_ms"]
    probes = phase["suppression"]
    # A bought item must leave the buyer's list: every probe is suppressed.
    assert probes["probes"] > 0 and probes["missed"] == 0 and probes["samples"] == probes["probes"]
    assert result["p99_ms"] == phase["p99_ms"]
    # the split at the worker's produce: both parts counted for every sample, and they add up
    to_worker, hop = phase["to_worker_produce"], phase["recs_topic_hop"]
    assert to_worker["samples"] == hop["samples"] == phase["samples"]
    assert 0 < to_worker["p50_ms"] <= phase["max_ms"] and hop["max_ms"] <= phase["max_ms"]
    # ... and that first part split at the worker's receipt of the event
    arrive, inside = phase["to_worker"], phase["in_worker"]
    assert arrive["samples"] == inside["samples"] == phase["samples"]
    assert 0 < arrive["p50_ms"] <= to_worker["max_ms"] and 0 < inside["p50_ms"] <= to_worker["max_ms"]
    assert phase["cpu_pct"]["worker"] > 0 and "bench" in phase["cpu_pct"]


@pytest.mark.stack
def test_broker_hop_times_every_record_of_each_phase(stack: StackInfo) -> None:
    from deploy.bench.broker_hop import run_broker_hop

    kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap, partitions=stack.partitions)
    rows = run_broker_hop(kafka, stack.broker_pid, rate=200.0, phases=2, phase_s=1.0, fetch_wait_ms=20)
    assert [row["phase"] for row in rows] == [0, 1]
    for row in rows:
        assert row["samples"] == row["records"] >= 199  # each record produced in the phase, read once
        assert 0 < row["p50_ms"] <= row["p99_ms"] < 5000
        assert row["broker_cpu_pct"] is not None and row["broker_cpu_pct"] > 0
    assert rows[1]["records_in_topic"] == 1 + rows[0]["records"] + rows[1]["records"]  # + the warm-up one


@pytest.mark.stack
@pytest.mark.parametrize("fails", [False, True])
def test_a_scratch_stack_is_stopped_and_its_directory_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    """A bench that starts its own stack leaves no process and no temporary directory behind,
    also when the run fails."""
    import tempfile

    from deploy.bench.common import scratch_stack

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: list[StackInfo] = []
    with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
        with scratch_stack(partitions=1) as info:
            seen.append(info)
            assert len(list(tmp_path.glob("streamrec-bench-*"))) == 1
            if fails:
                raise RuntimeError("the run failed")
    assert seen and not list(tmp_path.iterdir())
    for pid in (seen[0].broker_pid, seen[0].redis_pid):
        stat = _proc_stat(pid)  # gone, or exited and not yet reaped by this process
        assert stat is None or stat[0] in ("Z", "X")
