"""The trainers: they learn real structure, are repeatable with a seed, report and stop early."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from engine.errors import ModelError
from engine.events import Event
from models import item2vec, mf
from models.artifacts import ItemEmbeddings
from models.settings import TrainSettings
from tests.models.ml100k import ml100k_events

TRAINERS = {"item2vec": item2vec.fit, "mf": mf.fit}
PAIRS = 40


def paired_corpus(n_sequences: int = 2000, seed: int = 0) -> tuple[list[Event], list[list[str]]]:
    """Sessions of random filler items with one known pair (a_k, b_k) side by side in each.

    The only structure is the pairs, so a model that learned anything puts b_k next to a_k.
    """
    rng = np.random.default_rng(seed)
    events: list[Event] = []
    sequences: list[list[str]] = []
    for s in range(n_sequences):
        k = int(rng.integers(PAIRS))
        seq = [f"x{int(j)}" for j in rng.choice(150, size=4, replace=False)]
        at = int(rng.integers(0, len(seq) + 1))
        seq[at:at] = [f"a{k}", f"b{k}"] if rng.random() < 0.5 else [f"b{k}", f"a{k}"]
        sequences.append(seq)
        events += [
            Event(f"e{s}-{t}", 1.7e9 + s * 10 + t, f"u{s % 500}", item, "click", session_id=f"s{s}")
            for t, item in enumerate(seq)
        ]
    return events, sequences


def nearest(emb: ItemEmbeddings, item: str) -> str:
    v = emb.vectors / np.linalg.norm(emb.vectors, axis=1, keepdims=True)
    pos = emb.positions()
    scores = v @ v[pos[item]]
    scores[pos[item]] = -np.inf
    return emb.item_ids[int(np.argmax(scores))]


def quick(**overrides) -> TrainSettings:
    base = {"dim": 16, "epochs": 6, "patience": 0, "seed": 11, "device": "cpu", "batch_size": 1024}
    return TrainSettings(**{**base, **overrides})


@pytest.fixture(scope="module")
def corpus() -> tuple[list[Event], list[list[str]]]:
    return paired_corpus()


@pytest.mark.parametrize("name", list(TRAINERS))
def test_learns_known_co_occurring_pairs(name: str, corpus) -> None:
    events, _ = corpus
    emb = TRAINERS[name](events, quick(epochs=8))
    found = sum(nearest(emb, f"a{k}") == f"b{k}" for k in range(PAIRS))
    assert found >= 0.9 * PAIRS, f"{name}: partner is the nearest neighbour for {found}/{PAIRS} pairs"
    assert emb.model == name and emb.dim == 16 and emb.vectors.dtype == np.float32
    assert emb.metadata["trained_on"]["events"] == len(events)
    assert emb.metadata["device"] == "cpu"


@pytest.mark.parametrize("name", list(TRAINERS))
def test_same_seed_same_vectors(name: str, corpus) -> None:
    events, _ = corpus
    first = TRAINERS[name](events, quick(epochs=2))
    second = TRAINERS[name](events, quick(epochs=2))
    np.testing.assert_array_equal(first.vectors, second.vectors)
    assert first.item_ids == second.item_ids
    other = TRAINERS[name](events, quick(epochs=2, seed=12))
    assert not np.array_equal(first.vectors, other.vectors)


@pytest.mark.parametrize("name", list(TRAINERS))
def test_progress_and_early_stopping(name: str, corpus) -> None:
    events, _ = corpus
    reports: list[tuple[int, float, float | None]] = []
    emb = TRAINERS[name](
        events, quick(epochs=40, patience=2), progress=lambda e, loss, m: reports.append((e, loss, m))
    )
    metrics = emb.metadata["metrics"]
    assert [r[0] for r in reports] == list(range(1, len(reports) + 1))
    assert all(np.isfinite(loss) and 0.0 <= m <= 1.0 for _, loss, m in reports)  # type: ignore[operator]
    assert len(reports) < 40, "the validation metric stopped improving, so training should stop early"
    assert metrics["epochs_run"] == len(reports)
    # The kept vectors are the best epoch's, and stopping came `patience` epochs after it.
    assert metrics["hr@20"] == max(m for _, _, m in reports)  # type: ignore[type-var]
    assert len(reports) - metrics["best_epoch"] == 2
    assert reports[-1][1] < reports[0][1]  # the loss went down


def test_mf_accepts_sequences(corpus) -> None:
    _, sequences = corpus
    emb = mf.fit(sequences, quick(epochs=3, validation_fraction=0.0))
    assert len(emb) == 150 + 2 * PAIRS and emb.metadata["metrics"]["hr@20"] is None
    with pytest.raises(ModelError, match="not a list of strings"):
        mf.fit(["a", "b"], quick())  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(TRAINERS))
def test_too_little_data_is_a_clear_error(name: str) -> None:
    one = [Event("e1", 1.7e9, "u", "only", "click")]
    with pytest.raises(ModelError, match="at least 2 distinct items"):
        TRAINERS[name](one, quick())


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_TRAIN_MODEL", "mf")
    monkeypatch.setenv("STREAMREC_TRAIN_DIM", "24")
    monkeypatch.setenv("STREAMREC_TRAIN_EPOCHS", "7")
    settings = TrainSettings()
    assert (settings.model, settings.dim, settings.epochs) == ("mf", 24, 7)
    monkeypatch.setenv("STREAMREC_TRAIN_DEVICE", "tpu")
    with pytest.raises(ValueError, match="device"):
        TrainSettings()


def test_explicit_cuda_without_cuda_is_a_clear_error(corpus) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ModelError, match="CUDA is not available"):
        mf.fit(corpus[0], quick(device="cuda"))


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)
@pytest.mark.parametrize("name", list(TRAINERS))
def test_gpu_training_with_mixed_precision(name: str) -> None:
    """Both models on ML-100k on the GPU (autocast on): as good as the CPU path, and timed."""
    events = ml100k_events()
    settings = TrainSettings(device="auto", dim=64, epochs=10, patience=3, seed=5)
    started = time.perf_counter()
    gpu = TRAINERS[name](events, settings)
    seconds = time.perf_counter() - started
    assert gpu.metadata["device"].startswith("cuda")
    cpu = TRAINERS[name](events, settings.model_copy(update={"device": "cpu"}))
    print(
        f"\n{name} ML-100k: GPU {seconds:.1f}s hr@20 {gpu.metadata['metrics']['hr@20']:.3f}; "
        f"CPU {cpu.metadata['metrics']['train_seconds']:.1f}s hr@20 {cpu.metadata['metrics']['hr@20']:.3f}"
    )
    assert gpu.metadata["metrics"]["hr@20"] >= 0.8 * cpu.metadata["metrics"]["hr@20"]
    assert np.all(np.isfinite(gpu.vectors))
