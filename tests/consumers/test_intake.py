"""How a poll forms a batch (what is fetched at once, else the first record plus what came with
it), how it is split by partition, and how an unfinished batch is read again."""

from __future__ import annotations

from consumers.intake import poll_batch, rewind, split_by_partition
from consumers.settings import WorkerSettings
from engine.pipeline import RawRecord


class ScriptedConsumer:
    """``consume(n, timeout)`` over a local queue; a call that waits (timeout > 0) on an empty
    queue receives the next scripted arrival, as a broker fetch would."""

    def __init__(self, fetched: list[str], arrivals: list[list[str]]) -> None:
        self.fetched = list(fetched)
        self.arrivals = [list(a) for a in arrivals]
        self.calls: list[tuple[int, float]] = []

    def consume(self, num: int, timeout: float) -> list[str]:
        self.calls.append((num, timeout))
        if not self.fetched and timeout > 0 and self.arrivals:
            self.fetched = self.arrivals.pop(0)
        taken, self.fetched = self.fetched[:num], self.fetched[num:]
        return taken


def _poll(consumer: ScriptedConsumer, **settings: float) -> list[str]:
    return poll_batch(consumer, WorkerSettings(batch_size=5, **settings))  # type: ignore[arg-type]


def test_fetched_records_are_taken_without_waiting() -> None:
    consumer = ScriptedConsumer(["a", "b", "c"], [["late"]])
    assert _poll(consumer) == ["a", "b", "c"]
    assert consumer.calls == [(5, 0)]


def test_a_full_queue_gives_a_full_batch_and_leaves_the_rest() -> None:
    consumer = ScriptedConsumer(list("abcdefg"), [])
    assert _poll(consumer) == list("abcde")
    assert consumer.fetched == ["f", "g"]


def test_an_idle_poll_returns_on_the_first_arrival_with_what_came_with_it() -> None:
    consumer = ScriptedConsumer([], [["x", "y"], ["later"]])
    assert _poll(consumer, poll_timeout_s=0.05) == ["x", "y"]
    # waits for one record only, then drains without waiting: no fixed batching window
    assert consumer.calls == [(5, 0), (1, 0.05), (4, 0)]
    assert consumer.arrivals == [["later"]]


def test_nothing_arriving_is_an_empty_batch() -> None:
    consumer = ScriptedConsumer([], [])
    assert _poll(consumer) == []


def test_linger_waits_for_more_after_the_first_record() -> None:
    consumer = ScriptedConsumer([], [["x"], ["y", "z"]])
    assert _poll(consumer, batch_linger_s=0.2) == ["x", "y", "z"]
    assert consumer.calls[-1] == (4, 0.2)


def test_no_wait_returns_what_is_fetched_or_nothing() -> None:
    consumer = ScriptedConsumer([], [["late"]])
    assert poll_batch(consumer, WorkerSettings(batch_size=5), wait=False) == []  # type: ignore[arg-type]
    assert consumer.arrivals == [["late"]]


class Message:
    def __init__(self, partition: int, offset: int, error: object = None) -> None:
        self._partition, self._offset, self._error = partition, offset, error

    def error(self) -> object:
        return self._error

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return f"v{self._offset}".encode()

    def key(self) -> bytes:
        return b"k"


class EndOfPartition:
    def code(self) -> int:
        from confluent_kafka import KafkaError

        return KafkaError._PARTITION_EOF


def test_a_poll_is_split_by_partition_in_offset_order_without_errors() -> None:
    messages = [Message(1, 7), Message(0, 3), Message(1, 8), Message(0, 0, EndOfPartition()), Message(0, 4)]
    batches = split_by_partition(messages)
    assert {p: [r.offset for r in records] for p, records in batches.items()} == {1: [7, 8], 0: [3, 4]}
    assert batches[1][0] == RawRecord(1, 7, b"v7", b"k")


class SeekingConsumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    def seek(self, tp) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


def test_rewind_seeks_each_partition_to_its_first_unfinished_record() -> None:
    consumer = SeekingConsumer()
    batches = {0: [RawRecord(0, 12, None), RawRecord(0, 10, None)], 3: [RawRecord(3, 5, None)]}
    rewind(consumer, "events", batches)  # type: ignore[arg-type]
    assert sorted(consumer.seeks) == [("events", 0, 10), ("events", 3, 5)]
