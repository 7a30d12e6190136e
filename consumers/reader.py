"""Read whole partitions of a topic without a consumer group (for verify and tests)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumers.offsets import end_offsets
from engine.errors import BrokerError
from engine.pipeline import RawRecord
from producers.kafka import KafkaSettings, client_config


def read_topic(
    settings: KafkaSettings, topic: str, upto: Mapping[int, int] | None = None, timeout_s: float = 60.0
) -> dict[int, list[RawRecord]]:
    """Every record of ``topic`` per partition, up to ``upto[p]`` inclusive (default: the end now).

    Partitions missing from ``upto`` (or with -1) yield nothing.
    """
    consumer = Consumer(
        client_config(settings)
        | {"group.id": f"streamrec-reader-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            raise BrokerError(f"topic {topic!r} not found: {info.error if info else 'no metadata'}")
        if upto is None:
            upto = {p: end - 1 for p, end in end_offsets(settings, topic).items()}
        last = {p: upto[p] for p in info.partitions if upto.get(p, -1) >= 0}
        out: dict[int, list[RawRecord]] = {p: [] for p in info.partitions}
        if not last:
            return out
        consumer.assign([TopicPartition(topic, p, 0) for p in last])
        deadline = time.monotonic() + timeout_s
        pending = dict(last)
        while pending:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"timed out reading {topic!r}; still waiting for partitions {sorted(pending)}"
                )
            for msg in consumer.consume(10_000, 1.0):
                if msg.error() is not None:
                    continue
                p, offset = msg.partition(), msg.offset()
                if p in pending and offset <= pending[p]:
                    out[p].append(RawRecord(p, offset, msg.value(), msg.key()))
            # Positions, not the last offset seen: control records and gaps are never delivered.
            for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
                if tp.offset > pending[tp.partition]:
                    del pending[tp.partition]
        return out
    except KafkaException as exc:
        raise BrokerError(f"cannot read {topic!r}: {exc}") from exc
    finally:
        consumer.close()
