"""Model names the evaluation accepts, and the fresh instance each name stands for.

``session-knn`` uses the preset of the protocol: the session preset
for ``next-item`` (tuned on YOOCHOOSE train_tr -> train_valid), the user preset for ``prequential``
(tuned on the warm-up part of MovieLens 100k). See :mod:`engine.sessionknn`.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.evaluation.base import Model
from engine.evaluation.baselines import (
    ALSModel,
    BiasedMFModel,
    CooccurrenceModel,
    PopularityModel,
    RecentPopularityModel,
)
from engine.evaluation.peers import VSKNNPeer
from engine.sessionknn import PRESETS, SessionKNN

MODELS: tuple[str, ...] = (
    "session-knn",
    "popularity",
    "recent-popularity",
    "cooccurrence",
    "als",
    "svd",
    "vsknn",
)
ALIASES: dict[str, str] = {"default": "session-knn"}
BASELINES: tuple[str, ...] = ("popularity", "recent-popularity", "cooccurrence", "als")


def default_baselines(protocol: str, rated: bool) -> tuple[str, ...]:
    """The baselines a report shows: :data:`BASELINES`, the V-SKNN peer for ``next-item``, and the
    rating-prediction model (RMSE/MAE) when the log carries ratings."""
    extra = ("vsknn",) if protocol == "next-item" else ()
    return BASELINES + extra + (("svd",) if rated else ())


def preset_for(protocol: str) -> str:
    return "users" if protocol == "prequential" else "sessions"


def model_factory(name: str, protocol: str) -> Callable[[], Model]:
    """A zero-argument factory of a fresh model called ``name`` (or an alias) for ``protocol``."""
    name = ALIASES.get(name, name)
    config = PRESETS[preset_for(protocol)]
    factories: dict[str, Callable[[], Model]] = {
        "session-knn": lambda: SessionKNN(config),
        "popularity": PopularityModel,
        "recent-popularity": RecentPopularityModel,
        "cooccurrence": CooccurrenceModel,
        # retrained every 5,000 learned events (the prequential peer's schedule; in a frozen
        # next-item run nothing is learned after training, so it is trained once)
        "als": lambda: ALSModel(retrain_every=5000),
        "svd": BiasedMFModel,
        "vsknn": VSKNNPeer,
    }
    factory = factories.get(name)
    if factory is None:
        raise KeyError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return factory
