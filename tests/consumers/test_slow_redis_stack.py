"""Redis slow (added latency) and then stopped (SIGSTOP: it hangs, it does not refuse) mid-stream.

Two workers share the group. They must wait and retry without consuming ahead (memory stays
bounded), keep their group membership (no new assignment), and catch up once Redis answers.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from consumers.worker import Worker, WorkerSettings
from deploy.stack import StackInfo
from engine.config import EngineSettings
from engine.generator import generate_events
from engine.state.redis_store import RedisSettings, RedisStore
from producers.kafka import KafkaSettings
from producers.replay import replay_events
from tests.support.oracle import assert_every_event_once_with_recs, wait_for_zero_lag
from tests.support.proxy import ChaosProxy
from tests.support.workers import stack_env

pytestmark = [pytest.mark.stack, pytest.mark.slow]

EVENTS = 20_000
BATCH = 200


def _consumed(workers: list[Worker]) -> int:
    return sum(w.stats.consumed for w in workers)


def test_slow_then_stopped_redis(
    stack: StackInfo, kafka_settings: KafkaSettings, redis_url: str, tmp_path: Path
) -> None:
    target = urlparse(redis_url)
    proxy = ChaosProxy(target.hostname or "127.0.0.1", target.port or 6379)
    engine = EngineSettings()
    settings = RedisSettings(
        url=f"redis://127.0.0.1:{proxy.port}/0", socket_timeout_s=1.0, retry_attempts=2, retry_backoff_s=0.1
    )
    workers = [
        Worker(
            kafka_settings,
            RedisStore(settings, kafka_settings.partitions, engine),
            engine,
            WorkerSettings(batch_size=BATCH, poll_timeout_s=0.2),
        )
        for _ in range(2)
    ]
    events = generate_events(EVENTS, n_users=600, n_items=1500, seed=41)
    producer = threading.Thread(target=replay_events, args=(events, kafka_settings), kwargs={"rate": 600})
    runners = [threading.Thread(target=w.run, kwargs={"max_seconds": 240}) for w in workers]
    stopped = False
    try:
        for runner in runners:
            runner.start()
        deadline = time.monotonic() + 60
        # From the workers' own counters: a consumer must not be touched from this thread.
        while not all(w.stats.assignments for w in workers):
            assert time.monotonic() < deadline, "the group did not form"
            time.sleep(0.2)
        time.sleep(5)  # the join of the second member has settled
        assignments = [w.stats.assignments for w in workers]
        producer.start()
        time.sleep(4)
        before_slow = sum(w.stats.batches for w in workers)
        proxy.latency_s = 0.05  # every request and reply chunk waits 50 ms
        time.sleep(8)
        slow_batches = sum(w.stats.batches for w in workers) - before_slow
        proxy.latency_s = 0.0
        os.kill(stack.redis_pid, signal.SIGSTOP)
        stopped = True
        time.sleep(6)  # every worker has hit the timeout (3 tries of 1 s) and paused by now
        paused_at = _consumed(workers)
        time.sleep(6)
        consumed_while_paused = _consumed(workers) - paused_at
        os.kill(stack.redis_pid, signal.SIGCONT)
        stopped = False
        producer.join()
        lag = wait_for_zero_lag(kafka_settings, timeout_s=120)
        for worker in workers:
            worker.stop()
        for runner in runners:
            runner.join(60)
    finally:
        if stopped:
            os.kill(stack.redis_pid, signal.SIGCONT)
        for worker in workers:
            worker.stop()
        proxy.close()

    assert not any(lag.values()), lag
    assert slow_batches > 0
    assert sum(w.stats.store_outages for w in workers) >= 1
    # Paused: at most the batch in flight when a worker noticed the outage, nothing more fetched.
    assert consumed_while_paused <= 2 * BATCH, consumed_while_paused
    # Still members: no worker was evicted and re-assigned because of the slow or stopped Redis.
    assert [w.stats.assignments for w in workers] == assignments
    # A batch write that timed out while Redis was stopped may still run when it resumes: the
    # worker then finds those records under the watermark and skips them, so its own count of
    # applied events can fall short while the state (checked below) has every event exactly once.
    applied = sum(w.stats.applied for w in workers)
    assert applied + sum(w.stats.already_applied for w in workers) >= EVENTS

    env = stack_env(kafka_settings, redis_url)
    users = {e.user_id for e in events}
    assert_every_event_once_with_recs(kafka_settings, redis_url, env, tmp_path, users, EVENTS)
    print(
        f"\nslow+stopped redis: {slow_batches} batches while slow, "
        f"{sum(w.stats.store_outages for w in workers)} pauses, {consumed_while_paused} consumed while stopped, "
        f"{EVENTS - applied} events applied by a write whose reply timed out"
    )
