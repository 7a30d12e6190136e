"""Helpers shared by the gateway tests: in-memory seams and a Server-Sent Events reader."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import ClientResponse

from engine.errors import BrokerError, StateStoreError
from engine.events import Event


class FakeReader:
    """Recommends ``lists[user]`` (or nothing); ``fail`` makes every read a state-store error."""

    def __init__(self, lists: dict[str, list[str]] | None = None) -> None:
        self.lists = lists or {}
        self.fail = False
        self.calls: list[tuple[str, int]] = []

    def recommend(self, user: str, k: int) -> dict[str, Any]:
        self.calls.append((user, k))
        if self.fail:
            raise StateStoreError("Redis is down")
        items = self.lists.get(user, [])[:k]
        return {
            "user_id": user,
            "items": items,
            "scores": [1.0 / (n + 1) for n in range(len(items))],
            "generated_at": 1.0,
            "model_version": "test",
            "index_version": None,
        }

    def ping(self) -> bool:
        return not self.fail

    def close(self) -> None:
        pass


class FakeSink:
    def __init__(self) -> None:
        self.sent: list[Event] = []
        self.fail = False

    async def send(self, events: Sequence[Event]) -> None:
        if self.fail:
            raise BrokerError("broker unreachable")
        self.sent.extend(events)

    def close(self) -> None:
        pass


def recs_value(user: str, items: list[str], offset: int = 0) -> bytes:
    return orjson.dumps(
        {
            "user_id": user,
            "items": items,
            "scores": [float(len(items) - n) for n in range(len(items))],
            "generated_at": 1_700_000_000.0,
            "source": {"topic": "events", "partition": 0, "offset": offset},
            "model_version": "cooccurrence-v1",
            "index_version": None,
        }
    )


async def next_sse(response: ClientResponse, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
    """The next (event, data) of an SSE stream; comments and retry hints are skipped."""

    async def read() -> tuple[str, dict[str, Any]]:
        kind, data = "message", None
        while True:
            line = (await response.content.readline()).decode()
            if line == "":
                raise ConnectionError("stream ended")
            line = line.rstrip("\n")
            if not line:
                if data is not None:
                    return kind, orjson.loads(data)
                continue
            field, _, value = line.partition(":")
            if field == "event":
                kind = value.strip()
            elif field == "data":
                data = value.strip()

    return await asyncio.wait_for(read(), timeout)


# -- stack helpers ---------------------------------------------------------------------------------


def co_views(
    clusters: Sequence[Sequence[str]], shoppers: int = 12, start_ts: float = 1_700_000_000.0
) -> list[Event]:
    """Other shoppers viewing each cluster's items in order: the co-occurrence the engine learns."""
    from engine.events import make_event_id

    events, ts = [], start_ts
    for c, cluster in enumerate(clusters):
        for s in range(shoppers):
            user = f"seed-{c}-{s}"
            for item in cluster:
                ts += 1.0
                events.append(Event(make_event_id("seed", user, item), ts, user, item, "view", f"{user}-s"))
    return events


def stack_settings(kafka: Any, redis_url: str, model_dir: Any, **engine: Any) -> Any:
    """Settings for the gateway's Kafka/Redis backends over this test's topics and Redis."""
    from consumers.worker import WorkerSettings
    from deploy.models import ModelSettings
    from deploy.settings import Settings
    from engine.config import EngineSettings
    from engine.state.redis_store import RedisSettings
    from index.factory import IndexSettings
    from models.settings import TrainSettings

    return Settings(
        kafka=kafka,
        redis=RedisSettings(url=redis_url),
        engine=EngineSettings(**engine),
        worker=WorkerSettings(batch_size=500, poll_timeout_s=0.1),
        model=ModelSettings(dir=model_dir),
        train=TrainSettings(),
        index=IndexSettings(),
    )


class WorkerThread:
    """An engine worker consuming in a background thread until the context exits."""

    def __init__(self, settings: Any) -> None:
        import threading

        from consumers.worker import Worker
        from deploy.runner import make_store

        self.store = make_store(settings)
        self.worker = Worker(settings.kafka, self.store, settings.engine, settings.worker)
        self.thread = threading.Thread(target=self._run, name="test-worker", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.worker.run(max_seconds=600)
        except BaseException as exc:  # surfaced by the test through .error
            self.error = exc

    def wait_applied(self, n: int, timeout: float = 60.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while self.worker.stats.applied < n:
            if self.error is not None:
                raise self.error
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker applied {self.worker.stats.applied} of {n} events")
            time.sleep(0.05)

    def __enter__(self) -> WorkerThread:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.worker.stop()
        self.thread.join(30)
        self.store.close()
