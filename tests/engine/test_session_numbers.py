"""The numbered view of an item -> sessions index (engine.session_numbers): its segments follow the
index through gains, losses, moves and compactions of the arena that holds them."""

from __future__ import annotations

import random

import pytest

from engine.session_numbers import SessionNumbers


@pytest.mark.parametrize("seed", range(4))
def test_segments_follow_the_index_through_moves_and_compactions(seed: int) -> None:
    rng = random.Random(seed)
    numbers = SessionNumbers()
    index: dict[str, dict[str, None]] = {f"i{n}": {} for n in range(40)}
    stamps: dict[str, float] = {}
    arena_sizes = set()
    for step in range(6000):
        item = rng.choice(sorted(index))
        sessions = index[item]
        if sessions and rng.random() < 0.4:
            sid = rng.choice(sorted(sessions))
            del sessions[sid]
            numbers.lost(item, sid)
        else:
            sid = f"s{rng.randrange(3000)}"
            if sid in sessions:
                continue
            sessions[sid] = None
            stamps[sid] = float(step)
            numbers.gained(item, sid)
            numbers.touched(sid, stamps[sid], 0, False)
        if rng.random() < 0.05:  # items are searched (and numbered) now and then
            searched = rng.choice(sorted(index))
            numbers.slot(searched, index[searched], stamps)
        arena_sizes.add(len(numbers._index.data))
    assert len(arena_sizes) > 2, "the arena never grew: the test did not reach a compaction"
    for item, sessions in index.items():
        slot = numbers.slot(item, sessions, stamps)
        found = numbers.ids(numbers.sessions(slot))
        assert sorted(found) == sorted(sessions), item
        assert len(found) == len(set(found))


def test_a_session_numbered_after_its_segment_was_built_rebuilds_the_segment() -> None:
    numbers = SessionNumbers()
    index = {"a": {"s1": None}}
    slot = numbers.slot("a", index["a"], {"s1": 1.0})
    # The model never tells the view of an item's index out of step; if it did, the segment is
    # dropped and built again from the index on the next search, not left wrong.
    numbers.lost("a", "s-never-numbered")
    index["a"]["s2"] = None
    again = numbers.slot("a", index["a"], {"s1": 1.0, "s2": 2.0})
    assert again != slot
    assert sorted(numbers.ids(numbers.sessions(again))) == ["s1", "s2"]
    assert numbers._stamps[numbers._number["s2"]] == 2.0
