"""The scoring process gives exactly the inline scorer's lists, and a killed one is replaced.

Both scorers read the same Redis state after each poll's write and learn the same touches, so
their results must be equal poll by poll (same items, same order, same scores).
"""

from __future__ import annotations

import functools
import os
import signal
import time
import zlib
from collections.abc import Iterator

import numpy as np
import pytest

from consumers.scoring import InlineScorer, ProcessScorer, ScoreJob, ScoreResult
from engine.config import EngineSettings
from engine.errors import ScorerError
from engine.events import encode_event
from engine.generator import generate_events
from engine.pipeline import BatchOutcome, BatchProcessor, RawRecord
from engine.recommend import Recommender
from engine.state.redis_store import RedisSettings, RedisStore
from index.exact import ExactIndex
from index.space import IndexedSpace

pytestmark = pytest.mark.stack

PARTITIONS = 4


def _polls(n_events: int, per_poll: int) -> list[dict[int, list[RawRecord]]]:
    """Generator events split into polls, each a batch per partition (users hashed to partitions)."""
    events = generate_events(n_events, n_users=120, n_items=250, seed=11)
    offsets = [0] * PARTITIONS
    polls = []
    for start in range(0, len(events), per_poll):
        batches: dict[int, list[RawRecord]] = {}
        for event in events[start : start + per_poll]:
            partition = zlib.crc32(event.user_id.encode()) % PARTITIONS
            batches.setdefault(partition, []).append(
                RawRecord(partition, offsets[partition], encode_event(event))
            )
            offsets[partition] += 1
        polls.append(batches)
    return polls


def _job(results: list) -> ScoreJob:
    written = [o for o in results if isinstance(o, BatchOutcome)]
    return ScoreJob(
        [touch for o in written for touch in o.touches],
        {o.partition: o.touched_users for o in written if o.touched_users},
        pushed={user: items for o in written for user, items in o.history.items()},
    )


def _assert_same_lists(actual: ScoreResult, expected: ScoreResult) -> int:
    """Equal results (items in order, scores); returns how many lists are not empty."""
    assert actual.digests == expected.digests
    assert actual.lists.keys() == expected.lists.keys()
    filled = 0
    for partition, lists in expected.lists.items():
        assert actual.lists[partition].keys() == lists.keys()
        for user, ranked in lists.items():
            got = actual.lists[partition][user]
            assert [item for item, _ in got] == [item for item, _ in ranked], user
            assert [score for _, score in got] == pytest.approx([score for _, score in ranked])
            filled += bool(ranked)
    return filled


@pytest.fixture
def store_factory(redis_url: str):
    # trending read for every poll: the two scorers run at different times, and a held list
    # would be refreshed at different polls
    engine = EngineSettings(session_model="sessions", trending_refresh_s=0)
    return functools.partial(
        RedisStore, RedisSettings(url=redis_url, key_prefix="scorer"), PARTITIONS, engine
    )


@pytest.fixture
def remote(store_factory) -> Iterator[tuple[ProcessScorer, BatchProcessor]]:
    """A scoring process, and a processor writing to the same Redis state."""
    store = store_factory()
    scorer = ProcessScorer(store_factory, store.engine)
    try:
        yield scorer, BatchProcessor(store, store.engine)
    finally:
        scorer.close()
        store.close()


def _space(version: str) -> IndexedSpace:
    """Random vectors for the generator's items (the ANN part of the blend then takes part)."""
    ids = [f"i{n}" for n in range(250)]
    vectors = np.random.default_rng(3).normal(size=(len(ids), 16)).astype(np.float32)
    index = ExactIndex(16)
    index.build(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), ids)
    return IndexedSpace(version, ids, vectors, index)


@pytest.mark.parametrize("with_space", [False, True])
def test_process_scorer_gives_the_inline_lists_poll_by_poll(store_factory, with_space: bool) -> None:
    store = store_factory()
    engine = store.engine
    inline = InlineScorer(store, Recommender(store, engine))
    remote = ProcessScorer(store_factory, engine)
    processor = BatchProcessor(store, engine)
    try:
        inline.load_replica(True)
        remote.load_replica(True)
        compared = scored = 0
        for n, poll in enumerate(_polls(3000, 250)):
            if with_space and n == 3:  # a model published mid-stream: user vectors and ANN candidates
                space = _space("v1")
                processor.space = space
                inline.set_space(space)
                remote.set_space(space)
            job = _job(processor.process_many(poll))
            inline.submit(job)
            expected = inline.result()
            remote.submit(job)
            remote.wait_reads()
            compared += _assert_same_lists(remote.result(), expected)
            scored += sum(map(len, expected.lists.values()))
        assert scored > 400 and compared > 0.9 * scored  # nearly every list is non-empty
    finally:
        remote.close()
        store.close()


@pytest.mark.parametrize("capacity", [15, 100_000])
def test_held_histories_give_the_lists_of_a_scorer_that_reads_them(store_factory, capacity: int) -> None:
    """Scorers holding users' histories (the scoring process; a small cache that keeps dropping
    users) rank exactly like one that reads every history from Redis each poll."""
    store = store_factory()
    engine = store.engine.model_copy(update={"history_cache_users": capacity})
    reading = InlineScorer(store, Recommender(store, engine.model_copy(update={"history_cache_users": 0})))
    holding = InlineScorer(store, Recommender(store, engine))
    remote = ProcessScorer(store_factory, engine)
    processor = BatchProcessor(store, engine)
    try:
        for scorer in (reading, holding, remote):
            scorer.load_replica(True)
        assert reading.recommender.histories is None
        cache = holding.recommender.histories
        assert cache is not None
        users: set[str] = set()
        for poll in _polls(3000, 250):
            job = _job(processor.process_many(poll))
            users.update(user for group in job.users.values() for user in group)
            reading.submit(job)
            expected = reading.result()
            holding.submit(job)
            _assert_same_lists(holding.result(), expected)
            remote.submit(job)
            remote.wait_reads()
            _assert_same_lists(remote.result(), expected)
            assert len(cache) <= capacity
        assert len(cache) == min(capacity, len(users))
    finally:
        remote.close()
        store.close()


def test_a_killed_scoring_process_is_reported_then_replaced(remote) -> None:
    scorer, processor = remote
    scorer.load_replica(True)
    first = scorer.pid
    assert first is not None
    polls = _polls(600, 300)
    scorer.submit(_job(processor.process_many(polls[0])))
    assert scorer.result().lists
    os.kill(first, signal.SIGKILL)
    with pytest.raises(ScorerError):
        scorer.submit(_job(processor.process_many(polls[1])))
        scorer.result()
    # the worker's recovery: reload the replica (a fresh process), score the poll again
    scorer.load_replica(True)
    assert scorer.pid not in (None, first)
    users = {partition: _users(rows) for partition, rows in polls[1].items()}
    scorer.submit(ScoreJob([], users))
    result = scorer.result()
    assert {p: sorted(lists) for p, lists in result.lists.items()} == users


def test_a_discarded_job_does_not_answer_for_the_next(remote) -> None:
    scorer, processor = remote
    scorer.load_replica(False)  # no replica: the model is read from Redis per job
    scorer.submit(_job(processor.process_many(_polls(600, 300)[0])))
    scorer.discard()  # e.g. the worker rewound this poll
    scorer.submit(ScoreJob([], {0: ["nobody"]}))
    result = scorer.result()
    assert list(result.lists) == [0] and list(result.lists[0]) == ["nobody"]


def _users(records: list[RawRecord]) -> list[str]:
    from engine.events import decode_event

    return sorted({decode_event(r.value).user_id for r in records})


def test_ready_turns_true_once_the_result_is_in(remote) -> None:
    scorer, _ = remote
    scorer.load_replica(True)
    assert not scorer.ready()  # nothing in flight
    scorer.submit(ScoreJob([("s1", "i1", 1e9)], {0: ["u1"]}))
    deadline = time.monotonic() + 30
    while not scorer.ready():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert list(scorer.result().lists[0]) == ["u1"]
    assert not scorer.ready()
