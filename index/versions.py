"""Hot swap: serve one index version while the next is built, switch without failing a query.

A :class:`VersionedIndex` holds one immutable :class:`IndexSnapshot` (version, main index, delta).
Readers take the current snapshot (one attribute read, atomic in CPython) and search it start to
finish, so a query is answered by exactly one version even if a swap happens meanwhile; the old
index stays alive as long as a reader still holds its snapshot. Writers (``swap``, ``add_delta``)
build a new snapshot and publish it with a single assignment under a lock, so two writers never
lose each other's update.

Items that appear between refreshes (a new product with a content vector, say) go into the
*delta*: a small exact index searched together with the main one, results merged by score. The
delta is copy-on-write: ``add_delta`` creates a new delta, it never mutates one a reader may be
scanning. It is emptied by the next ``swap`` (whose index was built from newer data), unless the
caller asks to carry it over.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from engine.errors import IndexBuildError
from index.base import SearchResult, VectorIndex, check_queries, check_vectors
from index.exact import top_k


@dataclass(frozen=True, slots=True)
class Delta:
    """Items added since the main index was built: unit vectors [n, dim] and their ids."""

    ids: tuple[str, ...] = ()
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    positions: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # built once per (immutable) delta, so membership and lookups are O(1)
        object.__setattr__(self, "positions", {item: i for i, item in enumerate(self.ids)})

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.positions

    def vector(self, item_id: str) -> np.ndarray | None:
        """The unit vector of a delta item, or None."""
        row = self.positions.get(item_id)
        return None if row is None else self.vectors[row]

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """Exact search of already-normalised ``queries``."""
        k_eff = min(k, len(self.ids))
        if k_eff == 0:
            return [[] for _ in range(queries.shape[0])], np.empty((queries.shape[0], 0), dtype=np.float32)
        scores = queries @ self.vectors.T
        best = top_k(scores, k_eff)
        return [[self.ids[j] for j in row] for row in best.tolist()], np.take_along_axis(scores, best, axis=1)


class VersionedResult(NamedTuple):
    """Search results and the version of the snapshot that produced them."""

    version: str
    ids: list[list[str]]
    scores: np.ndarray


@dataclass(frozen=True, slots=True)
class IndexSnapshot:
    """One consistent view: a version, its main index and the delta added on top of it."""

    version: str
    index: VectorIndex
    delta: Delta

    def __len__(self) -> int:
        return len(self.index) + len(self.delta)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.index or item_id in self.delta

    def search(self, queries: np.ndarray, k: int) -> VersionedResult:
        """Search main index and delta, merge by score; ``k`` best per query, best first."""
        main_ids, main_scores = self.index.search(queries, k)
        if not len(self.delta):
            return VersionedResult(self.version, main_ids, main_scores)
        q = check_queries(queries, k, self.index.dim)
        delta_ids, delta_scores = self.delta.search(q, k)
        k_eff = min(k, len(self))
        ids_out: list[list[str]] = []
        scores_out = np.full((q.shape[0], k_eff), -np.inf, dtype=np.float32)
        for row, (m_ids, d_ids) in enumerate(zip(main_ids, delta_ids, strict=True)):
            pairs = list(zip(m_ids, main_scores[row, : len(m_ids)].tolist(), strict=True))
            pairs += zip(d_ids, delta_scores[row, : len(d_ids)].tolist(), strict=True)
            pairs.sort(key=lambda pair: -pair[1])  # stable: on equal scores the main index wins
            merged = pairs[:k_eff]
            ids_out.append([item for item, _ in merged])
            scores_out[row, : len(merged)] = [score for _, score in merged]
        return VersionedResult(self.version, ids_out, scores_out)


class VersionedIndex:
    """The serving index: an atomically replaceable snapshot plus a delta for new items."""

    def __init__(self, version: str, index: VectorIndex, max_delta: int = 100_000) -> None:
        self.max_delta = max_delta
        self._lock = threading.Lock()
        self._snapshot = IndexSnapshot(version, index, self._empty_delta(index.dim))

    def __getstate__(self) -> dict:
        # A worker sends its space to its scoring process; the lock stays behind (a fresh one there).
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @staticmethod
    def _empty_delta(dim: int) -> Delta:
        return Delta((), np.zeros((0, dim), dtype=np.float32))

    def current(self) -> IndexSnapshot:
        """The snapshot to use for one request (never changes under the caller)."""
        return self._snapshot

    @property
    def version(self) -> str:
        return self._snapshot.version

    def search(self, queries: np.ndarray, k: int) -> VersionedResult:
        """Search the current snapshot; the result says which version answered."""
        return self.current().search(queries, k)

    def swap(self, version: str, index: VectorIndex, carry_delta: bool = False) -> IndexSnapshot:
        """Serve ``index`` as ``version`` from now on; returns the snapshot it replaced.

        By default the delta is dropped: the new index was trained on newer data and the delta's
        vectors live in the old space. With ``carry_delta`` (for an index aligned to the old
        space, see ``models.align``) delta items that the new index lacks are kept.
        """
        if not isinstance(version, str) or not version:
            raise IndexBuildError(f"version must be a non-empty string, got {version!r}")
        with self._lock:
            old = self._snapshot
            delta = self._empty_delta(index.dim)
            if carry_delta and len(old.delta):
                if index.dim != old.index.dim:
                    raise IndexBuildError(
                        f"cannot carry a {old.index.dim}-d delta into a {index.dim}-d index"
                    )
                keep = [i for i, item in enumerate(old.delta.ids) if item not in index]
                delta = Delta(tuple(old.delta.ids[i] for i in keep), old.delta.vectors[keep])
            self._snapshot = IndexSnapshot(version, index, delta)
        return old

    def add_delta(self, vectors: np.ndarray, ids: Sequence[str]) -> int:
        """Make items searchable before the next refresh; returns how many were added.

        Ids already in the main index are skipped (its trained vector is the better one); ids
        already in the delta get the new vector.
        """
        with self._lock:
            snap = self._snapshot
            matrix, id_list = check_vectors(vectors, ids, snap.index.dim)
            fresh = [i for i, item in enumerate(id_list) if item not in snap.index]
            if not fresh:
                return 0
            new_ids = {id_list[i] for i in fresh}
            keep = [i for i, item in enumerate(snap.delta.ids) if item not in new_ids]  # replaced ones go
            total = len(keep) + len(fresh)
            if total > self.max_delta:
                raise IndexBuildError(
                    f"the delta would hold {total} items (limit {self.max_delta}): time to refresh the index"
                )
            delta = Delta(
                tuple(snap.delta.ids[i] for i in keep) + tuple(id_list[i] for i in fresh),
                np.concatenate([snap.delta.vectors[keep], matrix[fresh]]),
            )
            self._snapshot = IndexSnapshot(snap.version, snap.index, delta)
            return len(fresh)
