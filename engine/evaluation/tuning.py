"""How the :data:`engine.sessionknn.PRESETS` were chosen, as a re-runnable search.

Coordinate search: starting from a configuration, try each listed value of one parameter at a
time, keep any change that raises the objective, and repeat the sweep until a round brings
nothing (or ``rounds`` is reached). Only data that no report scores is used:

- ``sessions``: YOOCHOOSE-100k ``train_tr`` -> ``train_valid``, next-item protocol, frozen mode;
  objective HR@20 + MRR@20 (12,455 targets). The test file is never read.
- ``users``: the first 20% of MovieLens 100k (exactly the events the prequential report learns
  without scoring), replayed prequentially with its own 50% warm-up; objective
  HR@10 + HR@20 + NDCG@10 (5,575 targets).

``python -m engine.evaluation.tuning sessions|users [--data DIR]`` reruns the last stage of each
search (a sweep takes tens of minutes on two cores). The starting points were reached by earlier
sweeps of the same kind over the same data, from the defaults of
:class:`~engine.sessionknn.SessionKNNConfig`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.evaluation.protocols import next_item_split, run_next_item, run_prequential
from engine.loaders import load_events
from engine.sessionknn import SessionKNN, SessionKNNConfig

Params = dict[str, Any]

SESSIONS_START: Params = dict(
    idf_weight=1.0, reminder_weight=2.0, reminder_decay=0.5, k=500, sample=500, position_decay=3.0,
    length_norm=0.25, sr_weight=0.25, anchor_decay=10.0, recency_half_life_s=259200.0,
    item_decay=5.0, distinct_votes=True,
)  # fmt: skip
SESSIONS_GRID: dict[str, Sequence[Any]] = dict(
    k=[200, 300, 1000], sample=[300, 1000], position_decay=[2.0, 5.0], length_norm=[0.0, 0.5],
    item_decay=[3.0, 10.0], idf_weight=[0.5, 2.0], sr_weight=[0.15, 0.4],
    anchor_decay=[5.0, 20.0, None], recency_half_life_s=[2 * 86400.0, 5 * 86400.0],
    reminder_weight=[1.5, 3.0], reminder_decay=[0.4, 0.7], before_weight=[0.7], sr_steps=[5, 20],
)  # fmt: skip
USERS_START: Params = dict(
    k=0, sr_weight=1.0, sr_symmetric=True, sr_steps=10, sr_items=20, sr_items_decay=0.85,
    sr_distance_power=0.5,
)  # fmt: skip
USERS_GRID: dict[str, Sequence[Any]] = dict(
    sr_steps=[5, 20, 40], sr_items=[10, 30, 50], sr_items_decay=[0.75, 0.8, 0.9, 0.95],
    sr_distance_power=[0.0, 0.25, 0.75], sr_pop_norm=[-0.3, -0.1, 0.1],
    trend_weight=[0.05, 0.1, 0.2, 0.4], trend_half_life_s=[86400.0, 30 * 86400.0], sr_row_norm=[True],
)  # fmt: skip


def coordinate_search(
    objective: Callable[[Params], float],
    start: Params,
    grid: Mapping[str, Sequence[Any]],
    rounds: int = 3,
) -> tuple[Params, float]:
    """The best parameters found and their objective (each distinct setting is evaluated once)."""
    seen: dict[str, float] = {}

    def score(params: Params) -> float:
        key = json.dumps(params, sort_keys=True)
        if key not in seen:
            seen[key] = objective(params)
        return seen[key]

    best, best_score = dict(start), score(start)
    for _ in range(rounds):
        improved = False
        for name, values in grid.items():
            for value in values:
                trial = {**best, name: value}
                trial_score = score(trial)
                if trial_score > best_score + 1e-6:
                    best, best_score, improved = trial, trial_score, True
        if not improved:
            break
    return best, best_score


def sessions_objective(data: Path, log: Callable[[str], None] = print) -> Callable[[Params], float]:
    folder = data / "yoochoose-100k"
    train = load_events(folder / "yoochoose-clicks-100k_train_tr.txt", "yoochoose")
    valid = load_events(folder / "yoochoose-clicks-100k_train_valid.txt", "yoochoose")
    split = next_item_split(train, valid)

    def objective(params: Params) -> float:
        metrics = run_next_item(
            SessionKNN(SessionKNNConfig(**params)), train, valid, (10, 20), split=split
        ).metrics
        log(f"HR@20 {metrics['HR@20']:.4f} MRR@20 {metrics['MRR@20']:.4f} {params}")
        return metrics["HR@20"] + metrics["MRR@20"]

    return objective


def users_objective(data: Path, log: Callable[[str], None] = print) -> Callable[[Params], float]:
    events = load_events(data / "ml-100k" / "ml-100k.inter", "movielens")
    part = events[: int(0.2 * len(events))]

    def objective(params: Params) -> float:
        metrics = run_prequential(SessionKNN(SessionKNNConfig(**params)), part, (10, 20), warmup=0.5).metrics
        log(
            f"HR@10 {metrics['HR@10']:.4f} HR@20 {metrics['HR@20']:.4f} NDCG@10 {metrics['NDCG@10']:.4f} {params}"
        )
        return metrics["HR@10"] + metrics["HR@20"] + metrics["NDCG@10"]

    return objective


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", choices=("sessions", "users"))
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    parser.add_argument("--rounds", type=int, default=None, help="sweeps (the original: 2 sessions, 3 users)")
    args = parser.parse_args(argv)
    if args.preset == "sessions":
        objective, start, grid, rounds = sessions_objective(args.data), SESSIONS_START, SESSIONS_GRID, 2
    else:
        objective, start, grid, rounds = users_objective(args.data), USERS_START, USERS_GRID, 3
    best, score = coordinate_search(objective, start, grid, args.rounds or rounds)
    print(f"best objective {score:.4f}: {best}")


if __name__ == "__main__":
    main()
