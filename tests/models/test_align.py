"""Orthogonal Procrustes: a retrained space is rotated back onto the old one on shared items."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ModelError
from models.align import align, align_embeddings, procrustes
from models.artifacts import ItemEmbeddings

N, DIM = 300, 16


def random_rotation(dim: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))  # a uniformly random orthogonal matrix


def spaces(noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    old = rng.normal(size=(N, DIM)).astype(np.float32)
    rotation = random_rotation(DIM, seed + 1)
    new = (old @ rotation.T + noise * rng.normal(size=old.shape)).astype(np.float32)
    return old, new, [f"i{k}" for k in range(N)]


def unit(m: np.ndarray) -> np.ndarray:
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def test_rotation_plus_noise_is_undone() -> None:
    old, new, ids = spaces(noise=0.05)
    result = align(new, ids, old, ids)
    assert result.shared == N
    cos = np.sum(unit(result.vectors) * unit(old), axis=1)
    assert cos.mean() > 0.99 and result.error_after < 0.01
    assert result.error_before > 0.5  # a random rotation scrambles the space
    # The rotation is orthogonal: it keeps every similarity inside the new space.
    np.testing.assert_allclose(result.rotation @ result.rotation.T, np.eye(DIM), atol=1e-5)
    np.testing.assert_allclose(result.vectors @ result.vectors.T, new @ new.T, rtol=1e-3, atol=1e-3)


def test_exact_rotation_is_recovered() -> None:
    old, new, _ = spaces(noise=0.0)
    r = procrustes(new, old)
    np.testing.assert_allclose(new @ r, old, atol=1e-4)


def test_aligns_on_shared_items_only_and_moves_new_ones_too() -> None:
    old, new, ids = spaces(noise=0.02, seed=4)
    # The old space knows items 0..249; the new one 50..299 under a different order.
    old_ids, old_part = ids[:250], old[:250]
    order = np.random.default_rng(5).permutation(np.arange(50, N))
    new_ids, new_part = [ids[k] for k in order], new[order]
    result = align(new_part, new_ids, old_part, old_ids)
    assert result.shared == 200
    aligned = dict(zip(new_ids, result.vectors, strict=True))
    # Items only the new space has (250..299) land where they would have been in the old space.
    fresh = np.stack([aligned[f"i{k}"] for k in range(250, N)])
    assert np.sum(unit(fresh) * unit(old[250:]), axis=1).mean() > 0.99


def test_too_few_shared_items_is_an_error() -> None:
    old, new, ids = spaces(noise=0.0)
    with pytest.raises(ModelError, match="only 5 items are shared"):
        align(new[:5], ids[:5], old, ids)
    with pytest.raises(ModelError, match="dimensions differ"):
        align(new[:, :8], ids, old, ids)


def test_align_embeddings_records_provenance() -> None:
    old_v, new_v, ids = spaces(noise=0.05, seed=7)
    old = ItemEmbeddings.create(old_v, ids, "item2vec")
    new = ItemEmbeddings.create(new_v, ids, "item2vec")
    aligned, shared = align_embeddings(new, old)
    assert shared == N
    assert aligned.metadata["aligned_to"] == old.version
    assert aligned.metadata["unaligned_version"] == new.version != aligned.version
    assert aligned.metadata["alignment"]["error_after"] < 0.01
    assert aligned.item_ids == new.item_ids


def test_stored_user_vectors_stay_useful_across_a_retrain() -> None:
    """Two trainings (different seeds, later data) of BPR-MF on ML-100k: a user vector stored in
    the old space, searched in the new one, finds what the user's recomputed vector finds - only
    after alignment."""
    from models import mf
    from models.settings import TrainSettings
    from tests.models.ml100k import ml100k_events

    events = ml100k_events()
    settings = TrainSettings(dim=32, epochs=5, patience=0, device="cpu", validation_fraction=0.0)
    old = mf.fit(events[:80_000], settings.model_copy(update={"seed": 1}))
    new = mf.fit(events, settings.model_copy(update={"seed": 2}))
    aligned, shared = align_embeddings(new, old)
    assert shared >= 1500

    history: dict[str, list[str]] = {}
    for event in events[:80_000]:
        history.setdefault(event.user_id, []).append(event.item_id)
    users = sorted(history)[:200]

    def user_vector(space: ItemEmbeddings, user: str) -> np.ndarray:
        pos = space.positions()
        return unit(space.vectors[[pos[i] for i in history[user][-20:] if i in pos]]).mean(axis=0)

    def top(space: ItemEmbeddings, query: np.ndarray, k: int = 20) -> set[str]:
        return {space.item_ids[i] for i in np.argsort(-(unit(space.vectors) @ query))[:k]}

    def overlap(space: ItemEmbeddings) -> float:
        return float(
            np.mean(
                [len(top(space, user_vector(old, u)) & top(space, user_vector(space, u))) / 20 for u in users]
            )
        )

    with_alignment, without = overlap(aligned), overlap(new)
    print(
        f"\noverlap@20 old-vs-recomputed user vector: aligned {with_alignment:.3f}, unaligned {without:.3f}"
    )
    assert with_alignment > 0.5 and with_alignment > without + 0.3, (with_alignment, without)
