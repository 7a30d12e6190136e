"""Choosing and loading index backends: ``make_index``, ``load_index`` and :class:`IndexSettings`.

>>> idx = make_index("exact", None, dim=2)
>>> idx.build([[1.0, 0.0], [0.0, 1.0]], ["a", "b"])
>>> idx.search([[0.9, 0.1]], 1)[0]
[['a']]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.errors import IndexBuildError, IndexLoadError
from index.base import VectorIndex, read_meta
from index.exact import BACKEND as EXACT_BACKEND
from index.exact import ExactIndex
from index.faiss_index import BACKEND as FAISS_BACKEND
from index.faiss_index import FaissIndex

IndexKind = Literal["exact", "hnsw", "ivf"]
IndexCompression = Literal["sq8", "pq"] | None
KINDS: tuple[str, ...] = ("exact", "hnsw", "ivf")

# Below this many items a flat scan is both exact and fast enough (a 64-d matmul over 20k rows
# takes well under a millisecond per query), so an ANN graph would only cost recall.
EXACT_BELOW = 20_000
# From here on HNSW's memory (graph links on top of the vectors) and build time outgrow IVF's.
IVF_FROM = 2_000_000


def make_index(kind: str, compression: str | None = None, dim: int = 64, **params: Any) -> VectorIndex:
    """A new, empty index of ``kind`` ("exact", "hnsw" or "ivf") for ``dim``-dimensional vectors.

    ``compression`` ("sq8" or "pq") applies to the FAISS kinds only; ``params`` are passed to
    the backend (``hnsw_m``, ``ef_construction``, ``ef_search``, ``nlist``, ``nprobe``, ``pq_m``,
    ``pq_nbits`` for FAISS; ``chunk`` for exact).
    """
    if kind == "exact":
        if compression is not None:
            raise IndexBuildError("the exact index stores full vectors; compression applies to hnsw and ivf")
        return ExactIndex(dim, **params)
    if kind in ("hnsw", "ivf"):
        try:
            return FaissIndex(dim, kind, compression, **params)  # type: ignore[arg-type]
        except TypeError as exc:
            raise IndexBuildError(f"bad parameters for a {kind} index: {exc}") from None
    raise IndexBuildError(f"unknown index kind {kind!r}; expected one of {', '.join(KINDS)}")


def recommended_kind(n_items: int) -> IndexKind:
    """The backend that suits a catalogue of ``n_items`` (see :data:`EXACT_BELOW`, :data:`IVF_FROM`)."""
    if n_items < EXACT_BELOW:
        return "exact"
    return "hnsw" if n_items < IVF_FROM else "ivf"


def load_index(directory: Path | str) -> VectorIndex:
    """Load any index written by a backend's ``save``, dispatching on its ``index.json``."""
    _, meta, _ = read_meta(directory)
    backend = meta.get("backend")
    if backend == EXACT_BACKEND:
        return ExactIndex.load(directory)
    if backend == FAISS_BACKEND:
        return FaissIndex.load(directory)
    raise IndexLoadError(f"{str(directory)!r}: unknown index backend {backend!r}")


class IndexSettings(BaseSettings):
    """How the serving index is built; every field can be set as ``STREAMREC_INDEX_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_INDEX_", extra="ignore")

    kind: Literal["auto", "exact", "hnsw", "ivf"] = Field(
        "hnsw", description="backend; 'auto' picks by catalogue size (recommended_kind)"
    )
    compression: Literal["sq8", "pq"] | None = Field(None, description="vector compression (FAISS kinds)")
    hnsw_m: int = Field(32, ge=4, le=256, description="HNSW links per node")
    ef_construction: int = Field(200, ge=8, description="HNSW build beam width")
    ef_search: int = Field(128, ge=1, description="HNSW search beam width (raised to k when smaller)")
    nlist: int | None = Field(None, ge=1, description="IVF lists; default 4*sqrt(n), capped by n/39")
    nprobe: int = Field(16, ge=1, description="IVF lists visited per query")
    pq_m: int | None = Field(None, ge=1, description="PQ sub-quantisers (divides dim); default dim/4")
    pq_nbits: int = Field(8, ge=1, le=16, description="bits per PQ code")

    def make(self, dim: int, n_items: int | None = None) -> VectorIndex:
        """An empty index per these settings; ``kind='auto'`` needs ``n_items``."""
        kind = self.kind
        if kind == "auto":
            if n_items is None:
                raise IndexBuildError("kind 'auto' needs the catalogue size (n_items)")
            kind = recommended_kind(n_items)
        if kind == "exact":
            return make_index("exact", None, dim)
        return make_index(
            kind,
            self.compression,
            dim,
            hnsw_m=self.hnsw_m,
            ef_construction=self.ef_construction,
            ef_search=self.ef_search,
            nlist=self.nlist,
            nprobe=self.nprobe,
            pq_m=self.pq_m,
            pq_nbits=self.pq_nbits,
        )
