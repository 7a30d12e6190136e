"""The worker's in-memory session-model replica ranks exactly like reading the model from Redis
(and the users' histories its scoring holds are the ones in Redis).

A worker that owns every partition scores from its replica (loaded from Redis on assignment, fed
by its own writes) instead of reading the model back per batch. On data where the model's caps do
not bind, both must give the same lists for every user, also after a restart mid-stream (the
second worker loads what the first one wrote).
"""

from __future__ import annotations

import logging

import pytest

from consumers.worker import Worker, WorkerSettings
from engine.config import EngineSettings
from engine.evaluation.base import Context
from engine.generator import generate_events
from engine.recommend import Recommender
from engine.state.redis_store import RedisSettings, RedisStore
from producers.kafka import KafkaSettings
from producers.replay import replay_events

pytestmark = pytest.mark.stack


def _worker(settings: KafkaSettings, store: RedisStore, engine: EngineSettings) -> Worker:
    return Worker(settings, store, engine, WorkerSettings(batch_size=300, poll_timeout_s=0.05))


def _assert_same_lists(worker: Worker, store: RedisStore, engine: EngineSettings, users: list[str]) -> None:
    assert worker.recommender.replica is not None
    from_redis = Recommender(store, engine)  # no replica: reads the model back from Redis
    by_partition: dict[int, list[str]] = {}
    for user in users:
        partition = store.locate_user(user)
        assert partition is not None
        by_partition.setdefault(partition, []).append(user)
    expected = from_redis.for_partitions(by_partition)
    actual = worker.recommender.for_partitions(by_partition)
    # the histories its scoring holds are the ones in Redis (every poll's pushes applied)
    cache = worker.recommender.histories
    assert cache is not None and len(cache) > len(users) // 2
    for partition, group in by_partition.items():
        for user, profile in store.profiles(partition, group).items():
            held = cache.get(user)
            assert held is None or held == profile.history, user
    lists = 0
    for partition, rows in expected.items():
        for user, ranked in rows.items():
            assert [i for i, _ in actual[partition][user]] == [i for i, _ in ranked], user
            lists += bool(ranked)
    assert lists > len(users) // 2


def test_replica_ranks_like_redis_reads_across_a_restart(
    kafka_settings: KafkaSettings, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = EngineSettings(session_model="sessions")
    store = RedisStore(RedisSettings(url=redis_url, key_prefix="rep"), kafka_settings.partitions, engine)
    events = generate_events(4000, n_users=150, n_items=300, seed=3)
    try:
        replay_events(events[:2500], kafka_settings)
        first = _worker(kafka_settings, store, engine)
        with caplog.at_level(logging.INFO, logger="streamrec.scoring"):
            first.run(until_idle=True, max_seconds=120)
        assert first.stats.applied == 2500
        assert "session-model replica loaded" in caplog.text
        _assert_same_lists(first, store, engine, sorted({e.user_id for e in events[:2500]}))

        replay_events(events[2500:], kafka_settings)
        second = _worker(kafka_settings, store, engine)  # loads the first worker's state
        second.run(until_idle=True, max_seconds=120)
        assert second.stats.applied == len(events) - 2500
        _assert_same_lists(second, store, engine, sorted({e.user_id for e in events}))
        # and the model itself: the replica equals a fresh whole read, context by context
        fresh = store.whole_session_model()
        replica = second.recommender.replica
        assert fresh is not None and replica is not None
        assert replica.n_sessions == fresh.n_sessions
        for sid in list(fresh.sessions)[-50:]:
            context = Context("probe", tuple(fresh.sessions[sid]), events[-1].ts + 1, "probe")
            assert replica.scores(context) == pytest.approx(fresh.scores(context), rel=1e-9)
    finally:
        store.close()


class _Assigned:
    def __init__(self, partitions: list[int]) -> None:
        self.partitions = partitions

    def assignment(self) -> list:
        from confluent_kafka import TopicPartition

        return [TopicPartition("events", p) for p in self.partitions]


@pytest.mark.parametrize(
    ("owned", "mode", "enabled", "expected"),
    [
        ([0, 1, 2, 3], "sessions", True, True),
        ([0, 2], "sessions", True, False),  # neighbours live in partitions it does not own
        ([0, 1, 2, 3], "sessions", False, False),
        ([0, 1, 2, 3], "off", True, False),
    ],
)
def test_replica_only_when_the_worker_owns_every_partition(
    kafka_settings: KafkaSettings, redis_url: str, owned: list[int], mode: str, enabled: bool, expected: bool
) -> None:
    engine = EngineSettings(session_model=mode)  # type: ignore[arg-type]
    store = RedisStore(RedisSettings(url=redis_url, key_prefix="rep"), 4, engine)
    try:
        worker = Worker(kafka_settings, store, engine, WorkerSettings(session_replica=enabled))
        worker._sync_replica(_Assigned(owned))  # type: ignore[arg-type]
        assert (worker.recommender.replica is not None) is expected
        assert not worker._replica_due
    finally:
        store.close()
