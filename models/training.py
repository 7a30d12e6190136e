"""What every trainer shares: device choice, seeding, mixed precision, validation, the epoch loop.

A model module supplies two callables, one epoch of training (returning the mean loss) and the
current item vectors; :func:`run_epochs` does the rest: validation after each epoch (HR@k of the
held-out next item among the nearest neighbours of the previous item), progress reports, early
stopping with the best epoch's vectors kept, and the metadata of the resulting artefact.

The same epoch code serves one process and data-parallel ranks (models.distributed): a
:class:`Replica` says which share of each epoch's samples this process trains on and how its
model is wrapped; the default, :data:`SINGLE`, is one process training on everything.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from engine.errors import ModelError
from models.artifacts import ItemEmbeddings
from models.base import Progress
from models.sequences import TrainingData
from models.settings import TrainSettings

log = logging.getLogger(__name__)


def resolve_device(setting: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an explicit CUDA device must exist."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {setting!r} requested but CUDA is not available (use 'auto' or 'cpu')")
    return device


def generator(device: torch.device, seed: int) -> torch.Generator:
    """A seeded generator on ``device``; all sampling draws from it, so runs are repeatable."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


@contextlib.contextmanager
def cpu_threads(device: torch.device, threads: int) -> Iterator[None]:
    """Limit torch's intra-op threads while training on CPU, restoring the setting afterwards.

    A training step touches a few thousand embedding rows: too little work to split across
    threads, and OpenMP workers spin-wait, so on a busy machine two threads were measured 10-20x
    slower than one. (The setting is process-wide: concurrent torch users see it too.)
    """
    if device.type != "cpu" or threads <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Above this many parameters per table, dense gradients (a full-table Adam update every step) cost
# more than sparse ones (coalescing the rows of a batch); measured crossover on CPU is ~1-4M.
SPARSE_ABOVE = 2_000_000


def use_sparse(n_rows: int, dim: int) -> bool:
    """Whether an embedding table should get sparse gradients (and SparseAdam)."""
    return n_rows * dim > SPARSE_ABOVE


def make_optimiser(params: list[torch.nn.Parameter], sparse: bool, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SparseAdam(params, lr=lr) if sparse else torch.optim.Adam(params, lr=lr)


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """Mixed precision (bfloat16 autocast) on CUDA GPUs that support bfloat16, else float32.

    bfloat16 keeps float32's exponent range, so no loss scaling is needed. Older GPUs would need
    float16 plus a GradScaler (small embedding gradients underflow in float16); they train in
    float32 instead. On CPU the embedding dot products are memory-bound, so reduced precision
    would cost accuracy and determinism for no speed.
    """
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


@dataclass(frozen=True)
class Replica:
    """This process's place in data-parallel training; ``SINGLE`` is plain one-process training.

    ``wrap`` (DistributedDataParallel for the ranks) wraps the model for the forward/backward
    pass; ``backend`` names the process group and goes into the artefact's metadata.
    """

    rank: int = 0
    world: int = 1
    wrap: Callable[[nn.Module], nn.Module] | None = None
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.wrap is not None

    def shard(self, n: int, batch: int) -> tuple[slice, int]:
        """This rank's positions among ``n`` samples (every world-th) and its share of a batch."""
        per_rank = n // self.world  # the < world leftover samples are dropped: ranks step together
        return slice(self.rank, per_rank * self.world, self.world), max(1, batch // self.world)

    def mean_loss(self, total: torch.Tensor, steps: int) -> float:
        """Mean step loss of an epoch, over all ranks; one device sync per epoch, not per step."""
        if self.world == 1:
            return float(total) / max(steps, 1)
        summed = torch.stack([total.float(), torch.tensor(float(steps), device=total.device)])
        dist.all_reduce(summed)
        return float(summed[0]) / max(float(summed[1]), 1.0)

    def metadata(self) -> dict[str, Any]:
        return {"world_size": self.world, "backend": self.backend} if self.distributed else {}


SINGLE = Replica()


def optimise(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    batches: Iterable[tuple[Any, ...]],
    device: torch.device,
    mixed_precision: bool,
) -> tuple[torch.Tensor, int]:
    """One optimiser step per batch of ``model(*batch)`` losses; (summed loss on device, steps).

    ``batches`` may be a generator: each batch is drawn just before its step.
    """
    total, steps = torch.zeros((), device=device), 0
    model.train()
    for batch in batches:
        with autocast(device, mixed_precision):
            loss = model(*batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total += loss.detach()
        steps += 1
    return total, steps


def hit_rate(vectors: np.ndarray, prev: np.ndarray, target: np.ndarray, k: int, chunk: int = 1024) -> float:
    """Share of pairs whose ``target`` is among the ``k`` cosine-nearest items of ``prev``.

    The query item itself is excluded (it is always its own nearest neighbour). Rank is the
    number of items scoring strictly higher than the target, so ties count in its favour.
    """
    if len(prev) == 0:
        return float("nan")
    v = np.asarray(vectors, dtype=np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    hits = 0
    for start in range(0, len(prev), chunk):
        p, t = prev[start : start + chunk], target[start : start + chunk]
        scores = v[p] @ v.T
        rows = np.arange(len(p))
        scores[rows, p] = -np.inf
        rank = (scores > scores[rows, t][:, None]).sum(axis=1)
        hits += int((rank < k).sum())
    return hits / len(prev)


def run_epochs(
    name: str,
    data: TrainingData,
    settings: TrainSettings,
    device: torch.device,
    train_epoch: Callable[[int], float],
    current_vectors: Callable[[], np.ndarray],
    progress: Progress | None = None,
    extra: dict[str, Any] | None = None,
) -> ItemEmbeddings:
    """Train up to ``settings.epochs`` epochs with early stopping; return the best embeddings."""
    started = time.perf_counter()
    validate = len(data.valid_prev) > 0
    metric_name = f"hr@{settings.eval_k}"
    best_metric, best_epoch, best_vectors = -1.0, 0, None
    history: list[dict[str, float | int | None]] = []
    loss = float("nan")
    for epoch in range(1, settings.epochs + 1):
        loss = train_epoch(epoch)
        if not np.isfinite(loss):
            raise ModelError(
                f"{name}: training diverged at epoch {epoch} (loss {loss}); lower the learning rate"
            )
        vectors = current_vectors()
        metric = hit_rate(vectors, data.valid_prev, data.valid_target, settings.eval_k) if validate else None
        history.append({"epoch": epoch, "loss": round(loss, 6), metric_name: metric})
        log.info("%s epoch %d: loss %.4f, %s %s", name, epoch, loss, metric_name, metric)
        if progress is not None:
            progress(epoch, loss, metric)
        if metric is None or metric > best_metric:
            best_metric, best_epoch, best_vectors = (metric if metric is not None else -1.0), epoch, vectors
        elif settings.patience and epoch - best_epoch >= settings.patience:
            break
    assert best_vectors is not None  # epochs >= 1
    trained_on = {
        "events": data.n_events,
        "sequences": len(data.train),
        "items": data.n_items,
        "validation_pairs": int(len(data.valid_prev)),
    }
    metrics: dict[str, Any] = {
        metric_name: best_metric if validate else None,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "final_loss": loss,
        "train_seconds": round(time.perf_counter() - started, 3),
        "history": history,
    }
    params = settings.model_dump(exclude={"model", "device"})
    return ItemEmbeddings.create(
        best_vectors,
        data.vocab.item_ids,
        name,
        trained_on,
        metrics,
        device=str(device),
        settings=params,
        **(extra or {}),
    )


def check_trainable(name: str, data: TrainingData) -> None:
    if data.n_items < 2:
        raise ModelError(f"{name}: need at least 2 distinct items to train, got {data.n_items}")


def train_on_device(
    name: str,
    train: Callable[[TrainingData, TrainSettings, torch.device, Progress | None], ItemEmbeddings],
    data: TrainingData,
    settings: TrainSettings,
    progress: Progress | None = None,
) -> ItemEmbeddings:
    """Check the data, pick the device and CPU thread budget, then run a model's ``train``."""
    check_trainable(name, data)
    device = resolve_device(settings.device)
    with cpu_threads(device, settings.cpu_threads):
        return train(data, settings, device, progress)
