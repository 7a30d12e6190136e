"""`python -m deploy.bench.store_ab` at a tiny size, on the test stack's Redis: both comparisons
report per-event costs, the script comparison finds the same state twice, and no key is left."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from deploy.bench import store_ab

pytestmark = pytest.mark.stack

SCRIPT = Path(store_ab.__file__).resolve().parents[2] / "engine" / "state" / "apply_batch.lua"


def test_the_script_comparison_checks_that_both_scripts_leave_the_same_state(redis_url: str) -> None:
    report = store_ab.main(
        [
            "--redis-url",
            redis_url,
            "--events",
            "600",
            "--poll",
            "200",
            "--report-every",
            "200",
            "script",
            "--old",
            str(SCRIPT),
        ]
    )
    assert report["same_state"] and report["digests"][0][1] > 100
    assert len(report["marks"]) == 3
    assert all(
        mark["redis_us_per_event[old]"] > 0 and mark["redis_us_per_event[new]"] > 0
        for mark in report["marks"]
    )
    assert list(redis.Redis.from_url(redis_url).scan_iter(match="bench-ab-*")) == []


def test_a_different_script_is_caught(redis_url: str, tmp_path: Path) -> None:
    # an "old" script that drops the history writes leaves another state
    broken = SCRIPT.read_text().replace(
        "if call_many('LPUSH', key, ARGV, i + 3, i + 2 + count) > history_len then", "if false then"
    )
    assert broken != SCRIPT.read_text()
    old = tmp_path / "old.lua"
    old.write_text(broken)
    report = store_ab.main(
        ["--redis-url", redis_url, "--events", "400", "--poll", "200", "script", "--old", str(old)]
    )
    assert not report["same_state"]


def test_the_read_comparison_times_both_reads(redis_url: str) -> None:
    report = store_ab.main(
        ["--redis-url", redis_url, "--events", "400", "--poll", "200", "--report-every", "400", "recs-read"]
    )
    (mark,) = report["marks"]
    assert mark["events"] == 400
    assert mark["redis_us_per_event[every history]"] > 0 and mark["client_us_per_event[none]"] > 0
    assert list(redis.Redis.from_url(redis_url).scan_iter(match="bench-ab-*")) == []


def test_meaningless_sizes_are_refused(redis_url: str) -> None:
    with pytest.raises(SystemExit):
        store_ab.main(["--redis-url", redis_url, "--events", "10", "--poll", "20", "recs-read"])
