"""ANN quality on real vectors: item2vec trained on MovieLens-100k, HNSW and IVF against exact."""

from __future__ import annotations

import numpy as np
import pytest

from index.factory import make_index
from tests.models.ml100k import ml100k_item2vec


def recall_at(k: int, truth: list[list[str]], found: list[list[str]]) -> float:
    return float(np.mean([len(set(t) & set(f)) / k for t, f in zip(truth, found, strict=True)]))


@pytest.fixture(scope="module")
def real():
    embeddings = ml100k_item2vec()
    exact = make_index("exact", None, embeddings.dim)
    exact.build(embeddings.vectors, embeddings.item_ids)
    truth, _ = exact.search(embeddings.vectors, 10)
    return embeddings, truth


@pytest.mark.parametrize(
    ("kind", "compression", "params", "minimum"),
    [
        ("hnsw", None, {}, 0.95),
        ("hnsw", "sq8", {}, 0.90),
        ("ivf", None, {"nprobe": 16}, 0.90),
    ],
)
def test_recall_at_10_against_exact(real, kind, compression, params, minimum) -> None:
    embeddings, truth = real
    index = make_index(kind, compression, embeddings.dim, **params)
    index.build(embeddings.vectors, embeddings.item_ids)
    found, _ = index.search(embeddings.vectors, 10)
    recall = recall_at(10, truth, found)
    assert recall >= minimum, f"{kind}+{compression}: recall@10 {recall:.3f} < {minimum}"
