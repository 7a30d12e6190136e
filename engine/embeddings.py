"""User vectors in an item-embedding space: the pure math, and the protocol the index side offers.

A user's vector is a decayed, event-type weighted sum of the vectors of the items they touched:
``u <- decay * u + weight(type) * v(item)``. It is updated per event inside the batch delta and
stored with the version of the space it lives in; when the space changes (a refresh), it is
rebuilt from the user's recent history in the new space. An item the space does not hold yet gets
the weighted mean of its store neighbours' vectors (:func:`vectors_for_new_items`).

>>> import numpy as np
>>> space = StaticSpace("v1", {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])})
>>> vector_from_history(["b", "a"], space, decay=0.5).round(3).tolist()  # most recent first
[0.5, 1.0]
>>> space.search(np.array([[1.0, 0.1]], dtype=np.float32), 1)[0]
[['a']]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from engine.state.base import StateStore


class EmbeddingSpace(Protocol):
    """Item vectors of one model version, and nearest-item search over them."""

    version: str
    dim: int

    def vectors(self, items: Iterable[str]) -> dict[str, np.ndarray]:
        """Unit-length float32 vectors of the known items among ``items``."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """The ``k`` nearest items (cosine) of each query row, best first, with their scores."""
        ...


def normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def vector_from_history(history: Sequence[str], space: EmbeddingSpace, decay: float) -> np.ndarray | None:
    """Rebuild a user vector from recent items (most recent first), each counting once."""
    known = space.vectors(history)
    vector: np.ndarray | None = None
    factor = 1.0
    for item in history:
        v = known.get(item)
        if v is not None:
            vector = factor * v if vector is None else vector + factor * v
        factor *= decay
    return None if vector is None else vector.astype(np.float32)


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(raw: bytes, dim: int | None = None) -> np.ndarray | None:
    """Decode a stored vector; None for anything malformed (it is then rebuilt from history)."""
    if not raw or len(raw) % 4:
        return None
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if dim is not None and vector.shape[0] != dim:
        return None
    return vector if np.all(np.isfinite(vector)) else None


class StaticSpace:
    """An exact in-memory space over a dict of vectors (for tests and small catalogues)."""

    def __init__(self, version: str, vectors: Mapping[str, np.ndarray]) -> None:
        self.version = version
        self._ids = list(vectors)
        self._matrix = normalise(np.stack([vectors[i] for i in self._ids])) if self._ids else np.zeros((0, 0))
        self.dim = int(self._matrix.shape[1]) if self._ids else 0
        self._pos = {item: i for i, item in enumerate(self._ids)}

    def vectors(self, items: Iterable[str]) -> dict[str, np.ndarray]:
        return {item: self._matrix[self._pos[item]] for item in items if item in self._pos}

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        scores = normalise(queries) @ self._matrix.T
        k = min(k, len(self._ids))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[self._ids[j] for j in row] for row in order], np.take_along_axis(scores, order, axis=1)


def vectors_for_new_items(space: EmbeddingSpace, store: StateStore, items: set[str]) -> dict[str, np.ndarray]:
    """A vector for each of ``items`` that ``space`` lacks: the weighted mean of the vectors of
    its neighbours in ``store`` (:meth:`~engine.state.base.StateStore.neighbours`, up to 20), for
    those that have any with a vector."""
    new = items - set(space.vectors(items))
    if not new:
        return {}
    neighbours = store.neighbours(new, 20)
    known = space.vectors({n for row in neighbours.values() for n in row})
    vectors = {}
    for item, row in neighbours.items():
        rows = [(known[n], w) for n, w in row.items() if n in known]
        if rows:
            vectors[item] = sum(w * v for v, w in rows) / sum(w for _, w in rows)
    return vectors
