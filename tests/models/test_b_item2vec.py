"""item2vec (and the shared training loop): learns co-occurrence, repeatable, reports, stops early."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from engine.errors import ModelError
from engine.events import Event
from models import item2vec, mf
from models.sequences import TrainingData, Vocabulary
from models.settings import TrainSettings
from models.training import hit_rate, resolve_device, run_epochs

GROUPS, PER_GROUP = 8, 5


def corpus(sessions: int = 1500, seed: int = 0) -> list[Event]:
    """Sessions that each browse 3-5 items of one group, in random order: items co-occur only
    within their group (planted pairs are tested in test_training.py)."""
    rng = np.random.default_rng(seed)
    events: list[Event] = []
    ts = 1_600_000_000.0
    for s in range(sessions):
        group = int(rng.integers(GROUPS))
        items = [f"g{group}-{i}" for i in rng.permutation(PER_GROUP)[: int(rng.integers(3, PER_GROUP + 1))]]
        for item in items:
            ts += 1.0
            events.append(Event(f"e{len(events)}", ts, f"u{s}", item, "click", session_id=f"s{s}"))
    return events


def neighbours(vectors: np.ndarray, ids: list[str], item: str, k: int) -> list[str]:
    """The ``k`` cosine-nearest items of ``item``, itself excluded."""
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = v @ v[ids.index(item)]
    order = [ids[j] for j in np.argsort(-scores, kind="stable")]
    return [i for i in order if i != item][:k]


FAST = TrainSettings(dim=16, epochs=6, batch_size=128, patience=0, device="cpu", seed=7)


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return corpus()


def test_item2vec_learns_co_occurrence(events: list[Event]) -> None:
    emb = item2vec.fit(events, FAST)
    assert emb.model == "item2vec" and emb.dim == 16 and len(emb) == GROUPS * PER_GROUP
    in_group = []
    for g in range(GROUPS):
        for i in range(PER_GROUP):
            item = f"g{g}-{i}"
            near = neighbours(emb.vectors, emb.item_ids, item, PER_GROUP - 1)
            in_group += [n.startswith(f"g{g}-") for n in near]
    assert np.mean(in_group) >= 0.95, f"only {np.mean(in_group):.2f} of neighbours share the group"
    assert emb.metadata["metrics"]["hr@20"] is not None and emb.metadata["trained_on"]["events"] == len(
        events
    )


@pytest.mark.parametrize("module", [item2vec, mf], ids=["item2vec", "mf"])
def test_same_seed_same_vectors_on_cpu(events: list[Event], module) -> None:
    settings = FAST.model_copy(update={"epochs": 2})
    a = module.fit(events, settings)
    b = module.fit(events, settings)
    assert a.item_ids == b.item_ids
    assert np.array_equal(a.vectors, b.vectors)  # bit for bit
    assert a.metadata["content_hash"] == b.metadata["content_hash"]
    c = module.fit(events, settings.model_copy(update={"seed": 8}))
    assert not np.array_equal(a.vectors, c.vectors)


def test_progress_is_reported_per_epoch(events: list[Event]) -> None:
    calls: list[tuple[int, float, float | None]] = []
    emb = item2vec.fit(events, FAST.model_copy(update={"epochs": 3}), progress=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == [1, 2, 3]
    assert all(isinstance(loss, float) and loss > 0 for _, loss, _ in calls)
    assert all(metric is not None and 0 <= metric <= 1 for _, _, metric in calls)
    assert calls[-1][1] < calls[0][1]  # the loss goes down
    history = emb.metadata["metrics"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]


def fake_data(n_items: int = 4) -> TrainingData:
    vocab = Vocabulary([f"i{i}" for i in range(n_items)], np.ones(n_items, dtype=np.int64))
    return TrainingData(vocab, [np.array([0, 1])], np.array([0]), np.array([1]), 2)


def test_early_stopping_keeps_the_best_epoch() -> None:
    """HR@1 of (i0 -> i1): good vectors at epoch 2, bad after; patience 2 stops at epoch 4."""
    good = np.array([[1, 0], [1, 0.1], [0, 1], [-1, 0]], dtype=np.float32)
    bad = np.array([[1, 0], [-1, 0], [1, 0.1], [0, 1]], dtype=np.float32)
    plan = {1: bad, 2: good, 3: bad, 4: bad, 5: good}
    epoch_seen: list[int] = []

    def train_epoch(epoch: int) -> float:
        epoch_seen.append(epoch)
        return 1.0 / epoch

    settings = TrainSettings(epochs=5, patience=2, eval_k=1)
    emb = run_epochs(
        "fake", fake_data(), settings, torch.device("cpu"), train_epoch, lambda: plan[epoch_seen[-1]].copy()
    )
    assert epoch_seen == [1, 2, 3, 4]
    assert emb.metadata["metrics"]["best_epoch"] == 2 and emb.metadata["metrics"]["hr@1"] == 1.0
    np.testing.assert_array_equal(emb.vectors, good)


def test_diverging_loss_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="diverged"):
        run_epochs(
            "fake",
            fake_data(),
            TrainSettings(epochs=2),
            torch.device("cpu"),
            lambda epoch: float("nan"),
            lambda: np.zeros((4, 2), dtype=np.float32),
        )


def test_hit_rate_excludes_the_query_item() -> None:
    v = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    assert hit_rate(v, np.array([0, 0]), np.array([1, 2]), k=1) == 0.5
    assert np.isnan(hit_rate(v, np.array([], dtype=np.int64), np.array([], dtype=np.int64), k=1))


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_TRAIN_DIM", "24")
    monkeypatch.setenv("STREAMREC_TRAIN_MODEL", "mf")
    monkeypatch.setenv("STREAMREC_TRAIN_DEVICE", "CPU")
    settings = TrainSettings()
    assert (settings.dim, settings.model, settings.device) == (24, "mf", "cpu")
    with pytest.raises(ValidationError):
        TrainSettings(device="tpu")
    with pytest.raises(ValidationError):
        TrainSettings(model="word2vec")


def test_device_choice() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            resolve_device("cuda")


def test_too_little_data_is_a_clear_error() -> None:
    one = [Event("e1", 1_600_000_000.0, "u", "only", "click")]
    with pytest.raises(ModelError, match="at least 2 distinct items"):
        item2vec.fit(one, FAST)
