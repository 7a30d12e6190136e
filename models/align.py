"""Keep a retrained embedding space compatible with the old one: orthogonal Procrustes.

Two trainings of the same model on overlapping data learn equally good but differently oriented
spaces (any rotation of a solution is another solution). User vectors kept in Redis are means of
*old* item vectors, so after a refresh they would point at arbitrary new items. Rotating the new
space onto the old one, using the items both spaces share, keeps those user vectors meaningful
until they are recomputed.

The rotation ``R`` minimises ``||new[shared] @ R - old[shared]||_F`` over orthogonal matrices;
the solution is ``R = U @ Vt`` from the SVD of ``new[shared].T @ old[shared]`` (Schönemann, 1966).
Being orthogonal, it preserves every inner product and norm in the new space: neighbours within
the new space, and hence its quality, are untouched.

>>> rng = np.random.default_rng(0)
>>> old = rng.normal(size=(50, 8)).astype(np.float32)
>>> q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
>>> new = old @ q.T  # the same space, rotated
>>> result = align(new, [str(i) for i in range(50)], old, [str(i) for i in range(50)])
>>> bool(np.allclose(result.vectors, old, atol=1e-4)), result.shared
(True, 50)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.errors import ModelError
from models.artifacts import ItemEmbeddings, content_hash, make_version


@dataclass(frozen=True)
class Alignment:
    """The rotation that maps the new space onto the old one, and what it achieved.

    ``error_before``/``error_after`` are the mean cosine distance (1 - cos) between an item's new
    and old vector over the shared items, before and after rotating: after should be small when
    the two spaces agree up to a rotation.
    """

    rotation: np.ndarray  # [dim, dim] float32, orthogonal
    vectors: np.ndarray  # every new vector, rotated: new @ rotation
    shared: int
    error_before: float
    error_after: float


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def _mean_cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(1.0 - np.sum(_unit(a) * _unit(b), axis=1))) if len(a) else float("nan")


def procrustes(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The orthogonal ``R`` minimising ``||source @ R - target||`` (rows are paired points)."""
    if source.shape != target.shape or source.ndim != 2:
        raise ModelError(
            f"procrustes needs two [n, d] arrays of one shape, got {source.shape} and {target.shape}"
        )
    # float64 for the SVD: the rotation must be orthogonal to machine precision, or repeated
    # refreshes would slowly shrink or stretch the space.
    u, _, vt = np.linalg.svd(source.astype(np.float64).T @ target.astype(np.float64))
    return u @ vt


def align(
    new_vectors: np.ndarray,
    new_ids: Sequence[str],
    old_vectors: np.ndarray,
    old_ids: Sequence[str],
    normalise: bool = True,
    min_shared: int | None = None,
) -> Alignment:
    """Rotate ``new_vectors`` into the space of ``old_vectors`` using the items both have.

    With ``normalise`` (the default) the rotation is fitted on unit vectors, so that popular items
    with long vectors do not dominate: the serving side compares by cosine anyway. At least
    ``min_shared`` shared items are required (default: the dimension, fewer leave the rotation
    under-determined); too few is a :class:`ModelError`.
    """
    new = np.asarray(new_vectors, dtype=np.float32)
    old = np.asarray(old_vectors, dtype=np.float32)
    if new.ndim != 2 or old.ndim != 2 or new.shape[1] != old.shape[1]:
        raise ModelError(f"cannot align a {new.shape} space to a {old.shape} one: dimensions differ")
    if len(new_ids) != len(new) or len(old_ids) != len(old):
        raise ModelError("each vector needs exactly one id")
    old_pos = {item: i for i, item in enumerate(old_ids)}
    pairs = [(i, old_pos[item]) for i, item in enumerate(new_ids) if item in old_pos]
    needed = new.shape[1] if min_shared is None else min_shared
    if len(pairs) < max(needed, 1):
        raise ModelError(
            f"only {len(pairs)} items are shared by both spaces; aligning needs at least {needed}"
        )
    rows_new = np.array([i for i, _ in pairs], dtype=np.int64)
    rows_old = np.array([j for _, j in pairs], dtype=np.int64)
    source, target = new[rows_new], old[rows_old]
    if normalise:
        source, target = _unit(source), _unit(target)
    rotation = procrustes(source, target)
    aligned = (new.astype(np.float64) @ rotation).astype(np.float32)
    return Alignment(
        rotation=rotation.astype(np.float32),
        vectors=aligned,
        shared=len(pairs),
        error_before=_mean_cosine_distance(new[rows_new], old[rows_old]),
        error_after=_mean_cosine_distance(aligned[rows_new], old[rows_old]),
    )


def align_embeddings(
    new: ItemEmbeddings, old: ItemEmbeddings, **options: object
) -> tuple[ItemEmbeddings, int]:
    """:func:`align` for artefacts: the new embeddings rotated, and how many shared items fixed it.

    The errors before/after go into ``metadata["alignment"]``; use :func:`align` for the rotation.

    The rotated vectors get their own version (a version names one set of vectors); the metadata
    keeps the unaligned one as ``unaligned_version`` and records the old version it was aligned
    to, so a serving worker can tell which stored user vectors still fit.
    """
    result = align(new.vectors, new.item_ids, old.vectors, old.item_ids, **options)  # type: ignore[arg-type]
    metadata = {
        **new.metadata,
        "version": make_version(result.vectors, new.item_ids),
        "content_hash": content_hash(result.vectors, new.item_ids),
        "unaligned_version": new.version,
        "aligned_to": old.version,
        "alignment": {
            "shared": result.shared,
            "error_before": round(result.error_before, 6),
            "error_after": round(result.error_after, 6),
        },
    }
    return ItemEmbeddings(result.vectors, list(new.item_ids), metadata), result.shared
