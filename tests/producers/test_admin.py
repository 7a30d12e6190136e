"""Topic administration against the session's embedded broker."""

from __future__ import annotations

import socket
import uuid

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, ConfigResource

from engine.errors import BrokerError
from producers import admin as admin_mod
from producers.admin import ensure_topics, topic_partitions, wait_for_broker
from producers.kafka import KafkaSettings, client_config


@pytest.mark.stack
def test_fixture_topics_exist(kafka_settings: KafkaSettings) -> None:
    for topic in (kafka_settings.events_topic, kafka_settings.dlq_topic, kafka_settings.recs_topic):
        assert topic_partitions(kafka_settings, topic) == 4


@pytest.mark.stack
def test_ensure_topics_is_idempotent(kafka_settings: KafkaSettings) -> None:
    topics = {kafka_settings.events_topic: 4, kafka_settings.recs_topic: 4}
    ensure_topics(kafka_settings, topics)
    ensure_topics(kafka_settings, topics)
    assert topic_partitions(kafka_settings, kafka_settings.events_topic) == 4


@pytest.mark.stack
def test_ensure_topics_creates_with_the_requested_count(kafka_settings: KafkaSettings) -> None:
    name = f"admin-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_settings, {name: 7})
    assert topic_partitions(kafka_settings, name) == 7


@pytest.mark.stack
def test_partition_mismatch_is_rejected(kafka_settings: KafkaSettings) -> None:
    with pytest.raises(BrokerError, match=r"has 4 partitions, expected 2"):
        ensure_topics(kafka_settings, {kafka_settings.events_topic: 2})


@pytest.mark.stack
def test_zero_partitions_is_rejected(kafka_settings: KafkaSettings) -> None:
    with pytest.raises(BrokerError, match="at least 1"):
        ensure_topics(kafka_settings, {"never-created": 0})


@pytest.mark.stack
def test_recs_topic_is_compacted(kafka_settings: KafkaSettings) -> None:
    admin = AdminClient(client_config(kafka_settings))
    resource = ConfigResource("topic", kafka_settings.recs_topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"


@pytest.mark.stack
def test_rejected_config_falls_back_to_a_plain_topic(
    kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tansu accepts any topic config; this stands in for a broker that refuses compaction.
    real_create = admin_mod._create
    attempts: list[dict[str, str]] = []

    def refuse_configs(admin, topic, timeout):
        attempts.append(dict(topic.config or {}))
        if topic.config:
            return KafkaError(KafkaError.INVALID_CONFIG, "configs not supported")
        return real_create(admin, topic, timeout)

    monkeypatch.setattr(admin_mod, "_create", refuse_configs)
    name = f"recs-plain-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_settings, {name: 2}, compact=[name])
    assert attempts == [{"cleanup.policy": "compact"}, {}]
    assert topic_partitions(kafka_settings, name) == 2


@pytest.mark.stack
def test_missing_topic_is_an_error(kafka_settings: KafkaSettings) -> None:
    with pytest.raises(BrokerError, match="does not exist"):
        topic_partitions(kafka_settings, f"missing-{uuid.uuid4().hex[:8]}")


@pytest.mark.stack
def test_wait_for_broker_answers(kafka_settings: KafkaSettings) -> None:
    wait_for_broker(kafka_settings, timeout=5)


def test_wait_for_unreachable_broker_times_out() -> None:
    with socket.socket() as sock:  # a port nothing listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{sock.getsockname()[1]}")
        with pytest.raises(BrokerError, match="did not answer within 1 s"):
            wait_for_broker(settings, timeout=1)
