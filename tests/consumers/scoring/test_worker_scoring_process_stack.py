"""A worker whose recommendations are scored in a second process, end to end on the stack.

The scoring process is killed by PID in the middle of the stream (from the worker's own fault
hook, so that the moment is fixed): the worker must start another, read its unfinished polls again
and still apply every event exactly once, commit everything, and publish recs for every user.
"""

from __future__ import annotations

import functools
import os
import signal

import orjson
import pytest

from consumers.offsets import group_lag
from consumers.reader import read_topic
from consumers.scoring import ProcessScorer
from consumers.worker import Worker, WorkerSettings
from engine.config import EngineSettings
from engine.generator import generate_events
from engine.state.redis_store import RedisSettings, RedisStore
from producers.kafka import KafkaSettings
from producers.replay import replay_events

pytestmark = pytest.mark.stack


def test_worker_survives_its_scoring_process_being_killed(
    kafka_settings: KafkaSettings, redis_url: str
) -> None:
    engine = EngineSettings(session_model="sessions")
    factory = functools.partial(
        RedisStore, RedisSettings(url=redis_url, key_prefix="wsp"), kafka_settings.partitions, engine
    )
    store = factory()
    events = generate_events(4000, n_users=200, n_items=300, seed=5)
    replay_events(events, kafka_settings)
    killed: list[int] = []

    def kill_scorer_once(step: str) -> None:
        if step == "state_written" and worker.stats.batches == 3 and not killed:
            pid = worker.scorer.pid  # type: ignore[attr-defined]
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    worker = Worker(
        kafka_settings,
        store,
        engine,
        WorkerSettings(batch_size=200, scorer="process"),
        fault=kill_scorer_once,
        scorer_store=factory,
    )
    try:
        assert isinstance(worker.scorer, ProcessScorer)
        stats = worker.run(until_idle=True, max_seconds=180)
        assert killed, "the fault hook never ran"
        assert stats.scorer_failures >= 1
        assert stats.applied == len(events)  # each event once, also the ones read again
        assert stats.already_applied > 0  # the rewound polls were skipped by the watermark
        assert not any(group_lag(kafka_settings).values())
        recs = [
            orjson.loads(r.value)
            for rows in read_topic(kafka_settings, kafka_settings.recs_topic).values()
            for r in rows
        ]
        assert {e.user_id for e in events} <= {r["user_id"] for r in recs}
        assert worker.scorer.pid is None  # closed when the worker stopped  # type: ignore[attr-defined]
    finally:
        store.close()


def test_behind_a_backlog_a_list_is_produced_only_when_it_changed(
    kafka_settings: KafkaSettings, redis_url: str
) -> None:
    """Full polls: each is handed to the scoring process before the one before is published, so
    its job reads the stored digests too early; the worker must still compare with the lists it
    published last, or an unchanged list goes out twice in a row."""
    engine = EngineSettings(session_model="sessions")
    factory = functools.partial(
        RedisStore, RedisSettings(url=redis_url, key_prefix="wsq"), kafka_settings.partitions, engine
    )
    store = factory()
    # Each chunk of a poll's size is followed by its own events again: the copies change no state,
    # so the next poll's lists are those the chunk's poll has just published.
    events = generate_events(3000, n_users=300, n_items=500, seed=9)
    stream = [e for start in range(0, len(events), 100) for e in events[start : start + 100] * 2]
    replay_events(stream, kafka_settings)
    worker = Worker(
        kafka_settings, store, engine, WorkerSettings(batch_size=100, scorer="process"), scorer_store=factory
    )
    try:
        stats = worker.run(until_idle=True, max_seconds=180)
        assert (stats.applied, stats.duplicates) == (len(events), len(events))
        last: dict[str, list[str]] = {}
        repeats = produced = 0
        for rows in read_topic(kafka_settings, kafka_settings.recs_topic).values():
            for row in rows:  # one user's records are in one partition, in publish order
                record = orjson.loads(row.value)
                repeats += last.get(record["user_id"]) == record["items"]
                last[record["user_id"]] = record["items"]
                produced += 1
        assert produced == stats.recs_published
        assert repeats == 0
    finally:
        store.close()
