"""The project's producer: idempotent, and it batches as configured."""

from __future__ import annotations

from typing import Any

import pytest

import producers.recs as recs_module
from producers.kafka import KafkaSettings
from producers.recs import make_producer


@pytest.fixture
def configs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    made: list[dict[str, Any]] = []
    monkeypatch.setattr(recs_module, "Producer", lambda config: made.append(config) or object())
    return made


def test_linger_follows_the_setting_and_the_environment(
    configs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMREC_KAFKA_LINGER_MS", raising=False)
    make_producer(KafkaSettings())
    monkeypatch.setenv("STREAMREC_KAFKA_LINGER_MS", "25")
    make_producer(KafkaSettings())
    assert [c["linger.ms"] for c in configs] == [10, 25]
    assert all(c["enable.idempotence"] is True and c["acks"] == "all" for c in configs)


def test_a_caller_override_wins(configs: list[dict[str, Any]]) -> None:
    make_producer(KafkaSettings(linger_ms=10), **{"linger.ms": 20})
    assert configs[0]["linger.ms"] == 20


def test_librdkafka_accepts_the_linger() -> None:
    make_producer(KafkaSettings(bootstrap_servers="127.0.0.1:1", linger_ms=0)).flush(0)


@pytest.mark.parametrize("value", [-1, 1001])
def test_a_linger_out_of_range_is_rejected(value: int) -> None:
    with pytest.raises(ValueError, match="linger_ms"):
        KafkaSettings(linger_ms=value)
