"""The embedded broker alone: one produce -> consume hop at a fixed rate, as its log grows.

No engine runs: a producer with the project's settings offers ``rate`` small records a second to
a fresh topic and one assigned consumer reads them, for ``phases`` back-to-back phases of
``phase_s`` seconds. Each phase reports the hop's p50/p99 and the broker's CPU. Every phase adds
the records (and the broker's stored batches) of the one before, so the table shows how the
broker's cost per fetch grows with what it holds, apart from anything streamrec does.

Run: ``python -m deploy.bench.broker_hop [--rate 2000] [--phases 4] [--fetch-wait-ms 20]``
(starts its own embedded stack in a temporary directory and stops it by PID).
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from deploy.bench.common import percentile, process_cpu_s, scratch_stack
from producers.admin import ensure_topics
from producers.kafka import KafkaSettings, client_config
from producers.recs import make_producer


def _read_hops(consumer: Consumer, hops: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        first = consumer.poll(0.05)  # as soon as one record is there
        if first is None:
            continue
        now = time.time()
        for msg in [first, *consumer.consume(1000, 0)]:
            if msg.error() is None:
                hops.append(now - float(msg.value()[:20]))


def run_broker_hop(
    kafka: KafkaSettings, broker_pid: int, rate: float, phases: int, phase_s: float, fetch_wait_ms: int
) -> list[dict[str, Any]]:
    topic = f"bench-hop-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka, {topic: kafka.partitions})
    producer = make_producer(kafka)
    consumer = Consumer(
        client_config(kafka) | {"group.id": f"{topic}-reader", "fetch.wait.max.ms": fetch_wait_ms}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(kafka.partitions)])
    # The producer's first records wait for its id and connections: not the broker's hop.
    producer.produce(topic, b"%20.6f" % time.time())
    producer.flush(30)
    hops: list[float] = []
    stop = threading.Event()
    reader = threading.Thread(target=_read_hops, args=(consumer, hops, stop), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while not hops and time.monotonic() < deadline:  # the reader is connected and fetching
        time.sleep(0.05)
    results: list[dict[str, Any]] = []
    sent = 1
    padding = b"x" * 80  # ~100-byte records, like an event
    try:
        for phase in range(phases):
            hops.clear()
            cpu_before, started, n = process_cpu_s(broker_pid), time.monotonic(), 0
            while time.monotonic() - started < phase_s:
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                producer.produce(topic, (b"%20.6f" % time.time()) + padding, key=str(n).encode())
                producer.poll(0)
                n += 1
            producer.flush(30)
            time.sleep(0.5)  # the last records' hop
            elapsed = time.monotonic() - started
            sent += n
            cpu_after = process_cpu_s(broker_pid)
            got = [1000.0 * h for h in hops]
            results.append(
                {
                    "phase": phase,
                    "records": n,
                    "records_in_topic": sent,
                    "samples": len(got),
                    "p50_ms": percentile(got, 50),
                    "p99_ms": percentile(got, 99),
                    "broker_cpu_pct": (
                        100.0 * (cpu_after - cpu_before) / elapsed
                        if cpu_before is not None and cpu_after is not None
                        else None
                    ),
                }
            )
    finally:
        stop.set()
        reader.join(5)
        consumer.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--phases", type=int, default=4)
    parser.add_argument("--phase-s", type=float, default=8.0)
    parser.add_argument("--fetch-wait-ms", type=int, default=20)
    args = parser.parse_args()
    with scratch_stack(partitions=4, prefix="streamrec-hop-") as info:
        kafka = KafkaSettings(bootstrap_servers=info.kafka_bootstrap, partitions=4)
        rows = run_broker_hop(
            kafka, info.broker_pid, args.rate, args.phases, args.phase_s, args.fetch_wait_ms
        )
    print(f"{'phase':>5} {'records in topic':>17} {'p50 ms':>7} {'p99 ms':>7} {'broker % of a core':>19}")
    for row in rows:
        cpu = row["broker_cpu_pct"]
        print(
            f"{row['phase']:>5} {row['records_in_topic']:>17,} {row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f} "
            f"{'n/a' if cpu is None else f'{cpu:.0f}':>19}"
        )


if __name__ == "__main__":
    main()
