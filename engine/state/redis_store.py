"""Redis state store: one Lua script per batch writes the delta and the watermark atomically, and
another reads a batch's users (``read_users.lua``) in one call per partition.

Key layout (``<prefix>`` defaults to ``sr``); the ``{p}`` hash tag puts every key a partition's batch
touches into one Redis Cluster slot, so the atomic write never spans slots::

    <prefix>:{p}:meta          hash: watermark, applied, duplicates, invalid, popularity_epoch
    <prefix>:{p}:h:<user>      list: recent items, most recent first (trimmed)
    <prefix>:{p}:b:<user>      set: purchased items
    <prefix>:{p}:seen:<user>   zset: recent event ids by timestamp (dedup window, trimmed)
    <prefix>:{p}:s:<user>      hash: current session id and last timestamp
    <prefix>:{p}:rd:<user>     string: digest of the last published recommendations
    <prefix>:{p}:co:<item>     zset: neighbour -> co-occurrence weight (trimmed; only where they
                               rank, see EngineSettings.cooccurrence_rows)
    <prefix>:{p}:pop           zset: item -> forward-decayed popularity
    <prefix>:{p}:uv:<user>     hash: user embedding (float32 bytes) and its model version
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar

import orjson
import redis
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.config import EngineSettings
from engine.embeddings import to_bytes
from engine.errors import StateStoreError, WatermarkConflict
from engine.evaluation.base import Context
from engine.logic import PartitionMeta, StateDelta, UserState, decayed, merge_weights
from engine.sessionknn import SessionKNN, preset_for_engine
from engine.state import redis_sessions
from engine.state.base import PartitionSnapshot, RecsInputs, UserProfile, keep_strongest
from engine.state.redis_client import build_client
from engine.state.redis_replies import (
    PROFILE_REPLIES,
    conflict_of,
    parse_digests,
    parse_load,
    parse_profiles,
    text,
    user_vector,
)

T = TypeVar("T")


class RedisSettings(BaseSettings):
    """Environment: ``STREAMREC_REDIS_<FIELD>`` (e.g. ``STREAMREC_REDIS_URL=rediss://host:6380/0``)."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_REDIS_", extra="ignore")

    url: SecretStr = Field(SecretStr("redis://127.0.0.1:6379/0"), description="redis:// or rediss:// (TLS)")
    username: str | None = Field(None, description="ACL user (AUTH); may also be in the URL")
    password: SecretStr | None = Field(None, description="AUTH password; may also be in the URL")
    ssl_ca_certs: str | None = Field(None, description="CA bundle for rediss:// URLs")
    key_prefix: str = Field("sr", description="prefix of every key streamrec writes")
    socket_timeout_s: float = Field(10.0, gt=0)
    retry_attempts: int = Field(5, ge=0, description="retries of a failed call before the worker pauses")
    retry_backoff_s: float = Field(0.2, gt=0, description="first retry delay (doubles, capped at 2 s)")
    cluster: bool = Field(False, description="the URL names a Redis Cluster node (RedisCluster client)")


def connect(settings: RedisSettings) -> redis.Redis:
    """A single-server or cluster client, per ``settings.cluster`` (see engine.state.redis_client)."""
    return build_client(settings)  # type: ignore[return-value]  # RedisCluster serves the same calls


def _num(value: float) -> str:
    return repr(float(value))


def _json_arg(values: list[str]) -> list[bytes]:
    """A script's arguments as one JSON array of strings (the scripts decode it with cjson):
    redis-py packs each separate argument at ~0.3 µs, orjson the whole array in a few ns each."""
    return [orjson.dumps(values)]


class RedisStore:
    """The production :class:`~engine.state.base.StateStore`."""

    def __init__(
        self,
        settings: RedisSettings,
        partitions: int,
        engine: EngineSettings | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.partitions = partitions
        self.engine = engine or EngineSettings()
        self.client = client or connect(settings)
        scripts = resources.files("engine.state")
        self._apply_script = self.client.register_script(scripts.joinpath("apply_batch.lua").read_text())
        self._read_script = self.client.register_script(scripts.joinpath("read_users.lua").read_text())
        self.session_config = preset_for_engine(self.engine.session_model)

    def __repr__(self) -> str:
        return f"RedisStore(partitions={self.partitions}, prefix={self.settings.key_prefix!r})"

    # -- plumbing -------------------------------------------------------------------------------

    def _base(self, partition: int) -> str:
        return f"{self.settings.key_prefix}:{{{partition}}}:"

    def _call(self, fn: Callable[[], T], what: str) -> T:
        """Run a Redis call, retrying connection failures with capped backoff (Redis restarts, blips)."""
        delay = self.settings.retry_backoff_s
        for attempt in range(self.settings.retry_attempts + 1):
            try:
                return fn()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if attempt == self.settings.retry_attempts:
                    raise StateStoreError(f"Redis {what} failed after {attempt + 1} attempts: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
                raise StateStoreError(f"Redis {what} failed: {exc}") from exc
        raise AssertionError("unreachable")

    def _run_scripts(
        self,
        script: Any,
        calls: Sequence[tuple[list[str], list[Any]]],
        what: str,
        extra: Callable[[Any], None] | None = None,
    ) -> tuple[list[Any], list[Any]]:
        """Replies of ``script`` run once per ``(keys, args)`` call, and of the commands ``extra``
        queues on a pipeline; one round trip where the client allows it."""
        if self.settings.cluster or (len(calls) == 1 and extra is None):
            # the script object's own call (EVALSHA, loading the script if needed), one per
            # call: a single one needs no pipeline, and a cluster pipeline refuses EVALSHA
            results = [
                self._call(lambda k=keys, a=args: script(keys=k, args=a), what) for keys, args in calls
            ]
            extras = self._pipelined(what)(extra) if extra is not None else []
            return results, extras

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            if extra is not None:
                extra(pipe)
            return pipe.execute(raise_on_error=False)

        replies = self._call(run, what)
        results = []
        for (keys, args), result in zip(calls, replies, strict=False):
            if isinstance(result, redis.exceptions.NoScriptError):  # a Redis restarted since
                result = self._call(lambda k=keys, a=args: script(keys=k, args=a), what)
            elif isinstance(result, Exception):
                raise StateStoreError(f"Redis {what} failed: {result}")
            results.append(result)
        extras = replies[len(calls) :]
        for reply in extras:
            if isinstance(reply, Exception):
                raise StateStoreError(f"Redis {what} failed: {reply}")
        return results, extras

    def ping(self) -> bool:
        return bool(self._call(self.client.ping, "ping"))

    # -- writes ---------------------------------------------------------------------------------

    def load(
        self, partition: int, wanted: Mapping[str, Iterable[str]], history: bool = True
    ) -> tuple[PartitionMeta, dict[str, UserState]]:
        return self.load_many({partition: wanted}, history)[partition]

    def load_many(
        self, wanted: Mapping[int, Mapping[str, Iterable[str]]], history: bool = True
    ) -> dict[int, tuple[PartitionMeta, dict[str, UserState]]]:
        plans = {
            partition: [(user, list(ids)) for user, ids in users.items()]
            for partition, users in wanted.items()
        }

        calls = []
        for partition, plan in plans.items():
            base = self._base(partition)
            args: list[str] = [base, "load", str(self.engine.dedup_window), "1" if history else "0"]
            for user, event_ids in plan:
                args += [user, str(len(event_ids)), *event_ids]
            calls.append(([base + "meta"], _json_arg(args)))
        replies, _ = self._run_scripts(self._read_script, calls, "load")
        return {
            partition: parse_load(iter(reply), plan)
            for (partition, plan), reply in zip(plans.items(), replies, strict=True)
        }

    def _encode(self, delta: StateDelta) -> list[bytes]:
        """The batch script's arguments: its fields and op stream as one JSON array of strings, then
        the user vectors' raw bytes (op ``V`` names its vector by position; see :func:`_json_arg`)."""
        e = self.engine
        blobs: list[bytes] = []
        args: list[str] = [
            self._base(delta.partition),
            str(delta.expected_watermark),
            str(delta.last_offset),
            str(delta.applied),
            str(delta.duplicates),
            str(delta.invalid),
            str(e.history_length),
            str(e.max_neighbours),
            str(e.dedup_window),
            _num(delta.popularity_epoch) if delta.popularity_epoch is not None else "",
            "1" if delta.popularity_rescale == 1.0 else _num(delta.popularity_rescale),
        ]
        for user, items in delta.history.items():
            if items:
                args += ["H", user, str(len(items)), *items]
        for user, items in delta.purchases.items():
            args += ["B", user, str(len(items)), *items]
        for user, pairs in delta.seen.items():
            args += ["S", user, str(len(pairs))]
            for eid, ts in pairs:
                args += [eid, _num(ts)]
        for user, (session_id, last_ts) in delta.sessions.items():
            args += ["X", user, session_id, _num(last_ts)]
        for item, row in delta.cooccurrence.items():
            args += ["C", item, str(len(row))]
            for other, weight in row.items():
                args += [other, _num(weight)]
        for user, (vector, version) in delta.user_vectors.items():
            blobs.append(to_bytes(vector))
            args += ["V", user, version, str(len(blobs))]
        if delta.popularity:
            args += ["P", str(len(delta.popularity))]
            for item, weight in delta.popularity.items():
                args += [item, _num(weight)]
        if self.session_config is not None:
            args += redis_sessions.encode_touches(delta, self.session_config, self.partitions)
        return [*_json_arg(args), *blobs]

    def apply(self, delta: StateDelta) -> None:
        conflict = self.apply_many([delta])[0]
        if conflict is not None:
            raise conflict

    def apply_many(self, deltas: Sequence[StateDelta]) -> list[WatermarkConflict | None]:
        calls = [([self._base(d.partition) + "meta"], self._encode(d)) for d in deltas]
        results, _ = self._run_scripts(self._apply_script, calls, "batch write")
        return [conflict_of(delta, result) for delta, result in zip(deltas, results, strict=True)]

    def set_recs_digests(self, digests: Mapping[int, Mapping[str, str]]) -> None:
        if not any(digests.values()):
            return

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            for partition, rows in digests.items():
                base = self._base(partition) + "rd:"
                if self.settings.cluster:  # redis-py's cluster pipeline refuses MSET
                    for user, digest in rows.items():
                        pipe.set(base + user, digest)
                elif rows:
                    # one MSET a partition: measured 1.4 µs of client CPU a key, against 7.2 for
                    # a SET each (316 keys, a poll's worth)
                    pipe.mset({base + user: digest for user, digest in rows.items()})
            pipe.execute()

        self._call(run, "digest write")

    # -- reads ----------------------------------------------------------------------------------

    def watermarks(self) -> dict[int, int]:
        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for p in range(self.partitions):
                pipe.hget(self._base(p) + "meta", "watermark")
            return pipe.execute()

        return {p: int(v) if v is not None else -1 for p, v in enumerate(self._call(run, "watermarks"))}

    def profiles(self, partition: int, users: Iterable[str]) -> dict[str, UserProfile]:
        users = list(users)
        base = self._base(partition)
        (reply,), _ = self._run_scripts(
            self._read_script,
            [([base + "meta"], _json_arg([base, "profiles", "1" * len(users), *users]))],
            "profiles",
        )
        return parse_profiles(reply, users)

    def recs_inputs(
        self, users: Mapping[int, Iterable[str]], trending: int, without_history: Collection[str] = ()
    ) -> RecsInputs:
        members = {partition: list(group) for partition, group in users.items()}
        fetch = self._trending_fetch(trending)
        calls = [
            (
                [self._base(partition) + "meta"],
                _json_arg(
                    [
                        self._base(partition),
                        "recs",
                        "".join("0" if user in without_history else "1" for user in group),
                        *group,
                    ]
                ),
            )
            for partition, group in members.items()
        ]
        extra = (lambda pipe: self._queue_trending(pipe, fetch)) if trending > 0 else None
        replies, trending_replies = self._run_scripts(self._read_script, calls, "recs read", extra)
        inputs = RecsInputs({}, {}, [])
        for (partition, group), reply in zip(members.items(), replies, strict=True):
            split = PROFILE_REPLIES * len(group)
            inputs.profiles[partition] = parse_profiles(reply[:split], group)
            inputs.digests[partition] = parse_digests(reply[split:], group)
        if trending > 0:
            inputs.trending = self._parse_trending(trending_replies, trending)
        return inputs

    def neighbours(self, items: Iterable[str], n: int) -> dict[str, dict[str, float]]:
        items = list(dict.fromkeys(items))
        last = n - 1 if self.partitions == 1 else -1
        row = "co:" if self.engine.keeps_cooccurrence else "r:"

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for item in items:
                for p in range(self.partitions):
                    # Whole rows (bounded by trimming): an item strong in several partitions but
                    # in no single partition's top n must still make the merged top n.
                    pipe.zrevrange(self._base(p) + row + item, 0, last, withscores=True)
            return pipe.execute()

        replies = self._call(run, "neighbours")
        out: dict[str, dict[str, float]] = {}
        per = self.partitions
        for i, item in enumerate(items):
            rows = ({text(k): float(v) for k, v in replies[i * per + p]} for p in range(per))
            merged = merge_weights(rows)
            keep_strongest(merged, n)
            out[item] = merged
        return out

    def trending(self, n: int) -> list[tuple[str, float]]:
        if n <= 0:  # ZREVRANGE 0 -1 would read the whole row
            return []

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            self._queue_trending(pipe, self._trending_fetch(n))
            return pipe.execute()

        return self._parse_trending(self._call(run, "trending"), n)

    def _trending_fetch(self, n: int) -> int:
        # Popularity is not trimmed, so reading it whole is unbounded: over-fetch instead.
        # The merged top n is exact unless an item sits below every partition's top 4n.
        return n if self.partitions == 1 else 4 * n

    def _queue_trending(self, pipe: Any, fetch: int) -> None:
        for p in range(self.partitions):
            pipe.hget(self._base(p) + "meta", "popularity_epoch")
            pipe.zrevrange(self._base(p) + "pop", 0, fetch - 1, withscores=True)

    def _parse_trending(self, replies: list[Any], n: int) -> list[tuple[str, float]]:
        epochs = [float(replies[2 * p]) if replies[2 * p] else None for p in range(self.partitions)]
        known = [e for e in epochs if e is not None]
        if not known:
            return []
        now = max(known)
        totals: dict[str, float] = {}
        for p, epoch in enumerate(epochs):
            if epoch is None:
                continue
            for item, score in replies[2 * p + 1]:
                key = text(item)
                value = decayed(float(score), epoch, now, self.engine.popularity_half_life_s)
                totals[key] = totals.get(key, 0.0) + value
        return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def _pipelined(self, what: str) -> redis_sessions.Run:
        def run(fill: Callable[[Any], None]) -> list[Any]:
            def call() -> list[Any]:
                pipe = self.client.pipeline(transaction=False)
                fill(pipe)
                return pipe.execute()

            return self._call(call, what)

        return run

    def session_model(self, contexts: list[Context]) -> SessionKNN | None:
        """A session model holding what scoring ``contexts`` needs (None when the model is off)."""
        if self.session_config is None:
            return None
        bases = [self._base(p) for p in range(self.partitions)]
        return redis_sessions.partial_model(
            self._pipelined("session read"), bases, self.session_config, contexts
        )

    def whole_session_model(self) -> SessionKNN | None:
        """Every partition's session model merged into one in-memory model (None when off).

        Reads the whole model state (SCAN + pipelines), so it is for a worker's replica on
        assignment, not the hot path."""
        if self.session_config is None:
            return None
        bases = [self._base(p) for p in range(self.partitions)]

        def scan(pattern: str) -> list[str]:
            escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in pattern[:-1]) + "*"
            found = self._call(lambda: list(self.client.scan_iter(match=escaped, count=1000)), "scan")
            return [text(k) for k in found]

        return redis_sessions.whole_model(
            self._pipelined("session model read"), scan, bases, self.session_config
        )

    def session_items(self, located: Mapping[str, int]) -> dict[str, list[str]]:
        """Items of sessions (session -> partition), oldest first."""
        bases = [self._base(p) for p in range(self.partitions)]
        return redis_sessions.session_items(self._pipelined("session read"), bases, dict(located))

    def locate_user(self, user: str) -> int | None:
        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for p in range(self.partitions):
                pipe.exists(self._base(p) + "h:" + user)
            return pipe.execute()

        for p, exists in enumerate(self._call(run, "locate")):
            if exists:
                return p
        return None

    def recs_digests(self, partition: int, users: Iterable[str]) -> dict[str, str | None]:
        users = list(users)
        if not users:
            return {}
        base = self._base(partition)
        values = self._call(lambda: self.client.mget([base + "rd:" + u for u in users]), "digest read")
        return parse_digests(values, users)

    def snapshot(self, partition: int) -> PartitionSnapshot:
        """Read a whole partition with SCAN; for verify and tests, not for the hot path."""
        base = self._base(partition)
        snap = PartitionSnapshot()
        meta = {
            text(k): text(v)
            for k, v in self._call(lambda: self.client.hgetall(base + "meta"), "meta").items()
        }
        snap.watermark = int(meta.get("watermark", -1))
        snap.applied = int(meta.get("applied", 0))
        snap.duplicates = int(meta.get("duplicates", 0))
        snap.invalid = int(meta.get("invalid", 0))
        snap.popularity_epoch = float(meta["popularity_epoch"]) if meta.get("popularity_epoch") else None
        keys = [
            text(k)
            for k in self._call(lambda: list(self.client.scan_iter(match=base + "*", count=1000)), "scan")
        ]
        for key in keys:
            kind, _, name = key[len(base) :].partition(":")
            if kind == "h":
                snap.history[name] = [text(x) for x in self.client.lrange(key, 0, -1)]
            elif kind == "b":
                snap.purchases[name] = {text(x) for x in self.client.smembers(key)}
            elif kind == "seen":
                snap.seen[name] = {
                    text(k): float(v) for k, v in self.client.zrange(key, 0, -1, withscores=True)
                }
            elif kind == "s":
                raw = self.client.hgetall(key)
                snap.sessions[name] = (text(raw[b"id"]), float(raw[b"ts"]))
            elif kind == "co":
                snap.cooccurrence[name] = {
                    text(k): float(v) for k, v in self.client.zrange(key, 0, -1, withscores=True)
                }
            elif kind == "uv":
                vector, version = user_vector(self.client.hmget(key, "v", "ver"))
                if vector is not None and version is not None:
                    snap.user_vectors[name] = (vector, version)
            elif kind == "pop":
                snap.popularity = {
                    text(k): float(v) for k, v in self.client.zrange(key, 0, -1, withscores=True)
                }
        return snap

    def close(self) -> None:
        self.client.close()
