"""Scaling the group 1 -> 3 -> 1 worker processes while the stream runs: nothing lost or doubled."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from engine.generator import generate_events
from producers.kafka import KafkaSettings
from producers.replay import replay_events
from tests.support.oracle import exactly_once, recs_users, verify_cli, wait_for_zero_lag
from tests.support.workers import WorkerPool, stack_env

pytestmark = [pytest.mark.stack, pytest.mark.slow]

EVENTS = 30_000
RATE = 1_000


def _owned(worker) -> set[int]:
    """Partitions the worker was last assigned, from its log."""
    found = re.findall(r"assigned partitions \[([\d, ]*)\]", worker.text())
    return {int(p) for p in found[-1].split(",") if p.strip()} if found else set()


def _wait(predicate, pool: WorkerPool, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, pool.logs()
        time.sleep(0.2)


def test_scale_one_three_one_mid_stream(
    kafka_settings: KafkaSettings, redis_url: str, tmp_path: Path
) -> None:
    events = generate_events(EVENTS, n_users=1000, n_items=2000, seed=31)
    env = stack_env(kafka_settings, redis_url, STREAMREC_WORKER_BATCH_SIZE=300)
    pool = WorkerPool(env, tmp_path)
    producer = threading.Thread(target=replay_events, args=(events, kafka_settings), kwargs={"rate": RATE})
    try:
        first = pool.start()
        _wait(lambda: _owned(first) == {0, 1, 2, 3}, pool)
        producer.start()
        time.sleep(5)
        extra = [pool.start(), pool.start()]

        # Scaled out: the partitions are spread over all three members.
        def spread() -> bool:
            owned = [_owned(w) for w in [first, *extra]]
            return all(owned) and set().union(*owned) == {0, 1, 2, 3} and sum(map(len, owned)) == 4

        _wait(spread, pool)
        time.sleep(5)
        for worker in extra:
            assert pool.terminate(worker) == 0, pool.logs()
        # Scaled in: the survivor owns everything again.
        _wait(lambda: _owned(first) == {0, 1, 2, 3}, pool)
        producer.join()
        lag = wait_for_zero_lag(kafka_settings, timeout_s=120)
        assert not any(lag.values()), lag
        assert pool.terminate(first) == 0, pool.logs()
    finally:
        pool.close()

    report = verify_cli(env, tmp_path)
    assert report["exit_code"] == 0 and report["ok"], report["mismatches"][:5]
    counts = exactly_once(kafka_settings, redis_url)
    assert counts.watermarks_at_end and counts.records == EVENTS
    assert (counts.applied, counts.duplicates_applied) == (EVENTS, 0)
    assert {e.user_id for e in events} <= recs_users(kafka_settings)
    print(f"\nrebalance 1->3->1: {pool.skipped()} re-delivered records skipped, verify ok")
