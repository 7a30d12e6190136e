"""Data-parallel training: N processes, torch DistributedDataParallel (gloo on CPU, NCCL on GPU).

``fit_distributed`` prepares the training data once, spawns ``nproc`` ranks that rendezvous on a
free loopback port, and returns rank 0's artefact. Every rank builds the same model from the same
seed and draws the same shuffled (centre, context) pairs or (user, item) interactions for an
epoch; rank ``r`` trains on every ``nproc``-th of them in mini-batches of ``batch_size / nproc``,
so one synchronised step covers a global batch of ``batch_size`` samples, as a single process
would. DDP all-reduces (averages) the gradients, so all ranks hold identical parameters after
every step and compute the same validation metric, and early stopping agrees on all of them.

Embedding tables train with dense gradients here: DDP's gradient buckets do not take sparse
tensors, and the all-reduce of a dense table is cheap at the catalogue sizes this targets.
Negative samples are drawn per rank (seeded by rank), like a larger single-process batch would.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from engine.errors import ModelError
from engine.events import Event
from models import artifacts
from models.artifacts import ItemEmbeddings
from models.base import Progress
from models.sequences import TrainingData
from models.settings import TrainSettings
from models.training import autocast, check_trainable, cpu_threads, generator, resolve_device, run_epochs

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plan_device(setting: str, nproc: int) -> tuple[str, str]:
    """(device type, backend): NCCL needs one GPU per rank; otherwise gloo on CPU."""
    device = resolve_device(setting)
    if device.type != "cuda":
        return "cpu", "gloo"
    available = torch.cuda.device_count()
    if available >= nproc:
        return "cuda", "nccl"
    if setting == "auto":
        log.warning("%d ranks but %d GPU(s): training on CPU with gloo", nproc, available)
        return "cpu", "gloo"
    raise ModelError(f"--nproc {nproc} on CUDA needs {nproc} GPUs, found {available} (use --device cpu)")


def prepare_data(events: Sequence[Event], settings: TrainSettings) -> TrainingData:
    if settings.model == "mf":
        from models.mf import training_data

        return training_data(events, settings)
    from models.sequences import prepare

    return prepare(
        events, settings.min_count, settings.validation_fraction, settings.seed, settings.max_validation
    )


def fit_distributed(
    events: Sequence[Event], settings: TrainSettings, nproc: int, progress: Progress | None = None
) -> ItemEmbeddings:
    """Train ``settings.model`` on ``nproc`` DDP ranks; rank 0 writes the artefact, returned here."""
    if nproc < 1:
        raise ModelError(f"--nproc must be at least 1, got {nproc}")
    data = prepare_data(events, settings)
    check_trainable(settings.model, data)
    device_type, backend = plan_device(settings.device, nproc)
    ctx = mp.get_context("spawn")
    messages: Any = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory(prefix="streamrec-ddp-") as out_dir:
        init = f"tcp://127.0.0.1:{_free_port()}"
        procs = mp.start_processes(
            _rank_main,
            args=(nproc, init, backend, device_type, data, settings, out_dir, messages),
            nprocs=nproc,
            join=False,
            start_method="spawn",
        )
        path: str | None = None
        try:
            while True:
                path = _drain(messages, progress, path)
                if procs.join(timeout=0.2):
                    break
        except mp.ProcessRaisedException as exc:
            raise ModelError(f"distributed training failed: {exc}") from exc
        except mp.ProcessExitedException as exc:
            raise ModelError(f"a training rank died: {exc}") from exc
        path = _drain(messages, progress, path)
        if path is None:
            raise ModelError("distributed training ended without an artefact from rank 0")
        return artifacts.load(path)


def _drain(messages: Any, progress: Progress | None, path: str | None) -> str | None:
    while True:
        try:
            if messages.empty():
                return path
            kind, *payload = messages.get()
        except (queue.Empty, EOFError):
            return path
        if kind == "epoch" and progress is not None:
            progress(*payload)
        elif kind == "done":
            path = payload[0]


def _rank_main(
    rank: int,
    world: int,
    init: str,
    backend: str,
    device_type: str,
    data: TrainingData,
    settings: TrainSettings,
    out_dir: str,
    messages: Any,
) -> None:
    device = torch.device(f"cuda:{rank}") if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback rendezvous, even on multi-NIC hosts
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world)
    try:

        def report(epoch: int, loss: float, metric: float | None) -> None:
            messages.put(("epoch", epoch, loss, metric))

        with cpu_threads(device, settings.cpu_threads):
            train = _train_mf if settings.model == "mf" else _train_item2vec
            embeddings = train(data, settings, device, rank, world, report if rank == 0 else None)
        if rank == 0:
            messages.put(("done", str(embeddings.save(Path(out_dir)))))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _shard(n: int, rank: int, world: int, batch: int) -> tuple[np.ndarray, int]:
    """This rank's sample positions (every world-th; equal counts on all ranks) and its batch size."""
    per_rank = n // world  # the < world leftover samples are dropped, so all ranks step together
    return np.arange(rank, per_rank * world, world), max(1, batch // world)


def _mean_loss(total: torch.Tensor, steps: int, device: torch.device) -> float:
    summed = torch.stack([total.float(), torch.tensor(float(steps), device=device)])
    dist.all_reduce(summed)
    return float(summed[0]) / max(float(summed[1]), 1.0)


def _ddp(model: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _train_item2vec(
    data: TrainingData,
    settings: TrainSettings,
    device: torch.device,
    rank: int,
    world: int,
    progress: Progress | None,
) -> ItemEmbeddings:
    from models.item2vec import DEFAULT_LR, NAME, SkipGram, skipgram_pairs, subsample_mask

    torch.manual_seed(settings.seed)  # the same initial tables on every rank
    model = SkipGram(data.n_items, settings.dim, sparse=False).to(device)
    ddp = _ddp(model, device)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr or DEFAULT_LR)
    gen = generator(device, settings.seed + 7919 * rank)
    weights = torch.as_tensor(data.vocab.counts, dtype=torch.float64) ** 0.75
    cdf = (weights.cumsum(0) / weights.sum()).to(device=device, dtype=torch.float32)
    tokens, seq_ids = data.flat()

    def train_epoch(epoch: int) -> float:
        rng = np.random.default_rng([settings.seed, epoch])  # identical pairs and order on all ranks
        tok, sid = tokens, seq_ids
        if settings.subsample > 0:
            keep = subsample_mask(tok, data.vocab.counts, settings.subsample, rng)
            tok, sid = tok[keep], sid[keep]
        centres, contexts = skipgram_pairs(tok, sid, settings.window, rng)
        order = rng.permutation(len(centres))
        mine, batch = _shard(len(order), rank, world, settings.batch_size)
        pick = order[mine]
        centre_t = torch.from_numpy(centres[pick]).to(device)
        context_t = torch.from_numpy(contexts[pick]).to(device)
        total, steps = torch.zeros((), device=device), 0
        ddp.train()
        for start in range(0, len(centre_t), batch):
            c, o = centre_t[start : start + batch], context_t[start : start + batch]
            draws = torch.rand((len(c), settings.negatives), generator=gen, device=device)
            negatives = torch.searchsorted(cdf, draws).clamp_(max=data.n_items - 1)
            with autocast(device, settings.mixed_precision):
                loss = ddp(c, o, negatives)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.detach()
            steps += 1
        return _mean_loss(total, steps, device)

    def current_vectors() -> np.ndarray:
        return (model.centre.weight + model.context.weight).detach().float().cpu().numpy().copy()

    extra = {"window": settings.window, "world_size": world, "backend": dist.get_backend()}
    return run_epochs(NAME, data, settings, device, train_epoch, current_vectors, progress, extra=extra)


def _train_mf(
    data: TrainingData,
    settings: TrainSettings,
    device: torch.device,
    rank: int,
    world: int,
    progress: Progress | None,
) -> ItemEmbeddings:
    from models.mf import BPR, DEFAULT_LR, NAME, interactions, sample_negatives

    users, items = interactions(data)
    if len(users) == 0:
        raise ModelError(f"{NAME}: no interactions to train on")
    torch.manual_seed(settings.seed)
    model = BPR(len(data.train), data.n_items, settings.dim).to(device)
    ddp = _ddp(model, device)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr or DEFAULT_LR)
    positive_keys = users * data.n_items + items

    def train_epoch(epoch: int) -> float:
        rng = np.random.default_rng([settings.seed, epoch])
        order = rng.permutation(len(users))
        mine, batch = _shard(len(order), rank, world, settings.batch_size)
        u, i = users[order[mine]], items[order[mine]]
        # Each rank draws its own negatives, from a stream of its own.
        neg = sample_negatives(
            u,
            data.n_items,
            settings.negatives,
            positive_keys,
            np.random.default_rng([settings.seed, epoch, rank]),
        )
        u_t, i_t, j_t = (torch.from_numpy(a).to(device) for a in (u, i, neg))
        total, steps = torch.zeros((), device=device), 0
        ddp.train()
        for start in range(0, len(u_t), batch):
            stop = start + batch
            with autocast(device, settings.mixed_precision):
                loss = ddp(u_t[start:stop], i_t[start:stop], j_t[start:stop], settings.reg)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.detach()
            steps += 1
        return _mean_loss(total, steps, device)

    def current_vectors() -> np.ndarray:
        return model.item.weight.detach().float().cpu().numpy().copy()

    extra = {
        "interactions": int(len(users)),
        "users": len(data.train),
        "world_size": world,
        "backend": dist.get_backend(),
    }
    return run_epochs(NAME, data, settings, device, train_epoch, current_vectors, progress, extra=extra)
