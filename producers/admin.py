"""Topic administration: wait for the broker, create topics, read partition counts.

Every confluent-kafka failure is translated into :class:`engine.errors.BrokerError`, so
callers (the stack launcher, the CLI, tests) handle one exception type with a clear message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from engine.errors import BrokerError
from producers.kafka import KafkaSettings, client_config

log = logging.getLogger(__name__)

#: Compaction keeps only each user's latest recommendations in the `recs` topic.
COMPACT_CONFIG = {"cleanup.policy": "compact"}


def _admin(settings: KafkaSettings) -> AdminClient:
    config = client_config(settings)
    # librdkafka logs through Python logging instead of printing connection retries to stderr.
    config["logger"] = log
    try:
        return AdminClient(config)
    except (KafkaException, ValueError, TypeError) as exc:
        raise BrokerError(f"invalid Kafka client settings: {exc}") from exc


def _metadata(admin: AdminClient, settings: KafkaSettings, timeout: float) -> ClusterMetadata:
    try:
        return admin.list_topics(timeout=max(timeout, 0.1))
    except KafkaException as exc:
        raise BrokerError(f"Kafka broker at {settings.bootstrap_servers} did not answer: {exc}") from exc


def _partition_counts(metadata: ClusterMetadata) -> dict[str, int]:
    """Topic name -> partition count of the topics that are ready.

    A topic still being created shows up with an error (e.g. LEADER_NOT_AVAILABLE) and no
    partitions; counting it as 0 would look like a partition mismatch, so it is left out.
    """
    return {
        name: len(topic.partitions)
        for name, topic in metadata.topics.items()
        if topic.error is None and topic.partitions
    }


def wait_for_broker(settings: KafkaSettings, timeout: float = 30) -> None:
    """Return once the broker answers a metadata request; BrokerError after ``timeout`` seconds."""
    admin = _admin(settings)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerError(
                f"Kafka broker at {settings.bootstrap_servers} did not answer within {timeout:g} s: {last}"
            )
        try:
            admin.list_topics(timeout=min(remaining, 2.0))
            return
        except KafkaException as exc:
            last = exc
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))


def topic_partitions(settings: KafkaSettings, topic: str, timeout: float = 10) -> int:
    """Partition count of an existing topic; BrokerError when it does not exist."""
    # A full listing rather than a per-topic request: the latter may auto-create the topic.
    counts = _partition_counts(_metadata(_admin(settings), settings, timeout))
    if topic not in counts:
        raise BrokerError(f"topic {topic!r} does not exist (or is not ready) on {settings.bootstrap_servers}")
    return counts[topic]


def _check_existing(name: str, wanted: int, actual: int, settings: KafkaSettings) -> None:
    if actual != wanted:
        raise BrokerError(
            f"topic {name!r} on {settings.bootstrap_servers} has {actual} partitions, "
            f"expected {wanted}; delete it or use the existing count (STREAMREC_KAFKA_PARTITIONS={actual})"
        )


def _create(admin: AdminClient, topic: NewTopic, timeout: float) -> KafkaError | None:
    """Create one topic; return the broker's error, or None on success."""
    futures = admin.create_topics([topic], request_timeout=max(timeout, 0.1), operation_timeout=timeout)
    try:
        futures[topic.topic].result(timeout=timeout + 5)
        return None
    except KafkaException as exc:
        if exc.args and isinstance(exc.args[0], KafkaError):
            return exc.args[0]
        return KafkaError(KafkaError._FAIL, str(exc))
    except Exception as exc:  # a timed-out future raises concurrent.futures.TimeoutError
        return KafkaError(KafkaError._TIMED_OUT, f"no answer: {exc!r}")


def ensure_topics(
    settings: KafkaSettings,
    topics: dict[str, int],
    timeout: float = 30,
    *,
    compact: Collection[str] | None = None,
) -> None:
    """Create each topic (name -> partition count) unless it exists with that count.

    An existing topic with another partition count raises BrokerError: keys would map to other
    partitions than the state in Redis expects. ``compact`` names the topics created with
    ``cleanup.policy=compact`` (default: ``settings.recs_topic``); a broker that rejects the
    config gets the topic without it.
    """
    compacted = {settings.recs_topic} if compact is None else set(compact)
    for name, count in topics.items():
        if count < 1:
            raise BrokerError(f"topic {name!r}: partition count must be at least 1, got {count}")
    admin = _admin(settings)
    deadline = time.monotonic() + timeout
    existing = _partition_counts(_metadata(admin, settings, timeout))
    for name, count in topics.items():
        if name in existing:
            _check_existing(name, count, existing[name], settings)
            continue
        config = COMPACT_CONFIG if name in compacted else {}
        new = NewTopic(name, count, settings.replication_factor, config=dict(config))
        error = _create(admin, new, max(deadline - time.monotonic(), 1.0))
        if error is not None and error.code() != KafkaError.TOPIC_ALREADY_EXISTS and config:
            log.warning(
                "broker rejected config %s for topic %r (%s); creating it without", config, name, error
            )
            new = NewTopic(name, count, settings.replication_factor)
            error = _create(admin, new, max(deadline - time.monotonic(), 1.0))
        if error is not None and error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise BrokerError(
                f"could not create topic {name!r} on {settings.bootstrap_servers}: {error.str()}"
            )
    # Creation is acknowledged by the controller before every broker's metadata shows it;
    # wait so that producers and consumers started right after see all partitions.
    while True:
        counts = _partition_counts(_metadata(admin, settings, max(deadline - time.monotonic(), 1.0)))
        missing = [name for name in topics if name not in counts]
        for name, count in topics.items():
            if name in counts:  # a concurrent creator may have used another count
                _check_existing(name, count, counts[name], settings)
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"topics {missing} not visible on {settings.bootstrap_servers} after {timeout:g} s"
            )
        time.sleep(0.1)
