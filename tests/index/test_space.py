"""IndexedSpace: trained vectors + a versioned index, as the engine sees an embedding space."""

from __future__ import annotations

import numpy as np

from index.factory import make_index
from index.space import IndexedSpace

DIM = 8


def space() -> tuple[IndexedSpace, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(100, DIM)).astype(np.float32) * 3.0
    ids = [f"i{k}" for k in range(100)]
    index = make_index("hnsw", None, DIM)
    index.build(vectors, ids)
    return IndexedSpace("v1", ids, vectors, index), vectors, ids


def test_vectors_are_unit_and_search_finds_items() -> None:
    s, vectors, ids = space()
    assert s.version == "v1" and s.dim == DIM and len(s) == 100
    got = s.vectors(["i3", "unknown", "i7"])
    assert set(got) == {"i3", "i7"}
    np.testing.assert_allclose(np.linalg.norm(got["i3"]), 1.0, atol=1e-6)
    found, scores = s.search(vectors[[3, 7]], 1)
    assert found == [["i3"], ["i7"]] and np.allclose(scores[:, 0], 1.0, atol=1e-5)


def test_new_items_join_through_the_delta() -> None:
    s, vectors, _ = space()
    fresh = np.random.default_rng(1).normal(size=(2, DIM)).astype(np.float32)
    assert s.add_items({"new-a": fresh[0], "new-b": fresh[1], "i1": vectors[1]}) == 2
    assert len(s) == 102 and "new-a" in s and "i1" in s
    assert s.search(fresh[0] * 5.0, 1)[0] == [["new-a"]]
    np.testing.assert_allclose(s.vectors(["new-b"])["new-b"], fresh[1] / np.linalg.norm(fresh[1]), atol=1e-6)
    assert s.add_items({"i2": vectors[2]}) == 0  # trained items keep their trained vector


def test_a_space_pickles_with_its_delta_and_a_fresh_lock() -> None:
    """A worker sends its space to its scoring process by pickling it."""
    import pickle

    s, vectors, _ = space()
    fresh = np.random.default_rng(2).normal(size=(1, DIM)).astype(np.float32)
    s.add_items({"new-a": fresh[0]})
    copy = pickle.loads(pickle.dumps(s))
    assert copy.version == "v1" and len(copy) == 101 and "new-a" in copy
    assert copy.search(vectors[[3]], 3)[0] == s.search(vectors[[3]], 3)[0]
    assert copy.index._lock is not s.index._lock
    copy.index.swap("v2", copy.index.current().index)  # the lock works
    assert copy.index.version == "v2" and s.index.version == "v1"
