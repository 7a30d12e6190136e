"""The gateway's Kafka side: read every partition of ``recs`` and hand records to the event loop.

No consumer group: each gateway replica must see every user's records (a browser may be connected
to any replica), so the consumer assigns itself all partitions and commits nothing. It starts at
the end of each partition (or at the beginning, to warm the cache from the compacted topic).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from engine.errors import BrokerError
from producers.kafka import KafkaSettings, client_config

log = logging.getLogger("streamrec.gateway.feed")

Handler = Callable[[bytes | None, bytes | None], None]


class RecsFeed:
    """A daemon thread that calls ``handler(key, value)`` for each record (from that thread)."""

    def __init__(self, kafka: KafkaSettings, handler: Handler, start: str = "latest") -> None:
        self.kafka = kafka
        self.topic = kafka.recs_topic
        self.handler = handler
        self.start_at = start
        self.ready = threading.Event()  # set once partitions are assigned at known offsets
        self.error: str | None = None
        self.records = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="recs-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_ready(self, timeout: float) -> bool:
        return self.ready.wait(timeout)

    def _consumer(self) -> Consumer:
        config = client_config(self.kafka) | {
            # Required by the client even without subscribe(); unique, and never committed.
            "group.id": f"streamrec-gateway-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": 100,  # a browser is waiting: don't let the broker sit on a record
            "max.partition.fetch.bytes": self.kafka.max_message_bytes,
        }
        try:
            return Consumer(config)
        except KafkaException as exc:
            raise BrokerError(f"cannot create the recs consumer: {exc}") from exc

    def _assign(self, consumer: Consumer) -> None:
        metadata = consumer.list_topics(self.topic, timeout=10)
        info = metadata.topics.get(self.topic)
        if info is None or info.error is not None or not info.partitions:
            raise BrokerError(f"topic {self.topic!r} not found: {info.error if info else 'no metadata'}")
        assignment = []
        for p in sorted(info.partitions):
            if self.start_at == "earliest":
                offset = OFFSET_BEGINNING
            else:
                # An explicit end offset, not OFFSET_END: a record produced after ready is set
                # is then certain to be read.
                _low, offset = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
            assignment.append(TopicPartition(self.topic, p, offset))
        consumer.assign(assignment)
        log.info("recs feed: %d partitions of %r from %s", len(assignment), self.topic, self.start_at)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = self._consumer()
                self._assign(consumer)
                self.error = None
                self.ready.set()
                backoff = 0.5
                self._consume(consumer)
            except (KafkaException, BrokerError) as exc:
                self.error = str(exc)
                self.ready.clear()
                log.warning("recs feed: %s; retrying in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                if consumer is not None:
                    consumer.close()

    def _consume(self, consumer: Consumer) -> None:
        while not self._stop.is_set():
            for msg in consumer.consume(500, 0.25):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("recs feed: %s", err)
                        if err.fatal():
                            raise KafkaException(err)
                    continue
                self.records += 1
                self.handler(msg.key(), msg.value())
