"""How the worker takes records from the events topic: its consumer, polls that form batches,
split by partition, rewinds that read an unfinished batch again, and the pause while the state
store is away."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from consumers.settings import WorkerSettings
from engine.errors import BrokerError, StateStoreError
from engine.pipeline import RawRecord
from engine.state.base import StateStore
from producers.kafka import KafkaSettings, client_config

log = logging.getLogger("streamrec.worker")


def make_consumer(kafka: KafkaSettings, settings: WorkerSettings) -> Consumer:
    """The worker's group member: offsets committed by the worker (after its recs are out), never
    automatically; fetches sized to the worker's batches."""
    config = client_config(kafka) | {
        "group.id": kafka.group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": kafka.session_timeout_ms,
        "heartbeat.interval.ms": max(500, kafka.session_timeout_ms // 3),
        "max.poll.interval.ms": max(kafka.max_poll_interval_ms, kafka.session_timeout_ms),
        "fetch.wait.max.ms": settings.fetch_wait_max_ms,
        "max.partition.fetch.bytes": kafka.max_message_bytes,
        "fetch.max.bytes": max(kafka.max_message_bytes, 16 * 1024 * 1024),
        "queued.max.messages.kbytes": settings.prefetch_kbytes,
        "on_commit": _log_failed_commit,
    }
    try:
        return Consumer(config)
    except KafkaException as exc:
        raise BrokerError(f"cannot create Kafka consumer: {exc}") from exc


def _log_failed_commit(error: KafkaError | None, partitions: list[TopicPartition]) -> None:
    if error is not None:
        log.warning("offset commit failed (records will be re-delivered and skipped): %s", error)


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


def pause_until_store_answers(
    consumer: Consumer,
    store: StateStore,
    topic: str,
    batches: Mapping[int, list[RawRecord]],
    stop: threading.Event,
) -> None:
    """Rewind ``batches``, pause fetching, and poll until ``store`` answers (or ``stop`` is set).

    Nothing of the batches was committed, so rewinding loses nothing, and partitions whose write
    did succeed are skipped by their watermark. Pausing keeps memory bounded; polling keeps the
    member in its group while it waits.
    """
    rewind(consumer, topic, batches)
    consumer.pause(consumer.assignment())
    delay = 0.5
    while not stop.is_set():
        msg = consumer.poll(delay)
        if msg is not None and msg.error() is None:
            # Fetched from a partition that was not paused (a rebalance slipped in before the
            # assignment callback could pause it): put the record back, or it would be skipped.
            rewind(consumer, topic, {msg.partition(): [RawRecord(msg.partition(), msg.offset(), None)]})
            consumer.pause(consumer.assignment())
        try:
            store.watermarks()
            break
        except StateStoreError:
            delay = min(delay * 2, 5.0)
    consumer.resume(consumer.assignment())
