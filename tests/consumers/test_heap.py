"""consumers.heap: full collections freeze their survivors, and newer garbage is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from consumers.heap import freeze_after_full_collections


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def freezing() -> Iterator[None]:
    gc.unfreeze()
    undo = freeze_after_full_collections()
    try:
        yield
    finally:
        undo()
        gc.unfreeze()


def test_survivors_of_a_full_collection_are_frozen(freezing: None) -> None:
    long_lived = [Node() for _ in range(1000)]
    gc.collect()
    frozen = gc.get_freeze_count()
    assert frozen >= len(long_lived)
    gc.collect(1)  # a younger collection freezes nothing more
    assert gc.get_freeze_count() == frozen


def test_cycles_made_after_the_freeze_are_still_collected(freezing: None) -> None:
    gc.collect()
    a, b = Node(), Node()
    a.other, b.other = b, a  # a reference cycle: only the cyclic collector frees it
    probe = weakref.ref(a)
    del a, b
    gc.collect()
    assert probe() is None


def test_undo_unfreezes_and_stops_freezing() -> None:
    gc.unfreeze()
    undo = freeze_after_full_collections()
    gc.collect()
    assert gc.get_freeze_count() > 0
    undo()
    assert gc.get_freeze_count() == 0
    undo()  # twice is harmless
    gc.collect()
    assert gc.get_freeze_count() == 0
