"""engine.segments: many int32 arrays in one, against plain lists under random changes."""

from __future__ import annotations

import random

import pytest

from engine.segments import Segments


@pytest.mark.parametrize("seed", range(4))
def test_segments_hold_what_lists_would_through_moves_and_compactions(seed: int) -> None:
    rng = random.Random(seed)
    segments = Segments()
    segments.ensure(50)
    lists: dict[int, list[int]] = {}
    compactions = 0
    for _ in range(8000):
        key = rng.randrange(50)
        data_before = segments.data
        if key not in lists or rng.random() < 0.02:
            lists[key] = [rng.randrange(100) for _ in range(rng.randrange(6))]
            segments.put(key, lists[key], spare=rng.randrange(3))
        elif rng.random() < 0.05:
            del lists[key]
            segments.drop(key)
        elif lists[key] and rng.random() < 0.2:
            lists[key].pop(0)
            segments.pop_first(key)
        elif lists[key] and rng.random() < 0.2:
            value = rng.choice(lists[key])
            once = lists[key].count(value) == 1
            assert segments.remove(key, value) == once
            if once:
                at = lists[key].index(value)
                lists[key][at] = lists[key][-1]
                lists[key].pop()
        else:
            value = rng.randrange(100)
            lists[key].append(value)
            segments.append(key, value)
        compactions += segments.data is not data_before
        for key in rng.sample(range(50), 3):
            if key in lists:
                assert segments.view(key).tolist() == lists[key]
            else:
                assert segments.size[key] == -1
    assert compactions > 2
    for key, values in lists.items():
        assert segments.view(key).tolist() == values
