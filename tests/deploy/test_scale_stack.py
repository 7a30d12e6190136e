"""Horizontal scale-out: 1, 2 and 4 worker processes (`streamrec run --workers N`) on 8 partitions.

Each run gets its own 8-partition topics, consumer group and Redis key prefix, the same replayed
events, and must pass `streamrec verify`. Throughput per worker is printed (run with ``-s``), not
asserted: it depends on the cores the machine has (on 2 cores the total flattens past 2 workers),
and the wall time includes process start-up and consumer-group joins.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from engine.generator import generate_events
from producers.admin import ensure_topics
from producers.kafka import KafkaSettings
from producers.replay import replay_events
from tests.support.workers import stack_env

pytestmark = [pytest.mark.stack, pytest.mark.slow]

PARTITIONS = 8
EVENTS = 30_000
_BIN = Path(sys.executable).with_name("streamrec")
STREAMREC = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "deploy.cli"]
SUMMARY = re.compile(r"([\d,]+) records in ([\d.]+) s")


def run_streamrec(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess:
    """Run a streamrec command in its own process group; on timeout stop that group (our PIDs only)."""
    proc = subprocess.Popen(
        [*STREAMREC, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"streamrec {' '.join(args)} timed out:\n{err.decode()[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())


def test_one_two_four_workers_on_eight_partitions(stack, redis_url: str, tmp_path: Path) -> None:
    events = generate_events(EVENTS, n_users=3000, n_items=2000, seed=8)
    report = []
    for workers in (1, 2, 4):
        suffix = f"{workers}w-{uuid.uuid4().hex[:6]}"
        kafka = KafkaSettings(
            bootstrap_servers=stack.kafka_bootstrap,
            events_topic=f"scale-events-{suffix}",
            dlq_topic=f"scale-dlq-{suffix}",
            recs_topic=f"scale-recs-{suffix}",
            group_id=f"scale-{suffix}",
            partitions=PARTITIONS,
            session_timeout_ms=6000,
        )
        ensure_topics(
            kafka, dict.fromkeys((kafka.events_topic, kafka.dlq_topic, kafka.recs_topic), PARTITIONS)
        )
        replay_events(events, kafka)
        env = stack_env(
            kafka, redis_url, STREAMREC_REDIS_KEY_PREFIX=f"scale{workers}", STREAMREC_WORKER_LOG_JSON="true"
        )
        started = time.monotonic()
        run = run_streamrec(
            ["run", "--workers", str(workers), "--until-idle", "--max-seconds", "240"], env, tmp_path, 300
        )
        wall = time.monotonic() - started
        assert run.returncode == 0, run.stderr[-3000:]
        summary = SUMMARY.search(run.stdout)
        assert summary, run.stdout
        consumed, run_s = int(summary.group(1).replace(",", "")), float(summary.group(2))
        assert consumed >= EVENTS  # re-deliveries after a rebalance are consumed again, then skipped
        if workers > 1:
            # Each worker process logs as JSON lines (STREAMREC_WORKER_LOG_JSON); all of them joined.
            lines = [json.loads(ln) for ln in run.stderr.splitlines() if ln.startswith("{")]
            assigned = {ln["process"] for ln in lines if ln["message"].startswith("assigned partitions")}
            assert len(assigned) == workers, run.stderr[-3000:]

        verify = run_streamrec(["verify", "--json"], env, tmp_path, 300)
        assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
        result = json.loads(verify.stdout)
        assert result["ok"] and result["records_checked"] == EVENTS
        report.append(
            {
                "workers": workers,
                "events": EVENTS,
                "consumed": consumed,
                "run_s": run_s,
                "wall_s": round(wall, 1),
                "events_per_s": round(EVENTS / run_s),
                "events_per_s_per_worker": round(EVENTS / run_s / workers),
            }
        )
    print("\nscale-out on", os.cpu_count(), "cores:")
    for row in report:
        print(json.dumps(row))
