"""FAISS backend: HNSW by default, IVF for large catalogues, optional SQ8 or PQ compression.

All variants use the inner-product metric on L2-normalised vectors, i.e. cosine. FAISS labels
are positions (0..n-1, in insertion order), so the string ids are a plain list next to the
index; nothing needs FAISS's own id maps.

Sizing rules (applied in :meth:`FaissIndex.build`, where ``n`` is known):

- IVF ``nlist`` defaults to ``4 * sqrt(n)`` but at most ``n / 39``: FAISS's k-means wants about
  39 training points per centroid, and fewer gives poor lists (and a warning on stderr).
- PQ uses ``pq_m`` sub-quantisers (a divisor of ``dim``; default ``dim / 4``, i.e. 4 dimensions
  per byte) and at most 8 bits each, fewer when ``n`` is too small to train 256 centroids.

Search parameters (``efSearch``, ``nprobe``) are passed per call, not set on the shared index,
so concurrent searches with different ``k`` never race on index state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Self

import faiss
import numpy as np

from engine.errors import IndexBuildError, IndexLoadError, VectorIndexError
from index.base import (
    SearchResult,
    atomic_directory,
    check_dim,
    check_queries,
    check_vectors,
    read_meta,
    write_meta,
)

BACKEND = "faiss"
INDEX_FILE = "index.faiss"
Kind = Literal["hnsw", "ivf"]
Compression = Literal["sq8", "pq"] | None

_KINDS = ("hnsw", "ivf")
_COMPRESSIONS = (None, "sq8", "pq")
_MIN_POINTS_PER_CENTROID = 39  # FAISS's own rule of thumb for k-means training


def _divisor_at_most(dim: int, wanted: int) -> int:
    """The largest divisor of ``dim`` that is <= ``wanted`` (PQ needs m | dim)."""
    return max(m for m in range(1, max(1, min(wanted, dim)) + 1) if dim % m == 0)


class FaissIndex:
    """A FAISS ANN index over string ids; see the module docstring for the variants."""

    def __init__(
        self,
        dim: int,
        kind: Kind = "hnsw",
        compression: Compression = None,
        *,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        nlist: int | None = None,
        nprobe: int = 16,
        pq_m: int | None = None,
        pq_nbits: int = 8,
    ) -> None:
        if kind not in _KINDS:
            raise IndexBuildError(f"unknown FAISS index kind {kind!r}; expected one of {', '.join(_KINDS)}")
        if compression not in _COMPRESSIONS:
            raise IndexBuildError(f"unknown compression {compression!r}; expected none, 'sq8' or 'pq'")
        self._dim = check_dim(dim)
        self.kind: Kind = kind
        self.compression: Compression = compression
        for name, value in (
            ("hnsw_m", hnsw_m),
            ("ef_construction", ef_construction),
            ("ef_search", ef_search),
            ("nprobe", nprobe),
            ("pq_nbits", pq_nbits),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise IndexBuildError(f"{name} must be a positive integer, got {value!r}")
        if nlist is not None and (not isinstance(nlist, int) or nlist < 1):
            raise IndexBuildError(f"nlist must be a positive integer or None, got {nlist!r}")
        if pq_m is not None and (not isinstance(pq_m, int) or pq_m < 1 or self._dim % pq_m):
            raise IndexBuildError(f"pq_m must divide the dimension {self._dim}, got {pq_m!r}")
        if pq_nbits > 16:
            raise IndexBuildError(f"pq_nbits must be at most 16, got {pq_nbits}")
        self.hnsw_m, self.ef_construction, self.ef_search = hnsw_m, ef_construction, ef_search
        self.nlist, self.nprobe = nlist, nprobe
        self.pq_m = pq_m if pq_m is not None else _divisor_at_most(self._dim, max(1, self._dim // 4))
        self.pq_nbits = pq_nbits
        self._index: Any = None  # a faiss.Index once built or loaded
        self._ids: list[str] = []
        self._positions: dict[str, int] = {}

    # --- Protocol ------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._positions

    def __repr__(self) -> str:
        return f"FaissIndex(dim={self._dim}, kind={self.kind!r}, compression={self.compression!r}, n={len(self)})"

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._ids)

    def build(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        matrix, id_list = check_vectors(vectors, ids, self._dim)
        index = self._new_index(len(id_list))
        if not index.is_trained:
            if len(id_list) == 0:
                raise IndexBuildError(f"a {self.describe()} index must be trained: build it with vectors")
            index.train(matrix)
        if len(id_list):
            index.add(matrix)
        self._index, self._ids = index, id_list
        self._positions = {item: i for i, item in enumerate(id_list)}

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        matrix, id_list = check_vectors(vectors, ids, self._dim)
        clash = next((i for i in id_list if i in self._positions), None)
        if clash is not None:
            raise IndexBuildError(f"id {clash!r} is already indexed")
        if self._index is None:
            self.build(matrix, id_list)
            return
        if not len(id_list):
            return
        # FAISS does not allow an add concurrent with searches; a served index is therefore never
        # added to (index.versions keeps new items in a copy-on-write delta instead). Positions are
        # registered first anyway, so that a label FAISS returns can always be mapped.
        start = len(self._ids)
        self._positions.update((item, start + i) for i, item in enumerate(id_list))
        self._ids.extend(id_list)
        self._index.add(matrix)

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        q = check_queries(queries, k, self._dim)
        n = self._index.ntotal if self._index is not None else 0
        k_eff = min(int(k), n)
        if k_eff == 0:
            return [[] for _ in range(q.shape[0])], np.empty((q.shape[0], 0), dtype=np.float32)
        try:
            scores, labels = self._index.search(q, k_eff, params=self._search_params(k_eff))
        except RuntimeError as exc:  # FAISS reports C++ errors as RuntimeError
            raise VectorIndexError(f"FAISS search failed: {exc}") from None
        found = labels >= 0
        scores = np.where(found, scores, -np.inf).astype(np.float32, copy=False)
        ids = self._ids
        return [[ids[j] for j in row if j >= 0] for row in labels.tolist()], scores

    def save(self, directory: Path | str) -> Path:
        if self._index is None:
            raise IndexBuildError("cannot save an index that was never built")
        meta = {"backend": BACKEND, "dim": self._dim, "count": len(self._ids), **self.params()}
        with atomic_directory(directory) as tmp:
            faiss.write_index(self._index, str(tmp / INDEX_FILE))
            write_meta(tmp, meta, self._ids)
        return Path(directory)

    @classmethod
    def load(cls, directory: Path | str) -> Self:
        directory, meta, ids = read_meta(directory, BACKEND)
        try:
            params = {
                key: meta[key]
                for key in (
                    "kind",
                    "compression",
                    "hnsw_m",
                    "ef_construction",
                    "ef_search",
                    "nlist",
                    "nprobe",
                    "pq_m",
                    "pq_nbits",
                )
            }
            index = cls(meta["dim"], **params)
        except (KeyError, TypeError, IndexBuildError) as exc:
            raise IndexLoadError(f"{str(directory)!r}: bad index parameters: {exc}") from None
        try:
            raw = faiss.read_index(str(directory / INDEX_FILE))
        except RuntimeError as exc:
            raise IndexLoadError(
                f"{str(directory)!r}: cannot read {INDEX_FILE}: {str(exc).splitlines()[0]}"
            ) from None
        if raw.d != index.dim or raw.ntotal != len(ids) or raw.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexLoadError(
                f"{str(directory)!r}: {INDEX_FILE} holds {raw.ntotal} vectors of dimension {raw.d}, "
                f"expected {len(ids)} of dimension {index.dim} (inner product)"
            )
        index._index, index._ids = raw, ids
        index._positions = {item: i for i, item in enumerate(ids)}
        return index

    # --- helpers -------------------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        """The constructor parameters (what :meth:`load` needs to rebuild this object)."""
        return {
            "kind": self.kind,
            "compression": self.compression,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "pq_m": self.pq_m,
            "pq_nbits": self.pq_nbits,
        }

    def describe(self) -> str:
        return self.kind + (f"+{self.compression}" if self.compression else "")

    def _pq_nbits_for(self, n: int) -> int:
        # 2**nbits centroids per sub-quantiser need ~39 points each; never fewer than 4 bits.
        affordable = int(math.log2(max(n, 1) / _MIN_POINTS_PER_CENTROID)) if n > 0 else 0
        return max(4, min(self.pq_nbits, affordable))

    def _nlist_for(self, n: int) -> int:
        if self.nlist is not None:
            return max(1, min(self.nlist, n))
        return max(1, min(int(4 * math.sqrt(n)), n // _MIN_POINTS_PER_CENTROID))

    def _new_index(self, n: int) -> Any:
        d, ip = self._dim, faiss.METRIC_INNER_PRODUCT
        if self.kind == "hnsw":
            if self.compression is None:
                index = faiss.IndexHNSWFlat(d, self.hnsw_m, ip)
            elif self.compression == "sq8":
                index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, self.hnsw_m, ip)
            else:
                # Built explicitly: FAISS's factory string "HNSW32_PQ16" silently ignores the metric.
                index = faiss.IndexHNSWPQ(d, self.pq_m, self.hnsw_m, self._pq_nbits_for(n), ip)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
            return index
        nlist = self._nlist_for(n)
        quantizer = faiss.IndexFlatIP(d)
        if self.compression is None:
            index = faiss.IndexIVFFlat(quantizer, d, nlist, ip)
        elif self.compression == "sq8":
            index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, ip)
        else:
            index = faiss.IndexIVFPQ(quantizer, d, nlist, self.pq_m, self._pq_nbits_for(n), ip)
        # The IVF index must own its coarse quantiser, or it would be freed with this frame.
        index.own_fields = True
        quantizer.this.disown()
        index.nprobe = min(self.nprobe, nlist)
        return index

    def _search_params(self, k: int) -> Any:
        if self.kind == "hnsw":
            # efSearch below k would return fewer than k results; HNSW needs ef >= k.
            return faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        return faiss.SearchParametersIVF(nprobe=min(self.nprobe, self._index.nlist))
