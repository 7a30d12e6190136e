"""Latency at a fixed offered rate: event produce time -> the user's ``recs`` record, and purchase
-> suppression (a purchase until a recs record of that user without the bought item).

One production worker (``deploy.runner.run_worker``) runs in its own process for the whole run.
The state is warmed with generator events first; then, per rate, this process produces events
on a fixed schedule and reads ``recs`` (assigned at its end, no group join) in a thread.

A recs record carries its source partition and the batch's last offset; its latency is its
arrival time minus the produce time of that user's latest event at or below that offset (the
event that made the list change). Events whose user's list did not change produce no record and
no sample. Purchase probes buy the top item of a user's latest recs list.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_END, TIMESTAMP_CREATE_TIME, Consumer, Producer, TopicPartition

from consumers.offsets import group_lag
from deploy.bench.common import (
    BenchError,
    BenchStack,
    StreamShape,
    child_pids,
    drop_keys,
    event_chunks,
    percentile,
    process_cpu_s,
    produce_events,
    run_settings,
    users_per_batch,
)
from deploy.settings import Settings
from engine.events import Event, encode_event
from producers.kafka import KafkaSettings, client_config
from producers.recs import make_producer

#: Purchase probes per second of each phase.
PROBES_PER_S = 5.0


def _worker_process(settings: Settings, max_seconds: float, fetch_wait_ms: int | None) -> None:
    from deploy.runner import run_worker

    if fetch_wait_ms is not None and "fetch_wait_max_ms" not in type(settings.worker).model_fields:
        # A worker without that setting: Tansu holds each fetch for the whole fetch.wait.max.ms
        # (librdkafka's default is 500 ms) even when records arrive, so set it on the client.
        import consumers.worker as worker_module

        base = worker_module.client_config
        worker_module.client_config = lambda kafka: base(kafka) | {"fetch.wait.max.ms": fetch_wait_ms}
    run_worker(settings, until_idle=False, max_seconds=max_seconds)


class RecsReader(threading.Thread):
    """Reads the recs topic from its current end; keeps (arrival, user, partition, offset, items)."""

    def __init__(self, kafka: KafkaSettings, fetch_wait_ms: int = 5) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            client_config(kafka)
            | {
                "group.id": f"bench-recs-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": fetch_wait_ms,
            }
        )
        self.consumer.assign(
            [TopicPartition(kafka.recs_topic, p, OFFSET_END) for p in range(kafka.partitions)]
        )
        # (arrival, user, partition, source offset, items, the record's create time from the worker,
        # when the worker received the source records)
        self.records: list[tuple[float, str, int, int, list[str], float | None, float | None]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                # poll() returns as soon as one record is there (consume(n, t) waits for n or t).
                first = self.consumer.poll(0.1)
                if first is None:
                    continue
                for msg in [first, *self.consumer.consume(1000, 0)]:
                    if msg.error() is not None:
                        continue
                    now = time.time()
                    rec = orjson.loads(msg.value())
                    src = rec["source"]
                    kind, stamp_ms = msg.timestamp()
                    # the worker's produce time; a broker stamping LogAppendTime gives no split
                    created = stamp_ms / 1000.0 if kind == TIMESTAMP_CREATE_TIME else None
                    received = rec.get("received_at")
                    self.records.append(
                        (
                            now,
                            rec["user_id"],
                            src["partition"],
                            src["offset"],
                            rec["items"],
                            created,
                            received,
                        )
                    )
        finally:
            self.consumer.close()


def _wait_caught_up(kafka: KafkaSettings, worker: Any, timeout_s: float) -> int:
    """Wait until the group's lag is zero; return the lag left after ``timeout_s`` (0 = caught up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lag = sum(group_lag(kafka).values())
        if not lag:
            return 0
        if not worker.is_alive():
            raise BenchError(f"the worker process exited with code {worker.exitcode} (see the log above)")
        if time.monotonic() > deadline:
            return lag
        time.sleep(0.5)


def _phase(
    kafka: KafkaSettings, producer: Producer, reader: RecsReader, events: list[Event], rate: float, seed: int
) -> dict[str, Any]:
    """Produce ``events`` at ``rate`` per second with purchase probes; return the latencies."""
    produced: dict[tuple[int, int], tuple[float, str]] = {}  # (partition, offset) -> (time, user)
    probes: dict[tuple[int, int], tuple[float, str, str]] = {}  # ... -> (time, user, item)
    errors: list[str] = []

    def on_delivery(sent: float, user: str, probe_item: str | None, err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
            return
        coords = (msg.partition(), msg.offset())
        produced[coords] = (sent, user)
        if probe_item is not None:
            probes[coords] = (sent, user, probe_item)

    start_records = len(reader.records)
    probe_every = max(1, int(rate / PROBES_PER_S))
    probe_no = 0
    started = time.monotonic()
    for i, event in enumerate(events):
        due = started + i / rate
        delay = due - time.monotonic()
        if delay > 0.0005:
            time.sleep(delay)
        value, probe_item = encode_event(event), None
        if i % probe_every == probe_every - 1:
            # Buy the top item of a user's latest list (a list that arrived during this phase).
            for _, user, _, _, items, *_ in reversed(reader.records[start_records:]):
                if items:
                    probe_item = items[0]
                    probe_no += 1
                    buy = Event(f"probe-{seed}-{probe_no}", event.ts, user, probe_item, "purchase")
                    producer.produce(
                        kafka.events_topic,
                        key=user.encode(),
                        value=encode_event(buy),
                        on_delivery=lambda err, msg, t=time.time(), u=user, it=probe_item: on_delivery(
                            t, u, it, err, msg
                        ),
                    )
                    break
        sent = time.time()
        producer.produce(
            kafka.events_topic,
            key=event.user_id.encode(),
            value=value,
            on_delivery=lambda err, msg, t=sent, u=event.user_id: on_delivery(t, u, None, err, msg),
        )
        producer.poll(0)
    producer.flush(30)
    offered_s = time.monotonic() - started
    if errors:
        raise BenchError(f"{len(errors)} events not delivered: {errors[0]}")
    return {"produced": produced, "probes": probes, "offered_s": offered_s}


@dataclass
class Samples:
    """One phase's latencies in ms; each event->recs sample is also split at the moment the worker
    received the event (the record's ``received_at``) and the moment it produced the recs record
    (its Kafka create time); one clock, as all runs on this machine."""

    event_to_recs: list[float] = field(default_factory=list)
    event_to_worker_produce: list[float] = field(default_factory=list)
    event_to_worker: list[float] = field(default_factory=list)
    in_worker: list[float] = field(default_factory=list)
    recs_topic_hop: list[float] = field(default_factory=list)
    suppression: list[float] = field(default_factory=list)
    missed: int = 0  # probes never suppressed


def _latencies(
    produced: dict[tuple[int, int], tuple[float, str]],
    probes: dict[tuple[int, int], tuple[float, str, str]],
    records: list[tuple[float, str, int, int, list[str], float | None, float | None]],
) -> Samples:
    """The event->recs and purchase->suppression samples of one phase."""
    by_user: dict[tuple[int, str], list[tuple[int, float]]] = defaultdict(list)
    for (partition, offset), (sent, user) in produced.items():
        by_user[(partition, user)].append((offset, sent))
    for rows in by_user.values():
        rows.sort()
    used: set[tuple[int, int]] = set()
    out = Samples()
    for arrived, user, partition, source_offset, _items, created, received in records:
        rows = by_user.get((partition, user))
        if not rows:
            continue
        latest = None
        for offset, sent in rows:  # short per user: a few events per phase
            if offset > source_offset:
                break
            latest = (offset, sent)
        if latest is not None and (partition, latest[0]) not in used:
            used.add((partition, latest[0]))
            out.event_to_recs.append(1000.0 * (arrived - latest[1]))
            if created is not None:
                out.event_to_worker_produce.append(1000.0 * (created - latest[1]))
                out.recs_topic_hop.append(1000.0 * (arrived - created))
                if received is not None:
                    out.event_to_worker.append(1000.0 * (received - latest[1]))
                    out.in_worker.append(1000.0 * (created - received))
    for (partition, offset), (sent, user, item) in probes.items():
        hit = next(
            (
                arrived
                for arrived, u, p, src, items, _created, _received in records
                if u == user and p == partition and src >= offset and item not in items
            ),
            None,
        )
        if hit is None:
            out.missed += 1
        else:
            out.suppression.append(1000.0 * (hit - sent))
    return out


def _cpu_shares(pids: dict[str, int], before: dict[str, float | None], seconds: float) -> dict[str, float]:
    """Each process's CPU use over a phase, in % of one core."""
    shares: dict[str, float] = {}
    for name, pid in pids.items():
        now, then = process_cpu_s(pid), before.get(name)
        if now is not None and then is not None and seconds > 0:
            shares[name] = round(100.0 * (now - then) / seconds, 1)
    return shares


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "samples": len(values),
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) if values else None,
    }


def run_latency(
    stack: BenchStack,
    rates: list[float],
    duration_s: float = 10.0,
    warmup_events: int = 50_000,
    poll_timeout_s: float | None = None,
    fetch_wait_ms: int | None = None,
    seed: int = 0,
    shape: StreamShape = StreamShape(),
    reader_fetch_wait_ms: int = 5,
) -> dict[str, Any]:
    settings = run_settings(stack, "latency", stack.partitions)
    if poll_timeout_s is not None:
        settings.worker = settings.worker.model_copy(update={"poll_timeout_s": poll_timeout_s})
    if fetch_wait_ms is not None and "fetch_wait_max_ms" in type(settings.worker).model_fields:
        settings.worker = settings.worker.model_copy(update={"fetch_wait_max_ms": fetch_wait_ms})
    produce_events(warmup_events, settings.kafka, seed, shape)
    budget = 120.0 + len(rates) * (duration_s + 60.0)
    ctx = multiprocessing.get_context("spawn")
    worker = ctx.Process(target=_worker_process, args=(settings, budget, fetch_wait_ms))
    worker.start()
    reader = RecsReader(settings.kafka, reader_fetch_wait_ms)
    reader.start()
    # The shop's producer, with the project's producer settings (`linger_ms`: the latencies include
    # it). Made now, so that its connection and idempotent producer id are in place before the first
    # phase starts the clock: a fresh producer holds its first records for that, ~0.5 s here.
    producer = make_producer(settings.kafka)
    phases: dict[str, Any] = {}
    try:
        if _wait_caught_up(settings.kafka, worker, timeout_s=300.0):
            raise BenchError("the worker did not apply the warm-up events within 300 s")
        # Later events continue the warm-up's stream: same users and items, later timestamps.
        source = event_chunks(warmup_events + int(sum(rates) * duration_s), seed, shape)
        pending: list[Event] = [e for chunk in source for e in chunk][warmup_events:]
        stream = shape.describe(users_per_batch(pending, settings.worker.batch_size))
        for phase_no, rate in enumerate(rates):
            n = int(rate * duration_s)
            events, pending = pending[:n], pending[n:]
            before = len(reader.records)
            pids = {**stack.pids, "worker": worker.pid or 0, "bench": os.getpid()}
            # the worker's scoring process, when it runs one
            pids |= {f"scorer{'' if n == 0 else n}": pid for n, pid in enumerate(child_pids(worker.pid or 0))}
            cpu_before, clock = {name: process_cpu_s(pid) for name, pid in pids.items()}, time.monotonic()
            run = _phase(settings.kafka, producer, reader, events, rate, seed * 1000 + phase_no)
            cpu = _cpu_shares(pids, cpu_before, time.monotonic() - clock)
            backlog = _wait_caught_up(settings.kafka, worker, timeout_s=30.0 + 2 * duration_s)
            time.sleep(1.0)  # the last recs records are on their way
            got = _latencies(run["produced"], run["probes"], reader.records[before:])
            phases[str(int(rate))] = {
                "offered_rate": rate,
                "achieved_produce_rate": n / max(run["offered_s"], 1e-9),
                "events": n,
                **_summary(got.event_to_recs),
                # where the time goes: until the worker produced the recs record, then the recs
                # topic's hop to a reader (a second trip through the broker)
                "to_worker_produce": _summary(got.event_to_worker_produce),
                # ... split at the worker's receipt of the event: the events topic's hop (with
                # the shop producer's linger), then the worker's own time (state and scoring)
                "to_worker": _summary(got.event_to_worker),
                "in_worker": _summary(got.in_worker),
                "recs_topic_hop": _summary(got.recs_topic_hop),
                # CPU while offering the rate, % of one core (broker and Redis when started here)
                "cpu_pct": cpu,
                "suppression": {
                    **_summary(got.suppression),
                    "probes": len(run["probes"]),
                    "missed": got.missed,
                },
                # Events not applied when measuring stopped: the worker could not sustain this rate,
                # its samples cover only what it did apply, and later (higher) rates are skipped.
                "kept_up": backlog == 0,
                "backlog": backlog,
            }
            if backlog:
                break
    finally:
        reader.stop_event.set()
        reader.join(10)
        if worker.is_alive():
            worker.terminate()  # SIGTERM: run_worker finishes its batch and leaves the group
        worker.join(30)
        if worker.is_alive():
            worker.kill()
            worker.join(5)
        if not stack.started_here:
            drop_keys(stack.redis_url, settings.redis.key_prefix + ":")
    first = phases[str(int(rates[0]))]
    return {
        "rates": phases,
        "stream": stream,
        "p50_ms": first["p50_ms"],
        "p95_ms": first["p95_ms"],
        "p99_ms": first["p99_ms"],
        "at_rate": rates[0],
        "suppression_p99_ms": first["suppression"]["p99_ms"],
        "worker_poll_timeout_s": settings.worker.poll_timeout_s,
        "worker_batch_size": settings.worker.batch_size,
        "worker_fetch_wait_ms": getattr(settings.worker, "fetch_wait_max_ms", fetch_wait_ms),
        "reader_fetch_wait_ms": reader_fetch_wait_ms,
        # the shop's and the worker's producers (5 ms before the setting existed)
        "producer_linger_ms": getattr(settings.kafka, "linger_ms", 5),
        "warmup_events": warmup_events,
        "duration_s": duration_s,
    }
