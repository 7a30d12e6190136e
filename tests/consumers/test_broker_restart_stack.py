"""The broker goes away mid-stream (every connection dropped, new ones refused), then comes back.

The embedded Tansu keeps its log in memory only, so a real restart would lose the topic. The test
runs a broker of its own that advertises a loopback proxy as its address: every client connection
(bootstrap and partition leader) goes through the proxy, and cutting it is, for the clients, the
broker being down for a while, longer than the session timeout. The worker must reconnect, rejoin
the group, and finish with the state equal to the oracle.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.worker import Worker, WorkerSettings
from deploy.stack import _binaries, stop_child
from engine.config import EngineSettings
from engine.generator import generate_events
from engine.state.redis_store import RedisSettings, RedisStore
from producers.admin import ensure_topics, wait_for_broker
from producers.kafka import KafkaSettings
from producers.replay import replay_events
from tests.support.oracle import assert_every_event_once_with_recs, wait_for_zero_lag
from tests.support.proxy import ChaosProxy
from tests.support.workers import stack_env

pytestmark = [pytest.mark.stack, pytest.mark.slow]

EVENTS = 8000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[tuple[KafkaSettings, ChaosProxy]]:
    """A Tansu broker of this test's own, reachable only through a ChaosProxy; stopped by PID."""
    port = _free_port()
    proxy = ChaosProxy("127.0.0.1", port)
    _, broker = _binaries()
    argv = [broker, "broker", "--listener-url", f"tcp://127.0.0.1:{port}"]
    argv += [
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{proxy.port}",
        "--storage-engine",
        "memory://tansu/",
    ]
    with open(tmp_path / "broker.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        settings = KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{proxy.port}",
            events_topic="events",
            dlq_topic="events.dlq",
            recs_topic="recs",
            group_id="restart-test",
            partitions=4,
            session_timeout_ms=6000,
        )
        wait_for_broker(settings, timeout=30)
        ensure_topics(settings, {"events": 4, "events.dlq": 4, "recs": 4})
        yield settings, proxy
    finally:
        proxy.close()
        stop_child(proc)


def test_worker_reconnects_after_the_broker_comes_back(
    proxied_broker: tuple[KafkaSettings, ChaosProxy], redis_url: str, tmp_path: Path
) -> None:
    kafka, proxy = proxied_broker
    engine = EngineSettings()
    store = RedisStore(RedisSettings(url=redis_url), kafka.partitions, engine)
    worker = Worker(kafka, store, engine, WorkerSettings(batch_size=200, poll_timeout_s=0.2))
    events = generate_events(EVENTS, n_users=300, n_items=800, seed=51)
    producer = threading.Thread(target=replay_events, args=(events, kafka), kwargs={"rate": 400})
    runner = threading.Thread(target=worker.run, kwargs={"max_seconds": 240})
    try:
        runner.start()
        producer.start()
        time.sleep(8)
        before = worker.stats.applied
        assert before > 0, "nothing applied before the outage"
        proxy.cut()
        time.sleep(10)  # longer than the session timeout: the broker drops the member
        proxy.restore()
        producer.join()
        lag = wait_for_zero_lag(kafka, timeout_s=120)
        worker.stop()
        runner.join(60)
    finally:
        worker.stop()
        proxy.restore()

    assert not runner.is_alive()
    assert not any(lag.values()), lag
    assert worker.stats.applied == EVENTS
    assert worker.stats.assignments >= 2  # it rejoined the group after the outage

    users = {e.user_id for e in events}
    assert_every_event_once_with_recs(kafka, redis_url, stack_env(kafka, redis_url), tmp_path, users, EVENTS)
    print(
        f"\nbroker outage: {worker.stats.broker_outages} batches retried, "
        f"{worker.stats.assignments} assignments, {worker.stats.already_applied} re-delivered records skipped"
    )
