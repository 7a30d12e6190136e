"""Shared real data for the model and index tests: ML-100k events, metadata and quick embeddings.

The datasets live outside the repository (``../shared/data`` next to it, or ``$STREAMREC_DATA``);
tests that need them are skipped with the reason when they are absent. Trained embeddings are
cached per process, so the index and model tests pay for one training run between them.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import pytest

from engine.events import Event
from engine.loaders import load_events
from models.artifacts import ItemEmbeddings
from models.settings import TrainSettings

DATA = Path(os.environ.get("STREAMREC_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
ML_INTER = DATA / "ml-100k" / "ml-100k.inter"
ML_ITEM = DATA / "ml-100k" / "ml-100k.item"
# Small and quick on purpose: the tests need real vectors with real structure, not the best ones.
QUICK = TrainSettings(dim=32, epochs=2, patience=0, seed=3, device="cpu")


def require(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"dataset file {path} is absent (set STREAMREC_DATA to the shared data folder)")
    return path


@lru_cache(maxsize=1)
def _events() -> tuple[Event, ...]:
    return tuple(load_events(ML_INTER, "movielens"))


def ml100k_events() -> list[Event]:
    require(ML_INTER)
    return list(_events())


@lru_cache(maxsize=2)
def _item2vec() -> ItemEmbeddings:
    from models import item2vec

    return item2vec.fit(list(_events()), QUICK)


def ml100k_item2vec() -> ItemEmbeddings:
    """A quick item2vec on ML-100k (trained once per test process)."""
    require(ML_INTER)
    return _item2vec()
