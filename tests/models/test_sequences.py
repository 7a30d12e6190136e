"""Training data: sequences per session (else per user) in time order, vocabulary, validation split."""

from __future__ import annotations

import numpy as np

from engine.events import Event
from models.sequences import Vocabulary, build_sequences, prepare, split_validation


def ev(n: int, ts: float, user: str, item: str, session: str | None = None) -> Event:
    return Event(f"e{n}", 1.7e9 + ts, user, item, "click", session_id=session)


def test_sequences_per_session_else_per_user_in_time_order() -> None:
    events = [
        ev(0, 5, "u1", "c"),
        ev(1, 1, "u1", "a"),
        ev(2, 3, "u1", "b"),  # user u1, out of order
        ev(3, 2, "u2", "x", "s9"),
        ev(4, 4, "u2", "y", "s9"),
        ev(5, 6, "u2", "z", "s10"),
        ev(6, 7, "s9", "q"),  # a *user* called "s9" is not session "s9"
    ]
    assert build_sequences(events) == [["a", "b", "c"], ["x", "y"], ["z"], ["q"]]


def test_consecutive_repeats_collapse() -> None:
    events = [ev(i, i, "u", item) for i, item in enumerate("aabba")]
    assert build_sequences(events) == [["a", "b", "a"]]
    assert build_sequences(events, collapse_repeats=False) == [list("aabba")]


def test_vocabulary_min_count_and_order() -> None:
    vocab = Vocabulary.build([["a", "b", "c"], ["b", "c"], ["c"]], min_count=2)
    assert vocab.item_ids == ["c", "b"] and vocab.counts.tolist() == [3, 2]
    assert "a" not in vocab and vocab.encode(["a", "b", "c"]).tolist() == [1, 0]


def test_split_holds_out_the_last_item() -> None:
    sequences = [np.arange(i, i + 5, dtype=np.int64) % 20 for i in range(100)]
    train, prev, target = split_validation(sequences, 0.2, seed=1, min_pairs=0)
    shortened = [i for i, (a, b) in enumerate(zip(sequences, train, strict=True)) if len(b) < len(a)]
    assert len(shortened) == 20
    for i in shortened:
        assert train[i].tolist() == sequences[i][:-1].tolist()
    assert len(prev) == len(target) <= 20
    again = split_validation(sequences, 0.2, seed=1, min_pairs=0)
    assert np.array_equal(again[1], prev) and np.array_equal(again[2], target)  # seeded


def test_prepare_end_to_end() -> None:
    rng = np.random.default_rng(0)
    events = [ev(i, i, f"u{i % 30}", f"i{int(rng.integers(50))}") for i in range(900)]
    data = prepare(events, min_count=2, validation_fraction=0.1, seed=3)
    assert data.n_events == 900 and data.n_items == len(data.vocab) <= 50
    assert len(data.valid_prev) == len(data.valid_target) > 0
    tokens, seq_ids = data.flat()
    assert len(tokens) == sum(len(s) for s in data.train) and seq_ids.max() == len(data.train) - 1
