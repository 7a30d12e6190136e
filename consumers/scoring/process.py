"""Scoring in a second process, one poll behind the worker's state writes.

The worker is one Python thread: decoding, the Redis writes and the scoring of a poll take turns on
one core while the machine has more. Here a child process holds the session-model replica and
scores poll n while the worker decodes and writes poll n+1; the worker publishes poll n's lists
and commits its offsets when they come back. Messages on one pipe, in order:

1. ``("replica", whole)`` -> ``("ok",)``: (re)load the replica from the store, or drop it;
2. ``("space", space)``: a refreshed embedding space (no reply);
3. ``("score", job)`` -> ``("read",)`` once the job's inputs are read from the store (the worker
   holds its next writes until then), then ``("done", result)``. The read runs on a thread of
   the child while its main thread feeds the poll to the replica: the two need nothing of each
   other, and the read is mostly a wait for Redis (~15 of its ~20 ms a poll at ~12,000 events/s),
   which the learning (~16 ms) now fills;
4. ``("stop",)``.

A failure in the child is sent back as ``("error", kind, text)``: ``store`` becomes
StateStoreError (the worker waits for Redis, as with its own writes), anything else is re-raised
in the worker as it would have been raised there. A child that exits (killed, out of memory)
raises :class:`~engine.errors.ScorerError`; the worker rewinds the unfinished polls, and the next
replica load starts a fresh child.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from typing import Any

from consumers.heap import freeze_after_full_collections
from consumers.metrics import StoreCallLog, TimedStore
from consumers.scoring.base import ScoreJob, ScoreResult
from consumers.scoring.inline import held_histories, learn, load_replica, rank, read_inputs
from engine.config import EngineSettings
from engine.embeddings import EmbeddingSpace
from engine.errors import ScorerError, StateStoreError
from engine.recommend import Recommender
from engine.state.base import StateStore

log = logging.getLogger("streamrec.scoring")

# How often a wait for the child checks that it is still alive.
_ALIVE_CHECK_S = 0.5


class ScoringFailed(RuntimeError):
    """An exception raised by the scoring code in the child (its traceback is the message)."""


class ProcessScorer:
    """Scores in a child process started on first use; ``build_store`` (picklable) makes the
    child's own connection to the worker's state store."""

    overlaps = True

    def __init__(
        self, build_store: Callable[[], StateStore], engine: EngineSettings, gc_freeze: bool = True
    ) -> None:
        self.build_store = build_store
        self.engine = engine
        self.gc_freeze = gc_freeze
        self._process: Any = None
        self._conn: Connection | None = None
        self._in_flight = False  # a job submitted and its result not yet taken
        self._read = False  # ... and its inputs read
        self._done: ScoreResult | None = None  # ... and its result, when it came before result()
        self._error: tuple[str, str] | None = None  # the job's failure, raised by result()
        self._stale = 0  # replies of discarded jobs still to come
        self._space: EmbeddingSpace | None = None
        self._space_due = False  # the child does not have self._space yet

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- the worker's side --------------------------------------------------------------------

    def load_replica(self, whole: bool) -> None:
        self._start_if_needed()
        self._drain()
        self._send_space_if_due()
        self._send(("replica", whole))
        reply = self._recv()
        if reply[0] == "error":
            self._raise(reply[1], reply[2])

    def set_space(self, space: EmbeddingSpace | None) -> None:
        # Sent with the next job, while the child waits for one: a job in flight keeps the space
        # it started with, and a large space is never written while the child writes a result.
        self._space, self._space_due = space, True

    def submit(self, job: ScoreJob) -> None:
        if not self._alive():
            raise ScorerError("the scoring process is not running")
        self._drain()
        self._send_space_if_due()
        self._send(("score", job))
        self._in_flight, self._read, self._done, self._error = True, False, None, None

    def wait_reads(self) -> None:
        while self._in_flight and not self._read and self._error is None:
            self._take(self._recv())

    def ready(self) -> bool:
        conn = self._conn
        try:
            while self._in_flight and self._done is None and self._error is None and conn is not None:
                if not conn.poll(0):
                    break
                self._take(conn.recv())
        except (EOFError, OSError):
            return True  # the process is gone: result() raises ScorerError
        return self._in_flight and (self._done is not None or self._error is not None)

    def result(self) -> ScoreResult:
        if not self._in_flight:
            raise RuntimeError("no scoring job was submitted")
        try:
            while self._done is None and self._error is None:
                self._take(self._recv())
            if self._error is not None:
                self._raise(*self._error)
            assert self._done is not None
            return self._done
        finally:
            self._in_flight, self._done, self._error = False, None, None

    def _take(self, reply: tuple) -> None:
        """Note one reply of the job in flight."""
        if reply[0] == "read":
            self._read = True
        elif reply[0] == "done":
            self._read, self._done = True, reply[1]
        elif reply[0] == "error":
            self._read, self._error = True, (reply[1], reply[2])

    def discard(self) -> None:
        if self._in_flight and self._done is None and self._error is None:
            self._stale += 1  # its last reply is still to come
        self._in_flight, self._done, self._error = False, None, None

    def close(self) -> None:
        process, self._process = self._process, None
        conn, self._conn = self._conn, None
        if process is None:
            return
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("stop",))
            conn.close()
        process.join(10)
        if process.is_alive():  # stuck in a store call: it holds nothing that needs a clean exit
            process.kill()
            process.join(5)

    # -- plumbing -------------------------------------------------------------------------------

    def _alive(self) -> bool:
        # The sentinel is ready once the child's exit has closed its files, which can come
        # before the exit is reported to waitpid (is_alive): a child killed a moment ago has
        # already closed its end of the pipe while is_alive still says True.
        process = self._process
        return process is not None and process.is_alive() and not wait([process.sentinel], 0)

    def _start_if_needed(self) -> None:
        if self._alive():
            return
        if self._process is not None:
            log.warning(
                "scoring process %s exited (code %s); starting another", self.pid, self._process.exitcode
            )
            self.close()
        # spawn, not fork: the worker's Kafka clients run threads that a fork would copy mid-step
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=serve,
            args=(child, self.build_store, self.engine, self.gc_freeze),
            name="streamrec-scorer",
            daemon=True,
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        self._in_flight, self._read, self._done, self._error, self._stale = False, False, None, None, 0
        log.info("scoring process %s started", process.pid)
        self._space_due = self._space is not None

    def _send_space_if_due(self) -> None:
        if self._space_due:
            self._send(("space", self._space))
            self._space_due = False

    def _send(self, message: tuple) -> None:
        if self._conn is None:
            raise ScorerError("the scoring process is not running")
        try:
            payload = ForkingPickler.dumps(message)
        except Exception as exc:  # noqa: BLE001 - whatever pickling raises, the message cannot go
            raise ScoringFailed(
                f"cannot send {message[0]!r} to the scoring process ({exc}); "
                "STREAMREC_WORKER_SCORER=inline scores in the worker instead"
            ) from exc
        try:
            self._conn.send_bytes(payload)
        except (OSError, ValueError) as exc:
            raise ScorerError(f"cannot reach the scoring process: {exc}") from exc

    def _recv(self) -> tuple:
        conn = self._conn
        if conn is None:
            raise ScorerError("the scoring process is not running")
        try:
            while not conn.poll(_ALIVE_CHECK_S):
                if not self._process.is_alive():
                    raise ScorerError(f"the scoring process exited (code {self._process.exitcode})")
            return conn.recv()
        except (EOFError, OSError) as exc:
            raise ScorerError(f"the scoring process exited: {exc}") from exc

    def _drain(self) -> None:
        """Read the remaining replies of discarded jobs (each ends with done or error)."""
        while self._stale:
            if self._recv()[0] in ("done", "error"):
                self._stale -= 1

    @staticmethod
    def _raise(kind: str, text: str) -> None:
        if kind == "store":
            raise StateStoreError(text)
        raise ScoringFailed(f"scoring failed in the scoring process:\n{text}")


def serve(
    conn: Connection, build_store: Callable[[], StateStore], engine: EngineSettings, gc_freeze: bool
) -> None:
    """The child's loop (see the module doc)."""
    # The worker decides when to stop (after its current poll) and tells this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    calls = StoreCallLog()  # timed here, recorded by the worker's metrics
    store: Any = TimedStore(build_store(), calls)
    recommender = Recommender(store, engine)
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamrec-scorer-read")
    unfreeze = freeze_after_full_collections() if gc_freeze else None  # the replica is long-lived
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return  # the worker is gone
            kind = message[0]
            if kind == "stop":
                return
            try:
                _handle(conn, store, recommender, calls, message, reader)
            except (BrokenPipeError, ConnectionResetError):
                return  # the worker is gone (killed): nobody is left to answer
    finally:
        reader.shutdown(wait=True)
        if unfreeze is not None:
            unfreeze()
        close = getattr(store, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()


def _handle(
    conn: Connection,
    store: Any,
    recommender: Recommender,
    calls: StoreCallLog,
    message: tuple,
    reader: ThreadPoolExecutor,
) -> None:
    """One message of the worker (see the module doc), answered on ``conn``; ``reader`` runs a
    job's store read while this thread learns the job."""
    kind = message[0]
    try:
        if kind == "replica":
            load_replica(store, recommender, message[1])
            conn.send(("ok",))
        elif kind == "space":
            recommender.space = message[1]
        elif kind == "score":
            job: ScoreJob = message[1]
            held = held_histories(recommender, job)
            reading = reader.submit(_read_and_tell, conn, store, recommender, job, held)
            try:
                learn(recommender, job)
                space = recommender.space
                if job.new_vectors and space is not None and hasattr(space, "add_items"):
                    space.add_items(job.new_vectors)
            except BaseException:
                with contextlib.suppress(Exception):
                    reading.result()  # one writer on the pipe at a time: the read's reply first
                raise
            inputs = reading.result()
            result = rank(recommender, inputs, held)
            result.store_calls = calls.take()
            conn.send(("done", result))
    except StateStoreError as exc:
        conn.send(("error", "store", str(exc)))
    except (BrokenPipeError, ConnectionResetError):
        raise  # the worker is gone: serve() ends
    except Exception:  # noqa: BLE001 - re-raised in the worker, where it belongs
        conn.send(("error", "crash", traceback.format_exc()))


def _read_and_tell(
    conn: Connection, store: Any, recommender: Recommender, job: ScoreJob, held: set[str]
) -> Any:
    """The job's inputs, read on the reader thread; ``("read",)`` goes to the worker at once."""
    inputs = read_inputs(store, recommender, job, held)
    conn.send(("read",))
    return inputs
