"""The oracle: rebuild the expected state from the event log and compare it with a live store."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.config import EngineSettings
from engine.pipeline import BatchProcessor, RawRecord
from engine.state.base import PartitionSnapshot, StateStore
from engine.state.memory import MemoryStore

REL_TOL = 1e-6


@dataclass(frozen=True, slots=True)
class Mismatch:
    partition: int
    what: str
    key: str
    expected: object
    actual: object

    def to_dict(self) -> dict[str, object]:
        return {k: _plain(getattr(self, k)) for k in ("partition", "what", "key", "expected", "actual")}


def _plain(value: object) -> object:
    if isinstance(value, set):
        return sorted(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    return value


def rebuild(
    records: Mapping[int, Sequence[RawRecord]],
    partitions: int,
    settings: EngineSettings,
    batch_size: int = 5000,
) -> MemoryStore:
    """Run every record through the same batch logic as the workers, without trimming neighbours."""
    oracle = MemoryStore(partitions, settings, trim=False)
    processor = BatchProcessor(oracle, settings)
    for partition, rows in records.items():
        for start in range(0, len(rows), batch_size):
            processor.process(partition, rows[start : start + batch_size])
    return oracle


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-9)


def compare_partition(
    partition: int, expected: PartitionSnapshot, actual: PartitionSnapshot, settings: EngineSettings
) -> list[Mismatch]:
    out: list[Mismatch] = []

    def miss(what: str, key: str, exp: object, act: object) -> None:
        out.append(Mismatch(partition, what, key, exp, act))

    for name in ("watermark", "applied", "duplicates", "invalid"):
        if getattr(expected, name) != getattr(actual, name):
            miss(name, "", getattr(expected, name), getattr(actual, name))
    for name in ("history", "purchases"):
        exp_map, act_map = getattr(expected, name), getattr(actual, name)
        for user in exp_map.keys() | act_map.keys():
            if exp_map.get(user) != act_map.get(user):
                miss(name, user, exp_map.get(user), act_map.get(user))
    for user in expected.seen.keys() | actual.seen.keys():
        exp_ids, act_ids = set(expected.seen.get(user, {})), set(actual.seen.get(user, {}))
        if exp_ids != act_ids:
            miss("seen", user, len(exp_ids), len(act_ids))
    for user in expected.sessions.keys() | actual.sessions.keys():
        exp_s, act_s = expected.sessions.get(user), actual.sessions.get(user)
        if exp_s is None or act_s is None or exp_s[0] != act_s[0] or not _close(exp_s[1], act_s[1]):
            miss("session", user, exp_s, act_s)
    out += _compare_popularity(partition, expected, actual, settings)
    out += _compare_cooccurrence(partition, expected, actual, settings)
    return out


def _compare_popularity(
    partition: int, expected: PartitionSnapshot, actual: PartitionSnapshot, settings: EngineSettings
) -> list[Mismatch]:
    if expected.popularity.keys() != actual.popularity.keys():
        missing = expected.popularity.keys() ^ actual.popularity.keys()
        return [Mismatch(partition, "popularity", "keys", len(expected.popularity), f"{len(missing)} differ")]
    if not expected.popularity:
        return []
    # Scores are stored relative to an epoch that depends on batch boundaries: compare at one time.
    if expected.popularity_epoch is None or actual.popularity_epoch is None:
        return [
            Mismatch(partition, "popularity_epoch", "", expected.popularity_epoch, actual.popularity_epoch)
        ]
    factor = 2.0 ** ((expected.popularity_epoch - actual.popularity_epoch) / settings.popularity_half_life_s)
    return [
        Mismatch(partition, "popularity", item, score * factor, actual.popularity[item])
        for item, score in expected.popularity.items()
        if not _close(score * factor, actual.popularity[item])
    ]


def _compare_cooccurrence(
    partition: int, expected: PartitionSnapshot, actual: PartitionSnapshot, settings: EngineSettings
) -> list[Mismatch]:
    """Exact where an item's list never reached the trim threshold; one-sided where it was trimmed.

    Trimming drops the weakest neighbours at moments that depend on batch boundaries, so a trimmed
    list may hold less than the exact weight, never more: an event counted twice still shows.
    """
    out: list[Mismatch] = []
    bound = 2 * settings.max_neighbours
    for item in expected.cooccurrence.keys() | actual.cooccurrence.keys():
        exp_row = expected.cooccurrence.get(item, {})
        act_row = actual.cooccurrence.get(item, {})
        if len(exp_row) <= bound:
            if exp_row.keys() != act_row.keys():
                out.append(Mismatch(partition, "cooccurrence", item, len(exp_row), len(act_row)))
                continue
            bad = [k for k, w in exp_row.items() if not _close(w, act_row[k])]
        else:
            bad = [k for k, w in act_row.items() if k not in exp_row or w > exp_row[k] * (1 + REL_TOL) + 1e-9]
            if len(act_row) > bound:
                bad.append("<size>")
        for key in bad[:3]:
            out.append(
                Mismatch(partition, "cooccurrence", f"{item}->{key}", exp_row.get(key), act_row.get(key))
            )
    return out


def verify_store(
    records: Mapping[int, Sequence[RawRecord]], store: StateStore, settings: EngineSettings
) -> tuple[MemoryStore, list[Mismatch]]:
    """Rebuild from ``records`` (each partition read up to the store's watermark) and compare."""
    oracle = rebuild(records, store.partitions, settings)
    mismatches: list[Mismatch] = []
    for partition in range(store.partitions):
        mismatches += compare_partition(
            partition, oracle.snapshot(partition), store.snapshot(partition), settings
        )
    return oracle, mismatches
