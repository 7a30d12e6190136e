"""What an evaluated model offers the protocols: learn events, rank items for a context.

A :class:`Context` is what is known at request time: the user (or session) and the items they
touched so far, oldest first. Models never see the target. The protocols call ``learn`` once on the
training part and ``learn_one`` per event while replaying (test-then-learn).
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from engine.events import Event


@dataclass(frozen=True, slots=True)
class Context:
    """A request: who asks, what they touched so far (oldest first), and when."""

    user_id: str
    items: tuple[str, ...] = ()
    ts: float = 0.0
    session_id: str | None = None
    ratings: tuple[float | None, ...] = field(default=())  # parallel to ``items`` when known


@runtime_checkable
class Model(Protocol):
    """A recommender under evaluation (the candidate model and every baseline)."""

    name: str

    def learn(self, events: Iterable[Event]) -> None:
        """Learn a batch of events in time order (the training part or the warm-up)."""
        ...

    def learn_one(self, event: Event) -> None:
        """Learn one more event (streaming)."""
        ...

    def recommend(self, context: Context, k: int, exclude: Collection[str] = ()) -> list[str]:
        """The ``k`` best items for ``context``, best first, none of them in ``exclude``."""
        ...


@runtime_checkable
class RatingModel(Protocol):
    """A model that also predicts the rating a user would give an item (RMSE/MAE)."""

    def predict_rating(self, user_id: str, item_id: str) -> float: ...


class LearnsOneByOne:
    """Mixin: ``learn`` as a loop over ``learn_one``."""

    def learn_one(self, event: Event) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def learn(self, events: Iterable[Event]) -> None:
        for event in events:
            self.learn_one(event)


def top_k(scores: dict[str, float], k: int, exclude: Collection[str] = ()) -> list[str]:
    """The ``k`` highest-scoring items not in ``exclude``; ties broken by item id for determinism."""
    if exclude:
        candidates = [(s, i) for i, s in scores.items() if i not in exclude]
    else:
        candidates = [(s, i) for i, s in scores.items()]
    if len(candidates) > 4 * k:
        best = heapq.nsmallest(k, ((-s, i) for s, i in candidates))
        return [i for _, i in best]
    candidates.sort(key=lambda si: (-si[0], si[1]))
    return [i for _, i in candidates[:k]]
