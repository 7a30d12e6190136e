"""BPR matrix factorisation over (user or session, item) interactions (torch).

Bayesian Personalised Ranking (Rendle et al., 2009): every sequence (a session, or a user
without sessions) is a "user" ``u`` with a factor ``p_u``; every item has a factor ``q_i`` and a
bias ``b_i``; the model learns ``p_u.q_i + b_i > p_u.q_j + b_j`` for an item ``i`` the user touched
and an item ``j`` they did not. The item factors ``q`` are the item vectors; the user factors only
exist during training (serving builds user vectors from item vectors, see engine.embeddings).

Per epoch: every distinct (user, item) pair is a positive, shuffled; each gets
``settings.negatives`` items drawn uniformly (BPR's own choice: a popular item is no likelier to be
a negative, so popularity goes into the bias instead of into every vector), re-drawn once where
the draw hit one of the user's own items. All sampling comes from numpy generators seeded with
``(seed, epoch)``, so a CPU run is repeatable bit for bit.

>>> from models.settings import TrainSettings
>>> seqs = [["a", "b"], ["a", "b"], ["c", "d"], ["c", "d"]] * 10
>>> emb = fit(seqs, TrainSettings(dim=4, epochs=2, validation_fraction=0, device="cpu"))
>>> emb.model, emb.vectors.shape
('mf', (4, 4))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelError
from engine.events import Event
from models.artifacts import ItemEmbeddings
from models.base import Progress
from models.sequences import TrainingData, Vocabulary, prepare, split_validation
from models.settings import TrainSettings
from models.training import SINGLE, Replica, optimise, run_epochs, train_on_device

NAME = "mf"
DEFAULT_LR = 0.01
INIT_STD = 0.1


class BPR(nn.Module):
    """User factors, item factors and item biases; ``forward`` is the mean BPR loss of a batch."""

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.user.weight, std=INIT_STD)
        nn.init.normal_(self.item.weight, std=INIT_STD)
        nn.init.zeros_(self.bias.weight)

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, reg: float) -> torch.Tensor:
        p = self.user(users)  # [B, d]
        qi, qj = self.item(pos), self.item(neg)  # [B, d], [B, K, d]
        x_pos = (p * qi).sum(-1, keepdim=True) + self.bias(pos)  # [B, 1]
        x_neg = torch.bmm(qj, p.unsqueeze(-1)).squeeze(-1) + self.bias(neg).squeeze(-1)  # [B, K]
        ranking = -F.logsigmoid((x_pos - x_neg).float()).mean()
        # L2 on the factors this batch touched (the usual BPR regulariser), not on the whole table.
        norms = p.float().pow(2).sum(-1) + qi.float().pow(2).sum(-1) + qj.float().pow(2).sum(-1).mean(-1)
        return ranking + reg * norms.mean()


def interactions(data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (sequence, item) pairs of the training sequences, sorted (users, items int64)."""
    if not data.train:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    tokens, seq_ids = data.flat()
    keys = np.unique(seq_ids * data.n_items + tokens)
    return keys // data.n_items, keys % data.n_items


def sample_negatives(
    users: np.ndarray, n_items: int, count: int, positive_keys: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``count`` uniform items per user, drawn again once where a draw is one of the user's own.

    ``positive_keys`` are the sorted ``user * n_items + item`` codes of all positives.
    """
    neg = rng.integers(0, n_items, size=(len(users), count), dtype=np.int64)
    hit = np.isin(users[:, None] * n_items + neg, positive_keys, assume_unique=False)
    if hit.any():
        neg[hit] = rng.integers(0, n_items, size=int(hit.sum()), dtype=np.int64)
    return neg


def training_data(source: Sequence[Event] | Sequence[Sequence[str]], settings: TrainSettings) -> TrainingData:
    """:func:`models.sequences.prepare` for events, or the same steps for ready-made sequences."""
    if not source or isinstance(source[0], Event):
        return prepare(
            source,  # type: ignore[arg-type]  # a list of events here
            settings.min_count,
            settings.validation_fraction,
            settings.seed,
            settings.max_validation,
        )
    if isinstance(source[0], str):
        raise ModelError("sequences must be a list of item-id lists, not a list of strings")
    vocab = Vocabulary.build(source, settings.min_count)
    encoded = [enc for enc in (vocab.encode(s) for s in source) if len(enc)]
    train, prev, target = split_validation(
        encoded, settings.validation_fraction, settings.seed, settings.max_validation
    )
    return TrainingData(vocab, train, prev, target, sum(len(s) for s in source))


def fit(
    source: Sequence[Event] | Sequence[Sequence[str]],
    settings: TrainSettings | None = None,
    progress: Progress | None = None,
) -> ItemEmbeddings:
    """Train BPR-MF on events (grouped per session/user) or on item-id sequences."""
    settings = settings or TrainSettings(model=NAME)
    return fit_data(training_data(source, settings), settings, progress)


def fit_data(data: TrainingData, settings: TrainSettings, progress: Progress | None = None) -> ItemEmbeddings:
    """Train on prepared data; deterministic for a given seed on CPU."""
    return train_on_device(NAME, _train, data, settings, progress)


def _train(
    data: TrainingData,
    settings: TrainSettings,
    device: torch.device,
    progress: Progress | None,
    replica: Replica = SINGLE,
) -> ItemEmbeddings:
    users, items = interactions(data)
    if len(users) == 0:
        raise ModelError(f"{NAME}: no interactions to train on")
    torch.manual_seed(settings.seed)  # the same initial tables on every rank
    model = BPR(len(data.train), data.n_items, settings.dim).to(device)
    step_model = replica.wrap(model) if replica.wrap is not None else model
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr or DEFAULT_LR)
    positive_keys = users * data.n_items + items  # sorted: interactions() returns np.unique order

    def train_epoch(epoch: int) -> float:
        rng = np.random.default_rng([settings.seed, epoch])  # the same order on every rank
        order = rng.permutation(len(users))
        mine, size = replica.shard(len(order), settings.batch_size)
        u, i = users[order[mine]], items[order[mine]]
        # Negatives: rank 0 draws what one process would, every other rank a stream of its own.
        neg_rng = rng if replica.rank == 0 else np.random.default_rng([settings.seed, epoch, replica.rank])
        neg = sample_negatives(u, data.n_items, settings.negatives, positive_keys, neg_rng)
        u_t, i_t, j_t = (torch.from_numpy(a).to(device) for a in (u, i, neg))
        steps = (
            (u_t[start : start + size], i_t[start : start + size], j_t[start : start + size], settings.reg)
            for start in range(0, len(u_t), size)
        )
        return replica.mean_loss(*optimise(step_model, optimiser, steps, device, settings.mixed_precision))

    def current_vectors() -> np.ndarray:
        return model.item.weight.detach().float().cpu().numpy().copy()

    return run_epochs(
        NAME,
        data,
        settings,
        device,
        train_epoch,
        current_vectors,
        progress,
        extra={"interactions": int(len(users)), "users": len(data.train), **replica.metadata()},
    )
