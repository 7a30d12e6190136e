"""compare_partition on damaged live state: it reports mismatches, it never crashes."""

from __future__ import annotations

from engine.config import EngineSettings
from engine.state.base import PartitionSnapshot
from engine.verify import compare_partition

T0 = 1_700_000_000.0
SETTINGS = EngineSettings()


def test_a_lost_meta_hash_is_reported() -> None:
    expected = PartitionSnapshot(
        watermark=9, applied=10, popularity_epoch=T0, popularity={"a": 1.0}, history={"u": ["a"]}
    )
    actual = PartitionSnapshot(history={"u": ["a"]})  # meta and pop keys gone
    found = {(m.what, m.key) for m in compare_partition(0, expected, actual, SETTINGS)}
    assert found == {("watermark", ""), ("applied", ""), ("popularity", "keys")}


def test_state_the_oracle_never_produced_is_reported() -> None:
    actual = PartitionSnapshot(
        history={"ghost": ["a"]},
        purchases={"ghost": {"a"}},
        seen={"ghost": {"x": T0}},
        sessions={"ghost": ("s", T0)},
        cooccurrence={"a": {"b": 1.0}},
    )
    found = {(m.what, m.key) for m in compare_partition(0, PartitionSnapshot(), actual, SETTINGS)}
    assert found == {
        ("history", "ghost"),
        ("purchases", "ghost"),
        ("seen", "ghost"),
        ("session", "ghost"),
        ("cooccurrence", "a"),
    }


def test_a_missing_popularity_epoch_is_a_mismatch_not_a_crash() -> None:
    expected = PartitionSnapshot(popularity={"a": 1.0}, popularity_epoch=T0)
    actual = PartitionSnapshot(popularity={"a": 1.0}, popularity_epoch=None)
    assert compare_partition(0, expected, actual, SETTINGS) != []
