"""The scoring process's loop (run in this process, on a stub pipe): when its worker is gone, and
a job's read beside its learning."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from consumers.scoring import process
from consumers.scoring.base import ScoreJob
from consumers.scoring.process import serve
from engine.config import EngineSettings
from engine.errors import StateStoreError
from engine.state.memory import MemoryStore


class _RecordingPipe:
    """Delivers ``messages`` and keeps every answer (as the worker's end of the pipe would)."""

    def __init__(self, messages: list[tuple]) -> None:
        self.messages = list(messages)
        self.sent: list[tuple] = []

    def recv(self) -> tuple:
        if not self.messages:
            raise EOFError
        return self.messages.pop(0)

    def send(self, message: tuple) -> None:
        self.sent.append(message)


class _PipeToDeadWorker(_RecordingPipe):
    """Delivers ``messages``; every answer fails as a pipe whose reader was killed does."""

    def send(self, message: tuple) -> None:
        super().send(message)
        raise BrokenPipeError(32, "Broken pipe")


@pytest.fixture
def keep_signal_handlers() -> Iterator[None]:
    # serve() ignores SIGINT/SIGTERM (its worker stops it): give them back to the test run
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_serve_ends_quietly_when_the_worker_is_gone(keep_signal_handlers: None) -> None:
    engine = EngineSettings()
    conn = _PipeToDeadWorker([("replica", False), ("replica", False)])
    serve(conn, lambda: MemoryStore(1, engine), engine, gc_freeze=False)  # type: ignore[arg-type]
    # one answer tried, no crash report sent after it, and the next message never read
    assert conn.sent == [("ok",)]
    assert conn.messages == [("replica", False)]


class _SignallingStore(MemoryStore):
    """Sets ``read`` when scoring reads its inputs; fails that read with ``fail``."""

    def __init__(self, engine: EngineSettings, fail: Exception | None = None) -> None:
        super().__init__(1, engine)
        self.read = threading.Event()
        self.fail = fail

    def recs_inputs(self, users, trending, without_history=()):  # type: ignore[no-untyped-def]
        self.read.set()
        if self.fail is not None:
            raise self.fail
        return super().recs_inputs(users, trending, without_history)


def _serve_one_job(monkeypatch: pytest.MonkeyPatch, store: MemoryStore, learn) -> list[tuple]:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(process, "learn", learn)
    engine = EngineSettings()
    conn = _RecordingPipe([("score", ScoreJob([("s1", "i1", 1.0)], {0: ["u1"]}))])
    serve(conn, lambda: store, engine, gc_freeze=False)  # type: ignore[arg-type]
    return conn.sent


def test_a_job_is_read_while_it_is_learnt(
    keep_signal_handlers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _SignallingStore(EngineSettings())
    overlapped: list[bool] = []

    def learn(recommender, job):  # type: ignore[no-untyped-def]
        # a learning step that ends only once the read has begun: done one after the other,
        # it would wait out its timeout
        overlapped.append(store.read.wait(timeout=10))

    sent = _serve_one_job(monkeypatch, store, learn)
    assert overlapped == [True]
    assert [message[0] for message in sent] == ["read", "done"]
    assert "u1" in sent[1][1].lists[0]


def test_a_failed_read_is_a_store_error(keep_signal_handlers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _SignallingStore(EngineSettings(), fail=StateStoreError("Redis recs read failed: down"))
    sent = _serve_one_job(monkeypatch, store, lambda recommender, job: None)
    assert sent == [("error", "store", "Redis recs read failed: down")]


def test_a_failed_learning_is_reported_after_the_read(
    keep_signal_handlers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _SignallingStore(EngineSettings())

    def learn(recommender, job):  # type: ignore[no-untyped-def]
        raise ValueError("bad touch")

    sent = _serve_one_job(monkeypatch, store, learn)
    # the reader thread's answer first (one writer on the pipe at a time), then the crash
    assert [message[:2] for message in sent] == [("read",), ("error", "crash")]
    assert "ValueError: bad touch" in sent[1][2]
