"""The compiled selection loops of engine.rank_kernels keep and order exactly what the numpy
passes they replace keep and order: on random inputs full of ties, NaN and infinities."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from engine import rank_kernels, session_blend, session_kernels
from engine.session_blend import Shortlist

pytestmark = pytest.mark.skipif(not session_kernels.AVAILABLE, reason="numba is not installed")


def test_the_module_examples_run() -> None:
    assert doctest.testmod(rank_kernels).failed == 0


@pytest.mark.parametrize("seed", range(8))
def test_compiled_shortlist_keeps_what_the_partition_keeps(seed: int) -> None:
    # Few distinct scores (ties at the cut), NaN and infinite scores, protected entries, contexts
    # with no entries, fewer entries than wanted, and wants of 0 (taken as 1) up to everything.
    rng = np.random.default_rng(seed)
    n_contexts = 40
    sizes = rng.integers(0, 60, n_contexts)
    owners = np.repeat(np.arange(n_contexts), sizes)
    codes = np.concatenate([rng.permutation(80)[:size] for size in sizes]).astype(np.int64)
    scores = rng.choice([0.0, -0.0, 0.5, 1.0, 1.0 / 3.0, 2.5, np.inf, -np.inf, np.nan], len(codes))
    scores = np.where(rng.random(len(codes)) < 0.6, rng.integers(0, 6, len(codes)) / 4.0, scores)
    if seed % 2:  # a context whose best scores are NaN: the cut is NaN
        scores[owners == 0] = np.nan
    best = rng.integers(0, 70, n_contexts).tolist()
    names = [f"i{n}" for n in range(80)]
    known = {name: n for n, name in enumerate(names)}.get
    protected = [set(rng.choice(names, int(rng.integers(0, 4))).tolist()) for _ in range(n_contexts)]
    always = set(rng.choice(names, 3).tolist())
    gains = {name: float(rng.choice([0.0, 0.25, 0.3, np.inf])) for name in rng.choice(names, 20).tolist()}
    kept = []
    for shortlist in (Shortlist(best, protected, always), Shortlist(best, protected, always, gains)):
        plain = session_blend._shortlisted(owners, codes, scores, shortlist, 80, known)
        compiled = session_blend._shortlisted(owners, codes, scores, shortlist, 80, known, compiled=True)
        assert compiled.tolist() == plain.tolist()
        assert 0 < len(plain) < len(codes)  # it keeps some and drops some
        kept.append(set(plain.tolist()))
    assert kept[0] < kept[1]  # the gains keep more


@pytest.mark.parametrize("seed", range(6))
def test_compiled_ranking_is_the_lexsort_order(seed: int) -> None:
    # Few distinct values and keys, so that entries tie on the value, on the first key and on
    # both keys (then the input order stays); NaN values; contexts of 0 to 150 entries.
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 150, 30)
    context_of = np.repeat(np.arange(30), sizes)
    values = rng.choice([0.25, 0.5, 1.0 / 3.0, 2.0, -0.0, 0.0, np.nan], len(context_of))
    keys = rng.integers(0, 3, (len(context_of), 2)).astype(np.uint64) * np.uint64(2**63 - 5)
    bounds = np.searchsorted(context_of, np.arange(31))
    expected = np.lexsort((~keys[:, 1], ~keys[:, 0], -values, context_of))
    assert rank_kernels.rank_many(values, keys, bounds).tolist() == expected.tolist()
