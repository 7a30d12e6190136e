"""How a poll forms a batch: what is fetched at once, else the first record plus what came with it."""

from __future__ import annotations

from consumers.worker import Worker, WorkerSettings
from engine.config import EngineSettings
from engine.state.memory import MemoryStore
from producers.kafka import KafkaSettings


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


def _worker(**settings: float) -> Worker:
    return Worker(KafkaSettings(), MemoryStore(1), EngineSettings(), WorkerSettings(batch_size=5, **settings))


def test_fetched_records_are_taken_without_waiting() -> None:
    consumer = ScriptedConsumer(["a", "b", "c"], [["late"]])
    assert _worker()._poll(consumer) == ["a", "b", "c"]  # type: ignore[arg-type]
    assert consumer.calls == [(5, 0)]


def test_a_full_queue_gives_a_full_batch_and_leaves_the_rest() -> None:
    consumer = ScriptedConsumer(list("abcdefg"), [])
    assert _worker()._poll(consumer) == list("abcde")  # type: ignore[arg-type]
    assert consumer.fetched == ["f", "g"]


def test_an_idle_poll_returns_on_the_first_arrival_with_what_came_with_it() -> None:
    consumer = ScriptedConsumer([], [["x", "y"], ["later"]])
    worker = _worker(poll_timeout_s=0.05)
    assert worker._poll(consumer) == ["x", "y"]  # type: ignore[arg-type]
    # waits for one record only, then drains without waiting: no fixed batching window
    assert consumer.calls == [(5, 0), (1, 0.05), (4, 0)]
    assert consumer.arrivals == [["later"]]


def test_nothing_arriving_is_an_empty_batch() -> None:
    consumer = ScriptedConsumer([], [])
    assert _worker()._poll(consumer) == []  # type: ignore[arg-type]


def test_linger_waits_for_more_after_the_first_record() -> None:
    consumer = ScriptedConsumer([], [["x"], ["y", "z"]])
    assert _worker(batch_linger_s=0.2)._poll(consumer) == ["x", "y", "z"]  # type: ignore[arg-type]
    assert consumer.calls[-1] == (4, 0.2)
