"""An ANN adapter that wraps any trained model: item vectors + a versioned index = an embedding space.

It is what the engine sees (:class:`engine.embeddings.EmbeddingSpace`): vectors of known items
and nearest-item search, answered by the main index plus the delta of items that appeared since
the last refresh.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from engine.embeddings import normalise
from index.base import VectorIndex
from index.versions import VersionedIndex


class IndexedSpace:
    def __init__(self, version: str, item_ids: list[str], vectors: np.ndarray, index: VectorIndex) -> None:
        self.version = version
        self.dim = int(vectors.shape[1])
        self._vectors = normalise(vectors)
        self._pos = {item: i for i, item in enumerate(item_ids)}
        self.index = VersionedIndex(version, index)

    def __len__(self) -> int:
        return len(self._pos) + len(self.index.current().delta)

    def __contains__(self, item: object) -> bool:
        return item in self._pos or item in self.index.current().delta.ids

    def vectors(self, items: Iterable[str]) -> dict[str, np.ndarray]:
        delta = self.index.current().delta
        out: dict[str, np.ndarray] = {}
        delta_pos: dict[str, int] | None = None
        for item in items:
            row = self._pos.get(item)
            if row is not None:
                out[item] = self._vectors[row]
            elif len(delta):
                if delta_pos is None:
                    delta_pos = {d: i for i, d in enumerate(delta.ids)}
                j = delta_pos.get(item)
                if j is not None:
                    out[item] = delta.vectors[j]
        return out

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        result = self.index.search(normalise(queries), k)
        return result.ids, result.scores

    def add_items(self, vectors: dict[str, np.ndarray]) -> int:
        """Give new items a place in the space until the next refresh (the delta index)."""
        fresh = {item: v for item, v in vectors.items() if item not in self._pos}
        if not fresh:
            return 0
        return self.index.add_delta(normalise(np.stack(list(fresh.values()))), list(fresh))
