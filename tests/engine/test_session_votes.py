"""The chunk-wide neighbour ranking against heapq.nlargest, one context at a time."""

from __future__ import annotations

import heapq
import random

import numpy as np
import pytest

from engine.session_numbers import id_key
from engine.session_votes import ranked_neighbourhoods


def some_id(rng: random.Random) -> str:
    """Ids whose order the keys alone cannot tell: long shared prefixes, trailing NULs, non-ASCII
    and lone surrogates, beside short ones."""
    n = rng.randrange(40)
    return rng.choice(
        [
            f"s{n}",
            f"customer-{n:03d}",  # the first 8 bytes shared: the second half of the key decides
            f"customer-session-{n:06d}",  # 16 bytes shared: keys tie, the ids decide
            f"customer-session-{n}\0",
            f"é{n}",
            f"\ud800{n}",
            f"{n}",
        ]
    )


@pytest.mark.parametrize("seed", range(5))
def test_ranking_matches_nlargest_by_value_then_id(seed: int) -> None:
    rng = random.Random(seed)
    n_contexts, k = 6, 7
    values, ids, context_of = [], [], []
    for j in range(n_contexts):
        mine = {some_id(rng) for _ in range(rng.randrange(15))}  # a context's ids are unique
        for sid in sorted(mine, key=lambda _: rng.random()):
            values.append(rng.choice([0.5, 1.0, 0.25]))  # few values: ties everywhere
            ids.append(sid)
            context_of.append(j)
    numbers = np.arange(len(ids))
    found = ranked_neighbourhoods(
        np.array(values),
        numbers * 10,  # anchors, to check they follow their entries
        numbers,
        np.array(context_of, np.int64),
        n_contexts,
        k,
        np.array([id_key(sid) for sid in ids], np.uint64).reshape(-1, 2),
        lambda chosen: [ids[i] for i in chosen.tolist()],
    )
    for j, one in enumerate(found):
        mine = [(values[i], ids[i], i) for i in range(len(ids)) if context_of[i] == j]
        expected = heapq.nlargest(k, mine, key=lambda entry: (entry[0], entry[1]))
        assert one.sids == [sid for _, sid, _ in expected]
        assert one.numbers.tolist() == [i for _, _, i in expected]
        assert one.similarities.tolist() == [value for value, _, _ in expected]
        assert one.anchors.tolist() == [10 * i for _, _, i in expected]


def test_contexts_must_come_grouped_in_order() -> None:
    args = (np.ones(3), np.zeros(3, np.int64), np.arange(3), np.array([0, 1, 0]), 2, 5)
    with pytest.raises(ValueError, match="ascending"):
        ranked_neighbourhoods(*args, np.zeros((3, 2), np.uint64), lambda chosen: ["x"] * len(chosen))


def test_without_ids_the_order_is_the_same() -> None:
    values = np.array([1.0, 1.0, 1.0, 2.0])
    ids = ["customer-session-1", "customer-session-3", "customer-session-2", "x"]
    keys = np.array([id_key(sid) for sid in ids], np.uint64).reshape(-1, 2)
    args = (values, np.zeros(4, np.int64), np.arange(4), np.zeros(4, np.int64), 1, 3, keys)
    with_ids = ranked_neighbourhoods(*args, lambda chosen: [ids[i] for i in chosen.tolist()])[0]
    without = ranked_neighbourhoods(*args, lambda chosen: [ids[i] for i in chosen.tolist()], with_ids=False)[
        0
    ]
    assert with_ids.sids == ["x", "customer-session-3", "customer-session-2"]
    assert without.sids is None and without.numbers.tolist() == with_ids.numbers.tolist() == [3, 1, 2]
