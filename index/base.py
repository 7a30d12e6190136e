"""The nearest-item index seam: one Protocol, and the input checks every backend shares.

Similarity is cosine everywhere: vectors and queries are L2-normalised on the way in, and the
backends rank by inner product, so a score is a cosine in ``[-1, 1]`` (approximately, for the
compressed FAISS variants).

Search results are ``(ids, scores)``: ``ids[i]`` lists the best items for query ``i``, best
first, and ``scores`` has shape ``[m, min(k, len(index))]``. An approximate backend may find
fewer than that for a query; its row in ``ids`` is then shorter and the missing scores are
``-inf``, so callers never see a placeholder id.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np

from engine.errors import IndexBuildError, IndexLoadError, VectorIndexError

SearchResult = tuple[list[list[str]], np.ndarray]

# Written into every saved index directory, so that factory.load_index can pick the backend.
META_FILE = "index.json"
IDS_FILE = "ids.json"
FORMAT_VERSION = 1


@runtime_checkable
class VectorIndex(Protocol):
    """A cosine nearest-neighbour index over string ids."""

    @property
    def dim(self) -> int:
        """Vector dimension the index was made for."""
        ...

    def __len__(self) -> int:
        """Number of indexed items."""
        ...

    def __contains__(self, item_id: object) -> bool:
        """Whether ``item_id`` is indexed."""
        ...

    def build(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        """Replace the contents with ``vectors`` ([n, dim]) under ``ids`` (unique strings).

        Backends that learn a quantiser (IVF, SQ8, PQ) train it on these vectors.
        """
        ...

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        """Append items; an id that is already indexed is an :class:`IndexBuildError`."""
        ...

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """The ``k`` most similar items of each query row ([m, dim]), best first."""
        ...

    def save(self, directory: Path | str) -> Path:
        """Write the index into ``directory`` (created; must not hold files) without pickle."""
        ...

    @classmethod
    def load(cls, directory: Path | str) -> Self:
        """Read an index written by :meth:`save`; a bad directory is an :class:`IndexLoadError`."""
        ...


def normalise(matrix: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation into a new C-contiguous float32 array; zero rows stay zero."""
    matrix = np.array(matrix, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    # A zero vector has no direction; dividing by 1 keeps it zero (it matches nothing) instead of NaN.
    matrix /= np.where(norms > 0, norms, 1.0)
    return matrix


def check_vectors(vectors: np.ndarray, ids: Sequence[str], dim: int) -> tuple[np.ndarray, list[str]]:
    """Validate a build/add batch and return it normalised, with the ids as a list."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise IndexBuildError(f"vectors must be a 2-D array [n, {dim}], got shape {array.shape}")
    if array.shape[1] != dim:
        raise IndexBuildError(f"vectors have dimension {array.shape[1]}, the index expects {dim}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise IndexBuildError(f"vectors must be real numbers, got dtype {array.dtype}")
    id_list = list(ids)
    if len(id_list) != array.shape[0]:
        raise IndexBuildError(f"{array.shape[0]} vectors but {len(id_list)} ids")
    for item_id in id_list:
        if not isinstance(item_id, str) or not item_id:
            raise IndexBuildError(f"ids must be non-empty strings, got {item_id!r}")
    if len(set(id_list)) != len(id_list):
        raise IndexBuildError("ids must be unique within a batch")
    if array.size and not np.all(np.isfinite(array)):
        raise IndexBuildError("vectors contain NaN or infinite values")
    return normalise(array), id_list


def check_queries(queries: np.ndarray, k: int, dim: int) -> np.ndarray:
    """Validate a query batch (a single vector is accepted as one row) and normalise it."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise VectorIndexError(f"k must be a positive integer, got {k!r}")
    array = np.asarray(queries)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise VectorIndexError(f"queries must have shape [m, {dim}], got {np.asarray(queries).shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise VectorIndexError(f"queries must be real numbers, got dtype {array.dtype}")
    if array.size and not np.all(np.isfinite(array)):
        raise VectorIndexError("queries contain NaN or infinite values")
    return normalise(array)


def check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise IndexBuildError(f"dim must be a positive integer, got {dim!r}")
    return int(dim)


# --- files ---------------------------------------------------------------------------------------


@contextmanager
def atomic_directory(target: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` to fill; on success it is renamed to ``target``.

    Readers (a worker loading the new version) therefore see either no directory or a complete
    one, never half-written files. ``target`` may exist only as an empty directory.
    """
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise IndexBuildError(f"{str(target)!r} already exists and is not an empty directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            target.rmdir()
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_meta(directory: Path, meta: dict[str, Any], ids: Sequence[str]) -> None:
    (directory / META_FILE).write_text(json.dumps({"format": FORMAT_VERSION, **meta}, indent=2))
    (directory / IDS_FILE).write_text(json.dumps(list(ids)))


def read_meta(directory: Path | str, backend: str | None = None) -> tuple[Path, dict[str, Any], list[str]]:
    """Read and check ``index.json`` and ``ids.json``; any problem is an :class:`IndexLoadError`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise IndexLoadError(f"index directory {str(directory)!r} does not exist")
    try:
        meta = json.loads((directory / META_FILE).read_text())
        ids = json.loads((directory / IDS_FILE).read_text())
    except FileNotFoundError as exc:
        raise IndexLoadError(
            f"{str(directory)!r} is not a saved index: {Path(exc.filename).name} is missing"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexLoadError(f"{str(directory)!r}: cannot read the index metadata: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise IndexLoadError(
            f"{str(directory)!r}: unsupported index format {meta.get('format') if isinstance(meta, dict) else meta!r}"
        )
    if backend is not None and meta.get("backend") != backend:
        raise IndexLoadError(f"{str(directory)!r} holds a {meta.get('backend')!r} index, not {backend!r}")
    if (
        not isinstance(ids, list)
        or not all(isinstance(i, str) and i for i in ids)
        or len(set(ids)) != len(ids)
    ):
        raise IndexLoadError(f"{str(directory)!r}: {IDS_FILE} must be a list of unique non-empty strings")
    dim = meta.get("dim")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise IndexLoadError(f"{str(directory)!r}: bad dimension {dim!r} in {META_FILE}")
    return directory, meta, ids
