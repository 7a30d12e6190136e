"""Embedding artefacts: numpy + JSON round trip, versions, and refusal of damaged or unsafe files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelError
from models import artifacts
from models.artifacts import ItemEmbeddings, latest_version, load, load_latest


def make(n: int = 6, dim: int = 4, seed: int = 0, model: str = "item2vec") -> ItemEmbeddings:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return ItemEmbeddings.create(
        vectors,
        [f"i{k}" for k in range(n)],
        model,
        trained_on={"events": 10},
        metrics={"hr@20": np.float64(0.25)},
    )


def test_round_trip(tmp_path: Path) -> None:
    emb = make()
    path = emb.save(tmp_path)
    assert path == tmp_path / emb.version
    assert sorted(p.name for p in path.iterdir()) == ["items.json", "meta.json", "vectors.npy"]
    back = load(path)
    np.testing.assert_array_equal(back.vectors, emb.vectors)
    assert back.item_ids == emb.item_ids and back.vectors.dtype == np.float32
    assert back.version == emb.version and back.model == "item2vec" and back.dim == 4
    assert back.metadata["trained_on"] == {"events": 10}
    assert back.metadata["metrics"]["hr@20"] == 0.25  # numpy scalars are written as plain numbers
    assert emb.save(tmp_path) == path  # saving the same version again is a no-op


def test_version_format_and_latest(tmp_path: Path) -> None:
    assert latest_version(tmp_path / "nothing") is None
    first, second = make(seed=1), make(seed=2)
    assert first.version != second.version
    stamp, digest = first.version.split("-")
    assert stamp.endswith("Z") and len(digest) == 8
    first.save(tmp_path)
    second.save(tmp_path)
    (tmp_path / ".half-written.tmp-1234").mkdir()  # a crashed save is never "latest"
    assert latest_version(tmp_path) == max(first.version, second.version)
    assert load_latest(tmp_path).version == latest_version(tmp_path)


def test_construction_validates() -> None:
    vectors = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ModelError, match="float32"):
        ItemEmbeddings.create(vectors.astype(np.float64)[None], ["a", "b"], "mf")
    with pytest.raises(ModelError, match="2 vectors but 3"):
        ItemEmbeddings.create(vectors, ["a", "b", "c"], "mf")
    with pytest.raises(ModelError, match="not unique"):
        ItemEmbeddings.create(vectors, ["a", "a"], "mf")
    with pytest.raises(ModelError, match="NaN"):
        ItemEmbeddings.create(np.full((2, 3), np.nan, dtype=np.float32), ["a", "b"], "mf")


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return make().save(tmp_path)


def test_rejects_wrong_shape(saved: Path) -> None:
    np.save(saved / "vectors.npy", np.zeros((5, 4), dtype=np.float32), allow_pickle=False)
    with pytest.raises(ModelError, match="5 vectors but 6 item ids"):
        load(saved)


def test_rejects_wrong_dtype(saved: Path) -> None:
    np.save(saved / "vectors.npy", np.zeros((6, 4), dtype=np.float64), allow_pickle=False)
    with pytest.raises(ModelError, match="float32"):
        load(saved)


def test_rejects_dimension_that_disagrees_with_meta(saved: Path) -> None:
    np.save(saved / "vectors.npy", np.zeros((6, 5), dtype=np.float32), allow_pickle=False)
    with pytest.raises(ModelError, match="6 x 4"):
        load(saved)


def test_rejects_edited_vectors(saved: Path) -> None:
    vectors = np.load(saved / "vectors.npy")
    vectors[0, 0] += 1.0
    np.save(saved / "vectors.npy", vectors, allow_pickle=False)
    with pytest.raises(ModelError, match="hash"):
        load(saved)


def test_never_unpickles(saved: Path) -> None:
    """An object array (a pickle inside .npy) is refused, not executed."""
    np.save(saved / "vectors.npy", np.array([{"evil": 1}] * 6, dtype=object), allow_pickle=True)
    with pytest.raises(ModelError, match="cannot read vectors.npy"):
        load(saved)


def test_rejects_truncated_and_missing_files(saved: Path) -> None:
    blob = (saved / "vectors.npy").read_bytes()
    (saved / "vectors.npy").write_bytes(blob[:60])
    with pytest.raises(ModelError, match="cannot read vectors.npy"):
        load(saved)
    (saved / "items.json").unlink()
    with pytest.raises(ModelError, match="items.json is missing"):
        load(saved)
    with pytest.raises(ModelError, match="does not exist"):
        load(saved.parent / "no-such-version")


def test_rejects_bad_metadata(saved: Path) -> None:
    (saved / "items.json").write_text(json.dumps(["i0", "i0", "i2", "i3", "i4", "i5"]))
    with pytest.raises(ModelError, match="not unique"):
        load(saved)
    (saved / "items.json").write_text("[not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load(saved)
    (saved / "items.json").write_text(json.dumps([f"i{k}" for k in range(6)]))
    meta = json.loads((saved / "meta.json").read_text())
    (saved / "meta.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(ModelError, match="format"):
        load(saved)


def test_save_refuses_a_different_artefact_under_the_same_version(tmp_path: Path) -> None:
    emb = make()
    path = emb.save(tmp_path)
    vectors = np.load(path / "vectors.npy")
    np.save(path / "vectors.npy", vectors + 1.0, allow_pickle=False)
    with pytest.raises(ModelError):
        emb.save(tmp_path)
    assert artifacts.versions(tmp_path) == [emb.version]
