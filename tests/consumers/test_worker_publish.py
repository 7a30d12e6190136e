"""Publishing a scored poll while the next one is scored: the order of the steps, the digests it
compares with, and what a failed publish reads again.

A scoring process reads its job's inputs (the last published digests among them) as soon as the
job arrives; behind a backlog (a full poll) the worker submits poll n+1 before it publishes poll
n. The scorer below does the same in this process, so these tests see exactly that interleaving
without a broker. Polls here hold one record: ``batch_size=1`` makes each of them full.
"""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition

from consumers.scoring import InlineScorer, ScoreJob, ScoreResult
from consumers.scoring.inline import read_inputs
from consumers.worker import Worker, WorkerSettings
from engine.config import EngineSettings
from engine.errors import BrokerError
from engine.events import Event, encode_event
from engine.pipeline import RawRecord
from engine.state.memory import MemoryStore
from producers.kafka import KafkaSettings
from producers.recs import DeadLetterPublisher, RecsPublisher

SAME_LIST = [("i-top", 1.0), ("i-next", 0.5)]


class ReadAtSubmitScorer(InlineScorer):
    """Overlapping like the scoring process: inputs read when the job is submitted, the result
    taken later. Every touched user gets the same list, so only the digests decide what is sent."""

    overlaps = True

    def __init__(self, store: MemoryStore, worker: Worker, log: list[str]) -> None:
        super().__init__(store, worker.recommender)
        self.log = log
        self.submitted = 0

    def submit(self, job: ScoreJob) -> None:
        self.submitted += 1
        self.log.append(f"submit {self.submitted}")
        inputs = read_inputs(self.store, self.recommender, job, set())
        digests = inputs.digests if inputs is not None else {}
        lists = {p: {user: list(SAME_LIST) for user in users} for p, users in job.users.items()}
        self._result = ScoreResult(lists, digests)


class FakeProducer:
    def __init__(self, log: list[str], failing_flushes: int = 0) -> None:
        self.log = log
        self.produced: list[tuple[str, bytes]] = []
        self.failing_flushes = failing_flushes

    def produce(self, topic: str, key: bytes, value: bytes, headers=None, on_delivery=None) -> None:
        self.produced.append((topic, key))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        self.log.append("flush")
        if self.failing_flushes:
            self.failing_flushes -= 1
            return 1  # one record not delivered: a broker outage
        return 0


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[list[tuple[int, int]]] = []
        self.seeks: list[tuple[str, int, int]] = []

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def commit(self, offsets, asynchronous: bool = True) -> None:
        self.commits.append([(tp.partition, tp.offset) for tp in offsets])


def _poll(start: int, user: str = "u1") -> dict[int, list[RawRecord]]:
    event = Event(
        event_id=f"e{start}", ts=1_700_000_000.0 + start, user_id=user, item_id=f"i{start}", type="view"
    )
    return {0: [RawRecord(0, start, encode_event(event), user.encode())]}


def _worker(failing_flushes: int = 0, batch_size: int = 1, partitions: int = 1):
    log: list[str] = []
    store = MemoryStore(partitions)
    worker = Worker(KafkaSettings(), store, EngineSettings(), WorkerSettings(batch_size=batch_size))
    worker.scorer = ReadAtSubmitScorer(store, worker, log)
    worker._replica_due = False  # no replica: the lists come from the scorer above
    producer = FakeProducer(log, failing_flushes)
    recs = RecsPublisher(producer, "recs")
    dlq = DeadLetterPublisher(producer, "dlq")
    return worker, FakeConsumer(), producer, recs, dlq, log


@pytest.mark.parametrize(
    ("batch_size", "order"),
    [
        # one-record polls are full: behind a backlog the next poll is scored before the flush
        (1, ["submit 1", "submit 2", "flush", "submit 3", "flush", "flush"]),
        # without a backlog the previous poll is flushed first
        (2, ["submit 1", "flush", "submit 2", "flush", "submit 3", "flush"]),
    ],
)
def test_the_order_of_scoring_and_flushing(batch_size: int, order: list[str]) -> None:
    worker, consumer, producer, recs, dlq, log = _worker(batch_size=batch_size)
    for offset in range(3):
        worker._handle(consumer, producer, recs, dlq, _poll(offset), received_at=0.0)
    worker._finish_pending(consumer, producer, recs)
    assert log == order
    assert consumer.commits == [[(0, 1)], [(0, 2)], [(0, 3)]]


def test_an_unchanged_list_is_sent_once_though_the_scorer_read_older_digests() -> None:
    worker, consumer, producer, recs, dlq, _ = _worker()
    for offset in range(4):
        worker._handle(consumer, producer, recs, dlq, _poll(offset), received_at=0.0)
    worker._finish_pending(consumer, producer, recs)
    assert [key for topic, key in producer.produced if topic == "recs"] == [b"u1"]
    assert worker.stats.recs_published == 1


def test_a_failed_publish_reads_both_unfinished_polls_again() -> None:
    worker, consumer, producer, recs, dlq, _ = _worker()
    worker._handle(consumer, producer, recs, dlq, _poll(0), received_at=0.0)
    producer.failing_flushes = 1
    second = _poll(1, user="u2")
    with pytest.raises(BrokerError):
        worker._handle(consumer, producer, recs, dlq, second, received_at=0.0)
    # poll 0 failed while being published and poll 1 is being scored: neither is committed
    assert consumer.commits == []
    again = worker._unfinished(second)
    assert sorted(record.offset for record in again[0]) == [0, 1]
    assert worker._pending is None and worker._publishing_poll is None


def test_a_publish_failing_in_a_revocation_reads_the_kept_partitions_again() -> None:
    worker, consumer, producer, recs, dlq, _ = _worker(partitions=2)
    poll = {**_poll(0), 1: _poll(5, user="u2")[0]}
    poll[1] = [RawRecord(1, 5, record.value, record.key) for record in poll[1]]
    worker._handle(consumer, producer, recs, dlq, poll, received_at=0.0)
    worker._publishing = (producer, recs)
    producer.failing_flushes = 1
    worker._on_revoke(consumer, [TopicPartition("events", 0)])  # type: ignore[arg-type]
    # partition 0's new owner reads it again; partition 1 stays here and is read again here
    assert consumer.seeks == [("events", 1, 5)]
    assert consumer.commits == []
    assert worker._pending is None and worker._publishing_poll is None
