"""Model refresh on the real stack: publish, hot swap under load, recs carry the new version."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest

from consumers.offsets import group_lag
from consumers.reader import read_topic
from consumers.worker import Worker, WorkerSettings
from deploy.models import ModelSettings, ModelWatcher, Refresher, current, load_space, publish, train
from deploy.settings import Settings
from engine.config import EngineSettings
from engine.embeddings import StaticSpace, normalise, vector_from_history
from engine.generator import generate_events
from engine.recommend import Recommender
from engine.state.redis_store import RedisSettings, RedisStore, connect
from engine.verify import verify_store
from index.factory import IndexSettings
from models.settings import TrainSettings
from producers.kafka import KafkaSettings
from producers.replay import replay_events

pytestmark = pytest.mark.stack
TRAIN = TrainSettings(epochs=2, dim=16, patience=0, seed=7)


def _wait(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_refresh_swaps_without_failing_requests(
    kafka_settings: KafkaSettings, redis_url: str, tmp_path: Path
) -> None:
    engine = EngineSettings()
    store = RedisStore(RedisSettings(url=redis_url), kafka_settings.partitions, engine)
    model = ModelSettings(dir=tmp_path / "models", check_interval_s=0.2)
    index = IndexSettings(kind="hnsw")
    events = generate_events(6000, n_users=150, n_items=400, seed=11)
    first, second = events[:3000], events[3000:]

    v1 = publish(train(first, TRAIN), model, index, store.client, "sr")
    watcher = ModelWatcher(store.client, "sr", model.check_interval_s)
    worker = Worker(kafka_settings, store, engine, WorkerSettings(batch_size=300), space_source=watcher.poll)
    runner = threading.Thread(target=worker.run, kwargs={"max_seconds": 180})
    replay_events(first, kafka_settings)
    runner.start()
    _wait(lambda: not any(group_lag(kafka_settings).values()))
    assert worker.stats.model_swaps == 1 and worker.processor.space.version == v1.version

    # Requests keep being answered, from one version or the other, while the new one is swapped in.
    errors: list[BaseException] = []
    answered: set[str] = set()
    reader_watcher = ModelWatcher(store.client, "sr", 0.05)
    recommender = Recommender(store, engine, reader_watcher.poll(force=True))
    stop = threading.Event()

    def query() -> None:
        users = sorted({e.user_id for e in first})[:20]
        while not stop.is_set():
            try:
                space = reader_watcher.poll()
                if space is not None:
                    recommender.space = space
                answered.add(recommender.space.version)
                lists = recommender.for_users(store.locate_user(users[0]) or 0, users, 10)
                assert all(len(v) == 10 for v in lists.values() if v)
            except BaseException as exc:  # noqa: BLE001 - any failure of a request counts
                errors.append(exc)

    querier = threading.Thread(target=query)
    querier.start()
    replay_events(second, kafka_settings)
    v2 = publish(train(events, TRAIN), model, index, store.client, "sr")
    assert v2.version != v1.version and v2.aligned_on > 0
    _wait(lambda: worker.stats.model_swaps == 2 and not any(group_lag(kafka_settings).values()))
    # Events after the swap are scored in the new space (the worker may well have scored all of
    # `second` before the training ended).
    late = [replace(e, event_id=f"{e.event_id}-late", ts=e.ts + 3600) for e in second[-100:]]
    replay_events(late, kafka_settings)
    _wait(lambda: not any(group_lag(kafka_settings).values()))
    _wait(lambda: v2.version in answered, timeout=10)
    stop.set()
    querier.join()
    worker.stop()
    runner.join()

    assert errors == []
    assert current(store.client, "sr")["version"] == v2.version
    recs = [
        orjson.loads(r.value)
        for rows in read_topic(kafka_settings, kafka_settings.recs_topic).values()
        for r in rows
    ]
    assert {r["index_version"] for r in recs} <= {v1.version, v2.version}
    assert any(r["index_version"] == v2.version for r in recs)
    # Alignment: a user's vector built in the old space still points where the new space puts them.
    old_space, new_space = load_space(v1.path), load_space(v2.path)
    unaligned = train(events, TRAIN)  # same seed: the vectors v2 had before the rotation
    raw_space = StaticSpace("raw", dict(zip(unaligned.item_ids, unaligned.vectors, strict=True)))
    histories = [
        p.history for p in store.profiles(0, sorted({e.user_id for e in first})).values() if p.history
    ]

    def agreement(space) -> float:
        pairs = [
            (vector_from_history(h, old_space, 0.9), vector_from_history(h, space, 0.9)) for h in histories
        ]
        return float(
            np.mean([float(normalise(a) @ normalise(b)) for a, b in pairs if a is not None and b is not None])
        )

    # Retraining on twice the data moves items, so agreement is partial (about 0.3 here); without
    # the rotation the old vectors point nowhere in particular (about 0).
    aligned, unaligned_agreement = agreement(new_space), agreement(raw_space)
    assert aligned > 0.15
    assert aligned > unaligned_agreement + 0.15

    # User vectors aside (derived from whichever model was live), the state is exactly the log's.
    records = read_topic(kafka_settings, kafka_settings.events_topic, store.watermarks())
    _, mismatches = verify_store(records, store, engine)
    assert mismatches == []


def test_periodic_refresh_trains_on_the_topic_and_publishes(
    kafka_settings: KafkaSettings, redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        kafka=kafka_settings,
        redis=RedisSettings(url=redis_url),
        engine=EngineSettings(),
        worker=WorkerSettings(),
        model=ModelSettings(dir=tmp_path / "models", refresh_interval_s=0.5),
        train=TRAIN,
        index=IndexSettings(kind="exact"),
    )
    events = generate_events(3000, n_users=100, n_items=200, seed=12)
    replay_events(events, kafka_settings)
    client = connect(settings.redis)
    refresher = Refresher(settings, client)
    refresher.start()
    try:
        _wait(lambda: len(refresher.published) >= 1, timeout=120)
    finally:
        refresher.stop()
        refresher.join(timeout=120)
    first = refresher.published[0]
    assert current(client, "sr")["version"] in {p.version for p in refresher.published}
    assert first.items == len({e.item_id for e in events})
    assert load_space(first.path).version == first.version
