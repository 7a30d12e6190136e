"""`python -m deploy.bench.state_load` at a tiny size, on the test stack's Redis: it times both
kinds of load, and leaves no key behind."""

from __future__ import annotations

import pytest
import redis

from deploy.bench import state_load

pytestmark = pytest.mark.stack


def test_the_load_bench_times_both_ways_and_cleans_up(redis_url: str) -> None:
    rows = state_load.main(
        [
            "--redis-url",
            redis_url,
            "--users",
            "40",
            "--history",
            "5",
            "--poll-users",
            "8",
            "--polls",
            "3",
            "--rounds",
            "1",
        ]
    )
    assert [row["history"] for row in rows] == [1.0, 0.0]
    assert all(row["wall_ms"] > 0 and row["client_ms"] >= 0 for row in rows)
    assert list(redis.Redis.from_url(redis_url).scan_iter(match="bench-load-*")) == []


def test_the_load_bench_refuses_meaningless_sizes(redis_url: str) -> None:
    with pytest.raises(SystemExit):
        state_load.main(["--redis-url", redis_url, "--poll-users", "10", "--users", "5"])
