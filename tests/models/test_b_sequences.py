"""Training data from events: sequences, vocabulary, validation split (models.sequences)."""

from __future__ import annotations

import numpy as np

from engine.events import Event
from models.sequences import Vocabulary, build_sequences, prepare, split_validation


def ev(n: int, ts: float, user: str, item: str, session: str | None = None) -> Event:
    return Event(f"e{n}", 1_600_000_000 + ts, user, item, "click", session)


def test_sequences_per_session_else_per_user_in_time_order() -> None:
    events = [
        ev(0, 5, "u1", "c"),
        ev(1, 1, "u1", "a"),
        ev(2, 3, "u1", "b"),
        ev(3, 2, "u2", "x", session="s1"),
        ev(4, 4, "u2", "y", session="s2"),  # another session of the same user
        ev(5, 6, "u2", "z", session="s1"),
        ev(6, 7, "u3", "q", session="u1"),  # a session id equal to a user id stays separate
    ]
    assert build_sequences(events) == [["a", "b", "c"], ["x", "z"], ["y"], ["q"]]


def test_repeats_collapse_and_ties_keep_input_order() -> None:
    events = [ev(0, 1, "u", "a"), ev(1, 1, "u", "b"), ev(2, 2, "u", "b"), ev(3, 3, "u", "a")]
    assert build_sequences(events) == [["a", "b", "a"]]
    assert build_sequences(events, collapse_repeats=False) == [["a", "b", "b", "a"]]


def test_vocabulary_min_count_and_encoding() -> None:
    vocab = Vocabulary.build([["a", "b", "a"], ["c", "a", "b"]], min_count=2)
    assert vocab.item_ids == ["a", "b"] and vocab.counts.tolist() == [3, 2]
    assert "c" not in vocab and len(vocab) == 2
    assert vocab.encode(["c", "b", "a", "zzz"]).tolist() == [1, 0]


def test_validation_holds_out_last_items() -> None:
    seqs = [np.array([i % 7, (i + 1) % 7, (i + 2) % 7]) for i in range(100)]
    train, prev, target = split_validation(seqs, 0.2, seed=1, min_pairs=0)
    assert len(prev) == len(target) == 20
    shortened = [i for i, (a, b) in enumerate(zip(train, seqs, strict=True)) if len(a) != len(b)]
    assert len(shortened) == 20
    for j, i in enumerate(shortened):
        assert prev[j] == seqs[i][-2] and target[j] == seqs[i][-1]
        assert train[i].tolist() == seqs[i][:-1].tolist()
    again = split_validation(seqs, 0.2, seed=1, min_pairs=0)
    assert np.array_equal(again[1], prev) and np.array_equal(again[2], target)  # seeded


def test_validation_minimum_and_unseen_targets() -> None:
    seqs = [np.array([0, 1]) for _ in range(10)] + [np.array([2, 3])]
    _, prev, _ = split_validation(seqs, 0.01, seed=0, min_pairs=4)
    assert len(prev) <= 5  # raised to min_pairs, capped at half the sequences
    # Item 3 occurs only as a last item: if it is held out it is never trained, so not validated.
    _, prev, target = split_validation([np.array([2, 3]), np.array([0, 1]), np.array([0, 1])], 0.99, 0)
    assert 3 not in target.tolist()
    assert split_validation(seqs, 0.0, 0)[1].size == 0


def test_prepare_end_to_end() -> None:
    events = [ev(i, i, f"u{i % 30}", f"item{(i * 7) % 11}") for i in range(300)]
    data = prepare(events, min_count=1, validation_fraction=0.1, seed=3)
    assert data.n_items == 11 and data.n_events == 300
    tokens, seq_ids = data.flat()
    assert len(tokens) == len(seq_ids) == sum(len(s) for s in data.train)
    assert len(data.valid_prev) > 0 and data.valid_prev.dtype == np.int64
