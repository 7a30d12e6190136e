"""The two evaluation protocols: session next-item (session-rec) and user-centric prequential.

next-item (``run_next_item``), as session-rec evaluates YOOCHOOSE:
    fit on the training events; drop the test events whose item never occurs in training; then, in
    time order, every position ``i > 0`` of a test session is a target: rank items given the
    session's items ``0..i-1``; the target is item ``i``. ``frozen`` never learns test events;
    ``streaming`` learns each test event right after its position has been scored (test-then-learn,
    events of all sessions interleaved in time order, as they would arrive).

prequential (``run_prequential``), user-centric test-then-learn over one log:
    events in time order (stable: ties keep file order); the first ``warmup`` share is learned
    without scoring; after that every event with ``rating >= min_rating`` (or without a rating) from
    a user with at least one earlier event is a target: rank every item the user has not touched
    yet; the event is learned afterwards (every rating counts as an interaction). Targets whose item
    the user already touched cannot be hit under that rule; they are counted apart, not scored.

Both return an :class:`EvalResult` with the summary metrics, per-segment metrics and the
accumulator (sliding-window curves).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.evaluation.base import Context, Model, RatingModel
from engine.evaluation.metrics import Accumulator, Popularity
from engine.events import Event

PROTOCOLS: tuple[str, ...] = ("next-item", "prequential")
MODES: tuple[str, ...] = ("frozen", "streaming")

Progress = Callable[[int, int], None]  # (done, total)
Categories = Mapping[str, str | Collection[str]]


@dataclass
class EvalResult:
    model: str
    protocol: str
    mode: str
    n_targets: int
    metrics: dict[str, float]
    segments: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    accumulator: Accumulator | None = None


def session_key(event: Event) -> str:
    return event.session_id if event.session_id is not None else event.user_id


# --- next item -----------------------------------------------------------------------------------


@dataclass
class NextItemSplit:
    """The test part after filtering: events in time order, each with its position in its session."""

    events: list[Event]
    positions: list[int]
    dropped: int
    train_items: set[str]

    @property
    def n_targets(self) -> int:
        return sum(1 for p in self.positions if p > 0)

    @property
    def n_sessions(self) -> int:
        return sum(1 for p in self.positions if p == 0)


def next_item_split(train: Sequence[Event], test: Sequence[Event]) -> NextItemSplit:
    """Drop test events whose item is not in ``train``; number each kept event within its session.

    ``test`` must be in time order (as :func:`engine.loaders.load_events` returns it).
    """
    train_items = {e.item_id for e in train}
    kept: list[Event] = []
    positions: list[int] = []
    lengths: dict[str, int] = {}
    for event in test:
        if event.item_id not in train_items:
            continue
        key = session_key(event)
        position = lengths.get(key, 0)
        lengths[key] = position + 1
        kept.append(event)
        positions.append(position)
    return NextItemSplit(kept, positions, len(test) - len(kept), train_items)


def run_next_item(
    model: Model,
    train: Sequence[Event],
    test: Sequence[Event],
    ks: Sequence[int] = (10, 20),
    mode: str = "frozen",
    categories: Categories | None = None,
    progress: Progress | None = None,
    split: NextItemSplit | None = None,
) -> EvalResult:
    """Fit ``model`` on ``train``, then score every next-item target of ``test`` (see module doc)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    started = time.perf_counter()
    split = split or next_item_split(train, test)
    popularity = Popularity()
    for event in train:
        popularity.add(event.item_id)
    model.learn(train)
    fitted = time.perf_counter()
    acc = Accumulator(ks=ks, popularity=popularity, categories=categories)
    streaming = mode == "streaming"
    sessions: dict[str, list[Event]] = {}
    total = split.n_targets
    for event, position in zip(split.events, split.positions, strict=True):
        key = session_key(event)
        so_far = sessions.setdefault(key, [])
        if position > 0:
            context = Context(
                user_id=event.user_id,
                items=tuple(e.item_id for e in so_far),
                ts=so_far[-1].ts,
                session_id=key,
            )
            ranked = model.recommend(context, acc.depth)
            acc.add(ranked, event.item_id, segment="repeat" if event.item_id in context.items else "new")
            if progress is not None:
                progress(len(acc), total)
        so_far.append(event)
        if streaming:
            model.learn_one(event)
            popularity.add(event.item_id)
    finished = time.perf_counter()
    return EvalResult(
        model=model.name,
        protocol="next-item",
        mode=mode,
        n_targets=len(acc),
        metrics=acc.summary(catalogue_size=len(split.train_items)),
        segments=_segments(acc, ("repeat", "new")),
        info={
            "train_events": len(train),
            "test_events": len(test),
            "test_events_dropped_unknown_item": split.dropped,
            "test_sessions": split.n_sessions,
            "fit_s": round(fitted - started, 3),
            "eval_s": round(finished - fitted, 3),
        },
        accumulator=acc,
    )


# --- prequential ---------------------------------------------------------------------------------


def run_prequential(
    model: Model,
    events: Sequence[Event],
    ks: Sequence[int] = (10, 20),
    warmup: float = 0.2,
    min_rating: float = 4.0,
    cold_user_events: int = 5,
    categories: Categories | None = None,
    progress: Progress | None = None,
) -> EvalResult:
    """Test-then-learn over one time-ordered log (see module doc).

    Segments: ``new-item`` (the target item was never seen before: no learned model can rank it),
    ``cold-user`` (the user has fewer than ``cold_user_events`` earlier events), ``warm`` (the rest).
    A model that is also a :class:`RatingModel` is scored on every rated event after the warm-up
    (predict, then learn) for RMSE/MAE.
    """
    if not 0 <= warmup < 1:
        raise ValueError(f"warm-up must be a share in [0, 1), got {warmup}")
    started = time.perf_counter()
    n_warm = int(warmup * len(events))
    popularity = Popularity()
    history: dict[str, list[str]] = {}
    seen_sets: dict[str, set[str]] = {}
    ratings: dict[str, list[float | None]] = {}
    for event in events[:n_warm]:
        popularity.add(event.item_id)
        history.setdefault(event.user_id, []).append(event.item_id)
        seen_sets.setdefault(event.user_id, set()).add(event.item_id)
        ratings.setdefault(event.user_id, []).append(event.rating)
    model.learn(events[:n_warm])
    fitted = time.perf_counter()
    rating_model = model if isinstance(model, RatingModel) else None
    acc = Accumulator(ks=ks, popularity=popularity, categories=categories)
    repeats = 0
    total = sum(
        1 for e in events[n_warm:] if e.rating is None or e.rating >= min_rating
    )  # an upper bound, for progress only
    for event in events[n_warm:]:
        user, item = event.user_id, event.item_id
        items = history.get(user)
        if rating_model is not None and event.rating is not None:
            acc.add_rating(rating_model.predict_rating(user, item), event.rating)
        if items and (event.rating is None or event.rating >= min_rating):
            seen = seen_sets[user]
            if item in seen:
                repeats += 1
            else:
                context = Context(
                    user_id=user,
                    items=tuple(items),
                    ts=event.ts,
                    session_id=event.session_id,
                    ratings=tuple(ratings[user]),
                )
                ranked = model.recommend(context, acc.depth, exclude=seen)
                if item not in popularity.counts:
                    segment = "new-item"
                elif len(items) < cold_user_events:
                    segment = "cold-user"
                else:
                    segment = "warm"
                acc.add(ranked, item, segment=segment)
                if progress is not None:
                    progress(len(acc), total)
        model.learn_one(event)
        popularity.add(item)
        history.setdefault(user, []).append(item)
        seen_sets.setdefault(user, set()).add(item)
        ratings.setdefault(user, []).append(event.rating)
    finished = time.perf_counter()
    return EvalResult(
        model=model.name,
        protocol="prequential",
        mode="streaming",
        n_targets=len(acc),
        metrics=acc.summary(catalogue_size=len(popularity)),
        segments=_segments(acc, ("warm", "cold-user", "new-item")),
        info={
            "events": len(events),
            "warmup_events": n_warm,
            "skipped_repeat_targets": repeats,
            "fit_s": round(fitted - started, 3),
            "eval_s": round(finished - fitted, 3),
        },
        accumulator=acc,
    )


def _segments(acc: Accumulator, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        count = acc.segments.count(name)
        if count:
            out[name] = {"n_targets": count, **acc.summary(segment=name)}
    return out


# --- several models ------------------------------------------------------------------------------


def evaluate(
    protocol: str,
    factories: Mapping[str, Callable[[], Model]],
    *,
    test: Sequence[Event],
    train: Sequence[Event] | None = None,
    ks: Sequence[int] = (10, 20),
    mode: str = "frozen",
    categories: Categories | None = None,
    warmup: float = 0.2,
    min_rating: float = 4.0,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, EvalResult]:
    """Run ``protocol`` once per model (a fresh one from each factory), on the same data."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    results: dict[str, EvalResult] = {}
    split = next_item_split(train or (), test) if protocol == "next-item" else None
    for name, factory in factories.items():
        model = factory()
        report = None if progress is None else (lambda done, total, _n=name: progress(_n, done, total))
        if protocol == "next-item":
            if train is None:
                raise ValueError("the next-item protocol needs a training log")
            result = run_next_item(model, train, test, ks, mode, categories, report, split)
        else:
            result = run_prequential(
                model, test, ks, warmup, min_rating, categories=categories, progress=report
            )
        result.model = name
        results[name] = result
    return results
