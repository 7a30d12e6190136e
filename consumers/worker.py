"""The engine worker: a consumer-group member that turns event batches into state and recs.

Per poll, the commit order is (see DESIGN.md, Guarantees):

1. consume a batch and split it by partition;
2. decode; invalid records are produced to the DLQ and flushed *before* the state write, because
   once the watermark passes a record it is never looked at again;
3. one atomic Redis write per partition: the state delta and the partition's new watermark;
4. recompute recommendations for the touched users and produce the changed ones;
5. flush the producer, then remember what was published (digests), so an unflushed list is
   published again after a crash;
6. commit the consumer offsets, only now that the state and the recs are durable.

A crash anywhere leaves records above the committed offset; they are re-delivered, and those at or
below the watermark are skipped (their users' recs are recomputed, which repairs step 4-5).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.offsets import group_lag
from engine.config import EngineSettings
from engine.embeddings import EmbeddingSpace
from engine.errors import BrokerError, StateStoreError, WatermarkConflict
from engine.pipeline import BatchOutcome, BatchProcessor, RawRecord
from engine.recommend import Recommender
from engine.state.base import StateStore
from producers.kafka import KafkaSettings, client_config
from producers.recs import DeadLetterPublisher, RecsPublisher, flush, make_producer

log = logging.getLogger("streamrec.worker")


class WorkerSettings(BaseSettings):
    """Environment: ``STREAMREC_WORKER_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_WORKER_", extra="ignore")

    batch_size: int = Field(2000, ge=1, description="records per consume() call")
    poll_timeout_s: float = Field(0.5, gt=0)
    idle_checks: int = Field(2, ge=1, description="empty polls with zero lag before --until-idle exits")
    publish_recs: bool = Field(True, description="produce recommendations to the recs topic")
    model_version: str = "cooccurrence-v1"


@dataclass(slots=True)
class WorkerStats:
    batches: int = 0
    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    already_applied: int = 0
    dead_lettered: int = 0
    recs_published: int = 0
    conflicts: int = 0
    store_outages: int = 0
    model_swaps: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


class Worker:
    def __init__(
        self,
        kafka: KafkaSettings,
        store: StateStore,
        engine: EngineSettings,
        settings: WorkerSettings | None = None,
        versions: Mapping[str, str | None] | None = None,
        space_source: Callable[[], EmbeddingSpace | None] | None = None,
    ) -> None:
        self.kafka = kafka
        self.store = store
        self.engine = engine
        self.settings = settings or WorkerSettings()
        self.processor = BatchProcessor(store, engine)
        self.recommender = Recommender(store, engine)
        self.versions = dict(
            versions or {"model_version": self.settings.model_version, "index_version": None}
        )
        # Called between batches; returns a new embedding space when a refreshed model is published.
        self.space_source = space_source
        self.stats = WorkerStats()
        self.stop_event = threading.Event()
        self._consumer: Consumer | None = None

    # -- set-up ---------------------------------------------------------------------------------

    def _make_consumer(self) -> Consumer:
        config = client_config(self.kafka) | {
            "group.id": self.kafka.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.kafka.session_timeout_ms,
            "heartbeat.interval.ms": max(500, self.kafka.session_timeout_ms // 3),
            "max.partition.fetch.bytes": self.kafka.max_message_bytes,
            "fetch.max.bytes": max(self.kafka.max_message_bytes, 16 * 1024 * 1024),
        }
        try:
            return Consumer(config)
        except KafkaException as exc:
            raise BrokerError(f"cannot create Kafka consumer: {exc}") from exc

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Resume right after the state's watermark: records at or below it are already applied.
        try:
            watermarks = self.store.watermarks()
        except StateStoreError as exc:
            # Start from the committed offsets instead: the watermark check still skips applied records.
            log.warning("cannot read watermarks on assignment: %s", exc)
            watermarks = {}
        for tp in partitions:
            mark = watermarks.get(tp.partition, -1)
            if mark >= 0:
                tp.offset = mark + 1
        log.info("assigned partitions %s", [tp.partition for tp in partitions])
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked partitions %s", [tp.partition for tp in partitions])

    # -- the loop -------------------------------------------------------------------------------

    def run(self, until_idle: bool = False, max_seconds: float | None = None) -> WorkerStats:
        consumer = self._consumer = self._make_consumer()
        producer = make_producer(self.kafka)
        recs = RecsPublisher(producer, self.kafka.recs_topic)
        dlq = DeadLetterPublisher(producer, self.kafka.dlq_topic)
        consumer.subscribe([self.kafka.events_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        idle = 0
        deadline = time.monotonic() + max_seconds if max_seconds else None
        try:
            while not self.stop_event.is_set():
                if deadline and time.monotonic() > deadline:
                    break
                self._refresh_space()
                messages = consumer.consume(self.settings.batch_size, self.settings.poll_timeout_s)
                batches = self._split(messages)
                if not batches:
                    if until_idle and self._caught_up():
                        idle += 1
                        if idle >= self.settings.idle_checks:
                            break
                    continue
                idle = 0
                try:
                    self._handle(consumer, producer, recs, dlq, batches)
                except StateStoreError as exc:
                    self._wait_for_store(consumer, batches, exc)
        finally:
            producer.flush(10)
            consumer.close()
            self._consumer = None
        return self.stats

    def _refresh_space(self) -> None:
        if self.space_source is None:
            return
        space = self.space_source()
        if space is not None:
            # One assignment each: a batch in flight keeps the space it started with.
            self.processor.space = space
            self.recommender.space = space
            self.versions = self.versions | {"index_version": space.version}
            self.stats.model_swaps += 1

    def _extend_space(self, events: list) -> None:
        """Items the model has not seen get the mean vector of their co-occurrence neighbours."""
        space = self.processor.space
        add_items = getattr(space, "add_items", None)
        if space is None or add_items is None:
            return
        new = {e.item_id for _, e in events} - set(space.vectors({e.item_id for _, e in events}))
        if not new:
            return
        neighbours = self.store.neighbours(new, 20)
        known = space.vectors({n for row in neighbours.values() for n in row})
        vectors = {}
        for item, row in neighbours.items():
            rows = [(known[n], w) for n, w in row.items() if n in known]
            if rows:
                vectors[item] = sum(w * v for v, w in rows) / sum(w for _, w in rows)
        if vectors:
            add_items(vectors)

    def _wait_for_store(
        self, consumer: Consumer, batches: dict[int, list[RawRecord]], exc: Exception
    ) -> None:
        """Redis is down or too slow: rewind the batch, pause fetching, and poll until it answers.

        Nothing of the batch was committed, so rewinding loses nothing, and partitions whose write
        did succeed are skipped by their watermark. Pausing keeps memory bounded; polling keeps
        this member in the group while it waits.
        """
        self.stats.store_outages += 1
        log.warning("state store unavailable, pausing consumption: %s", exc)
        topic = self.kafka.events_topic
        for partition, records in batches.items():
            try:
                consumer.seek(TopicPartition(topic, partition, min(r.offset for r in records)))
            except KafkaException as seek_error:  # partition revoked meanwhile: its new owner resumes it
                log.info("cannot rewind partition %s: %s", partition, seek_error)
        assignment = consumer.assignment()
        consumer.pause(assignment)
        delay = 0.5
        while not self.stop_event.is_set():
            consumer.poll(delay)
            try:
                self.store.watermarks()
                break
            except StateStoreError:
                delay = min(delay * 2, 5.0)
        consumer.resume(consumer.assignment())
        log.warning("state store back, resuming")

    def stop(self) -> None:
        self.stop_event.set()

    def _split(self, messages: list) -> dict[int, list[RawRecord]]:
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

    def _handle(
        self,
        consumer: Consumer,
        producer,
        recs: RecsPublisher,
        dlq: DeadLetterPublisher,
        batches: dict[int, list[RawRecord]],
    ) -> None:
        topic = self.kafka.events_topic

        def dead_letter(outcome: BatchOutcome) -> None:
            if outcome.dead_letters:
                for record, reason in outcome.dead_letters:
                    dlq.dead_letter(topic, record, reason)
                flush(producer)
                dlq.check()

        done: list[TopicPartition] = []
        pending_digests: list[tuple[int, dict[str, str]]] = []
        for partition, records in batches.items():
            self.stats.consumed += len(records)
            try:
                outcome = self.processor.process(partition, records, before_apply=dead_letter)
            except WatermarkConflict as exc:
                # Another worker owns this partition now; leave its offsets alone.
                self.stats.conflicts += 1
                log.warning("skipping batch: %s", exc)
                continue
            self.stats.applied += outcome.applied
            self.stats.duplicates += outcome.duplicates
            self.stats.already_applied += outcome.already_applied
            self.stats.dead_lettered += len(outcome.dead_letters)
            self._extend_space(outcome.events)
            if self.settings.publish_recs and outcome.touched_users:
                lists = self.recommender.for_users(partition, outcome.touched_users)
                previous = self.store.recs_digests(partition, lists)
                source = (topic, partition, outcome.last_offset)
                changed = recs.publish(lists, previous, source, self.versions)
                pending_digests.append((partition, changed))
                self.stats.recs_published += len(changed)
            done.append(TopicPartition(topic, partition, outcome.last_offset + 1))
        flush(producer)
        recs.check()
        for partition, digests in pending_digests:
            self.store.set_recs_digests(partition, digests)
        if done:
            try:
                consumer.commit(offsets=done, asynchronous=False)
            except KafkaException as exc:
                # Safe to lose: the watermark makes the re-delivered records no-ops.
                log.warning("offset commit failed (records will be re-delivered and skipped): %s", exc)
        self.stats.batches += 1

    def _caught_up(self) -> bool:
        """True when the whole group has committed every record of every partition of the topic."""
        try:
            return not any(group_lag(self.kafka).values())
        except BrokerError as exc:
            log.warning("lag check failed: %s", exc)
            return False
