"""Publishing: fresh recommendations to the ``recs`` topic, bad records to the dead-letter topic."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

import orjson
from confluent_kafka import KafkaException, Producer

from engine.errors import BrokerError
from engine.pipeline import RawRecord
from producers.kafka import KafkaSettings, client_config

Ranked = list[tuple[str, float]]


def make_producer(settings: KafkaSettings, **overrides: Any) -> Producer:
    """An idempotent producer: retries never duplicate or reorder records within a partition."""
    config = client_config(settings) | {
        "enable.idempotence": True,
        "acks": "all",
        # Each poll's recs are flushed at once anyway; the linger shapes the gateway's events. At
        # 5 ms the embedded broker spent ~70% of a core at 2,000 events/s, at 10 ms ~50% (its cost
        # grows with the batches a topic holds), for ~3 ms more at p50 (docs/performance.md).
        "linger.ms": settings.linger_ms,
        # Java clients hash keys with murmur2; matching them keeps a user's events in one partition
        # whichever client produced them.
        "partitioner": "murmur2_random",
    }
    config.update(overrides)
    try:
        return Producer(config)
    except KafkaException as exc:
        raise BrokerError(f"cannot create Kafka producer: {exc}") from exc


def flush(producer: Producer, timeout_s: float = 30.0) -> None:
    remaining = producer.flush(timeout_s)
    if remaining:
        raise BrokerError(f"{remaining} records not delivered within {timeout_s:.0f} s")


def recs_digest(items: list[str]) -> str:
    return hashlib.blake2b("\x1f".join(items).encode(), digest_size=8).hexdigest()


def recs_record(
    user: str,
    ranked: Ranked,
    source: tuple[str, int, int],
    versions: Mapping[str, str | None],
    received_at: float,
) -> dict[str, Any]:
    topic, partition, offset = source
    return {
        "user_id": user,
        "items": [item for item, _ in ranked],
        "scores": [round(score, 6) for _, score in ranked],
        "generated_at": time.time(),
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "model_version": versions.get("model_version"),
        "index_version": versions.get("index_version"),
        # with generated_at, splits a list's age into the trip to the worker and the worker's own
        # time (state write and scoring)
        "received_at": received_at,
    }


class RecsPublisher:
    """Produces a user's recommendations only when their list of items changed."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self._errors: list[str] = []

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def publish(
        self,
        recs: Mapping[str, Ranked],
        previous: Mapping[str, str | None],
        source: tuple[str, int, int],
        versions: Mapping[str, str | None],
        received_at: float,
    ) -> dict[str, str]:
        """Queue the changed lists; returns user -> new digest for those (store after flush).
        ``received_at``: when the worker received the source records (unix seconds)."""
        changed: dict[str, str] = {}
        for user, ranked in recs.items():
            digest = recs_digest([item for item, _ in ranked])
            if previous.get(user) == digest:
                continue
            value = orjson.dumps(recs_record(user, ranked, source, versions, received_at))
            self._produce(key=user.encode(), value=value)
            changed[user] = digest
        return changed

    def _produce(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        while True:
            try:
                self.producer.produce(
                    self.topic, key=key, value=value, headers=headers, on_delivery=self._on_delivery
                )
                return
            except BufferError:
                # Local queue full: let librdkafka deliver some, then try again (backpressure).
                self.producer.poll(0.1)

    def check(self) -> None:
        """Raise if any record queued so far failed delivery (call after flush)."""
        if self._errors:
            errors, self._errors = self._errors, []
            raise BrokerError(f"{len(errors)} records failed delivery to {self.topic}: {errors[0]}")


class DeadLetterPublisher(RecsPublisher):
    """Copies a bad record to the DLQ with the reason and its source coordinates in headers.

    The key is the source coordinates, so a record dead-lettered twice (a crash between the DLQ
    flush and the state write) is recognisable downstream.
    """

    def dead_letter(self, source_topic: str, record: RawRecord, reason: str) -> None:
        headers = [
            ("reason", reason.encode()),
            ("source_topic", source_topic.encode()),
            ("source_partition", str(record.partition).encode()),
            ("source_offset", str(record.offset).encode()),
        ]
        if record.key is not None:
            headers.append(("source_key", record.key))
        key = f"{source_topic}:{record.partition}:{record.offset}".encode()
        self._produce(key=key, value=record.value or b"", headers=headers)
