"""The gateway's two seams: where pulled recommendations come from, and where events go.

The HTTP layer (``app.py``) only sees these protocols; ``pull.py`` and ``intake.py`` hold the
Redis and Kafka backends, and unit tests pass in-memory ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from engine.events import Event


class RecsReader(Protocol):
    """Synchronous (called from a worker thread): the engine's state is read with blocking I/O."""

    def recommend(self, user: str, k: int) -> dict[str, Any]:
        """``{"user_id", "items", "scores", "generated_at", "model_version", ...}``; StreamrecError on failure."""
        ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class EventSink(Protocol):
    async def send(self, events: Sequence[Event]) -> None:
        """Return once every event is acknowledged by the broker; BrokerError otherwise."""
        ...

    def close(self) -> None: ...
