"""How the worker takes records from the events topic: polls that form batches, split by
partition, and rewinds that read an unfinished batch again."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from consumers.settings import WorkerSettings
from engine.pipeline import RawRecord

log = logging.getLogger("streamrec.worker")


def poll_batch(consumer: Consumer, settings: WorkerSettings, wait: bool = True) -> list:
    """A batch: what is already fetched, else the first record to arrive plus what came with it.

    A batch closes as soon as the input pauses instead of waiting for a full batch or a fixed
    window, so a lone event is processed at once; under load the fetched queue is full and
    batches are large (``batch_size``), which keeps the per-batch costs shared. ``wait=False``
    returns at once with what is fetched, possibly nothing.
    """
    s = settings
    messages = consumer.consume(s.batch_size, 0)
    if not messages:
        if not wait:
            return []
        messages = consumer.consume(1, s.poll_timeout_s)
        if not messages:
            return []
        messages += consumer.consume(s.batch_size - 1, 0) if s.batch_size > 1 else []
    if s.batch_linger_s > 0 and len(messages) < s.batch_size:
        messages += consumer.consume(s.batch_size - len(messages), s.batch_linger_s)
    return messages


def split_by_partition(messages: list) -> dict[int, list[RawRecord]]:
    """The records of a poll by partition, in offset order; consume errors are logged and left
    out (the end of a partition is not an error)."""
    batches: dict[int, list[RawRecord]] = {}
    for msg in messages:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error: %s", err)
            continue
        batches.setdefault(msg.partition(), []).append(
            RawRecord(msg.partition(), msg.offset(), msg.value(), msg.key())
        )
    return batches


def rewind(consumer: Consumer, topic: str, batches: Mapping[int, list[RawRecord]]) -> None:
    """Seek each partition back to the first record of its unfinished batch."""
    for partition, records in batches.items():
        try:
            consumer.seek(TopicPartition(topic, partition, min(r.offset for r in records)))
        except KafkaException as seek_error:  # partition revoked meanwhile: its new owner resumes it
            log.info("cannot rewind partition %s: %s", partition, seek_error)
