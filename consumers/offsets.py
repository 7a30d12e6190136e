"""End offsets and consumer lag, measured in a way that also holds on Tansu.

Tansu's ListOffsets(latest) answers the base offset of the last record batch plus one, not the
offset after the last record, so ``get_watermark_offsets(cached=False)`` undercounts. The high
watermark carried by a fetch response is right on every broker: we fetch the last batch once
and read the watermark it carried.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition

from engine.errors import BrokerError
from producers.kafka import KafkaSettings, client_config


def _partitions(consumer: Consumer, topic: str, timeout_s: float) -> list[int]:
    metadata = consumer.list_topics(topic, timeout=timeout_s)
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        raise BrokerError(f"topic {topic!r} not available: {info.error if info else 'no metadata'}")
    return sorted(info.partitions)


def end_offsets(settings: KafkaSettings, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """The offset after the last record of each partition (what a fully caught-up consumer commits)."""
    probe = Consumer(
        client_config(settings)
        | {"group.id": f"streamrec-probe-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
    )
    try:
        partitions = _partitions(probe, topic, timeout_s)
        reported: dict[int, tuple[int, int]] = {}
        for p in partitions:
            reported[p] = probe.get_watermark_offsets(
                TopicPartition(topic, p), timeout=timeout_s, cached=False
            )
        nonempty = [p for p, (low, high) in reported.items() if high > low]
        ends = {p: reported[p][1] for p in partitions}
        if not nonempty:
            return ends
        probe.assign([TopicPartition(topic, p, reported[p][1] - 1) for p in nonempty])
        waiting = set(nonempty)
        deadline = time.monotonic() + timeout_s
        while waiting and time.monotonic() < deadline:
            for msg in probe.consume(1000, 0.5):
                if msg.error() is None:
                    waiting.discard(msg.partition())
        for p in nonempty:
            _, high = probe.get_watermark_offsets(TopicPartition(topic, p), cached=True)
            if high != OFFSET_INVALID and high >= 0:
                ends[p] = max(ends[p], high)
        return ends
    except KafkaException as exc:
        raise BrokerError(f"cannot read end offsets of {topic!r}: {exc}") from exc
    finally:
        probe.close()


def group_lag(settings: KafkaSettings, topic: str | None = None, timeout_s: float = 10.0) -> dict[int, int]:
    """Records of the topic not yet committed by the settings' consumer group, per partition."""
    topic = topic or settings.events_topic
    ends = end_offsets(settings, topic, timeout_s)
    consumer = Consumer(
        client_config(settings) | {"group.id": settings.group_id, "enable.auto.commit": False}
    )
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in ends], timeout=timeout_s)
        lag: dict[int, int] = {}
        for tp in committed:
            position = tp.offset if tp.offset >= 0 else 0
            lag[tp.partition] = max(0, ends[tp.partition] - position)
        return lag
    except KafkaException as exc:
        raise BrokerError(f"cannot read the lag of group {settings.group_id!r}: {exc}") from exc
    finally:
        consumer.close()
