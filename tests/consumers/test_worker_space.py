"""The worker's embedding-space handling, on the in-memory store (no servers needed)."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.worker import Worker
from engine.config import EngineSettings
from engine.events import Event, encode_event
from engine.pipeline import RawRecord
from engine.state.memory import MemoryStore
from index.exact import ExactIndex
from index.space import IndexedSpace
from producers.kafka import KafkaSettings


def _space(version: str, vectors: dict[str, list[float]]) -> IndexedSpace:
    ids = list(vectors)
    matrix = np.array([vectors[i] for i in ids], dtype=np.float32)
    index = ExactIndex(matrix.shape[1])
    index.build(matrix / np.linalg.norm(matrix, axis=1, keepdims=True), ids)
    return IndexedSpace(version, ids, matrix, index)


# auto (the default, with the session model on): cold items' vectors come from the rule rows;
# on: from the co-occurrence rows.
@pytest.mark.parametrize("rows", ["auto", "on"])
def test_new_items_join_the_delta_and_a_published_space_is_swapped_in(rows: str) -> None:
    engine = EngineSettings(cooccurrence_rows=rows)
    store = MemoryStore(1, engine)
    published: list[IndexedSpace] = [_space("v1", {"a": [1, 0, 0], "b": [0, 1, 0], "z": [0, 0, 1]})]
    worker = Worker(
        KafkaSettings(), store, engine, space_source=lambda: published.pop() if published else None
    )

    worker._refresh_space()
    space = worker.processor.space
    assert space is not None and space.version == "v1" and worker.recommender.space is space
    assert worker.versions["index_version"] == "v1"

    # "new" is only ever seen right after "a": it gets a vector next to a's, and is searchable.
    events = [Event(f"e{i}", 1e9 + i, f"u{i}", item, "view") for i, item in enumerate(["a", "new"] * 3)]
    events = [Event(e.event_id, e.ts, "u", e.item_id, e.type) for e in events]
    records = [RawRecord(0, i, encode_event(e)) for i, e in enumerate(events)]
    outcome = worker.processor.process(0, records)
    worker._extend_space(outcome.events)
    vector = space.vectors(["new"])["new"]
    assert float(vector @ space.vectors(["a"])["a"]) > 0.99
    ids, _ = space.search(np.array([[1.0, 0.0, 0.0]], dtype=np.float32), 2)
    assert set(ids[0]) == {"a", "new"}

    worker._refresh_space()  # nothing new published: the space stays
    assert worker.processor.space is space and worker.stats.model_swaps == 1
