"""A worker gets a scoring process only while each worker of the host can have a CPU for it."""

from __future__ import annotations

import pickle

import pytest

import deploy.runner as runner
from consumers.worker import WorkerSettings
from deploy.models import ModelSettings
from deploy.settings import Settings
from engine.config import EngineSettings
from engine.state.redis_store import RedisSettings
from index.factory import IndexSettings
from models.settings import TrainSettings
from producers.kafka import KafkaSettings


@pytest.mark.parametrize(
    ("cpus", "workers", "scorer", "expected"),
    [
        (2, 1, "auto", True),
        (2, 2, "auto", False),  # two workers on two CPUs: each scores in its own process
        (4, 2, "auto", True),
        (1, 1, "auto", False),
        (1, 1, "process", True),  # asked for explicitly
    ],
)
def test_scoring_store_only_with_a_cpu_per_worker(
    monkeypatch: pytest.MonkeyPatch, cpus: int, workers: int, scorer: str, expected: bool
) -> None:
    monkeypatch.setattr(runner, "usable_cpus", lambda: cpus)
    settings = Settings(
        KafkaSettings(),
        RedisSettings(),
        EngineSettings(),
        WorkerSettings(scorer=scorer),
        ModelSettings(),
        TrainSettings(),
        IndexSettings(),
    )
    factory = runner.scoring_store(settings, partitions=4, workers_on_host=workers)
    assert (factory is not None) is expected
    if factory is not None:  # it travels to the scoring process by pickle
        assert pickle.loads(pickle.dumps(factory)).partitions == 4
