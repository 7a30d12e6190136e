"""Trained item embeddings as a versioned artefact on disk: numpy + JSON, never pickle.

Layout of one version (``<root>/<version>/``)::

    vectors.npy   float32 [n, dim], written and read with allow_pickle=False
    items.json    the n item ids, row order
    meta.json     model, version, dim, count, content_hash, trained_on, metrics, ...

A version is ``<UTC timestamp>-<content hash>`` (``20251123T101500123Z-1a2b3c4d``): it sorts by
time, and two artefacts with the same name hold the same vectors. A version directory is written
under a temporary name and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelError

VECTORS_FILE = "vectors.npy"
ITEMS_FILE = "items.json"
META_FILE = "meta.json"
FORMAT_VERSION = 1


def content_hash(vectors: np.ndarray, item_ids: Sequence[str]) -> str:
    """A short digest of the vectors and ids (the second half of a version string)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
    digest.update(json.dumps(list(item_ids)).encode())
    return digest.hexdigest()


def make_version(vectors: np.ndarray, item_ids: Sequence[str], now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"
    return f"{stamp}-{content_hash(vectors, item_ids)[:8]}"


def _check(vectors: Any, item_ids: Any, where: str) -> None:
    """Shape/dtype/id checks shared by construction and loading; raises ModelError."""
    if not isinstance(vectors, np.ndarray) or vectors.dtype != np.float32 or vectors.ndim != 2:
        shape = getattr(vectors, "shape", None)
        dtype = getattr(vectors, "dtype", type(vectors).__name__)
        raise ModelError(f"{where}: vectors must be a float32 [n, dim] array, got {dtype} shape {shape}")
    if not isinstance(item_ids, list) or not all(isinstance(i, str) and i for i in item_ids):
        raise ModelError(f"{where}: item ids must be a list of non-empty strings")
    if len(item_ids) != vectors.shape[0]:
        raise ModelError(f"{where}: {vectors.shape[0]} vectors but {len(item_ids)} item ids")
    if len(set(item_ids)) != len(item_ids):
        raise ModelError(f"{where}: item ids are not unique")
    if vectors.shape[1] < 1:
        raise ModelError(f"{where}: vectors have dimension 0")
    if not np.all(np.isfinite(vectors)):
        raise ModelError(f"{where}: vectors contain NaN or infinite values")


@dataclass(frozen=True)
class ItemEmbeddings:
    """Item vectors (row ``i`` belongs to ``item_ids[i]``) and what produced them.

    ``metadata`` always holds ``model``, ``version``, ``dim``, ``trained_on`` and ``metrics``.
    Build one with :meth:`create`, which stamps the version.
    """

    vectors: np.ndarray
    item_ids: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.vectors, self.item_ids, "item embeddings")
        for key in ("model", "version"):
            if not isinstance(self.metadata.get(key), str) or not self.metadata[key]:
                raise ModelError(f"item embeddings: metadata lacks a {key!r} string")
        if self.metadata.get("dim") != self.vectors.shape[1]:
            raise ModelError(
                f"item embeddings: metadata dim {self.metadata.get('dim')!r} "
                f"!= vector dimension {self.vectors.shape[1]}"
            )

    @classmethod
    def create(
        cls,
        vectors: np.ndarray,
        item_ids: Iterable[str],
        model: str,
        trained_on: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> ItemEmbeddings:
        """New embeddings with a fresh version (now + content hash) and the standard metadata."""
        array = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = list(item_ids)
        _check(array, ids, "item embeddings")
        meta: dict[str, Any] = {
            "model": model,
            "version": make_version(array, ids),
            "dim": int(array.shape[1]),
            "count": len(ids),
            "content_hash": content_hash(array, ids),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "trained_on": dict(trained_on or {}),
            "metrics": dict(metrics or {}),
            **extra,
        }
        return cls(array, ids, meta)

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @property
    def model(self) -> str:
        return str(self.metadata["model"])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.item_ids)

    def positions(self) -> dict[str, int]:
        """Item id -> row."""
        return {item: i for i, item in enumerate(self.item_ids)}

    def lookup(self, items: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors of the known items among ``items``."""
        pos = self.positions()
        return {item: self.vectors[pos[item]] for item in items if item in pos}

    def save(self, root: Path | str) -> Path:
        """Write ``<root>/<version>/`` atomically and return that path.

        Saving a version that already exists is a no-op when the stored one is identical (same
        content hash); anything else in the way is a :class:`ModelError`.
        """
        target = Path(root) / self.version
        if target.exists():
            try:
                existing = load(target)
            except ModelError:
                raise ModelError(f"{str(target)!r} exists and is not a valid artefact") from None
            if existing.metadata.get("content_hash") != content_hash(self.vectors, self.item_ids):
                raise ModelError(f"{str(target)!r} exists with different contents")
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            np.save(tmp / VECTORS_FILE, self.vectors, allow_pickle=False)
            (tmp / ITEMS_FILE).write_text(json.dumps(self.item_ids))
            meta = {
                "format": FORMAT_VERSION,
                **self.metadata,
                "content_hash": content_hash(self.vectors, self.item_ids),
                "count": len(self),
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default))
            os.rename(tmp, target)  # atomic on one filesystem: readers see all or nothing
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target


def _json_default(value: Any) -> Any:
    # numpy scalars sneak into metrics; write them as plain numbers
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON serialisable")


def load(path: Path | str) -> ItemEmbeddings:
    """Read and validate one version directory; any problem is a :class:`ModelError` saying what."""
    path = Path(path)
    where = str(path)
    if not path.is_dir():
        raise ModelError(f"embedding artefact {where!r} does not exist")
    try:
        meta = json.loads((path / META_FILE).read_text())
        item_ids = json.loads((path / ITEMS_FILE).read_text())
        vectors = np.load(path / VECTORS_FILE, allow_pickle=False)
    except FileNotFoundError as exc:
        raise ModelError(f"{where!r}: {Path(exc.filename).name} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{where!r}: metadata is not valid JSON: {exc}") from None
    except (OSError, ValueError, EOFError) as exc:  # np.load: truncated file, object array, bad header
        raise ModelError(f"{where!r}: cannot read {VECTORS_FILE}: {exc}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{where!r}: {META_FILE} must hold a JSON object")
    if meta.get("format") != FORMAT_VERSION:
        raise ModelError(f"{where!r}: unsupported artefact format {meta.get('format')!r}")
    _check(vectors, item_ids, where)
    if meta.get("dim") != vectors.shape[1] or meta.get("count", len(item_ids)) != len(item_ids):
        raise ModelError(
            f"{where!r}: {META_FILE} says {meta.get('count')} x {meta.get('dim')}, "
            f"files hold {vectors.shape[0]} x {vectors.shape[1]}"
        )
    expected = meta.get("content_hash")
    if expected is not None and expected != content_hash(vectors, item_ids):
        raise ModelError(f"{where!r}: contents do not match their recorded hash (corrupted or edited)")
    meta.pop("format", None)
    try:
        return ItemEmbeddings(vectors, item_ids, meta)
    except ModelError as exc:
        raise ModelError(f"{where!r}: {exc}") from None


def versions(root: Path | str) -> list[str]:
    """Complete versions under ``root``, oldest first (temporary and foreign directories skipped)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / META_FILE).is_file()
    )


def latest_version(root: Path | str) -> str | None:
    """The newest complete version under ``root``, or None."""
    found = versions(root)
    return found[-1] if found else None


def load_latest(root: Path | str) -> ItemEmbeddings:
    version = latest_version(root)
    if version is None:
        raise ModelError(f"no embedding artefact under {str(root)!r}")
    return load(Path(root) / version)
