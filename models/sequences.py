"""From an event log to training data: item sequences, an item vocabulary, a validation split.

A *sequence* is what one session (or, without session ids, one user) touched, in time order.
Consecutive repeats are collapsed (a user clicking the same product five times says nothing about
which products go together, and it would make "next item" validation trivial or impossible).

>>> from engine.events import Event
>>> evs = [Event(f"e{i}", 1e9 + i, u, it, "click") for i, (u, it) in enumerate(
...     [("u1", "a"), ("u2", "b"), ("u1", "b"), ("u1", "b"), ("u2", "c")])]
>>> build_sequences(evs)
[['a', 'b'], ['b', 'c']]
>>> vocab = Vocabulary.build(build_sequences(evs))
>>> vocab.item_ids, vocab.counts.tolist()
(['b', 'a', 'c'], [2, 1, 1])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from engine.events import Event

_BY_TS = attrgetter("ts")


def sequence_key(event: Event) -> tuple[str, str]:
    """Session if the event has one, else the user; tagged so a session "7" and a user "7" differ."""
    return ("s", event.session_id) if event.session_id is not None else ("u", event.user_id)


def build_sequences(events: Iterable[Event], collapse_repeats: bool = True) -> list[list[str]]:
    """Item ids per session/user in timestamp order (stable: ties keep input order).

    Sequences are ordered by their first event, so the result is deterministic for a given log.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for event in sorted(events, key=_BY_TS):
        seq = groups.setdefault(sequence_key(event), [])
        if not (collapse_repeats and seq and seq[-1] == event.item_id):
            seq.append(event.item_id)
    return list(groups.values())


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """Item id <-> row; rows ordered by descending frequency (ties: first appearance)."""

    item_ids: list[str]
    counts: np.ndarray  # int64 [n], occurrences in the sequences it was built from

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]], min_count: int = 1) -> Vocabulary:
        counts: dict[str, int] = {}
        for seq in sequences:
            for item in seq:
                counts[item] = counts.get(item, 0) + 1
        kept = [(item, c) for item, c in counts.items() if c >= min_count]
        kept.sort(key=lambda pair: -pair[1])  # stable: equal counts keep first-appearance order
        return cls([item for item, _ in kept], np.array([c for _, c in kept], dtype=np.int64))

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {item: i for i, item in enumerate(self.item_ids)})

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item: object) -> bool:
        return item in self.index

    @property
    def index(self) -> dict[str, int]:
        return self._index  # type: ignore[attr-defined, no-any-return]

    def encode(self, seq: Sequence[str]) -> np.ndarray:
        """Rows of the known items of ``seq`` (unknown ones dropped), int64."""
        index = self.index
        return np.fromiter((index[i] for i in seq if i in index), dtype=np.int64)


@dataclass(frozen=True, eq=False)
class TrainingData:
    """Encoded sequences for training, and held-out (previous item -> next item) pairs.

    ``valid_prev[j]`` is the item before the held-out last item ``valid_target[j]`` of one
    sequence; that last item is absent from ``train``.
    """

    vocab: Vocabulary
    train: list[np.ndarray]
    valid_prev: np.ndarray
    valid_target: np.ndarray
    n_events: int

    @property
    def n_items(self) -> int:
        return len(self.vocab)

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """All training tokens in one array, and the sequence number of each token."""
        if not self.train:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        lengths = np.array([len(s) for s in self.train], dtype=np.int64)
        return np.concatenate(self.train), np.repeat(np.arange(len(self.train), dtype=np.int64), lengths)


def split_validation(
    sequences: list[np.ndarray],
    fraction: float,
    seed: int,
    max_pairs: int | None = None,
    min_pairs: int = 500,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Hold out the last item of a random ``fraction`` of the sequences (of length >= 2).

    With few, long sequences (users of a ratings log) a fraction would give too few pairs for a
    stable metric, so at least ``min_pairs`` are held out, but never more than half the
    sequences; ``fraction`` 0 disables validation.

    Returns (training sequences, previous items, held-out items). A pair is kept only when its
    target still occurs somewhere in training: an item never trained on cannot be found, and
    counting it would only add noise to the early-stopping signal.
    """
    train = list(sequences)
    eligible = np.array([i for i, s in enumerate(sequences) if len(s) >= 2], dtype=np.int64)
    n_valid = int(round(fraction * len(eligible)))
    if fraction > 0:
        n_valid = max(n_valid, min(min_pairs, len(eligible) // 2))
    if max_pairs is not None:
        n_valid = min(n_valid, max_pairs)
    if n_valid == 0:
        empty = np.zeros(0, dtype=np.int64)
        return train, empty, empty
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(eligible, size=n_valid, replace=False))
    prev, target = [], []
    for i in chosen.tolist():
        prev.append(int(train[i][-2]))
        target.append(int(train[i][-1]))
        train[i] = train[i][:-1]
    prev_a, target_a = np.array(prev, dtype=np.int64), np.array(target, dtype=np.int64)
    n_items = int(max(int(s.max()) for s in sequences if len(s)) + 1)
    seen = np.bincount(np.concatenate(train), minlength=n_items) > 0 if train else np.zeros(n_items, bool)
    keep = seen[target_a]
    return train, prev_a[keep], target_a[keep]


def prepare(
    events: Sequence[Event],
    min_count: int = 1,
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_validation: int | None = None,
) -> TrainingData:
    """Sequences -> vocabulary (``min_count``) -> encoded sequences -> validation split.

    The vocabulary counts every occurrence, held-out ones included, so that an item whose only
    occurrences happen to be held out still gets a row (it is simply not validated on).
    """
    raw = build_sequences(events)
    vocab = Vocabulary.build(raw, min_count)
    encoded = [enc for enc in (vocab.encode(s) for s in raw) if len(enc)]
    # Dropping rare items can make two equal items adjacent; collapse them again.
    encoded = [s[np.concatenate(([True], s[1:] != s[:-1]))] if len(s) > 1 else s for s in encoded]
    train, prev, target = split_validation(encoded, validation_fraction, seed, max_validation)
    return TrainingData(vocab, train, prev, target, len(events))
