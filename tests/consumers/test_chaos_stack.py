"""Chaos: 100k events through two worker processes that are SIGKILLed and restarted at random.

The judge is `streamrec verify` (the state rebuilt from the topic vs Redis), plus exact counts:
every record of the topic is counted by the state exactly once, every active user has a recs
record, and the group has no lag. Run with ``pytest -s`` to see the figures; they are also written
to ``chaos.json`` in the test's tmp dir.
"""

from __future__ import annotations

import json
import random
import signal
import statistics
import threading
import time
from pathlib import Path

import pytest
import redis

from consumers.offsets import group_lag
from engine.generator import generate_events
from producers.kafka import KafkaSettings
from producers.replay import replay_events
from tests.support.oracle import exactly_once, recs_users, verify_cli, wait_for_zero_lag
from tests.support.workers import WorkerPool, stack_env

pytestmark = [pytest.mark.stack, pytest.mark.slow]

EVENTS = 100_000
RATE = 700  # events/s: the stream lasts about as long as the kills
KILLS = 22
TERMS = 3
SESSION_TIMEOUT_MS = 3000  # a dead member is noticed sooner; Tansu joins in about half of it


class WatermarkMonitor:
    """Samples the partitions' watermarks every 50 ms, to time the recovery after each kill."""

    def __init__(self, redis_url: str, partitions: int) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.partitions = partitions
        self.samples: list[tuple[float, list[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        keys = [f"sr:{{{p}}}:meta" for p in range(self.partitions)]
        while not self._stop.wait(0.05):
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hget(key, "watermark")
            marks = [int(v) if v is not None else -1 for v in pipe.execute()]
            self.samples.append((time.monotonic(), marks))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()

    def recovery_s(self, killed_at: float, done: list[int] | None = None) -> float | None:
        """Seconds from a kill until every partition with records left moved past its watermark then.

        The stream feeds every partition all the time, so a partition that does not move belongs to
        the killed worker until the group has reassigned it; one at its ``done`` watermark (the
        end of its records) has nothing left to do. None while not recovered yet.
        """
        samples = list(self.samples)
        before = [marks for t, marks in samples if t <= killed_at]
        if not before:
            return None
        base = before[-1]
        done = done or [-2] * len(base)
        for t, marks in samples:
            if t > killed_at and all(m > b or b == d for m, b, d in zip(marks, base, done, strict=True)):
                return t - killed_at
        return None


def _wait_recovered(
    monitor: WatermarkMonitor, hit: float, kafka: KafkaSettings, producer: threading.Thread, pool: WorkerPool
) -> float:
    deadline = hit + 90
    while True:
        done = None
        if not producer.is_alive():  # partitions at their end have nothing left to move
            lag = group_lag(kafka)
            done = [monitor.samples[-1][1][p] if lag[p] == 0 else -2 for p in range(kafka.partitions)]
        recovered = monitor.recovery_s(hit, done)
        if recovered is not None:
            return recovered
        assert time.monotonic() < deadline, f"the group did not recover within 90 s\n{pool.logs()}"
        time.sleep(0.2)


def test_sigkill_chaos_keeps_exactly_once(
    kafka_settings: KafkaSettings, redis_url: str, tmp_path: Path
) -> None:
    rng = random.Random(20261123)
    events = generate_events(EVENTS, n_users=3000, n_items=5000, seed=11)
    kafka = kafka_settings.model_copy(update={"session_timeout_ms": SESSION_TIMEOUT_MS})
    # A rebalance waits this long for a member that was killed before it could rejoin.
    env = stack_env(
        kafka, redis_url, STREAMREC_WORKER_BATCH_SIZE=500, STREAMREC_KAFKA_MAX_POLL_INTERVAL_MS=10_000
    )
    pool = WorkerPool(env, tmp_path)
    monitor = WatermarkMonitor(redis_url, kafka.partitions)
    producer = threading.Thread(target=replay_events, args=(events, kafka), kwargs={"rate": RATE})
    slots = [pool.start(), pool.start()]
    actions = ["kill"] * KILLS + ["term"] * TERMS
    rng.shuffle(actions)
    kill_times: list[float] = []
    recoveries: list[float] = []
    try:
        monitor.start()
        time.sleep(4)  # both members joined
        producer.start()
        for action in actions:
            # A random moment of steady processing. Tansu (the embedded broker) can leave a group
            # stuck for good when a member dies or leaves inside a join, so the next blow waits
            # until the group has recovered from the last one and the restarted worker has joined;
            # kills inside a rebalance are the crash-points test's "assigned" and "revoked" steps.
            time.sleep(rng.uniform(0.3, 2.0))
            pool.wait_stable(slots)
            slot = rng.randrange(len(slots))
            victim = slots[slot]
            assert victim.alive(), f"worker died on its own:\n{pool.logs()}"
            hit = time.monotonic()
            if action == "kill":
                pool.kill(victim)
                kill_times.append(hit)
            else:
                assert pool.terminate(victim) == 0, pool.logs()
            slots[slot] = pool.start()
            recovered = _wait_recovered(monitor, hit, kafka, producer, pool)
            if action == "kill":
                recoveries.append(recovered)
        producer.join()
        lag = wait_for_zero_lag(kafka, timeout_s=180)
        assert not any(lag.values()), f"lag {lag}\n{pool.logs()}"
        pool.wait_stable(slots)
        for worker in slots:
            assert pool.terminate(worker) == 0, pool.logs()
    finally:
        monitor.stop()
        pool.close()

    report = verify_cli(env, tmp_path)
    counts = exactly_once(kafka, redis_url)
    users = recs_users(kafka)
    measured = recoveries
    figures = {
        "events": EVENTS,
        "partitions": kafka.partitions,
        "workers": len(slots),
        "sigkills": len(kill_times),
        "sigterms": TERMS,
        "worker_processes_started": len(pool.started),
        "redelivered_and_skipped": pool.skipped(),
        "duplicates_applied": counts.duplicates_applied,
        "counts": counts.to_dict(),
        "verify_ok": report["ok"],
        "verify_records_checked": report["records_checked"],
        "recs_users": len(users),
        "active_users": len({e.user_id for e in events}),
        "recovery_s": {
            "measured": len(measured),
            "definition": "SIGKILL until every partition with records left has advanced again",
            "median": round(statistics.median(measured), 2) if measured else None,
            "max": round(max(measured), 2) if measured else None,
            "all": [round(r, 2) for r in measured],
        },
        "final_lag": lag,
    }
    (tmp_path / "chaos.json").write_text(json.dumps(figures, indent=2))
    print("\nchaos figures:", json.dumps(figures, indent=2))

    assert report["exit_code"] == 0 and report["ok"] is True, report["mismatches"][:5]
    assert report["records_checked"] == EVENTS
    assert counts.records == EVENTS and counts.watermarks_at_end
    assert counts.applied == EVENTS and counts.duplicates == 0 and counts.invalid == 0
    assert counts.duplicates_applied == 0
    assert {e.user_id for e in events} <= users
    assert len(kill_times) >= 20
    # Every restarted worker joined and did work: none of them died on its own.
    assert all(w.proc.returncode in (0, -signal.SIGKILL) for w in pool.started), pool.logs()
