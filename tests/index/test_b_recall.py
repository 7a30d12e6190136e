"""ANN quality on real vectors: HNSW recall@10 against exact search, item2vec trained on ML-100k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.loaders import load_events
from index.factory import make_index
from models import item2vec
from models.artifacts import ItemEmbeddings
from models.settings import TrainSettings

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ML_INTER = DATA / "ml-100k" / "ml-100k.inter"


@pytest.fixture(scope="module")
def embeddings() -> ItemEmbeddings:
    if not ML_INTER.is_file():
        pytest.skip(f"ML-100k is absent: {ML_INTER} not found (the shared datasets are not mounted)")
    events = load_events(ML_INTER, "movielens")
    # A quick model: the point is real vectors with real structure (popular hubs, uneven density).
    return item2vec.fit(events, TrainSettings(epochs=3, patience=0, validation_fraction=0, device="cpu"))


def recall_at(k: int, approx: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact, strict=True)]))


@pytest.mark.parametrize(
    ("kind", "compression", "floor"),
    [
        ("hnsw", None, 0.95),  # the bar
        ("hnsw", "sq8", 0.90),
        ("ivf", None, 0.90),
    ],
)
def test_recall_at_10_against_exact(
    embeddings: ItemEmbeddings, kind: str, compression: str | None, floor: float
) -> None:
    exact = make_index("exact", None, embeddings.dim)
    exact.build(embeddings.vectors, embeddings.item_ids)
    ann = make_index(kind, compression, embeddings.dim)
    ann.build(embeddings.vectors, embeddings.item_ids)
    # Every item as a query, plus random directions (user vectors are mixtures, not items).
    rng = np.random.default_rng(0)
    queries = np.concatenate([embeddings.vectors, rng.normal(size=(500, embeddings.dim)).astype(np.float32)])
    truth, _ = exact.search(queries, 10)
    found, _ = ann.search(queries, 10)
    recall = recall_at(10, found, truth)
    assert recall >= floor, f"{kind}{'+' + compression if compression else ''} recall@10 = {recall:.3f}"
