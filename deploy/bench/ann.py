"""ANN index: recall@10 against exact search, queries/s (one at a time and batched), build time
and memory, for the index backends (``index.factory.make_index``) at each catalogue size.

The vectors are synthetic but shaped like trained item embeddings rather than uniform noise:
a mixture of Gaussian clusters (categories) with uneven sizes plus per-item noise, d=64. Uniform
random vectors in 64-d have no neighbourhood structure and would understate every ANN method;
real item2vec spaces are clustered. Queries are fresh draws from the same mixture (user vectors
are sums of item vectors, so they fall in the same regions).

Ground truth is the exact backend's top-10. Single-query throughput calls ``search`` once per
query through the same Python adapter the engine uses; batched throughput sends all queries in
one call (FAISS spreads a batch over its OpenMP threads).
"""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np

from deploy.bench.common import rss_mb
from index.factory import make_index

K = 10
EXACT_CHUNK = 64


def clustered_vectors(n: int, dim: int, seed: int, n_clusters: int | None = None) -> np.ndarray:
    """``n`` float32 vectors from a Gaussian mixture with Zipf-sized clusters."""
    rng = np.random.default_rng(seed)
    n_clusters = n_clusters or max(8, int(np.sqrt(n) / 2))
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    sizes = 1.0 / np.arange(1, n_clusters + 1) ** 0.7
    labels = rng.choice(n_clusters, size=n, p=sizes / sizes.sum())
    out = np.empty((n, dim), dtype=np.float32)
    step = 200_000
    for start in range(0, n, step):  # chunked: the noise of 1M x 64 at once costs 512 MB in float64
        lab = labels[start : start + step]
        out[start : start + len(lab)] = centres[lab] + 0.6 * rng.standard_normal((len(lab), dim)).astype(
            np.float32
        )
    return out


def recall_at_k(found: list[list[str]], truth: list[list[str]], k: int = K) -> float:
    """Mean share of each query's exact top-k that the approximate top-k contains."""
    if not truth:
        return 0.0
    hits = sum(len(set(f[:k]) & set(t[:k])) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth))


def _single_qps(index: Any, queries: np.ndarray, seconds: float = 2.0) -> float:
    done, started = 0, time.perf_counter()
    while True:
        for q in queries:
            index.search(q[None, :], K)
            done += 1
            if done % 100 == 0 and time.perf_counter() - started > seconds:
                return done / (time.perf_counter() - started)


def _batched_qps(index: Any, queries: np.ndarray) -> float:
    started = time.perf_counter()
    index.search(queries, K)
    return len(queries) / (time.perf_counter() - started)


def bench_index(
    kind: str, vectors: np.ndarray, ids: list[str], queries: np.ndarray, truth: list[list[str]], **params: Any
) -> list[dict[str, Any]]:
    """Build one index, then measure it at each search setting (``ef_search`` / ``nprobe`` list)."""
    sweep_name = {"hnsw": "ef_search", "ivf": "nprobe"}.get(kind)
    sweep = params.pop(sweep_name, [None]) if sweep_name else [None]
    gc.collect()
    before = rss_mb()
    index = make_index(kind, None, vectors.shape[1], **params)
    started = time.perf_counter()
    index.build(vectors, ids)
    build_s = time.perf_counter() - started
    memory = rss_mb() - before
    rows = []
    for value in sweep:
        if sweep_name and value is not None:
            setattr(index, sweep_name, int(value))
        found, _ = index.search(queries, K)
        rows.append(
            {
                "kind": kind,
                **{k: v for k, v in params.items()},
                **({sweep_name: value} if sweep_name else {}),
                "recall_at_10": recall_at_k(found, truth),
                "qps_single": _single_qps(index, queries[:500]),
                "qps_batch": _batched_qps(index, queries),
                "build_s": build_s,
                "memory_mb": memory,
            }
        )
    del index
    gc.collect()
    return rows


def run_ann(
    sizes: list[int],
    dim: int = 64,
    n_queries: int = 1000,
    hnsw_m: int = 32,
    ef_construction: int = 100,
    ef_search: list[int] | None = None,
    nprobe: list[int] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    ef_search = ef_search or [32, 64, 128]
    nprobe = nprobe or [8, 16, 32]
    out: dict[str, Any] = {"dim": dim, "queries": n_queries, "k": K, "sizes": {}}
    for n in sizes:
        data = clustered_vectors(n + n_queries, dim, seed)
        vectors, queries = data[:n], data[n:]
        ids = [f"i{j}" for j in range(n)]
        # Small query chunks: a chunk's score matrix is chunk x n floats (4 GB at 1024 x 1M).
        exact = make_index("exact", None, dim, chunk=EXACT_CHUNK)
        exact.build(vectors, ids)
        truth, _ = exact.search(queries, K)
        del exact
        rows = bench_index("exact", vectors, ids, queries, truth, chunk=EXACT_CHUNK)
        rows += bench_index("hnsw", vectors, ids, queries, truth, hnsw_m=hnsw_m,
                            ef_construction=ef_construction, ef_search=ef_search)  # fmt: skip
        rows += bench_index("ivf", vectors, ids, queries, truth, nprobe=nprobe)
        best = _best(rows)
        out["sizes"][str(n)] = {"runs": rows, "best": best}
    largest = out["sizes"][str(max(sizes))]["best"]
    out["recall_at_10"] = largest["recall_at_10"]
    out["qps_single"] = largest["qps_single"]
    out["qps_batch"] = largest["qps_batch"]
    out["best_config"] = {
        k: v for k, v in largest.items() if k not in ("recall_at_10", "qps_single", "qps_batch")
    }
    out["largest"] = max(sizes)
    return out


def _best(rows: list[dict[str, Any]], min_recall: float = 0.95) -> dict[str, Any]:
    """The fastest approximate configuration (single query) with recall@10 >= ``min_recall``;
    the most accurate approximate one when none reaches it."""
    approx = [r for r in rows if r["kind"] != "exact"]
    good = [r for r in approx if r["recall_at_10"] >= min_recall]
    if good:
        return max(good, key=lambda r: r["qps_single"])
    return max(approx, key=lambda r: (r["recall_at_10"], r["qps_single"]))
