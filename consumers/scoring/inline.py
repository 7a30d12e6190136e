"""Scoring in the worker's own process: a job is done the moment it is submitted."""

from __future__ import annotations

import logging
import time

from consumers.scoring.base import ScoreJob, ScoreResult
from engine import session_kernels
from engine.embeddings import EmbeddingSpace
from engine.history_cache import HistoryCache
from engine.recommend import Recommender
from engine.state.base import RecsInputs, StateStore

log = logging.getLogger("streamrec.scoring")


def load_replica(store: StateStore, recommender: Recommender, whole: bool) -> None:
    """Give ``recommender`` the whole session model from ``store`` when ``whole``, else none (it
    then reads the model's rows back per batch), and an empty history cache when ``whole``."""
    recommender.replica = None
    settings = recommender.settings
    recommender.histories = (
        HistoryCache(settings.history_length, settings.history_cache_users)
        if whole and settings.history_cache_users > 0
        else None
    )
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


def held_histories(recommender: Recommender, job: ScoreJob) -> set[str]:
    """The job's users whose histories the cache holds: its read leaves them out. Taken before
    the job's read and :func:`learn` (which may run at the same time)."""
    histories = recommender.histories
    if histories is None:
        return set()
    return histories.held(user for group in job.users.values() for user in group)


def learn(recommender: Recommender, job: ScoreJob) -> None:
    """Feed the poll's writes to the replica and the history cache, so that they stay equal to
    the store's state."""
    replica = recommender.replica
    if replica is not None:
        for sid, item, ts in job.touches:
            replica.touch(sid, item, ts)
    if recommender.histories is not None:
        recommender.histories.pushed(job.pushed)


def read_inputs(
    store: StateStore, recommender: Recommender, job: ScoreJob, held: set[str]
) -> RecsInputs | None:
    return recommender.read_inputs(job.users, held) if job.users else None


def rank(recommender: Recommender, inputs: RecsInputs | None, held: set[str]) -> ScoreResult:
    """The job's lists, once its read and :func:`learn` are both done."""
    if inputs is None:
        return ScoreResult({}, {})
    if recommender.histories is not None:  # users are in one partition each
        recommender.histories.fill(
            {u: p for group in inputs.profiles.values() for u, p in group.items()}, held
        )
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
        held = held_histories(self.recommender, job)
        learn(self.recommender, job)
        self._result = rank(self.recommender, read_inputs(self.store, self.recommender, job, held), held)

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
