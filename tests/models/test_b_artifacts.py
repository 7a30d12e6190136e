"""The embedding artefact: versioned, atomic, numpy + JSON only, and loud about damage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelError
from models.artifacts import ItemEmbeddings, latest_version, load, load_latest, versions


def sample(n: int = 5, dim: int = 4, seed: int = 0, **meta) -> ItemEmbeddings:
    rng = np.random.default_rng(seed)
    return ItemEmbeddings.create(
        rng.normal(size=(n, dim)),
        [f"i{i}" for i in range(n)],
        "item2vec",
        trained_on={"events": 10},
        metrics={"hr@20": np.float64(0.5)},
        **meta,
    )


def test_round_trip(tmp_path: Path) -> None:
    emb = sample(extra_field="kept")
    path = emb.save(tmp_path)
    assert path == tmp_path / emb.version
    assert sorted(p.name for p in path.iterdir()) == ["items.json", "meta.json", "vectors.npy"]
    back = load(path)
    assert back.item_ids == emb.item_ids and back.vectors.dtype == np.float32
    np.testing.assert_array_equal(back.vectors, emb.vectors)
    assert back.version == emb.version and back.model == "item2vec" and back.dim == 4
    assert back.metadata["metrics"] == {"hr@20": 0.5} and back.metadata["extra_field"] == "kept"
    assert back.metadata["trained_on"] == {"events": 10}
    # nothing half-written is left behind
    assert [p.name for p in tmp_path.iterdir()] == [emb.version]


def test_version_is_time_then_content_hash() -> None:
    a, b = sample(seed=1), sample(seed=2)
    stamp, digest = a.version.split("-")
    assert stamp.endswith("Z") and len(stamp) == len("20250101T000000000Z") and len(digest) == 8
    assert a.version.split("-")[1] != b.version.split("-")[1]


def test_latest_version_skips_temporaries(tmp_path: Path) -> None:
    assert latest_version(tmp_path) is None and latest_version(tmp_path / "missing") is None
    first = sample(seed=1)
    second = ItemEmbeddings(
        first.vectors, first.item_ids, {**first.metadata, "version": "29991231T235959999Z-deadbeef"}
    )
    first.save(tmp_path)
    second.save(tmp_path)
    (tmp_path / ".29991231T235959999Z-ffff.tmp-1234").mkdir()  # an interrupted save
    (tmp_path / "notes").mkdir()  # a foreign directory without meta.json
    assert versions(tmp_path) == [first.version, second.version]
    assert latest_version(tmp_path) == second.version
    assert load_latest(tmp_path).version == second.version


def test_saving_twice_is_idempotent_but_never_overwrites(tmp_path: Path) -> None:
    emb = sample()
    assert emb.save(tmp_path) == emb.save(tmp_path)
    other = ItemEmbeddings(emb.vectors * 2, emb.item_ids, dict(emb.metadata))  # same version name
    with pytest.raises(ModelError, match="different contents"):
        other.save(tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        "vectors_rows",
        "vectors_dtype",
        "vectors_1d",
        "object_array",
        "truncated",
        "ids_duplicate",
        "ids_count",
        "meta_dim",
        "meta_json",
        "missing_items",
        "bit_flip",
        "nan",
    ],
)
def test_load_rejects_damaged_artefacts(tmp_path: Path, damage: str) -> None:
    path = sample().save(tmp_path)
    vec, items, meta = path / "vectors.npy", path / "items.json", path / "meta.json"
    original = np.load(vec)
    if damage == "vectors_rows":
        np.save(vec, original[:-1])
    elif damage == "vectors_dtype":
        np.save(vec, original.astype(np.float64))
    elif damage == "vectors_1d":
        np.save(vec, original.ravel())
    elif damage == "object_array":  # would need pickle to read: must be refused, not unpickled
        np.save(vec, np.array([{"a": 1}] * 5, dtype=object), allow_pickle=True)
    elif damage == "truncated":
        vec.write_bytes(vec.read_bytes()[:60])
    elif damage == "ids_duplicate":
        items.write_text(json.dumps(["i0", "i0", "i2", "i3", "i4"]))
    elif damage == "ids_count":
        items.write_text(json.dumps(["i0", "i1"]))
    elif damage == "meta_dim":
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "dim": 7}))
    elif damage == "meta_json":
        meta.write_text("{broken")
    elif damage == "missing_items":
        items.unlink()
    elif damage == "bit_flip":
        changed = original.copy()
        changed[2, 1] += 1.0
        np.save(vec, changed)
    elif damage == "nan":
        changed = original.copy()
        changed[0, 0] = np.nan
        np.save(vec, changed)
    with pytest.raises(ModelError) as info:
        load(path)
    assert str(path) in str(info.value)  # the message names the artefact


def test_load_of_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load(tmp_path / "nope")
    with pytest.raises(ModelError, match="no embedding artefact"):
        load_latest(tmp_path)


def test_construction_validates() -> None:
    with pytest.raises(ModelError, match="not unique"):
        ItemEmbeddings.create(np.zeros((2, 3)), ["a", "a"], "mf")
    with pytest.raises(ModelError, match="2 vectors but 1"):
        ItemEmbeddings.create(np.zeros((2, 3)), ["a"], "mf")
    with pytest.raises(ModelError, match="float32"):
        ItemEmbeddings(np.zeros((2, 3)), ["a", "b"], {"model": "mf", "version": "v", "dim": 3})
    emb = sample()
    assert set(emb.lookup(["i1", "zzz"])) == {"i1"} and len(emb) == 5
