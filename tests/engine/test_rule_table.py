"""The rule table against plain dicts, through row moves, arena compactions, table growth and
trims with ties, with the compiled loops and with the plain-Python ones."""

from __future__ import annotations

import random

import numpy as np
import pytest

from engine import rule_table
from engine.rule_table import FILLED, ROWS, RuleTable
from engine.sequential_rules import RuleStore
from engine.session_kernels import AVAILABLE

MODES = [False, True] if AVAILABLE else [False]


def oracle_add(rows: dict[int, dict[int, float]], source: int, target: int, weight: float, keep: int) -> None:
    """The rule semantics in dicts: a row over ``2 * keep`` keeps its ``keep`` strongest, ties
    going to the earlier-seen target, in their order."""
    row = rows.setdefault(source, {})
    row[target] = row.get(target, 0.0) + weight
    if len(row) > 2 * keep:
        ranked = sorted(enumerate(row.items()), key=lambda entry: (-entry[1][1], entry[0]))[:keep]
        rows[source] = dict(item for _, item in sorted(ranked))


def table_rows(table: RuleTable) -> dict[int, dict[int, float]]:
    rows = {}
    for source in range(len(table.size)):
        if table.size[source] >= 0:
            targets, weights = table.row(source)
            rows[source] = dict(zip(targets, weights, strict=True))
    return rows


def assert_table_consistent(table: RuleTable) -> None:
    """Every rule is in the hash table exactly once, pointing at its slot, and nothing else is."""
    expected = {}
    for source in range(len(table.size)):
        targets, _ = table.row(source)
        expected.update({(source << 31) | target: slot for slot, target in enumerate(targets)})
    held = table.keys >= 0
    found = dict(zip(table.keys[held].tolist(), table.slots[held].tolist(), strict=True))
    assert found == expected
    mask = len(table.keys) - 1
    for at in np.flatnonzero(held).tolist():  # each reachable from its home without a gap
        key = int(table.keys[at])
        probe = rule_table.home(key >> 31, key & rule_table._LOW, mask)
        while probe != at:
            assert table.keys[probe] >= 0, f"rule at {at} is cut off from its home"
            probe = (probe + 1) & mask
    assert int(table.counts[FILLED]) == len(expected)


@pytest.mark.parametrize("compiled", MODES)
def test_rules_match_dicts_through_moves_compactions_growth_and_trims(compiled: bool) -> None:
    rng = random.Random(11)
    keep = 3
    table = RuleTable.empty(compiled)
    rows: dict[int, dict[int, float]] = {}
    n_sources = 0
    for batch in range(40):
        n = rng.choice([1, 7, 150])
        # few distinct weights, so that trims meet ties; sources and targets from a growing range
        n_sources = min(400, n_sources + rng.randrange(20))
        sources = np.array([rng.randrange(n_sources + 1) for _ in range(n)], np.int64)
        targets = np.array([rng.randrange(12) for _ in range(n)], np.int64)
        weights = np.array([rng.choice([0.5, 1.0, 0.25]) for _ in range(n)])
        table.fit(n_sources + 1, n)
        table.add(sources, targets, weights, keep)
        for s, t, w in zip(sources.tolist(), targets.tolist(), weights.tolist(), strict=True):
            oracle_add(rows, s, t, w, keep)
        assert table_rows(table) == rows, batch
        assert_table_consistent(table)
    assert int(table.counts[ROWS]) == len(rows)
    assert table.room.max() <= 2 * keep + 1  # a row grows to what it holds before a trim, no more
    for source, row in rows.items():
        assert table.top[source] == max(row.values())
    # the run went through what it is meant to test
    assert max(map(len, rows.values())) <= 2 * keep
    assert len(table.keys) > 1024 or len(table.targets) > 1024


@pytest.mark.parametrize("compiled", MODES)
def test_removal_keeps_probe_chains_whole_in_a_crowded_table(compiled: bool) -> None:
    """Trims remove rules from a 16-entry table kept up to 13 full, where chains of probes run
    long and wrap around its end: every remaining rule must still be found at its slot (a
    removal that broke a chain would lose one, or leave a stale entry)."""
    table = RuleTable.empty(compiled)
    table.fit(3, 0)
    table.keys, table.slots = np.full(16, -1, np.int64), np.zeros(16, np.int32)
    keep = 2  # three rows of at most 2 x 2 rules, and the one being added: at most 13 entries
    rows: dict[int, dict[int, float]] = {}
    rng = random.Random(3)
    for _ in range(3000):
        source, target, weight = rng.randrange(3), rng.randrange(50), rng.random()
        table.add(np.array([source]), np.array([target]), np.array([weight]), keep)
        oracle_add(rows, source, target, weight, keep)
        assert_table_consistent(table)
    assert table_rows(table) == rows


def test_compiled_and_plain_loops_leave_the_same_arrays() -> None:
    if not AVAILABLE:
        pytest.skip("numba is not installed: only the plain loops run")
    rng = np.random.default_rng(2)
    sources = rng.integers(0, 300, 20_000)
    targets = rng.integers(0, 300, 20_000)
    weights = rng.choice([1.0, 0.5, 1 / 3], 20_000)
    tables = []
    for compiled in (False, True):
        table = RuleTable.empty(compiled)
        table.fit(300, len(sources))
        table.add(sources, targets, weights, 5)
        tables.append(table)
    plain, compiled_table = tables
    for name in ("offset", "size", "room", "top", "targets", "weights", "keys", "slots", "counts"):
        assert np.array_equal(getattr(plain, name), getattr(compiled_table, name)), name


def test_the_store_buffers_rules_and_adds_them_before_any_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.sequential_rules.FLUSH_AT", 3)
    rules = RuleStore(max_rules=10)
    rules.add_many(["a", "b"], "c", (1.0, 0.5, 0.25))  # more weights than sources: two rules
    assert rules._sources == [1, 2]
    assert rules.row("a") == {"c": 1.0} and rules._sources == []
    rules.add_many(["a", "b", "c"], "d", (1.0, 0.5))  # more sources than weights: two rules
    rules.add("b", "d", 1.0)  # a third buffered rule: all added at once
    assert rules._sources == []
    assert rules.row("b") == {"c": 0.5, "d": 1.5} and rules.top("b") == 1.5 and len(rules) == 2
    assert rules.names == ["c", "a", "b", "d"]  # the target is numbered before the sources


def test_the_hash_stays_below_the_int64_range() -> None:
    """The plain loops hash with Python's integers and the compiled ones wrap at 2**64: alike
    only while every product stays below 2**63 (sources and targets below 2**31)."""
    largest = (1 << 31) - 1
    assert largest * 0x9E3779B1 < 2**63 and largest * 0x85EBCA77 < 2**63
    assert rule_table._LOW == largest
    with pytest.raises(OverflowError):
        RuleTable.empty().fit(largest + 2, 0)


def votes_each_way(store: RuleStore, sources, row_norm, divide_by) -> list[list]:
    """RuleStore.votes_many's numpy pass, then the loop of RuleTable.votes as plain Python and,
    with numba, compiled: each as lists."""
    table = store._rows()
    ways = []
    for compiled in [None, False, True] if AVAILABLE else [None, False]:
        reader = RuleStore(store.max_rules, compiled=bool(compiled))
        reader.numbers, reader.names = store.numbers, store.names
        reader._table = RuleTable(**{**vars(table), "compiled": bool(compiled)})
        if compiled is None:  # the store's numpy pass
            got = reader.votes_many(sources, row_norm, divide_by)
        else:
            flat = [pair for some in sources for pair in some]
            got = reader._table.votes(
                np.array([store.numbers.get(source, -1) for source, _ in flat], np.int64),
                np.array([weight for _, weight in flat], np.float64),
                np.array([len(some) for some in sources], np.int64),
                row_norm,
                divide_by,
            )
        ways.append([array.tolist() for array in got])
    return ways


def test_votes_of_many_source_lists_equal_the_numpy_pass() -> None:
    """The loop's votes are numpy's, float for float: targets shared by several rows (added in
    row order), a source listed twice, unknown sources and sources without a row, rows divided by
    their largest or not, a divisor shorter than the catalogue, votes that cancel to zero."""
    rng = random.Random(5)
    store = RuleStore(max_rules=6)
    names = [f"i{n}" for n in range(40)]
    for _ in range(900):
        store.add(rng.choice(names[:30]), rng.choice(names), rng.choice([1.0, 0.5, 1 / 3, 0.1, -0.5]))
    store.number("lonely")  # numbered, no row
    voted = 0
    for trial in range(60):
        sources = [
            [
                (rng.choice([*names, "lonely", "unknown"]), rng.choice([1.0, 0.8, 0.64, 0.3]))
                for _ in range(rng.randrange(0, 6))
            ]
            for _ in range(rng.randrange(0, 9))
        ]
        if trial % 7 == 0 and sources and sources[0]:
            sources[0].append(sources[0][0])  # the same source twice
        for row_norm in (False, True):
            for divide_by in (None, np.linspace(0.5, 3.0, 25)):
                numpy_pass, *loops = votes_each_way(store, sources, row_norm, divide_by)
                voted += bool(numpy_pass[0])
                for loop in loops:
                    assert loop == numpy_pass
    assert voted > 150
