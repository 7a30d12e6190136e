"""Sequential-rule weights ``source item -> target item``, stored so that many rows add up fast.

Each row is a pair of growable numpy arrays (target numbers, weights) with a dict from target to
slot, so adding a rule is O(1) and summing the rows of the 30 most recent items of a user is a few
vectorised adds instead of tens of thousands of dict updates. A row keeps its ``max_rules``
strongest targets once it holds twice that many (ties: the earlier-seen target stays).

>>> rules = RuleStore(max_rules=10)
>>> rules.add("a", "b", 1.0); rules.add("a", "c", 0.5); rules.add("a", "b", 1.0)
>>> rules.row("a"), rules.top("a")
({'b': 2.0, 'c': 0.5}, 2.0)
>>> rules.votes([("a", 1.0), ("zzz", 1.0)])
{'b': 2.0, 'c': 0.5}
>>> rules.add_many(["c", "a"], "b", [1.0, 0.5]); rules.row("a"), rules.row("c")
({'b': 2.5, 'c': 0.5}, {'b': 1.0})
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def rule_weights(steps: int, power: float) -> tuple[float, ...]:
    """What a rule ``d`` steps back adds, for ``d = 1 .. steps``: ``1 / d ** power``."""
    return tuple(distance**-power for distance in range(1, steps + 1))


class _Row:
    __slots__ = ("slots", "targets", "weights", "size", "top")

    def __init__(self) -> None:
        self.slots: dict[int, int] = {}
        self.targets = np.zeros(8, dtype=np.int64)
        self.weights = np.zeros(8)
        self.size = 0
        self.top = 0.0

    def add(self, target: int, weight: float) -> None:
        slot = self.slots.get(target)
        if slot is None:
            slot = self.size
            if slot == len(self.targets):
                self.targets = np.concatenate([self.targets, np.zeros_like(self.targets)])
                self.weights = np.concatenate([self.weights, np.zeros_like(self.weights)])
            self.targets[slot] = target
            self.slots[target] = slot
            self.size += 1
            value = weight
        else:
            value = float(self.weights[slot]) + weight
        self.weights[slot] = value
        if value > self.top:
            self.top = value

    def keep_strongest(self, keep: int) -> None:
        n = self.size
        # strongest first; among equal weights the earlier slot (earlier-seen target) first
        order = np.lexsort((np.arange(n), -self.weights[:n]))[:keep]
        order.sort()  # keep the slots' relative order
        self.targets = self.targets[order].copy()
        self.weights = self.weights[order].copy()
        self.size = len(order)
        self.slots = {int(t): s for s, t in enumerate(self.targets.tolist())}
        # the strongest rule is never dropped, so ``top`` stays right


class RuleStore:
    """Rows of ``source -> {target: weight}``, items numbered in order of first appearance."""

    def __init__(self, max_rules: int = 500) -> None:
        if max_rules < 1:
            raise ValueError("max_rules must be at least 1")
        self.max_rules = max_rules
        self.numbers: dict[str, int] = {}
        self.names: list[str] = []
        self.rows: dict[int, _Row] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def number(self, item: str) -> int:
        number = self.numbers.get(item)
        if number is None:
            number = self.numbers[item] = len(self.names)
            self.names.append(item)
        return number

    def add(self, source: str, target: str, weight: float) -> None:
        s, t = self.number(source), self.number(target)
        row = self.rows.get(s)
        if row is None:
            row = self.rows[s] = _Row()
        row.add(t, weight)
        if row.size > 2 * self.max_rules:
            row.keep_strongest(self.max_rules)

    def add_many(self, sources: Sequence[str], target: str, weights: Sequence[float]) -> None:
        """:meth:`add` of ``(source, target, weight)`` for each source and its weight, in order
        (one call for a touch's rules: they share their target, which is numbered first)."""
        number, rows, cap = self.number, self.rows, 2 * self.max_rules
        t = number(target)
        for source, weight in zip(sources, weights, strict=False):
            s = number(source)
            row = rows.get(s)
            if row is None:
                row = rows[s] = _Row()
            row.add(t, weight)
            if row.size > cap:
                row.keep_strongest(self.max_rules)

    def row(self, source: str) -> dict[str, float]:
        """A copy of one row as a dict (empty for an unknown source)."""
        number = self.numbers.get(source)
        row = self.rows.get(number) if number is not None else None
        if row is None:
            return {}
        names = self.names
        return {
            names[t]: w
            for t, w in zip(row.targets[: row.size].tolist(), row.weights[: row.size].tolist(), strict=True)
        }

    def top(self, source: str) -> float:
        number = self.numbers.get(source)
        row = self.rows.get(number) if number is not None else None
        return row.top if row is not None else 0.0

    def votes(
        self,
        sources: Sequence[tuple[str, float]],
        row_norm: bool = False,
        divide_by: np.ndarray | None = None,
    ) -> dict[str, float]:
        """``sum(weight * row(source))`` over ``sources`` (each row first divided by its largest
        weight with ``row_norm``), then divided element-wise by ``divide_by`` (indexed by item
        number; items beyond its end are left as they are). Only non-zero targets are returned."""
        _, targets, totals = self.votes_many([sources], row_norm, divide_by)
        names = self.names
        return {names[t]: total for t, total in zip(targets.tolist(), totals.tolist(), strict=True)}

    def votes_many(
        self,
        sources: Sequence[Sequence[tuple[str, float]]],
        row_norm: bool = False,
        divide_by: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`votes` of each of many source lists at once, as arrays sorted by list, then target:
        (list position, target number, vote)."""
        targets: list[np.ndarray] = []
        weights: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        for j, some in enumerate(sources):
            for source, weight in some:
                number = self.numbers.get(source)
                row = self.rows.get(number) if number is not None else None
                if row is None or not row.size:
                    continue
                if row_norm and row.top > 0:
                    weight = weight / row.top
                targets.append(row.targets[: row.size])
                weights.append(weight * row.weights[: row.size])
                owners.append(np.full(row.size, j, np.int64))
        if not targets:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        # Sparse: only the rows' targets, not an array over every item (a row has ~hundreds of
        # targets, the catalogue tens of thousands). bincount adds a key's votes in row order.
        width = len(self.names)
        keys, slot = np.unique(np.concatenate(owners) * width + np.concatenate(targets), return_inverse=True)
        totals = np.bincount(slot, weights=np.concatenate(weights), minlength=len(keys))
        owner, target = np.divmod(keys, width)
        if divide_by is not None:
            inside = target < len(divide_by)
            totals[inside] /= divide_by[target[inside]]
        hit = np.flatnonzero(totals)
        return owner[hit], target[hit], totals[hit]
