"""The training seam: what a trainer is, and what it reports while it runs.

Every model module (``models.item2vec``, ``models.mf``) has a ``fit`` function of this shape, so
``models.registry.train`` can pick one by name and the CLI can show progress for any of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from engine.events import Event

if TYPE_CHECKING:
    from models.artifacts import ItemEmbeddings
    from models.settings import TrainSettings


class Progress(Protocol):
    """Called once per finished epoch: 1-based epoch, mean training loss, validation HR@k.

    ``metric`` is None when there is no validation split (too little data, or fraction 0).
    """

    def __call__(self, epoch: int, loss: float, metric: float | None) -> None: ...


class Trainer(Protocol):
    """Learns item vectors from an event log (a module-level ``fit`` satisfies this)."""

    def __call__(
        self, events: Sequence[Event], settings: TrainSettings | None = None, progress: Progress | None = None
    ) -> ItemEmbeddings: ...
