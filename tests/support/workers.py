"""Engine workers as real processes (`streamrec run`), so that tests can SIGKILL and restart them.

Every process is started in its own session and stopped by its PID (never by name), also when the
test fails. Each process writes its log to its own file, which the tests read afterwards (the
worker logs re-delivered records it skipped, rebalances and injected faults).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from deploy.runner import WORKER_STARTED
from producers.kafka import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]
_STREAMREC = Path(sys.executable).with_name("streamrec")
STREAMREC = [str(_STREAMREC)] if _STREAMREC.exists() else [sys.executable, "-m", "deploy.cli"]
SKIPPED = re.compile(r"skipped (\d+) re-delivered records")
REBALANCE = re.compile(r"streamrec\.worker (assigned|revoked) partitions")


def stack_env(kafka: KafkaSettings, redis_url: str, **extra: object) -> dict[str, str]:
    """The environment that points `streamrec` commands at this test's topics, group and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env.update(
        PYTHONPATH=str(ROOT),
        STREAMREC_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        STREAMREC_KAFKA_EVENTS_TOPIC=kafka.events_topic,
        STREAMREC_KAFKA_DLQ_TOPIC=kafka.dlq_topic,
        STREAMREC_KAFKA_RECS_TOPIC=kafka.recs_topic,
        STREAMREC_KAFKA_GROUP_ID=kafka.group_id,
        STREAMREC_KAFKA_SESSION_TIMEOUT_MS=str(kafka.session_timeout_ms),
        STREAMREC_REDIS_URL=redis_url,
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def settled(self) -> bool:
        """Alive, and assigned partitions since its last revocation (see WorkerPool.wait_stable)."""
        rebalances = REBALANCE.findall(self.text())
        return self.alive() and bool(rebalances) and rebalances[-1] == "assigned"

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class WorkerPool:
    """Starts `streamrec run --workers 1` processes; every one of them is stopped by :meth:`close`."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.started: list[WorkerProcess] = []

    def start(self, *args: str, **extra_env: object) -> WorkerProcess:
        log = self.workdir / f"worker-{len(self.started):03d}.log"
        env = self.env | {k: str(v) for k, v in extra_env.items()}
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*STREAMREC, "run", "--workers", "1", *args],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(proc, log)
        self.started.append(worker)
        return worker

    def kill(self, worker: WorkerProcess) -> None:
        """SIGKILL: no batch is finished, nothing is flushed or committed."""
        worker.signal(signal.SIGKILL)
        worker.wait(10)

    def terminate(self, worker: WorkerProcess, timeout: float = 60.0) -> int:
        """SIGTERM: the worker finishes its batch, leaves the group and exits (0).

        Sent once the worker handles it: a process still starting up (importing, on a loaded
        machine that can take seconds) would die of the signal instead, which is no test of
        the graceful stop."""
        deadline = time.monotonic() + timeout
        started = f"{WORKER_STARTED} (pid {worker.pid})"
        while worker.alive() and started not in worker.text():
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {worker.pid} never started:\n{worker.text()[-3000:]}")
            time.sleep(0.1)
        worker.signal(signal.SIGTERM)
        return worker.wait(max(deadline - time.monotonic(), 10.0))

    def wait_stable(self, workers: list[WorkerProcess], timeout: float = 90.0) -> None:
        """Wait until each of ``workers`` has joined the group and holds its assignment (its log's
        last rebalance line is an assignment): no join is in progress.

        The embedded broker (Tansu) can leave a group stuck for good when a member dies or leaves
        inside a join, so the chaos tests strike only a settled group; the crash-points test covers
        the rebalance steps themselves."""
        deadline = time.monotonic() + timeout
        while not all(w.settled() for w in workers):
            if time.monotonic() > deadline:
                raise AssertionError(f"the group did not settle within {timeout:.0f} s\n{self.logs()}")
            time.sleep(0.1)

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.started if w.alive()]

    def skipped(self) -> int:
        """Re-delivered records the workers skipped (at or below the watermark), from their logs."""
        return sum(int(n) for w in self.started for n in SKIPPED.findall(w.text()))

    def logs(self) -> str:
        return "\n".join(f"--- {w.log.name} (pid {w.pid}) ---\n{w.text()[-3000:]}" for w in self.started)

    def close(self) -> None:
        for worker in self.started:
            if worker.alive():
                worker.signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for worker in self.started:
            try:
                worker.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                worker.signal(signal.SIGKILL)
                worker.wait(10)
