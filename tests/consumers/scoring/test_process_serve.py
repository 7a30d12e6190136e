"""The scoring process's loop when its worker is gone (run in this process, on a stub pipe)."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from consumers.scoring.process import serve
from engine.config import EngineSettings
from engine.state.memory import MemoryStore


class _PipeToDeadWorker:
    """Delivers ``messages``; every answer fails as a pipe whose reader was killed does."""

    def __init__(self, messages: list[tuple]) -> None:
        self.messages = list(messages)
        self.sent: list[tuple] = []

    def recv(self) -> tuple:
        if not self.messages:
            raise EOFError
        return self.messages.pop(0)

    def send(self, message: tuple) -> None:
        self.sent.append(message)
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
