"""The engine worker: a consumer-group member that turns event batches into state and recs.

Per poll, the commit order is (see DESIGN.md, Guarantees):

1. consume a batch and split it by partition;
2. decode; invalid records are produced to the DLQ and flushed *before* the state write, because
   once the watermark passes a record it is never looked at again;
3. one atomic Redis write per partition: the state delta and the partition's new watermark (the
   poll's partitions read their prior state in one round trip and send their writes in another);
4. recompute recommendations for the touched users of every partition of the poll (one scoring
   pass, shared reads; the session model from the in-memory replica when this worker owns every
   partition) and produce the changed ones;
5. flush the producer, then remember what was published (digests), so an unflushed list is
   published again after a crash;
6. commit the consumer offsets, only now that the state and the recs are durable (sent without
   waiting for the broker's answer: a lost commit only re-delivers records, which step 3 skips;
   a clean stop waits for the last one).

With a scoring process (:mod:`consumers.scoring`, the runner's default on 2+ CPUs) steps 4-6 of
poll n run after steps 1-3 of poll n+1: the second process scores poll n meanwhile. Behind a
backlog (a full poll) they run once poll n+1 is handed to the scoring process, so it scores while
poll n is flushed; poll n+1 may then have read the digests from before poll n's were stored, so
the worker compares its lists with the ones poll n published. Poll n still reads its scoring inputs
before poll n+1 writes anything, and each poll's own steps keep their order, so the recs and the
guarantees are those of the one-process loop; a crash leaves at most two polls uncommitted, both
re-delivered as below.

A crash anywhere leaves records above the committed offset; they are re-delivered, and those at or
below the watermark are skipped (their users' recs are recomputed, which repairs step 4-5). So on
assignment a worker resumes at the committed offset when that lies at or below the watermark, and
just after the watermark otherwise.

Tests crash a worker between these steps through ``fault`` (see
:data:`consumers.settings.FAULT_STEPS`), set in code or, for worker processes, with
``STREAMREC_WORKER_FAULT_AT=step:nth``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from consumers.heap import freeze_after_full_collections
from consumers.intake import make_consumer, pause_until_store_answers, poll_batch, rewind, split_by_partition
from consumers.offsets import group_lag
from consumers.scoring import InlineScorer, ProcessScorer, ScoreJob, Scorer, ScoreResult
from consumers.settings import Fault, WorkerSettings, fault_from_spec
from engine.config import EngineSettings
from engine.embeddings import EmbeddingSpace, vectors_for_new_items
from engine.errors import BrokerError, ConfigurationError, ScorerError, StateStoreError, WatermarkConflict
from engine.pipeline import BatchOutcome, BatchProcessor, RawRecord
from engine.recommend import Recommender
from engine.state.base import StateStore
from producers.kafka import KafkaSettings
from producers.recs import DeadLetterPublisher, RecsPublisher, flush, make_producer

log = logging.getLogger("streamrec.worker")


@dataclass(slots=True)
class _Pending:
    """A poll whose state is written and whose recommendations are being scored."""

    batches: dict[int, list[RawRecord]]
    written: list[BatchOutcome]
    done: list[TopicPartition]  # the offsets to commit once its recs are out
    versions: dict[str, str | None]
    received_at: float  # unix seconds when the poll's records were handed to the worker
    # partition -> user -> digest published by the poll before while this one was being scored:
    # newer than those its scoring read (the scorer may have read before they were stored)
    newer_digests: dict[int, dict[str, str]] = field(default_factory=dict)


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
    scorer_failures: int = 0
    store_outages: int = 0
    broker_outages: int = 0
    assignments: int = 0
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
        fault: Fault | None = None,
        scorer_store: Callable[[], StateStore] | None = None,
    ) -> None:
        self.kafka = kafka
        self.store = store
        self.engine = engine
        self.settings = settings or WorkerSettings()
        self.processor = BatchProcessor(store, engine)
        self.recommender = Recommender(store, engine)
        # ``scorer_store`` (picklable) opens this worker's store in a scoring process.
        self.scorer: Scorer = self._make_scorer(scorer_store)
        self.versions = dict(
            versions or {"model_version": self.settings.model_version, "index_version": None}
        )
        # Called between batches; returns a new embedding space when a refreshed model is published.
        self.space_source = space_source
        self.stats = WorkerStats()
        self.stop_event = threading.Event()
        # Observability hook (consumers.metrics): on_batch(worker, consumer, seconds) after each
        # poll, seconds None after publishing a poll scored in the background.
        self.on_batch: Callable[[Worker, Consumer, float | None], None] | None = None
        self._consumer: Consumer | None = None
        self._paused = False
        # Set when the replica may no longer match the store: after a (re)assignment, a failed
        # write (a lost reply may hide an applied one) or a watermark conflict.
        self._replica_due = True
        self._pending: _Pending | None = None  # a written poll whose recs are being scored
        self._publishing_poll: _Pending | None = None  # a scored poll whose recs are being published
        self._committed: dict[int, TopicPartition] = {}  # the last offsets sent, per partition
        self._publishing: tuple[Any, RecsPublisher] | None = None  # (producer, recs) while running
        # None in production: every step checks it and moves on.
        if fault is None and self.settings.fault_at:
            fault = fault_from_spec(self.settings.fault_at)
        self.fault = fault

    # -- set-up ---------------------------------------------------------------------------------

    def _make_scorer(self, scorer_store: Callable[[], StateStore] | None) -> Scorer:
        mode = self.settings.scorer
        if mode == "process" and scorer_store is None:
            raise ConfigurationError(
                "scorer=process needs a store the scoring process can open (the runner's)"
            )
        # "auto": whoever starts the worker decides by passing a store or not (the runner passes
        # one while the host has a CPU per worker for its scoring process: deploy.runner).
        if scorer_store is not None and mode != "inline":
            return ProcessScorer(scorer_store, self.engine, self.settings.gc_freeze)
        return InlineScorer(self.store, self.recommender)

    def _make_consumer(self) -> Consumer:
        return make_consumer(self.kafka, self.settings)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            watermarks = self.store.watermarks()
        except StateStoreError as exc:
            # Start from the committed offsets instead: the watermark check still skips applied records.
            log.warning("cannot read watermarks on assignment: %s", exc)
            watermarks = {}
        try:
            committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
        except KafkaException as exc:
            log.warning("cannot read committed offsets on assignment: %s", exc)
            committed = {}
        for tp in partitions:
            mark = watermarks.get(tp.partition, -1)
            if mark < 0:
                continue
            start = committed.get(tp.partition, -1)
            # Records between the committed offset and the watermark were applied but their recs
            # may not have been flushed (a crash in steps 4-6): re-read them, so that they are skipped
            # and their users' recs recomputed. Never committed at all: the same, from the start.
            # Committed past the watermark (the state lost writes): re-apply from the watermark.
            tp.offset = start if 0 <= start <= mark + 1 else (OFFSET_BEGINNING if start < 0 else mark + 1)
        self._fault_at("assigned")
        self._replica_due = True
        self.stats.assignments += 1
        log.info("assigned partitions %s", [tp.partition for tp in partitions])
        consumer.assign(partitions)
        if self._paused:  # assigned while waiting for the state store: stay paused
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._fault_at("revoked")
        self._replica_due = True
        if self._pending is not None and self._publishing is not None:
            # Publish the poll being scored while these partitions are still ours: after the
            # rebalance its lists could land after the new owner's newer ones.
            try:
                self._finish_pending(consumer, *self._publishing, sync_commit=True)
            except (StateStoreError, BrokerError, ScorerError, KafkaException) as exc:
                log.warning("poll being scored not published before the rebalance (re-delivered): %s", exc)
                # The revoked partitions' new owner reads theirs again; read the others' here (all
                # are revoked with the default eager protocol, not with a cooperative one).
                revoked = {tp.partition for tp in partitions}
                kept: dict[int, list[RawRecord]] = {}
                for poll in self._drop_unpublished():
                    for partition, records in poll.items():
                        if partition not in revoked:
                            kept.setdefault(partition, []).extend(records)
                rewind(consumer, self.kafka.events_topic, kept)
        for tp in partitions:  # their new owner commits them from now on
            self._committed.pop(tp.partition, None)
        log.info("revoked partitions %s", [tp.partition for tp in partitions])

    def _fault_at(self, step: str) -> None:
        if self.fault is not None:
            self.fault(step)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, until_idle: bool = False, max_seconds: float | None = None) -> WorkerStats:
        consumer = self._consumer = self._make_consumer()
        producer = make_producer(self.kafka)
        recs = RecsPublisher(producer, self.kafka.recs_topic)
        self._publishing = (producer, recs)
        dlq = DeadLetterPublisher(producer, self.kafka.dlq_topic)
        consumer.subscribe([self.kafka.events_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        idle = 0
        deadline = time.monotonic() + max_seconds if max_seconds else None
        unfreeze = freeze_after_full_collections() if self.settings.gc_freeze else None
        try:
            while not self.stop_event.is_set():
                if deadline and time.monotonic() > deadline:
                    break
                self._refresh_space()
                # While a poll is being scored, take only what is already fetched: with nothing
                # there, publish that poll now instead of after the next record arrives. A poll
                # already scored is published first (the scorer would wait for the next one anyway).
                if self._pending is not None and self.scorer.ready():
                    messages = []
                else:
                    messages = poll_batch(consumer, self.settings, wait=self._pending is None)
                received_at = time.time()
                batches = split_by_partition(messages)
                if not batches and self._pending is None:
                    if until_idle and self._caught_up():
                        idle += 1
                        if idle >= self.settings.idle_checks:
                            break
                    continue
                idle = 0
                try:
                    started = time.perf_counter()
                    if batches:
                        self._handle(consumer, producer, recs, dlq, batches, received_at)
                    else:
                        self._finish_pending(consumer, producer, recs)
                    if self.on_batch is not None:
                        self.on_batch(self, consumer, time.perf_counter() - started if batches else None)
                except StateStoreError as exc:
                    self._replica_due = True
                    self._wait_for_store(consumer, self._unfinished(batches), exc)
                except BrokerError as exc:
                    # Recs or dead letters not acknowledged (broker down or restarting): nothing of
                    # the batch was committed, so read it again; applied records are skipped by the
                    # watermark and their users' recs published again. The clients reconnect.
                    self.stats.broker_outages += 1
                    log.warning("broker unavailable, retrying the batch: %s", exc)
                    # The poll written just before may not have reached the scorer's replica; its
                    # re-read records are skipped by the watermark, so reload the replica instead.
                    self._replica_due = True
                    for publisher in (recs, dlq):
                        with contextlib.suppress(BrokerError):
                            publisher.check()  # forget failed deliveries: the retry sends them again
                    rewind(consumer, self.kafka.events_topic, self._unfinished(batches))
                    self.stop_event.wait(1.0)
                except ScorerError as exc:
                    # The scoring process died: its polls are read again (applied records are
                    # skipped, their users scored) once a fresh one has loaded the replica.
                    self.stats.scorer_failures += 1
                    log.warning("scoring process failed, retrying the batch: %s", exc)
                    self._replica_due = True
                    rewind(consumer, self.kafka.events_topic, self._unfinished(batches))
                    self.stop_event.wait(1.0)  # a process that cannot start must not spin
            # Stopping: publish and commit the poll still being scored (else it is re-delivered),
            # then wait for the last offsets to be committed (they are sent asynchronously).
            try:
                self._finish_pending(consumer, producer, recs)
                if self._committed:
                    consumer.commit(offsets=list(self._committed.values()), asynchronous=False)
            except (StateStoreError, BrokerError, ScorerError, KafkaException) as exc:
                log.warning("last poll not finished (its records will be re-delivered): %s", exc)
                self._drop_unpublished()  # a later run() starts clean
        finally:
            self._publishing = None
            self.scorer.close()
            if unfreeze is not None:
                unfreeze()
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
            self.scorer.set_space(space)
            self.versions = self.versions | {"index_version": space.version}
            self.stats.model_swaps += 1

    def _sync_replica(self, consumer: Consumer) -> None:
        """(Re)load the session-model replica, or drop it when this worker does not own every
        partition (neighbour sessions live in all of them; it then reads them from Redis)."""
        whole = self.settings.session_replica and self.engine.session_model != "off"
        if whole:
            owned = {tp.partition for tp in consumer.assignment()}
            whole = owned == set(range(self.store.partitions))
            if not whole:
                log.info(
                    "session model read from the store per batch (this worker owns %d of %d partitions)",
                    len(owned),
                    self.store.partitions,
                )
        self.scorer.load_replica(whole)  # StateStoreError: retried after the outage
        self._replica_due = False

    def _extend_space(self, events: list) -> dict[str, np.ndarray]:
        """Items the model has not seen get the mean vector of their co-occurrence neighbours
        (returned, for a scoring process's copy of the space)."""
        space = self.processor.space
        add_items = getattr(space, "add_items", None)
        if space is None or add_items is None:
            return {}
        vectors = vectors_for_new_items(space, self.store, {e.item_id for _, e in events})
        if vectors:
            add_items(vectors)
        return vectors

    def _wait_for_store(
        self, consumer: Consumer, batches: dict[int, list[RawRecord]], exc: Exception
    ) -> None:
        """Redis is down or too slow: rewind the batch, pause fetching, and poll until it answers
        (:func:`~consumers.intake.pause_until_store_answers`)."""
        self.stats.store_outages += 1
        log.warning("state store unavailable, pausing consumption: %s", exc)
        self._paused = True  # an assignment meanwhile stays paused (_on_assign)
        try:
            pause_until_store_answers(consumer, self.store, self.kafka.events_topic, batches, self.stop_event)
        finally:
            self._paused = False
        log.warning("state store back, resuming")

    def stop(self) -> None:
        self.stop_event.set()

    def _handle(
        self,
        consumer: Consumer,
        producer,
        recs: RecsPublisher,
        dlq: DeadLetterPublisher,
        batches: dict[int, list[RawRecord]],
        received_at: float,
    ) -> None:
        """Steps 1-3 of a poll, then steps 4-6 of the previous one and this poll's scoring start
        (behind a backlog the scoring first, see the module doc); with an inline scorer this
        poll's steps 4-6 follow at once."""
        topic = self.kafka.events_topic

        def before_apply(outcomes: list[BatchOutcome]) -> None:
            letters = [letter for outcome in outcomes for letter in outcome.dead_letters]
            if letters:
                for record, reason in letters:
                    dlq.dead_letter(topic, record, reason)
                flush(producer)
                dlq.check()
                self._fault_at("dlq_flushed")
            # The poll being scored reads its inputs before this poll's writes land, so its recs
            # are exactly the ones an inline scorer would have computed.
            self.scorer.wait_reads()

        if self._replica_due:
            self._finish_pending(consumer, producer, recs)  # the reload must include its writes
            self._sync_replica(consumer)
        done: list[TopicPartition] = []
        written: list[BatchOutcome] = []
        touches: list[tuple[str, str, float]] = []
        pushed: dict[str, list[str]] = {}
        new_vectors: dict[str, np.ndarray] = {}
        # One state read and one write call for the poll's partitions (each write atomic with its
        # partition's watermark).
        results = self.processor.process_many(batches, before_apply=before_apply)
        self.stats.consumed += sum(len(records) for records in batches.values())  # once, not per retry
        self._fault_at("state_written")
        for outcome in results:
            if isinstance(outcome, WatermarkConflict):
                # Another worker owns this partition now; leave its offsets alone.
                self.stats.conflicts += 1
                log.warning("skipping batch: %s", outcome)
                self._replica_due = True
                continue
            touches.extend(outcome.touches)
            pushed.update(outcome.history)
            self.stats.applied += outcome.applied
            self.stats.duplicates += outcome.duplicates
            self.stats.already_applied += outcome.already_applied
            if outcome.already_applied:
                log.info(
                    "partition %s: skipped %d re-delivered records at or below the watermark",
                    outcome.partition,
                    outcome.already_applied,
                )
            self.stats.dead_lettered += len(outcome.dead_letters)
            new_vectors.update(self._extend_space(outcome.events))
            written.append(outcome)
            done.append(TopicPartition(topic, outcome.partition, outcome.last_offset + 1))
        scored = self._collect_pending()
        if scored is not None and sum(map(len, batches.values())) < self.settings.batch_size:
            # Not behind: publish first. Scoring beside the flush would take CPU from the broker
            # while it delivers these lists (measured: a longer p99 at 2,000 events/s).
            self._publish(consumer, producer, recs, *scored)
            scored = None
        touched = {o.partition: o.touched_users for o in written if o.touched_users}
        self._pending = current = _Pending(batches, written, done, self.versions, received_at)
        # One scoring pass for the whole poll: the partitions share one read round trip. Behind a
        # backlog (a full poll) it starts before the previous poll is published, so the scorer
        # does not wait for that poll's produce, flush, digests and commit.
        users = touched if self.settings.publish_recs else {}
        self.scorer.submit(ScoreJob(touches, users, new_vectors, pushed))
        self.stats.batches += 1
        if scored is not None:
            current.newer_digests = self._publish(consumer, producer, recs, *scored)
        if not self.scorer.overlaps:
            self._finish_pending(consumer, producer, recs)

    def _finish_pending(
        self, consumer: Consumer, producer: Any, recs: RecsPublisher, sync_commit: bool = False
    ) -> None:
        """Steps 4-6 of the poll being scored: produce its changed recs, flush, store their
        digests, commit its offsets."""
        scored = self._collect_pending()
        if scored is not None:
            self._publish(consumer, producer, recs, *scored, sync_commit=sync_commit)

    def _collect_pending(self) -> tuple[_Pending, ScoreResult] | None:
        """Wait for the poll being scored; it is then the poll being published until
        :meth:`_publish` is done with it (a retry still reads it again)."""
        pending = self._pending
        if pending is None:
            return None
        result = self.scorer.result()
        self._pending = None
        self._publishing_poll = pending
        record_call = getattr(self.store, "store_call", None)  # TimedStore: the metrics' store timings
        if record_call is not None:
            for call in result.store_calls:
                record_call(*call)
        return pending, result

    def _publish(
        self,
        consumer: Consumer,
        producer: Any,
        recs: RecsPublisher,
        pending: _Pending,
        result: ScoreResult,
        sync_commit: bool = False,
    ) -> dict[int, dict[str, str]]:
        """Steps 4-6 of a scored poll (the next poll may be being scored meanwhile); returns the
        digests of the lists it changed, by partition."""
        topic = self.kafka.events_topic
        pending_digests: dict[int, dict[str, str]] = {}
        for outcome in pending.written:
            lists = result.lists.get(outcome.partition)
            if not lists:
                continue
            source = (topic, outcome.partition, outcome.last_offset)
            digests = result.digests.get(outcome.partition, {})
            newer = pending.newer_digests.get(outcome.partition)
            if newer:
                digests = {**digests, **newer}
            changed = recs.publish(lists, digests, source, pending.versions, pending.received_at)
            pending_digests[outcome.partition] = changed
            self.stats.recs_published += len(changed)
        self._fault_at("recs_produced")
        flush(producer)
        recs.check()
        self._fault_at("recs_flushed")
        self.store.set_recs_digests(pending_digests)
        self._fault_at("digests_written")
        if pending.done:
            # Asynchronously: the loop does not wait a broker round trip per poll. A commit lost
            # in a crash or a rebalance only means re-delivered records, skipped by the watermark.
            self._committed.update((tp.partition, tp) for tp in pending.done)
            try:
                consumer.commit(offsets=pending.done, asynchronous=not sync_commit)
            except KafkaException as exc:
                # Safe to lose: the watermark makes the re-delivered records no-ops.
                log.warning("offset commit failed (records will be re-delivered and skipped): %s", exc)
        self._publishing_poll = None
        self._fault_at("committed")
        return pending_digests

    def _unfinished(self, batches: dict[int, list[RawRecord]]) -> dict[int, list[RawRecord]]:
        """The records of this poll, of the one being scored and of the one being published, none
        committed: what a retry reads again. The scoring job in flight is dropped (its poll will
        be scored again)."""
        polls = self._drop_unpublished()
        if all(poll is not batches for poll in polls):
            polls.append(batches)
        merged: dict[int, list[RawRecord]] = {}
        for poll in polls:
            for partition, records in poll.items():
                merged.setdefault(partition, []).extend(records)
        return merged

    def _drop_unpublished(self) -> list[dict[int, list[RawRecord]]]:
        """Forget the polls being published and scored (their records are read again, by this
        worker or a partition's new owner); returns their records."""
        polls = [poll.batches for poll in (self._publishing_poll, self._pending) if poll is not None]
        self._pending = self._publishing_poll = None
        self.scorer.discard()
        return polls

    def _caught_up(self) -> bool:
        """True when the whole group has committed every record of every partition of the topic."""
        try:
            return not any(group_lag(self.kafka).values())
        except BrokerError as exc:
            log.warning("lag check failed: %s", exc)
            return False
