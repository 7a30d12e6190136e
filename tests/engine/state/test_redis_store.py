"""Redis-specific behaviour of RedisStore, and where it still differs from the in-memory reference.

The shared behaviour of both backends is pinned by test_contract.py; this module covers what only
the Redis store has (key layout, connection errors, retries, secrets, the shipped Lua script) and
the divergences from MemoryStore that the contract class does not exercise.
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.config import EngineSettings
from engine.errors import StateStoreError
from engine.events import Event, encode_event
from engine.logic import StateDelta
from engine.pipeline import BatchProcessor, RawRecord
from engine.state.memory import MemoryStore
from engine.state.redis_store import RedisSettings, RedisStore

# Co-occurrence rows on beside the session model: every kind of key is written.
SETTINGS = EngineSettings(max_neighbours=3, history_length=4, dedup_window=5, cooccurrence_rows="on")
T0 = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[3]


def redis_settings(url: str, **extra: Any) -> RedisSettings:
    return RedisSettings(url=url, key_prefix="t", retry_backoff_s=0.01, **extra)


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    redis_store = RedisStore(redis_settings(redis_url), partitions=2, engine=SETTINGS)
    try:
        yield redis_store
    finally:
        redis_store.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Redis only ----------------------------------------------------------------------------------


@pytest.mark.stack
def test_every_key_of_a_partition_carries_its_hash_tag(store: RedisStore) -> None:
    events = [
        Event("e1", T0, "u1", "a", "view", session_id="s1"),
        Event("e2", T0 + 1, "u1", "b", "purchase", session_id="s1"),
    ]
    records = [RawRecord(1, offset, encode_event(e)) for offset, e in enumerate(events)]
    BatchProcessor(store, SETTINGS).process(1, records)
    store.set_recs_digests({1: {"u1": "d"}})
    keys = sorted(k.decode() for k in store.client.keys("*"))
    # One Redis Cluster slot per partition: the atomic batch write never spans slots.
    assert all(k.startswith("t:{1}:") for k in keys), keys
    kinds = {k[len("t:{1}:") :].split(":")[0] for k in keys}
    # session model (preset "sessions": no trend): sessions, their items, item index, idf counts, rules
    assert kinds == {"meta", "h", "b", "seen", "s", "co", "pop", "rd", "sess", "ss", "is", "ic", "r"}


@pytest.mark.stack
def test_snapshot_reads_back_exactly_what_was_written(store: RedisStore) -> None:
    weights = {"b": 0.1, "c": 1 / 3, "d": 2.0**-60}  # doubles that only survive an exact round trip
    store.apply(
        StateDelta(
            0,
            -1,
            4,
            applied=1,
            history={"u:1": ["a"]},
            seen={"u:1": [("id:x", T0 + 0.001)]},
            sessions={"u:1": ("s:1", T0 + 0.001)},
            cooccurrence={"a:b": weights},
            popularity={"a:b": 1 / 7},
            popularity_epoch=T0 + 1 / 3,
        )
    )
    snap = store.snapshot(0)
    assert snap.cooccurrence == {"a:b": weights}  # ids with ':' keep their full name
    assert snap.popularity == {"a:b": 1 / 7} and snap.popularity_epoch == T0 + 1 / 3
    assert snap.seen == {"u:1": {"id:x": T0 + 0.001}} and snap.sessions == {"u:1": ("s:1", T0 + 0.001)}
    assert snap.history == {"u:1": ["a"]} and snap.watermark == 4
    assert store.snapshot(1).watermark == -1 and store.snapshot(1).history == {}


def test_unreachable_redis_is_a_state_store_error() -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    store = RedisStore(redis_settings(url, retry_attempts=1, socket_timeout_s=1.0), partitions=1)
    with pytest.raises(StateStoreError, match=r"Redis watermarks failed after 2 attempts"):
        store.watermarks()
    with pytest.raises(StateStoreError, match=r"Redis batch write failed after 2 attempts"):
        store.apply(StateDelta(0, -1, 0))
    store.close()


def test_secrets_are_not_shown() -> None:
    settings = RedisSettings(url="redis://user:url-secret@127.0.0.1:1/0", password="pw-secret")
    store = RedisStore(settings, partitions=1)  # connects lazily
    for text in (repr(settings), str(settings), repr(store), str(settings.model_dump())):
        assert "url-secret" not in text and "pw-secret" not in text
    store.close()


class LosesFirstScriptReply(redis.Redis):
    """A client whose first successful EVALSHA reply is lost on the way back (a timeout after the write)."""

    replies_lost = 0

    def evalsha(self, *args: Any, **kwargs: Any) -> Any:
        result = super().evalsha(*args, **kwargs)
        if not self.replies_lost:
            self.replies_lost += 1
            raise redis.TimeoutError("Timeout reading from socket")
        return result


@pytest.mark.stack
def test_apply_whose_reply_was_lost_is_not_a_conflict(redis_url: str) -> None:
    client = LosesFirstScriptReply.from_url(redis_url)
    store = RedisStore(redis_settings(redis_url), partitions=1, engine=SETTINGS, client=client)
    try:
        store.apply(
            StateDelta(0, -1, 3, applied=1, history={"u": ["a"]}, popularity={"a": 1.0}, popularity_epoch=T0)
        )
        assert client.replies_lost == 1
        snap = store.snapshot(0)
        assert (snap.watermark, snap.applied, snap.history) == (3, 1, {"u": ["a"]})  # written once
    finally:
        store.close()


# --- divergences from MemoryStore ----------------------------------------------------------------


def stores(redis_url: str, partitions: int, *deltas: StateDelta) -> tuple[MemoryStore, RedisStore]:
    memory = MemoryStore(partitions, SETTINGS)
    redis_store = RedisStore(redis_settings(redis_url), partitions=partitions, engine=SETTINGS)
    for delta in deltas:
        memory.apply(delta)
        redis_store.apply(delta)
    return memory, redis_store


@pytest.mark.stack
@pytest.mark.parametrize("partitions", [1, 2])
def test_trending_cuts_ties_like_the_memory_store(redis_url: str, partitions: int) -> None:
    tied = {f"i{n:02d}": 1.0 for n in range(12)}
    memory, redis_store = stores(
        redis_url, partitions, StateDelta(0, -1, 0, popularity=tied, popularity_epoch=T0)
    )
    try:
        # Both cut ties at the fetch limit the way a Redis sorted set orders them.
        assert [score for _, score in memory.trending(2)] == [1.0, 1.0]
        assert redis_store.trending(2) == memory.trending(2)
    finally:
        redis_store.close()


# --- packaging -----------------------------------------------------------------------------------


def test_the_scripts_are_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped: set[Path] = set()
    for package, patterns in config.get("package-data", {}).items():
        dirs = (
            [ROOT / "engine", ROOT / "engine" / "state"]
            if package == "*"
            else [ROOT / package.replace(".", "/")]
        )
        for directory in dirs:
            for pattern in patterns:
                shipped.update(p.resolve() for p in directory.glob(pattern))
    for script in ("apply_batch.lua", "read_users.lua"):
        assert (ROOT / "engine" / "state" / script).resolve() in shipped


@pytest.mark.stack
def test_a_poll_of_several_partitions_writes_after_the_script_cache_was_flushed(store: RedisStore) -> None:
    """The multi-partition write sends EVALSHA in one pipeline; a Redis that lost its scripts
    (restarted, SCRIPT FLUSH) answers NOSCRIPT, and each such call (the batch's reads first, then
    its writes) is sent again with the script."""
    batches = {p: [RawRecord(p, 0, encode_event(Event(f"e{p}", T0, f"u{p}", "a", "view")))] for p in (0, 1)}
    store.client.script_flush()
    outcomes = BatchProcessor(store, SETTINGS).process_many(batches)
    assert [o.applied for o in outcomes] == [1, 1]  # type: ignore[union-attr]
    assert store.watermarks() == {0: 0, 1: 0}


@pytest.mark.stack
def test_recs_inputs_of_several_partitions_are_read_after_the_script_cache_was_flushed(
    store: RedisStore,
) -> None:
    """The scorer's read (one script call per partition, trending in the same pipeline) falls
    back to sending the script when Redis has lost it, and reads the same."""
    batches = {
        p: [
            RawRecord(p, n, encode_event(Event(f"e{p}{n}", T0 + n, f"u{p}", f"i{n}", "purchase")))
            for n in range(3)
        ]
        for p in (0, 1)
    }
    BatchProcessor(store, SETTINGS).process_many(batches)
    before = store.recs_inputs({0: ["u0", "nobody"], 1: ["u1"]}, 5)
    store.client.script_flush()
    after = store.recs_inputs({0: ["u0", "nobody"], 1: ["u1"]}, 5)
    assert after == before
    assert before.profiles[1]["u1"].purchased == {"i0", "i1", "i2"} and before.trending


@pytest.mark.stack
def test_a_user_with_thousands_of_events_in_one_batch_is_written_whole(redis_url: str) -> None:
    """The script sends a user's lists in slices (Lua's unpack holds ~8,000 values): 9,000
    events of one user in one batch end as the memory store has them."""
    events = [
        Event(f"e{n}", T0 + n, "u1", f"i{n % 3000}", "purchase" if n % 2 else "view", session_id="s1")
        for n in range(9000)
    ]
    records = [RawRecord(0, offset, encode_event(e)) for offset, e in enumerate(events)]
    memory, redis_store = stores(redis_url, 1)
    try:
        BatchProcessor(memory, SETTINGS).process(0, records)
        BatchProcessor(redis_store, SETTINGS).process(0, records)
        expected, actual = memory.snapshot(0), redis_store.snapshot(0)
        assert actual.history == expected.history and len(actual.history["u1"]) == SETTINGS.history_length
        assert actual.seen == expected.seen and len(actual.seen["u1"]) == SETTINGS.dedup_window
        assert actual.purchases == expected.purchases and len(actual.purchases["u1"]) == 1500
        assert actual.applied == expected.applied == 9000
    finally:
        redis_store.close()
