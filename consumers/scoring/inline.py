"""Scoring in the worker's own process: a job is done the moment it is submitted."""

from __future__ import annotations

import logging
import time

from consumers.scoring.base import ScoreJob, ScoreResult
from engine import session_kernels
from engine.embeddings import EmbeddingSpace
from engine.recommend import Recommender
from engine.state.base import RecsInputs, StateStore

log = logging.getLogger("streamrec.scoring")


def load_replica(store: StateStore, recommender: Recommender, whole: bool) -> None:
    """Give ``recommender`` the whole session model from ``store`` when ``whole``, else none (it
    then reads the model's rows back per batch)."""
    recommender.replica = None
    compiling = session_kernels.warm_up()  # before the first poll, which would wait for it
    if compiling > 0.5:
        log.info("scoring loops compiled in %.1f s (numba caches them for the next start)", compiling)
    if not whole:
        return
    started = time.monotonic()
    replica = store.whole_session_model()
    recommender.replica = replica
    log.info(
        "session-model replica loaded in %.1f s: %d sessions, %d items",
        time.monotonic() - started,
        len(replica.sessions) if replica is not None else 0,
        len(replica.item_sessions) if replica is not None else 0,
    )


def learn(recommender: Recommender, job: ScoreJob) -> None:
    """Feed the poll's writes to the replica, so that it stays equal to the store's model."""
    replica = recommender.replica
    if replica is not None:
        for sid, item, ts in job.touches:
            replica.touch(sid, item, ts)


def read_inputs(store: StateStore, recommender: Recommender, job: ScoreJob) -> RecsInputs | None:
    return recommender.read_inputs(job.users) if job.users else None


def rank(recommender: Recommender, inputs: RecsInputs | None) -> ScoreResult:
    if inputs is None:
        return ScoreResult({}, {})
    return ScoreResult(recommender.rank(inputs), inputs.digests)


class InlineScorer:
    """Scores each poll at once, in this process; the replica lives on ``recommender``."""

    overlaps = False

    def __init__(self, store: StateStore, recommender: Recommender) -> None:
        self.store = store
        self.recommender = recommender
        self._result: ScoreResult | None = None

    def load_replica(self, whole: bool) -> None:
        load_replica(self.store, self.recommender, whole)

    def set_space(self, space: EmbeddingSpace | None) -> None:
        self.recommender.space = space  # the worker's own space object: extended in place

    def submit(self, job: ScoreJob) -> None:
        self._result = None
        learn(self.recommender, job)
        self._result = rank(self.recommender, read_inputs(self.store, self.recommender, job))

    def wait_reads(self) -> None:
        return None

    def ready(self) -> bool:
        return self._result is not None

    def result(self) -> ScoreResult:
        result, self._result = self._result, None
        if result is None:
            raise RuntimeError("no scoring job was submitted")
        return result

    def discard(self) -> None:
        self._result = None

    def close(self) -> None:
        return None
