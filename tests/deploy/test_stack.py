"""The embedded stack launcher, against a second stack of its own (not the session one)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer

from deploy import stack as stack_mod
from deploy.stack import StackInfo, stack_status, start_stack, stop_stack
from engine.errors import StackError
from producers.admin import topic_partitions
from producers.kafka import KafkaSettings


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    workdir = tmp_path_factory.mktemp("own-stack")
    try:
        yield start_stack(workdir, partitions=3)
    finally:
        stop_stack(workdir)


@pytest.mark.stack
def test_env_file_holds_the_settings(own_stack: StackInfo) -> None:
    env_file = own_stack.workdir / ".streamrec" / "stack.env"
    lines = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert lines == {
        "STREAMREC_KAFKA_BOOTSTRAP_SERVERS": own_stack.kafka_bootstrap,
        "STREAMREC_REDIS_URL": own_stack.redis_url,
        "STREAMREC_KAFKA_PARTITIONS": "3",
    }
    host, port = own_stack.kafka_bootstrap.split(":")
    assert host == "127.0.0.1" and int(port) not in (9092, 6379)
    assert own_stack.redis_url.startswith("redis://127.0.0.1:") and ":6379/" not in own_stack.redis_url


@pytest.mark.stack
def test_state_file_records_processes(own_stack: StackInfo) -> None:
    record = json.loads((own_stack.workdir / ".streamrec" / "stack.json").read_text())
    assert record["processes"]["kafka"]["pid"] == own_stack.broker_pid
    assert record["processes"]["redis"]["pid"] == own_stack.redis_pid
    assert record["processes"]["kafka"]["argv"][1] == "broker"
    assert record["started_at"]
    assert (own_stack.workdir / ".streamrec" / "kafka.log").exists()


@pytest.mark.stack
def test_topics_exist_with_requested_partitions(own_stack: StackInfo) -> None:
    settings = KafkaSettings(bootstrap_servers=own_stack.kafka_bootstrap)
    for topic in ("events", "events.dlq", "recs"):
        assert topic_partitions(settings, topic) == 3


@pytest.mark.stack
def test_status_says_answering(own_stack: StackInfo) -> None:
    status = stack_status(own_stack.workdir)
    assert status["kafka"] == {
        "pid": own_stack.broker_pid,
        "address": own_stack.kafka_bootstrap,
        "alive": True,
        "answering": True,
    }
    assert status["redis"]["pid"] == own_stack.redis_pid
    assert status["redis"]["alive"] and status["redis"]["answering"]


@pytest.mark.stack
def test_kafka_round_trip(own_stack: StackInfo) -> None:
    producer = Producer({"bootstrap.servers": own_stack.kafka_bootstrap})
    sent = {f"user-{i}": f"value-{i}" for i in range(10)}
    for key, value in sent.items():
        producer.produce("events", key=key, value=value)
    assert producer.flush(10) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": own_stack.kafka_bootstrap,
            "group.id": "round-trip",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    received: dict[str, str] = {}
    try:
        consumer.subscribe(["events"])
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                received[message.key().decode()] = message.value().decode()
    finally:
        consumer.close()
    assert received == sent


@pytest.mark.stack
def test_redis_set_get(own_stack: StackInfo) -> None:
    client = redis.Redis.from_url(own_stack.redis_url)
    try:
        client.set("streamrec:test", "value")
        assert client.get("streamrec:test") == b"value"
    finally:
        client.close()


@pytest.mark.stack
def test_starting_again_returns_the_running_stack(own_stack: StackInfo) -> None:
    again = start_stack(own_stack.workdir, partitions=3)
    assert again == own_stack


@pytest.mark.stack
def test_stop_kills_exactly_the_recorded_pids(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = start_stack(tmp_path, partitions=1)
        assert _running(info.broker_pid) and _running(info.redis_pid)
        stopped = stop_stack(tmp_path)
        assert sorted(stopped) == sorted(
            [
                f"kafka (pid {info.broker_pid}, {info.kafka_bootstrap})",
                f"redis (pid {info.redis_pid}, {info.redis_url.removeprefix('redis://').removesuffix('/0')})",
            ]
        )
        assert not _running(info.broker_pid) and not _running(info.redis_pid)
        assert bystander.poll() is None
        assert not (tmp_path / ".streamrec" / "stack.env").exists()
        assert not (tmp_path / ".streamrec" / "stack.json").exists()
        assert stop_stack(tmp_path) == []
        assert stack_status(tmp_path)["kafka"]["alive"] is False
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    # A recorded PID that now runs another program (PID reuse) must survive `stop_stack`.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = tmp_path / ".streamrec"
        state.mkdir()
        fake = {"pid": other.pid, "address": "127.0.0.1:1", "binary": "/opt/tansu/bin/tansu"}
        (state / "stack.json").write_text(json.dumps({"processes": {"kafka": fake, "redis": fake}}))
        assert stop_stack(tmp_path) == []
        assert other.poll() is None
        assert not (state / "stack.json").exists()
    finally:
        other.kill()
        other.wait()


@pytest.mark.stack
def test_half_dead_stack_is_replaced(tmp_path: Path) -> None:
    first = start_stack(tmp_path, partitions=1)
    try:
        os.kill(first.redis_pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while stack_status(tmp_path)["redis"]["alive"] and time.monotonic() < deadline:
            time.sleep(0.05)
        second = start_stack(tmp_path, partitions=1)
        assert second.broker_pid != first.broker_pid and second.redis_pid != first.redis_pid
        assert not _running(first.broker_pid)
        assert stack_status(tmp_path)["redis"]["answering"]
    finally:
        stop_stack(tmp_path)


@pytest.mark.stack
def test_failed_start_stops_what_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_redis = tmp_path / "fake-redis-server"
    fake_redis.write_text("#!/bin/sh\necho 'fake redis: cannot bind' >&2\nexit 3\n")
    fake_redis.chmod(0o755)
    real_binaries = stack_mod._binaries
    monkeypatch.setattr(stack_mod, "_binaries", lambda: (str(fake_redis), real_binaries()[1]))
    started: list[int] = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        started.append(proc.pid)
        return proc

    monkeypatch.setattr(stack_mod.subprocess, "Popen", recording_popen)
    with pytest.raises(StackError, match="fake redis: cannot bind") as excinfo:
        start_stack(tmp_path)
    assert "redis exited with code 3" in str(excinfo.value)
    assert len(started) == 2
    assert not any(_running(pid) for pid in started)
    assert not (tmp_path / ".streamrec" / "stack.json").exists()
    assert not (tmp_path / ".streamrec" / "stack.env").exists()


def test_status_without_a_stack(tmp_path: Path) -> None:
    status = stack_status(tmp_path)
    assert status["kafka"] == {"pid": None, "address": None, "alive": False, "answering": False}
    assert status["redis"]["alive"] is False


@pytest.mark.stack
@pytest.mark.parametrize("run", [1, 2])
def test_redis_url_fixture_starts_empty(redis_url: str, run: int) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0  # the second run sees nothing the first one wrote
        client.set(f"streamrec:fixture:{run}", "x")
    finally:
        client.close()
