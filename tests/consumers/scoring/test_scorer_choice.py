"""Which scorer a worker gets: the caller's store factory and the setting decide (nothing starts)."""

from __future__ import annotations

import pytest

from consumers.scoring import InlineScorer, ProcessScorer
from consumers.worker import Worker, WorkerSettings
from engine.config import EngineSettings
from engine.errors import ConfigurationError
from engine.state.memory import MemoryStore
from producers.kafka import KafkaSettings


def _worker(scorer: str, with_factory: bool) -> Worker:
    engine = EngineSettings()
    store = MemoryStore(1, engine)
    factory = (lambda: store) if with_factory else None
    return Worker(KafkaSettings(), store, engine, WorkerSettings(scorer=scorer), scorer_store=factory)


@pytest.mark.parametrize(
    ("scorer", "with_factory", "expected"),
    [
        ("auto", True, ProcessScorer),
        ("auto", False, InlineScorer),  # e.g. a test or eval worker, or the runner found no spare CPU
        ("process", True, ProcessScorer),
        ("inline", True, InlineScorer),
    ],
)
def test_the_scorer_follows_the_setting_and_the_factory(
    scorer: str, with_factory: bool, expected: type
) -> None:
    worker = _worker(scorer, with_factory)
    assert isinstance(worker.scorer, expected)
    if isinstance(worker.scorer, ProcessScorer):
        assert worker.scorer.pid is None  # started on the first replica load, not here


def test_a_scoring_process_without_a_store_factory_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="scorer=process"):
        _worker("process", False)
