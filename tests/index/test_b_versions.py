"""Hot swap and delta items (index.versions): no query fails or mixes versions during a swap."""

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
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def built(kind: str, ids: list[str], vectors: np.ndarray):
    index = make_index(kind, None, DIM)
    index.build(vectors, ids)
    return index


def test_swap_under_concurrent_queries() -> None:
    """Readers query non-stop while a writer swaps 50 times: no exception, and each answer comes
    entirely from one valid version (every version has its own id prefix, so a mixed answer
    would show)."""
    n = 300
    base = unit_rows(n, 0)
    # Version v holds items "v<v>-<i>"; alternate backends so both kinds are swapped in and out.
    versions = {
        f"v{v}": built("hnsw" if v % 2 else "exact", [f"v{v}-{i}" for i in range(n)], base) for v in range(51)
    }
    served = VersionedIndex("v0", versions["v0"])
    queries = unit_rows(8, 1)
    errors: list[BaseException] = []
    seen: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                result = served.search(queries, 5)
                assert result.version in versions
                prefix = result.version + "-"
                assert all(len(row) == 5 and all(i.startswith(prefix) for i in row) for row in result.ids)
                seen.add(result.version)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for v in range(1, 51):
            old = served.swap(f"v{v}", versions[f"v{v}"])
            assert old.version == f"v{v - 1}"
            stop.wait(0.002)  # let readers run against each version
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors[0]
    assert served.version == "v50"
    assert len(seen) > 5  # the readers really ran across many versions


def test_snapshot_is_stable_across_a_swap() -> None:
    ids = [f"a{i}" for i in range(50)]
    served = VersionedIndex("a", built("exact", ids, unit_rows(50, 2)))
    snap = served.current()
    served.swap("b", built("exact", [f"b{i}" for i in range(50)], unit_rows(50, 3)))
    # A request that took its snapshot before the swap finishes on the old version.
    result = snap.search(unit_rows(1, 4), 3)
    assert result.version == "a" and all(i.startswith("a") for i in result.ids[0])
    assert served.search(unit_rows(1, 4), 3).version == "b"


def test_delta_items_are_found_and_merged_by_score() -> None:
    vectors = unit_rows(100, 5)
    served = VersionedIndex("v1", built("hnsw", [f"i{i}" for i in range(100)], vectors))
    new = unit_rows(3, 6)
    assert served.add_delta(new, ["new0", "new1", "new2"]) == 3
    result = served.search(new, 4)
    assert [row[0] for row in result.ids] == ["new0", "new1", "new2"]
    assert np.all(np.diff(result.scores, axis=1) <= 1e-6)  # merged lists stay sorted
    np.testing.assert_allclose(result.scores[:, 0], 1.0, atol=1e-5)
    # Exact reference over main + delta gives the same top-4.
    reference = ExactIndex(DIM)
    reference.build(np.concatenate([vectors, new]), [f"i{i}" for i in range(100)] + ["new0", "new1", "new2"])
    assert result.ids == reference.search(new, 4)[0]
    assert len(served.current()) == 103 and "new1" in served.current()


def test_delta_skips_known_items_and_replaces_its_own() -> None:
    vectors = unit_rows(20, 7)
    served = VersionedIndex("v1", built("exact", [f"i{i}" for i in range(20)], vectors))
    assert served.add_delta(unit_rows(2, 8), ["i3", "fresh"]) == 1  # i3 has a trained vector
    before = served.current()
    replacement = -vectors[5:6]
    assert served.add_delta(replacement, ["fresh"]) == 1
    after = served.current()
    assert after.delta.ids == ("fresh",) and np.allclose(after.delta.vectors[0], replacement[0])
    assert before.delta.vectors is not after.delta.vectors  # copy-on-write: old snapshot untouched


def test_swap_drops_or_carries_the_delta() -> None:
    served = VersionedIndex("v1", built("exact", ["a", "b"], unit_rows(2, 9)))
    served.add_delta(unit_rows(2, 10), ["new", "later-trained"])
    served.swap("v2", built("exact", ["a", "b", "later-trained"], unit_rows(3, 11)), carry_delta=True)
    assert served.current().delta.ids == ("new",)  # the new index knows the other one now
    served.swap("v3", built("exact", ["a"], unit_rows(1, 12)))
    assert len(served.current().delta) == 0


def test_delta_limit_and_bad_input() -> None:
    served = VersionedIndex("v1", built("exact", ["a"], unit_rows(1, 13)), max_delta=2)
    served.add_delta(unit_rows(2, 14), ["x", "y"])
    with pytest.raises(IndexBuildError, match="time to refresh"):
        served.add_delta(unit_rows(1, 15), ["z"])
    with pytest.raises(IndexBuildError, match="dimension"):
        served.add_delta(np.zeros((1, DIM + 1), dtype=np.float32), ["w"])
    with pytest.raises(IndexBuildError, match="version"):
        served.swap("", built("exact", ["a"], unit_rows(1, 16)))


def test_concurrent_delta_writers_lose_nothing() -> None:
    served = VersionedIndex("v1", built("exact", ["a"], unit_rows(1, 17)))

    def writer(w: int) -> None:
        for i in range(25):
            served.add_delta(unit_rows(1, 1000 * w + i), [f"w{w}-{i}"])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(served.current().delta) == 100
