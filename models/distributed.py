"""Data-parallel training: N processes, torch DistributedDataParallel (gloo on CPU, NCCL on GPU).

``fit_distributed`` prepares the training data once, spawns ``nproc`` ranks that rendezvous on a
free loopback port, and returns rank 0's artefact. Every rank builds the same model from the same
seed and draws the same shuffled (centre, context) pairs or (user, item) interactions for an
epoch; rank ``r`` trains on every ``nproc``-th of them in mini-batches of ``batch_size / nproc``,
so one synchronised step covers a global batch of ``batch_size`` samples, as a single process
would. The training loops are the models' own (``item2vec._train``, ``mf._train``), given a
:class:`models.training.Replica` with this rank's place and its DDP wrapper; this module only
sets up the process group and collects the result. DDP all-reduces (averages) the gradients, so all ranks hold identical parameters after
every step and compute the same validation metric, and early stopping agrees on all of them.

Embedding tables train with dense gradients here: DDP's gradient buckets do not take sparse
tensors, and the all-reduce of a dense table is cheap at the catalogue sizes this targets.
Negative samples are drawn per rank (rank 0 as one process would, the others from streams of
their own), like a larger single-process batch would.
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
from models.training import Replica, check_trainable, cpu_threads, resolve_device

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

        def wrap(model: torch.nn.Module) -> torch.nn.Module:
            return DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )

        replica = Replica(rank, world, wrap, dist.get_backend())
        if settings.model == "mf":
            from models.mf import _train
        else:
            from models.item2vec import _train
        with cpu_threads(device, settings.cpu_threads):
            embeddings = _train(data, settings, device, report if rank == 0 else None, replica)
        if rank == 0:
            messages.put(("done", str(embeddings.save(Path(out_dir)))))
        dist.barrier()
    finally:
        dist.destroy_process_group()
