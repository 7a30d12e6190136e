"""Sequential-rule weights ``source item -> target item``, stored so that many rows add up fast.

The rows live in a :class:`~engine.rule_table.RuleTable`: one arena of (target number, weight)
arrays and a hash table from ``(source, target)`` to a rule's place, so that adding a rule is
O(1) in a compiled loop and summing the rows of the 30 most recent items of a user is a few
vectorised adds. Rules are buffered as numbers and added in order, a batch at a time, before
anything reads the rows (a touch adds ten; a call per rule cost more than the adding). A row keeps
its ``max_rules`` strongest targets once it holds twice that many (ties: the earlier-seen target
stays).

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

from engine.rule_table import ROWS, RuleTable
from engine.session_kernels import AVAILABLE

# Rules buffered before they are added: a touch adds ten, a poll of 2,000 events ~20,000.
FLUSH_AT = 32_768


@lru_cache(maxsize=8)
def rule_weights(steps: int, power: float) -> tuple[float, ...]:
    """What a rule ``d`` steps back adds, for ``d = 1 .. steps``: ``1 / d ** power``."""
    return tuple(distance**-power for distance in range(1, steps + 1))


class RuleStore:
    """Rows of ``source -> {target: weight}``, items numbered in order of first appearance;
    ``compiled``: add with the compiled loops (numba), the same rows."""

    def __init__(self, max_rules: int = 500, compiled: bool = AVAILABLE) -> None:
        if max_rules < 1:
            raise ValueError("max_rules must be at least 1")
        self.max_rules = max_rules
        self.numbers: dict[str, int] = {}
        self.names: list[str] = []
        self._table = RuleTable.empty(compiled)
        self._sources: list[int] = []  # the buffered rules, in order
        self._targets: list[int] = []
        self._weights: list[float] = []

    def __len__(self) -> int:
        """Sources with a row."""
        return int(self._rows().counts[ROWS])

    def number(self, item: str) -> int:
        number = self.numbers.get(item)
        if number is None:
            number = self.numbers[item] = len(self.names)
            self.names.append(item)
        return number

    def add(self, source: str, target: str, weight: float) -> None:
        self._sources.append(self.number(source))
        self._targets.append(self.number(target))
        self._weights.append(weight)
        if len(self._sources) >= FLUSH_AT:
            self._rows()

    def add_many(self, sources: Sequence[str], target: str, weights: Sequence[float]) -> None:
        """:meth:`add` of ``(source, target, weight)`` for each source and its weight, in order
        (one call for a touch's rules: they share their target, which is numbered first)."""
        t = self.number(target)
        some = sources[: len(weights)]
        try:  # a model's sources are items it has numbered already
            numbers = [*map(self.numbers.__getitem__, some)]
        except KeyError:
            numbers = [*map(self.number, some)]
        self._sources += numbers
        self._targets += [t] * len(numbers)
        self._weights += weights[: len(numbers)]
        if len(self._sources) >= FLUSH_AT:
            self._rows()

    def _rows(self) -> RuleTable:
        """The table with every buffered rule added."""
        table = self._table
        if self._sources:
            sources = np.array(self._sources, np.int64)
            targets = np.array(self._targets, np.int64)
            weights = np.array(self._weights, np.float64)
            self._sources, self._targets, self._weights = [], [], []
            table.fit(len(self.names), len(sources))
            table.add(sources, targets, weights, self.max_rules)
        return table

    def row_size(self, source: str) -> int:
        """How many rules row ``source`` holds (0 for an unknown source)."""
        return len(self.row(source))

    def row(self, source: str) -> dict[str, float]:
        """A copy of one row as a dict (empty for an unknown source)."""
        number = self.numbers.get(source)
        if number is None:
            return {}
        targets, weights = self._rows().row(number)
        names = self.names
        return {names[t]: w for t, w in zip(targets, weights, strict=True)}

    def top(self, source: str) -> float:
        number = self.numbers.get(source)
        table = self._rows()
        if number is None or number >= len(table.size) or table.size[number] < 0:
            return 0.0
        return float(table.top[number])

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
        table = self._rows()
        if table.compiled:
            number = self.numbers.get
            flat = [pair for some in sources for pair in some]
            return table.votes(
                np.fromiter((number(source, -1) for source, _ in flat), np.int64, len(flat)),
                np.fromiter((weight for _, weight in flat), np.float64, len(flat)),
                np.fromiter(map(len, sources), np.int64, len(sources)),
                row_norm,
                divide_by,
            )
        numbers, n_rows = self.numbers, len(table.size)
        offsets, sizes, tops = table.offset, table.size, table.top
        arena_targets, arena_weights = table.targets, table.weights
        targets: list[np.ndarray] = []
        weights: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        for j, some in enumerate(sources):
            for source, weight in some:
                number = numbers.get(source)
                if number is None or number >= n_rows:
                    continue
                size = int(sizes[number])
                if size <= 0:
                    continue
                if row_norm and tops[number] > 0:
                    weight = weight / float(tops[number])
                start = int(offsets[number])
                targets.append(arena_targets[start : start + size])
                weights.append(weight * arena_weights[start : start + size])
                owners.append(np.full(size, j, np.int64))
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
