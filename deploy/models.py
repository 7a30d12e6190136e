"""The model lifecycle: train item embeddings, build the index, publish a version, hot-swap it.

Publishing writes the artefact and its index under ``<model dir>/<version>/`` first and only then
points the Redis key ``<prefix>:model:current`` at it, so a worker never sees a half-written
version; workers poll that key between batches and swap their embedding space in one assignment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.errors import ModelError
from engine.events import Event
from index.factory import IndexSettings, load_index
from index.space import IndexedSpace
from models import artifacts
from models.artifacts import ItemEmbeddings
from models.settings import TrainSettings

log = logging.getLogger("streamrec.models")
INDEX_DIR = "index"


class ModelSettings(BaseSettings):
    """Environment: ``STREAMREC_MODEL_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_MODEL_", extra="ignore")

    dir: Path = Field(Path(".streamrec/models"), description="where artefacts and indexes are written")
    refresh_interval_s: float = Field(0.0, ge=0, description="retrain inside `streamrec run` (0 = never)")
    check_interval_s: float = Field(5.0, gt=0, description="how often workers look for a new version")
    align: bool = Field(True, description="rotate a new space onto the previous one (Procrustes)")


@dataclass(frozen=True)
class Published:
    version: str
    path: Path
    items: int
    index_kind: str
    train_s: float
    build_s: float
    aligned_on: int  # shared items the rotation was fitted on (0: not aligned)


def current_key(prefix: str) -> str:
    return f"{prefix}:model:current"


def train(
    events: Sequence[Event],
    settings: TrainSettings,
    progress: Callable[[int, float, float | None], None] | None = None,
) -> ItemEmbeddings:
    if settings.model == "mf":
        from models.mf import fit
    else:
        from models.item2vec import fit
    return fit(events, settings, progress)


def add_cold_items(embeddings: ItemEmbeddings, items: Sequence[Any]) -> tuple[ItemEmbeddings, int]:
    """Give items with metadata but no trained vector a content (TF-IDF) vector in the same space."""
    from models.content import cold_items, content_embeddings

    cold = cold_items(items, embeddings)
    if not cold:
        return embeddings, 0
    content, _ = content_embeddings(items, trained=embeddings)
    pos = content.positions()
    rows = np.stack([content.vectors[pos[item.item_id]] for item in cold])
    metadata = {k: v for k, v in embeddings.metadata.items() if k not in ("version", "content_hash", "count")}
    merged = ItemEmbeddings.create(
        np.concatenate([embeddings.vectors, rows]),
        [*embeddings.item_ids, *(item.item_id for item in cold)],
        **{k: v for k, v in metadata.items() if k != "created_at"},
    )
    merged.metadata["cold_items"] = len(cold)
    return merged, len(cold)


def _align_to(new: ItemEmbeddings, old: ItemEmbeddings) -> tuple[ItemEmbeddings, int]:
    """Rotate ``new`` onto ``old`` on their shared items so that stored user vectors stay meaningful."""
    from models.align import align_embeddings

    return align_embeddings(new, old)


def publish(
    embeddings: ItemEmbeddings,
    model: ModelSettings,
    index_settings: IndexSettings,
    client: redis.Redis,
    prefix: str,
    train_s: float = 0.0,
) -> Published:
    previous = current(client, prefix)
    aligned_on = 0
    if model.align and previous is not None:
        try:
            embeddings, aligned_on = _align_to(embeddings, artifacts.load(previous["path"]))
        except ModelError as exc:
            log.warning("not aligned to the previous version: %s", exc)
    started = time.monotonic()
    path = embeddings.save(model.dir)
    index = index_settings.make(embeddings.dim, len(embeddings))
    index.build(embeddings.vectors, embeddings.item_ids)
    index.save(path / INDEX_DIR)
    build_s = time.monotonic() - started
    record = {"version": embeddings.version, "path": str(path.resolve()), "published_at": time.time()}
    client.set(current_key(prefix), orjson.dumps(record))
    kind = type(index).__name__
    return Published(embeddings.version, path, len(embeddings), kind, train_s, build_s, aligned_on)


def current(client: redis.Redis, prefix: str) -> dict[str, Any] | None:
    raw = client.get(current_key(prefix))
    return orjson.loads(raw) if raw else None


def load_space(path: Path | str) -> IndexedSpace:
    embeddings = artifacts.load(path)
    index = load_index(Path(path) / INDEX_DIR)
    if index.dim != embeddings.dim or len(index) != len(embeddings):
        raise ModelError(f"{path}: index ({len(index)} x {index.dim}) does not match the vectors")
    return IndexedSpace(embeddings.version, embeddings.item_ids, embeddings.vectors, index)


class ModelWatcher:
    """Polls the published version; hands back a freshly loaded space when it changes."""

    def __init__(self, client: redis.Redis, prefix: str, check_interval_s: float = 5.0) -> None:
        self.client = client
        self.prefix = prefix
        self.check_interval_s = check_interval_s
        self.version: str | None = None
        self._next_check = 0.0

    def poll(self, force: bool = False) -> IndexedSpace | None:
        now = time.monotonic()
        if not force and now < self._next_check:
            return None
        self._next_check = now + self.check_interval_s
        try:
            record = current(self.client, self.prefix)
        except redis.RedisError as exc:
            log.warning("cannot read the model version: %s", exc)
            return None
        if record is None or record["version"] == self.version:
            return None
        try:
            space = load_space(record["path"])
        except Exception as exc:  # a broken artefact must not stop serving: keep the old space
            log.error("cannot load model %s from %s: %s", record["version"], record["path"], exc)
            self._next_check = now + max(self.check_interval_s, 30.0)
            return None
        self.version = record["version"]
        log.info("serving model %s (%d items)", space.version, len(space))
        return space


def events_from_topic(kafka: Any) -> list[Event]:
    """Every valid event of the events topic, in timestamp order (invalid ones are the DLQ's)."""
    from consumers.reader import read_topic
    from engine.pipeline import decode_batch

    records = read_topic(kafka, kafka.events_topic)
    events = [event for rows in records.values() for _, event in decode_batch(rows)[0]]
    events.sort(key=lambda e: e.ts)
    return events


def train_and_publish(
    events: Sequence[Event],
    settings: Any,
    client: redis.Redis,
    progress: Callable[[int, float, float | None], None] | None = None,
) -> Published:
    """Train per ``settings.train``, then publish with ``settings.model`` / ``settings.index``."""
    if not events:
        raise ModelError("no events to train on")
    started = time.monotonic()
    embeddings = train(events, settings.train, progress)
    return publish(
        embeddings,
        settings.model,
        settings.index,
        client,
        settings.redis.key_prefix,
        time.monotonic() - started,
    )


class Refresher(threading.Thread):
    """Retrains from the events topic every ``refresh_interval_s`` and publishes the new version.

    Serving never waits for it: workers keep the old space until the new one is published.
    """

    def __init__(self, settings: Any, client: redis.Redis) -> None:
        super().__init__(name="model-refresh", daemon=True)
        self.settings = settings
        self.client = client
        self.stop_event = threading.Event()
        self.published: list[Published] = []

    def run(self) -> None:
        interval = self.settings.model.refresh_interval_s
        while not self.stop_event.wait(interval):
            try:
                events = events_from_topic(self.settings.kafka)
                result = train_and_publish(events, self.settings, self.client)
                self.published.append(result)
                log.info(
                    "refresh: published %s (%d items, %d events)", result.version, result.items, len(events)
                )
            except Exception as exc:  # a failed refresh leaves the current model serving
                log.error("refresh failed: %s", exc)

    def stop(self) -> None:
        self.stop_event.set()
