"""Training speed: samples/s and time to a usable model, per model type and device.

Each model trains on the same generator log with the production trainer (``models.<name>.fit_data``)
and settings (early stopping included). A *sample* is one positive training example of an epoch:
a (centre, context) pair for item2vec (counted with the trainer's own pair sampler and seed), an
observed (user, item) interaction for BPR-MF. *Usable* is the first epoch whose validation HR@k
reaches 90% of the best the run achieved; its time counts from the start of training.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from engine.generator import generate_events
from models.sequences import prepare
from models.settings import TrainSettings

USABLE_SHARE = 0.9


def _samples_per_epoch(model: str, data: Any, settings: TrainSettings, epochs: int) -> list[int]:
    if model == "mf":
        from models.mf import interactions

        return [len(interactions(data)[0])] * epochs
    from models.item2vec import skipgram_pairs

    tokens, seq_ids = data.flat()
    counts = []
    for epoch in range(1, epochs + 1):
        # The trainer's own draw for this epoch (rng seeded by (seed, epoch)); no subsampling here.
        rng = np.random.default_rng([settings.seed, epoch])
        counts.append(len(skipgram_pairs(tokens, seq_ids, settings.window, rng)[0]))
    return counts


def bench_model(model: str, events: list, device: str, epochs: int) -> dict[str, Any]:
    settings = TrainSettings(model=model, device=device, epochs=epochs)  # type: ignore[arg-type]
    data = prepare(
        events, settings.min_count, settings.validation_fraction, settings.seed, settings.max_validation
    )
    fit_data = __import__(f"models.{model}", fromlist=["fit_data"]).fit_data
    marks: list[tuple[int, float, float | None]] = []
    started = time.perf_counter()

    def progress(epoch: int, loss: float, metric: float | None) -> None:
        marks.append((epoch, time.perf_counter() - started, metric))

    embeddings = fit_data(data, settings, progress)
    total_s = time.perf_counter() - started
    epochs_run = len(marks)
    samples = sum(_samples_per_epoch(model, data, settings, epochs_run))
    metrics = [m for _, _, m in marks if m is not None]
    best = max(metrics) if metrics else None
    usable = next(
        ((e, t) for e, t, m in marks if best is not None and m is not None and m >= USABLE_SHARE * best),
        None,
    )
    return {
        "model": model,
        "device": embeddings.metadata.get("device", device),
        # The trainer limits torch to settings.cpu_threads on CPU (restored afterwards).
        "torch_threads": settings.cpu_threads if device == "cpu" else None,
        "items": len(embeddings),
        "epochs_run": epochs_run,
        "samples": samples,
        "train_s": total_s,
        # Training time includes the per-epoch validation, as a real run does.
        "samples_per_s": samples / max(total_s, 1e-9),
        "best_validation_hr": best,
        "usable_epoch": usable[0] if usable else None,
        "time_to_usable_s": usable[1] if usable else None,
    }


def run_train(n_events: int, models: list[str], epochs: int = 10, seed: int = 0) -> dict[str, Any]:
    import torch

    events = generate_events(n_events, n_users=20_000, n_items=20_000, seed=seed)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    runs = [bench_model(model, events, device, epochs) for device in devices for model in models]
    return {
        "events": n_events,
        "epochs_max": epochs,
        "cuda_available": torch.cuda.is_available(),
        "runs": runs,
        **{f"{r['model']}_{r['device'].split(':')[0]}": r for r in runs},
    }
