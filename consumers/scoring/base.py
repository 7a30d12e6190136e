"""The scoring step of a worker poll, behind one small interface.

A poll's state is written first; then its touched users are scored. :class:`InlineScorer` does
that in the worker's own process, at once. :class:`ProcessScorer` hands it to a second process so
that the worker can decode and write the next poll meanwhile (two cores instead of one); the
worker publishes a poll's recs and commits its offsets only when its result is back, so the commit
order of every poll is unchanged.

One rule keeps the overlap exact: a job reads its inputs (profiles, digests, and the trending
items when the held ones are due, see :meth:`~engine.recommend.Recommender.read_inputs`) from the
store before the next poll's writes begin (:meth:`Scorer.wait_reads`), so its recommendations are
the ones the worker would have computed itself, neither older nor newer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from engine.embeddings import EmbeddingSpace

Ranked = list[tuple[str, float]]


@dataclass(slots=True)
class ScoreJob:
    """One poll's scoring: what it taught the session model, and whom to score."""

    touches: list[tuple[str, str, float]]  # (session, item, ts) in write order, for the replica
    users: dict[int, list[str]]  # touched users by partition
    new_vectors: dict[str, np.ndarray] = field(default_factory=dict)  # cold items given vectors
    # user -> items the poll's writes pushed onto their history, oldest first (engine.history_cache)
    pushed: dict[str, list[str]] = field(default_factory=dict)


@dataclass(slots=True)
class ScoreResult:
    lists: dict[int, dict[str, Ranked]]  # partition -> user -> top-k
    digests: dict[int, dict[str, str]]  # partition -> user -> digest of the last published list
    # (op, seconds, failed) of the store calls a scoring process made, for the worker's metrics
    store_calls: list[tuple[str, float, bool]] = field(default_factory=list)


class Scorer(Protocol):
    #: True when a job runs beside the worker (the worker may write the next poll meanwhile).
    overlaps: bool

    def load_replica(self, whole: bool) -> None:
        """(Re)load the session-model replica from the store when this worker owns every
        partition (``whole``), else drop it. Raises StateStoreError."""

    def set_space(self, space: EmbeddingSpace | None) -> None:
        """The embedding space changed (a model refresh)."""

    def submit(self, job: ScoreJob) -> None:
        """Start scoring a poll whose state is written (one job at a time)."""

    def wait_reads(self) -> None:
        """Return once the job in flight, if any, has read its inputs from the store."""

    def ready(self) -> bool:
        """True when the job in flight has finished (:meth:`result` will not wait)."""

    def result(self) -> ScoreResult:
        """The submitted job's recommendations. Raises StateStoreError or ScorerError."""

    def discard(self) -> None:
        """Forget the job in flight (its poll is rewound and will be scored again)."""

    def close(self) -> None: ...
