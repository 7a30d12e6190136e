"""One contract, every index backend: exact, HNSW, IVF, HNSW+SQ8 (and the PQ variants, loosely).

The data has a known right answer: points drawn around well-separated random centres, so a
point's nearest neighbours are the members of its own cluster and its own vector is top-1.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from engine.errors import IndexBuildError, IndexLoadError, VectorIndexError
from index.base import VectorIndex
from index.exact import ExactIndex
from index.factory import IndexSettings, load_index, make_index, recommended_kind
from index.faiss_index import FaissIndex

DIM = 32
CLUSTERS = 40
PER_CLUSTER = 25  # 1000 points: enough for IVF's k-means (39 points per list) and SQ8 training

BACKENDS: dict[str, Callable[[], VectorIndex]] = {
    "exact": lambda: make_index("exact", None, DIM),
    "hnsw": lambda: make_index("hnsw", None, DIM),
    "ivf": lambda: make_index("ivf", None, DIM, nprobe=8),
    "hnsw+sq8": lambda: make_index("hnsw", "sq8", DIM),
}


def clustered(seed: int = 0, clusters: int = CLUSTERS, per: int = PER_CLUSTER, spread: float = 0.15):
    """Unit-ish vectors around random centres; returns (vectors, ids, cluster of each row)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(clusters), per)
    vectors = centres[labels] + spread * rng.normal(size=(len(labels), DIM)) / np.sqrt(DIM)
    # Different lengths on purpose: the index must rank by cosine, not by raw inner product.
    vectors *= rng.uniform(0.5, 3.0, size=(len(labels), 1))
    return vectors.astype(np.float32), [f"item-{i}" for i in range(len(labels))], labels


@pytest.fixture(scope="module")
def data():
    return clustered()


@pytest.fixture(params=list(BACKENDS), scope="class")
def built(request: pytest.FixtureRequest, data) -> tuple[str, VectorIndex]:
    vectors, ids, _ = data
    index = BACKENDS[request.param]()
    index.build(vectors, ids)
    return request.param, index


@pytest.fixture(params=list(BACKENDS))
def fresh(request: pytest.FixtureRequest) -> VectorIndex:
    return BACKENDS[request.param]()


class TestIndexContract:
    """What every backend promises (see index.base.VectorIndex)."""

    def test_protocol_size_and_dim(self, built, data) -> None:
        _, index = built
        assert isinstance(index, VectorIndex)
        assert len(index) == len(data[1]) and index.dim == DIM
        assert "item-0" in index and "nope" not in index

    def test_self_match_is_top1(self, built, data) -> None:
        name, index = built
        vectors, ids, _ = data
        found, scores = index.search(vectors, 1)
        share = np.mean([row[:1] == [item] for row, item in zip(found, ids, strict=True)])
        assert share >= (1.0 if name == "exact" else 0.99), f"{name}: self is top-1 for {share:.3f}"
        assert np.allclose(scores[:, 0], 1.0, atol=0.02)  # cosine with itself

    def test_neighbours_are_in_the_same_cluster(self, built, data) -> None:
        name, index = built
        vectors, ids, labels = data
        found, scores = index.search(vectors, 10)
        cluster_of = dict(zip(ids, labels.tolist(), strict=True))
        same = np.mean([[cluster_of[i] == labels[q] for i in row] for q, row in enumerate(found)])
        assert same >= (1.0 if name == "exact" else 0.99), f"{name}: {same:.3f} of neighbours in cluster"
        assert scores.shape == (len(ids), 10) and scores.dtype == np.float32

    def test_results_are_sorted_best_first(self, built, data) -> None:
        name, index = built
        _, scores = index.search(data[0][:50], 20)
        assert np.all(np.diff(scores, axis=1) <= 1e-6)
        slack = 0.02 if "sq8" in name else 1e-3  # quantised codes give approximate cosines
        assert np.all(scores <= 1.0 + slack) and np.all(scores >= -1.0 - slack)

    def test_matches_exact_scores(self, built, data) -> None:
        name, index = built
        vectors, ids, _ = data
        reference = ExactIndex(DIM)
        reference.build(vectors, ids)
        queries = np.random.default_rng(5).normal(size=(20, DIM)).astype(np.float32)
        _, expected = reference.search(queries, 5)
        _, got = index.search(queries, 5)
        tolerance = 1e-5 if name in ("exact", "hnsw", "ivf") else 0.03  # SQ8 codes are approximate
        # Approximate search may miss an item, never invent a better one.
        assert np.all(got <= expected + tolerance)

    def test_single_vector_query_and_large_k(self, built, data) -> None:
        _, index = built
        found, scores = index.search(data[0][3], 5)  # a 1-d query is one row
        assert len(found) == 1 and found[0][0] == "item-3"
        found, scores = index.search(data[0][:2], 10_000)  # k beyond n: at most n results
        assert scores.shape[1] <= len(index) and all(len(row) <= len(index) for row in found)
        assert all(len(set(row)) == len(row) for row in found)

    @pytest.mark.parametrize("k", [0, -1, 2.5, True])
    def test_bad_k_is_an_error(self, built, k) -> None:
        with pytest.raises(VectorIndexError, match="k must be"):
            built[1].search(np.zeros((1, DIM), dtype=np.float32), k)

    def test_bad_query_shape_is_an_error(self, built) -> None:
        with pytest.raises(VectorIndexError, match="shape"):
            built[1].search(np.zeros((2, DIM + 1), dtype=np.float32), 3)
        with pytest.raises(VectorIndexError, match="NaN"):
            built[1].search(np.full((1, DIM), np.nan, dtype=np.float32), 3)

    def test_save_and_load_round_trip(self, built, data, tmp_path: Path) -> None:
        name, index = built
        queries = data[0][::37]
        before = index.search(queries, 10)
        saved = index.save(tmp_path / "idx")
        loaded = load_index(saved)
        assert type(loaded) is type(index) and len(loaded) == len(index) and loaded.dim == DIM
        after = loaded.search(queries, 10)
        assert after[0] == before[0]
        np.testing.assert_allclose(after[1], before[1], atol=1e-6)
        if isinstance(index, FaissIndex):
            assert loaded.params() == index.params()  # type: ignore[attr-defined]

    def test_save_refuses_a_non_empty_directory(self, built, tmp_path: Path) -> None:
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "other.txt").write_text("x")
        with pytest.raises(IndexBuildError, match="not an empty directory"):
            built[1].save(tmp_path / "busy")


class TestIndexContractMutations:
    """Build/add behaviour; each test gets a new index of every backend."""

    def test_add_makes_items_searchable(self, fresh: VectorIndex, data) -> None:
        vectors, ids, _ = data
        # Build on half of every cluster, add the other half: the quantisers (IVF lists, SQ8
        # ranges) are trained on data like what is added later, as in a real delta.
        fresh.build(vectors[0::2], ids[0::2])
        fresh.add(vectors[1::2], ids[1::2])
        assert len(fresh) == len(ids) and "item-951" in fresh
        found, _ = fresh.search(vectors[951], 1)
        assert found == [["item-951"]]

    def test_rejects_bad_batches(self, fresh: VectorIndex, data) -> None:
        vectors, ids, _ = data
        with pytest.raises(IndexBuildError, match="unique"):
            fresh.build(vectors[:3], ["a", "b", "a"])
        with pytest.raises(IndexBuildError, match="dimension"):
            fresh.build(np.zeros((3, DIM + 1), dtype=np.float32), ["a", "b", "c"])
        with pytest.raises(IndexBuildError, match="ids"):
            fresh.build(vectors[:3], ["a", "b"])
        with pytest.raises(IndexBuildError, match="NaN"):
            fresh.build(np.full((2, DIM), np.inf, dtype=np.float32), ["a", "b"])
        fresh.build(vectors, ids)
        with pytest.raises(IndexBuildError, match="already indexed"):
            fresh.add(vectors[:1], ["item-0"])

    def test_cosine_not_raw_inner_product(self, fresh: VectorIndex, data) -> None:
        vectors, ids, _ = data
        fresh.build(vectors, ids)
        query = vectors[7] * 100.0
        found, scores = fresh.search(query, 1)
        assert found == [["item-7"]] and abs(float(scores[0, 0]) - 1.0) < 0.02


def test_pq_variants_are_approximately_right(data) -> None:
    """PQ is lossy (8 dims per byte here); it must still keep most neighbours in their cluster."""
    vectors, ids, labels = data
    for kind in ("hnsw", "ivf"):
        index = make_index(kind, "pq", DIM, pq_m=8)
        index.build(vectors, ids)
        found, _ = index.search(vectors, 5)
        cluster_of = dict(zip(ids, labels.tolist(), strict=True))
        same = np.mean([[cluster_of[i] == labels[q] for i in row] for q, row in enumerate(found)])
        assert same >= 0.95, f"{kind}+pq: {same:.3f} of neighbours in cluster"


def test_an_empty_index_answers_with_nothing() -> None:
    for name in ("exact", "hnsw"):
        index = BACKENDS[name]()
        found, scores = index.search(np.ones((2, DIM), dtype=np.float32), 3)
        assert found == [[], []] and scores.shape == (2, 0)


def test_factory_and_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(IndexBuildError, match="unknown index kind"):
        make_index("annoy", None, DIM)
    with pytest.raises(IndexBuildError, match="compression"):
        make_index("exact", "sq8", DIM)
    with pytest.raises(IndexBuildError, match="compression"):
        make_index("hnsw", "zip", DIM)
    assert recommended_kind(1000) == "exact" and recommended_kind(100_000) == "hnsw"
    assert recommended_kind(10_000_000) == "ivf"

    monkeypatch.setenv("STREAMREC_INDEX_KIND", "ivf")
    monkeypatch.setenv("STREAMREC_INDEX_NPROBE", "4")
    monkeypatch.setenv("STREAMREC_INDEX_COMPRESSION", "sq8")
    settings = IndexSettings()
    index = settings.make(DIM)
    assert isinstance(index, FaissIndex) and index.kind == "ivf" and index.compression == "sq8"
    assert index.nprobe == 4
    assert isinstance(IndexSettings(kind="auto").make(DIM, n_items=500), ExactIndex)


def test_load_rejects_damaged_directories(data, tmp_path: Path) -> None:
    vectors, ids, _ = data
    with pytest.raises(IndexLoadError, match="does not exist"):
        load_index(tmp_path / "missing")
    for name in ("exact", "hnsw"):
        index = BACKENDS[name]()
        index.build(vectors[:100], ids[:100])
        path = index.save(tmp_path / name)
        (path / "ids.json").write_text('["only-one"]')
        with pytest.raises(IndexLoadError):
            load_index(path)
    broken = BACKENDS["hnsw"]()
    broken.build(vectors[:100], ids[:100])
    path = broken.save(tmp_path / "trunc")
    blob = (path / "index.faiss").read_bytes()
    (path / "index.faiss").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(IndexLoadError, match="cannot read"):
        load_index(path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "index.json").write_text("{not json")
    (tmp_path / "junk" / "ids.json").write_text("[]")
    with pytest.raises(IndexLoadError, match="metadata"):
        load_index(tmp_path / "junk")
