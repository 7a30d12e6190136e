"""State backends: the :class:`StateStore` protocol, an in-memory store and the Redis store."""

from engine.state.base import PartitionSnapshot, StateStore, UserProfile
from engine.state.memory import MemoryStore

__all__ = ["MemoryStore", "PartitionSnapshot", "StateStore", "UserProfile"]
