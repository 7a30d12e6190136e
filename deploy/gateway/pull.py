"""Pulled recommendations: the engine's Recommender over the Redis state, like `streamrec recommend`."""

from __future__ import annotations

import threading
import time
from typing import Any

from deploy.models import ModelWatcher
from deploy.runner import make_store
from deploy.settings import Settings
from engine.errors import StateStoreError
from engine.recommend import Recommender


class StateRecs:
    """Scores a user on request from the current state and the published embedding space."""

    def __init__(self, settings: Settings) -> None:
        self.store = make_store(settings)
        self.default_model = settings.worker.model_version
        self.watcher = ModelWatcher(
            self.store.client, settings.redis.key_prefix, settings.model.check_interval_s
        )
        self.recommender = Recommender(self.store, settings.engine, self.watcher.poll(force=True))
        # Requests run in a thread pool; one of them at a time swaps in a newly published space.
        self._swap = threading.Lock()

    def recommend(self, user: str, k: int) -> dict[str, Any]:
        if self._swap.acquire(blocking=False):
            try:
                space = self.watcher.poll()
                if space is not None:
                    self.recommender.space = space
            finally:
                self._swap.release()
        space = self.recommender.space
        _profile, ranked = self.recommender.for_user(user, k)
        return {
            "user_id": user,
            "items": [item for item, _ in ranked],
            "scores": [round(score, 6) for _, score in ranked],
            "generated_at": time.time(),
            "model_version": self.default_model,  # the same version fields the worker publishes
            "index_version": space.version if space is not None else None,
        }

    def ping(self) -> bool:
        try:
            return self.store.ping()
        except StateStoreError:
            return False

    def close(self) -> None:
        self.store.close()
