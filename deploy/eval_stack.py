"""``streamrec eval --through-stack``: the evaluated model served from Kafka and Redis.

:class:`StackSessionModel` offers the evaluation's model interface, but learning means producing
the events to a Kafka topic, from which a real engine worker (the production
:class:`~consumers.worker.Worker`, in a thread) applies them to Redis with its batch Lua write; a
request is answered from Redis by the same :class:`~engine.sessionknn.SessionKNN` scoring the
in-memory evaluation uses (:func:`engine.state.redis_sessions.partial_model`). Test-then-learn
holds: events learned one by one are produced lazily, and a request waits until the worker's
watermarks cover every event produced before it. So the numbers must equal the in-memory run's,
which a stack test checks on a slice.

It runs on the stack of the working directory (``streamrec up``) when one is configured and up,
else on a temporary embedded stack started for the run; topics, consumer group and Redis key prefix
are fresh for each run, and the Redis keys are deleted at the end.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import KafkaException, Producer

from consumers.worker import Worker, WorkerSettings
from deploy.settings import Settings
from engine.config import EngineSettings
from engine.errors import BrokerError, StreamrecError
from engine.evaluation.base import Context
from engine.events import Event, encode_event
from engine.sessionknn import SessionKNNConfig
from engine.state.redis_store import RedisSettings, RedisStore
from producers.admin import ensure_topics, wait_for_broker
from producers.kafka import KafkaSettings, client_config

PARTITIONS = 4


class StackSessionModel:
    """The session model learned through Kafka + worker + Redis and scored from Redis."""

    name = "session-knn"

    def __init__(
        self,
        kafka: KafkaSettings,
        redis: RedisSettings,
        config: SessionKNNConfig,
        preset: str,
        wait_timeout_s: float = 120.0,
    ) -> None:
        self.kafka = kafka
        self.config = config
        self.wait_timeout_s = wait_timeout_s
        engine = EngineSettings(session_model=preset)  # type: ignore[arg-type]
        self.store = RedisStore(redis, kafka.partitions, engine)
        if self.store.session_config != config:
            raise StreamrecError(f"the engine's {preset!r} preset is not the evaluated configuration")
        try:
            self.producer = Producer(client_config(kafka) | {"linger.ms": 5, "enable.idempotence": True})
        except KafkaException as exc:
            raise BrokerError(f"cannot create Kafka producer: {exc}") from exc
        self._produced: dict[int, int] = {}  # partition -> highest acknowledged offset
        self._errors: list[str] = []
        self._pending: list[Event] = []
        # Short polls: a request waits for the worker, so each batch should start at once.
        settings = WorkerSettings(publish_recs=False, poll_timeout_s=0.005, batch_size=2000)
        self.worker = Worker(kafka, self.store, engine, settings)
        self._thread = threading.Thread(target=self._run_worker, name="eval-worker", daemon=True)
        self._worker_error: BaseException | None = None
        self._thread.start()

    def _run_worker(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # reported to the caller on its next wait
            self._worker_error = exc

    # -- the evaluation's model interface ---------------------------------------------------------

    def learn(self, events: Iterable[Event]) -> None:
        self._pending.extend(events)
        self._sync()

    def learn_one(self, event: Event) -> None:
        self._pending.append(event)

    def recommend(self, context: Context, k: int, exclude: Collection[str] = ()) -> list[str]:
        self._sync()
        model = self.store.session_model([context])
        return model.recommend(context, k, exclude) if model is not None else []

    # -- plumbing ---------------------------------------------------------------------------------

    def _delivered(self, error, message) -> None:  # noqa: ANN001 - confluent-kafka callback
        if error is not None:
            self._errors.append(str(error))
            return
        partition, offset = message.partition(), message.offset()
        if offset > self._produced.get(partition, -1):
            self._produced[partition] = offset

    def _sync(self) -> None:
        """Produce the pending events and wait until the worker has applied all of them."""
        if self._pending:
            topic = self.kafka.events_topic
            for n, event in enumerate(self._pending, 1):
                self.producer.produce(
                    topic, key=event.user_id.encode(), value=encode_event(event), on_delivery=self._delivered
                )
                if n % 10_000 == 0:
                    self.producer.poll(0)
            self._pending.clear()
            if self.producer.flush(60) > 0:
                raise BrokerError("events were not acknowledged by the broker within 60 s")
            if self._errors:
                raise BrokerError(f"producing events failed: {self._errors[0]}")
        deadline = time.monotonic() + self.wait_timeout_s
        while True:
            if self._worker_error is not None:
                raise StreamrecError(
                    f"the engine worker stopped: {self._worker_error}"
                ) from self._worker_error
            marks = self.store.watermarks()
            if all(marks.get(p, -1) >= offset for p, offset in self._produced.items()):
                return
            if time.monotonic() > deadline:
                raise StreamrecError(
                    f"the worker did not apply the events within {self.wait_timeout_s:.0f} s "
                    f"(watermarks {marks}, produced {self._produced})"
                )
            time.sleep(0.001)

    def close(self) -> None:
        self.worker.stop()
        self._thread.join(timeout=30)
        prefix = self.store.settings.key_prefix
        client = self.store.client
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        self.store.close()


@contextmanager
def stack_for_eval(settings: Settings) -> Iterator[tuple[KafkaSettings, RedisSettings]]:
    """Kafka and Redis settings with this run's own topics, group and key prefix.

    Uses the configured stack when its broker and Redis answer, else a temporary embedded one.
    """
    suffix = uuid.uuid4().hex[:8]
    with _reachable_stack(settings) as (kafka, redis):
        run_kafka = kafka.model_copy(
            update={
                "events_topic": f"eval-events-{suffix}",
                "dlq_topic": f"eval-events.dlq-{suffix}",
                "recs_topic": f"eval-recs-{suffix}",
                "group_id": f"streamrec-eval-{suffix}",
                "partitions": PARTITIONS,
                "session_timeout_ms": 6000,
            }
        )
        ensure_topics(run_kafka, dict.fromkeys((run_kafka.events_topic, run_kafka.dlq_topic), PARTITIONS))
        yield run_kafka, redis.model_copy(update={"key_prefix": f"sr-eval-{suffix}"})


@contextmanager
def _reachable_stack(settings: Settings) -> Iterator[tuple[KafkaSettings, RedisSettings]]:
    if _is_up(settings):
        yield settings.kafka, settings.redis
        return
    from deploy.stack import start_stack, stop_stack

    with tempfile.TemporaryDirectory(prefix="streamrec-eval-") as workdir:
        try:
            info = start_stack(Path(workdir), partitions=PARTITIONS)
            kafka = settings.kafka.model_copy(update={"bootstrap_servers": info.kafka_bootstrap})
            redis = RedisSettings(url=info.redis_url)
            yield kafka, redis
        finally:
            stop_stack(Path(workdir))


def _is_up(settings: Settings) -> bool:
    try:
        wait_for_broker(settings.kafka, timeout=3)
        store = RedisStore(settings.redis.model_copy(update={"retry_attempts": 0}), 1)
        try:
            return store.ping()
        finally:
            store.close()
    except StreamrecError:
        return False
