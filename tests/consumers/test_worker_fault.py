"""The fault-injection seam: spec parsing, and a kill on exactly the nth time a step is reached."""

from __future__ import annotations

import signal

import pytest

import consumers.settings as settings_module
from consumers.settings import FAULT_STEPS, fault_from_spec
from consumers.worker import Worker, WorkerSettings
from engine.config import EngineSettings
from engine.errors import ConfigurationError
from engine.state.memory import MemoryStore
from producers.kafka import KafkaSettings


@pytest.mark.parametrize("spec", ["", "nowhere:1", "state_written", "state_written:0", "state_written:x"])
def test_bad_specs_are_configuration_errors(spec: str) -> None:
    with pytest.raises(ConfigurationError, match="STREAMREC_WORKER_FAULT_AT"):
        fault_from_spec(spec)


def test_kills_on_the_nth_time_only(monkeypatch: pytest.MonkeyPatch) -> None:
    kills: list[int] = []
    monkeypatch.setattr(settings_module.os, "kill", lambda pid, sig: kills.append(sig))
    fault = fault_from_spec("recs_flushed:3")
    for step in FAULT_STEPS:
        fault(step)
    fault("recs_flushed")
    assert kills == []
    fault("recs_flushed")
    assert kills == [signal.SIGKILL]
    fault("recs_flushed")
    assert kills == [signal.SIGKILL]


def test_unset_means_no_fault_and_env_sets_one(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = Worker(KafkaSettings(), MemoryStore(1), EngineSettings(), WorkerSettings())
    assert plain.fault is None
    monkeypatch.setenv("STREAMREC_WORKER_FAULT_AT", "committed:2")
    armed = Worker(KafkaSettings(), MemoryStore(1), EngineSettings(), WorkerSettings())
    assert callable(armed.fault)
