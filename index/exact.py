"""Exact cosine search in numpy: the reference backend, and the right choice for small catalogues.

A flat matrix of L2-normalised rows; a query batch is one matmul, then ``argpartition`` picks the
top ``k`` without sorting the whole row. Queries are processed in chunks so that the score matrix
stays bounded (``chunk * n`` floats) on large catalogues.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Self

import numpy as np

from engine.errors import IndexBuildError, IndexLoadError
from index.base import (
    SearchResult,
    atomic_directory,
    check_dim,
    check_queries,
    check_vectors,
    read_meta,
    write_meta,
)

BACKEND = "exact"
VECTORS_FILE = "vectors.npy"


class _State(NamedTuple):
    matrix: np.ndarray  # [n, dim] float32, unit rows
    ids: tuple[str, ...]
    positions: dict[str, int]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest scores of each row, best first (ties by lower index)."""
    n = scores.shape[1]
    if k >= n:
        return np.argsort(-scores, axis=1, kind="stable")
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part.sort(axis=1)  # so that the stable sort below breaks ties by position, deterministically
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


class ExactIndex:
    """Brute-force inner product over unit vectors (cosine); results are exact."""

    def __init__(self, dim: int, chunk: int = 1024) -> None:
        self._dim = check_dim(dim)
        self.chunk = max(1, int(chunk))
        self._state = _State(np.zeros((0, self._dim), dtype=np.float32), (), {})

    # The whole contents live in one immutable tuple that build/add replace with a single
    # assignment: a search running in another thread reads either the old or the new tuple, never
    # a matrix from one and ids from the other.

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return len(self._state.ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._state.positions

    def __repr__(self) -> str:
        return f"ExactIndex(dim={self._dim}, n={len(self)})"

    @property
    def ids(self) -> tuple[str, ...]:
        return self._state.ids

    def vectors(self) -> np.ndarray:
        """The indexed unit vectors, in id order (read-only view)."""
        view = self._state.matrix.view()
        view.flags.writeable = False
        return view

    def build(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        matrix, id_list = check_vectors(vectors, ids, self._dim)
        self._state = _State(matrix, tuple(id_list), {item: i for i, item in enumerate(id_list)})

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        matrix, id_list = check_vectors(vectors, ids, self._dim)
        state = self._state
        clash = next((i for i in id_list if i in state.positions), None)
        if clash is not None:
            raise IndexBuildError(f"id {clash!r} is already indexed")
        positions = dict(state.positions)
        positions.update((item, len(state.ids) + i) for i, item in enumerate(id_list))
        self._state = _State(np.concatenate([state.matrix, matrix]), state.ids + tuple(id_list), positions)

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        q = check_queries(queries, k, self._dim)
        state = self._state
        k_eff = min(int(k), len(state.ids))
        scores_out = np.empty((q.shape[0], k_eff), dtype=np.float32)
        ids_out: list[list[str]] = []
        if k_eff == 0:
            return [[] for _ in range(q.shape[0])], scores_out
        for start in range(0, q.shape[0], self.chunk):
            scores = q[start : start + self.chunk] @ state.matrix.T
            best = top_k(scores, k_eff)
            scores_out[start : start + len(best)] = np.take_along_axis(scores, best, axis=1)
            ids = state.ids
            ids_out.extend([ids[j] for j in row] for row in best.tolist())
        return ids_out, scores_out

    def save(self, directory: Path | str) -> Path:
        state = self._state
        with atomic_directory(directory) as tmp:
            np.save(tmp / VECTORS_FILE, state.matrix, allow_pickle=False)
            write_meta(tmp, {"backend": BACKEND, "dim": self._dim, "count": len(state.ids)}, state.ids)
        return Path(directory)

    @classmethod
    def load(cls, directory: Path | str) -> Self:
        directory, meta, ids = read_meta(directory, BACKEND)
        try:
            matrix = np.load(directory / VECTORS_FILE, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise IndexLoadError(f"{str(directory)!r}: cannot read {VECTORS_FILE}: {exc}") from None
        if matrix.dtype != np.float32 or matrix.ndim != 2 or matrix.shape != (len(ids), meta["dim"]):
            raise IndexLoadError(
                f"{str(directory)!r}: {VECTORS_FILE} has shape {matrix.shape} {matrix.dtype}, "
                f"expected ({len(ids)}, {meta['dim']}) float32"
            )
        index = cls(meta["dim"])
        try:
            index.build(matrix, ids)
        except IndexBuildError as exc:
            raise IndexLoadError(f"{str(directory)!r}: {exc}") from None
        return index
