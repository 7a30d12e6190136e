"""Hot swap and the delta index: queries never fail and are always answered by one whole version."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from engine.errors import IndexBuildError
from index.exact import ExactIndex
from index.factory import make_index
from index.versions import VersionedIndex

DIM = 16


def unit_rows(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def version_index(version: int, vectors: np.ndarray, kind: str):
    """An index whose ids name their version, so a result shows which version produced it."""
    index = make_index(kind, None, DIM)
    index.build(vectors, [f"v{version}:{i}" for i in range(len(vectors))])
    return index


def test_swap_under_concurrent_queries() -> None:
    vectors = unit_rows(400, 1)
    queries = unit_rows(32, 2)
    holder = VersionedIndex("v0", version_index(0, vectors, "exact"))
    swaps = 50
    # Alternate backends: FAISS releases the GIL while searching, so readers really overlap swaps.
    prepared = [version_index(v, vectors, "hnsw" if v % 2 else "exact") for v in range(1, swaps + 1)]
    valid = {f"v{v}" for v in range(swaps + 1)}
    errors: list[BaseException] = []
    seen: set[str] = set()
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                result = holder.search(queries, 5)
                assert result.version in valid
                # Every id comes from the version that answered: no mixing of two snapshots.
                assert all(i.split(":")[0] == result.version for row in result.ids for i in row)
                assert all(len(row) == 5 for row in result.ids)
                seen.add(result.version)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def swapper() -> None:
        try:
            for v, index in enumerate(prepared, start=1):
                old = holder.swap(f"v{v}", index)
                assert old.version == f"v{v - 1}"
                if v % 5 == 0:
                    holder.add_delta(unit_rows(3, 100 + v), [f"v{v}:new{j}" for j in range(3)])
                threading.Event().wait(0.002)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    writer = threading.Thread(target=swapper)
    writer.start()
    writer.join(timeout=60)
    done.set()
    for t in readers:
        t.join(timeout=60)
    assert not errors, errors[0]
    assert holder.version == f"v{swaps}"
    assert len(seen) > 1  # readers really ran across swaps


def test_snapshot_does_not_change_under_a_reader() -> None:
    holder = VersionedIndex("a", version_index(0, unit_rows(50, 3), "exact"))
    snapshot = holder.current()
    holder.swap("b", version_index(1, unit_rows(50, 4), "exact"))
    assert snapshot.version == "a" and holder.current().version == "b"
    assert snapshot.search(unit_rows(1, 5), 3).ids[0][0].startswith("v0:")


def test_delta_items_are_found_and_merged_by_score() -> None:
    main_vectors = unit_rows(200, 6)
    holder = VersionedIndex("v1", version_index(1, main_vectors, "hnsw"))
    new = unit_rows(5, 7)
    assert holder.add_delta(new, [f"new{i}" for i in range(5)]) == 5
    snap = holder.current()
    assert len(snap) == 205 and "new3" in snap and "v1:7" in snap
    result = holder.search(new, 3)
    assert [row[0] for row in result.ids] == [f"new{i}" for i in range(5)]
    assert np.all(np.diff(result.scores, axis=1) <= 1e-6)
    # An item already in the main index keeps its trained vector.
    assert holder.add_delta(main_vectors[:1], ["v1:0"]) == 0
    # The same delta id again replaces its vector instead of duplicating it.
    assert holder.add_delta(-new[:1], ["new0"]) == 1
    assert len(holder.current().delta) == 5
    assert holder.search(-new[0], 1).ids == [["new0"]]
    # Exact reference over main + delta gives the same top-10.
    reference = ExactIndex(DIM)
    reference.build(
        np.vstack([main_vectors, -new[:1], new[1:]]),
        [f"v1:{i}" for i in range(200)] + [f"new{i}" for i in range(5)],
    )
    queries = unit_rows(20, 8)
    assert holder.search(queries, 10).ids == reference.search(queries, 10)[0]


def test_swap_drops_or_carries_the_delta() -> None:
    holder = VersionedIndex("v1", version_index(1, unit_rows(100, 9), "exact"))
    holder.add_delta(unit_rows(2, 10), ["x", "y"])
    refreshed = make_index("exact", None, DIM)
    refreshed.build(unit_rows(101, 11), [f"v2:{i}" for i in range(100)] + ["x"])
    holder.swap("v2", refreshed, carry_delta=True)
    assert holder.current().delta.ids == ("y",)  # "x" is now in the main index
    holder.swap("v3", version_index(3, unit_rows(100, 12), "exact"))
    assert len(holder.current().delta) == 0


def test_delta_limits_and_errors() -> None:
    holder = VersionedIndex("v1", version_index(1, unit_rows(10, 13), "exact"), max_delta=3)
    holder.add_delta(unit_rows(3, 14), ["a", "b", "c"])
    with pytest.raises(IndexBuildError, match="time to refresh"):
        holder.add_delta(unit_rows(1, 15), ["d"])
    with pytest.raises(IndexBuildError, match="dimension"):
        holder.add_delta(np.ones((1, DIM + 1), dtype=np.float32), ["e"])
    with pytest.raises(IndexBuildError, match="version"):
        holder.swap("", make_index("exact", None, DIM))
