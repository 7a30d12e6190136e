"""Shared fixtures: one embedded stack (Tansu + Redis/Valkey) for the whole test session.

Tests that use these fixtures talk to real servers over real connections; mark them with
``pytest.mark.stack``. Each test gets its own topics and consumer group, so tests never see
each other's records, and a flushed Redis database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from deploy.stack import StackInfo, start_stack, stop_stack
from producers.admin import ensure_topics
from producers.kafka import KafkaSettings

PARTITIONS = 4


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """The session's broker and Redis, stopped by their recorded PIDs at the end."""
    workdir = tmp_path_factory.mktemp("stack")
    try:
        yield start_stack(workdir, partitions=PARTITIONS)
    finally:
        # Also after a failed start: stop_stack only touches PIDs recorded in stack.json.
        stop_stack(workdir)


@pytest.fixture
def kafka_settings(stack: StackInfo) -> KafkaSettings:
    """Settings with this test's own topics (created, PARTITIONS each) and consumer group."""
    suffix = uuid.uuid4().hex[:8]
    settings = KafkaSettings(
        bootstrap_servers=stack.kafka_bootstrap,
        events_topic=f"events-{suffix}",
        dlq_topic=f"events.dlq-{suffix}",
        recs_topic=f"recs-{suffix}",
        group_id=f"streamrec-test-{suffix}",
        partitions=PARTITIONS,
        # Tansu completes a group join after about half the session timeout.
        session_timeout_ms=6000,
    )
    topics = (settings.events_topic, settings.dlq_topic, settings.recs_topic)
    ensure_topics(settings, dict.fromkeys(topics, PARTITIONS))
    return settings


@pytest.fixture
def redis_url(stack: StackInfo) -> str:
    """The stack's Redis URL, its database flushed so that every test starts empty."""
    client = redis.Redis.from_url(stack.redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return stack.redis_url
