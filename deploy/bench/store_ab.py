"""Redis costs of the worker's store calls on the bench's stream, two variants side by side.

The bench's generator stream goes through :class:`~engine.pipeline.BatchProcessor` in polls of
``--poll`` events (no broker, no scorer), on a Redis of your own. After each poll one of two
comparisons runs, both variants on the same data in alternating order, and Redis's CPU
(``INFO cpu``) is taken around each call, so that a machine whose speed drifts by the minute
still compares them fairly:

- ``script --old PATH``: each poll's deltas are written twice, by the batch script at ``PATH``
  (e.g. ``git show REV:engine/state/apply_batch.lua > old.lua``) under one key prefix and by the
  current one under another. At the end both prefixes must hold the same keys and contents.
- ``recs-read``: the scoring step's read of the poll's users, once with every history and once
  with none (all of them held, see :mod:`engine.history_cache`); the client's CPU too.

Run: ``streamrec up`` and then ``python -m deploy.bench.store_ab --redis-url URL recs-read``;
never against a Redis whose CPU others are using (it deletes its keys at the end).
"""

from __future__ import annotations

import argparse
import hashlib
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import redis

from deploy.bench.common import drop_keys, event_chunks, redis_cpu_s
from engine.config import EngineSettings
from engine.events import Event, encode_event
from engine.pipeline import BatchOutcome, BatchProcessor, RawRecord
from engine.state.redis_store import RedisSettings, RedisStore

PARTITIONS = 4


def _polls(events: int, size: int) -> Any:
    """The stream as polls: partition -> records (users hashed to partitions)."""
    offsets = [0] * PARTITIONS
    batch: list[Event] = []
    for chunk in event_chunks(events):
        for event in chunk:
            batch.append(event)
            if len(batch) == size:
                polls: dict[int, list[RawRecord]] = {}
                for e in batch:
                    p = zlib.crc32(e.user_id.encode()) % PARTITIONS
                    polls.setdefault(p, []).append(RawRecord(p, offsets[p], encode_event(e)))
                    offsets[p] += 1
                yield polls
                batch = []


def _digest(client: redis.Redis, prefix: str) -> tuple[str, int]:
    """A digest of every key under ``prefix`` (its name after the prefix, and its contents)."""
    contents = []
    for key in client.scan_iter(match=f"{prefix}:*", count=5000):
        kind = client.type(key).decode()
        if kind == "zset":
            value: Any = client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "hash":
            value = sorted(client.hgetall(key).items())
        elif kind == "set":
            value = sorted(client.smembers(key))
        else:
            value = client.get(key)
        contents.append((key.decode()[len(prefix) :], value))
    contents.sort()
    return hashlib.sha256(repr(contents).encode()).hexdigest()[:16], len(contents)


class _TwoScripts:
    """A store for BatchProcessor: loads from ``first``, writes each delta with both stores."""

    def __init__(
        self, first: RedisStore, second: RedisStore, timed: Callable[[str, Callable[[], Any]], Any]
    ) -> None:
        self.first, self.second, self.timed = first, second, timed
        self.partitions = first.partitions
        self.flip = False

    def load_many(self, wanted: Any, history: bool = True) -> Any:
        return self.first.load_many(wanted, history)

    def apply_many(self, deltas: Sequence[Any]) -> Any:
        order = [("old", self.first), ("new", self.second)]
        if self.flip:
            order.reverse()
        self.flip = not self.flip
        results = {
            name: self.timed(name, lambda store=store: store.apply_many(deltas)) for name, store in order
        }
        return results["old"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--redis-url", required=True, help="a Redis of your own (streamrec up)")
    parser.add_argument("--events", type=int, default=300_000, help="stream events")
    parser.add_argument("--poll", type=int, default=2000, help="events a poll")
    parser.add_argument("--report-every", type=int, default=100_000, help="print every this many events")
    sub = parser.add_subparsers(dest="what", required=True)
    script = sub.add_parser("script", help="an older batch script against the current one")
    script.add_argument("--old", required=True, help="the older apply_batch.lua")
    sub.add_parser("recs-read", help="the scoring read with every history, and with none")
    args = parser.parse_args(argv)
    if min(args.events, args.poll, args.report_every) < 1 or args.poll > args.events:
        parser.error("sizes must be >= 1, and --poll at most --events")

    client = redis.Redis.from_url(args.redis_url)
    engine = EngineSettings()
    tag = f"bench-ab-{uuid.uuid4().hex[:8]}"
    prefixes = [f"{tag}-a", f"{tag}-b"]
    stores = [
        RedisStore(RedisSettings(url=args.redis_url, key_prefix=p), PARTITIONS, engine=engine)
        for p in prefixes
    ]
    names = ("old", "new") if args.what == "script" else ("every history", "none")
    server = dict.fromkeys(names, 0.0)
    client_cpu = dict.fromkeys(names, 0.0)

    def timed(name: str, call: Callable[[], Any]) -> Any:
        before, mine = redis_cpu_s(client), time.process_time()
        result = call()
        server[name] += redis_cpu_s(client) - before
        client_cpu[name] += time.process_time() - mine
        return result

    report: dict[str, Any] = {"what": args.what, "marks": []}
    try:
        if args.what == "script":
            with open(args.old) as handle:
                stores[0]._apply_script = stores[0].client.register_script(handle.read())
            processor = BatchProcessor(_TwoScripts(stores[0], stores[1], timed), engine)  # type: ignore[arg-type]
        else:
            processor = BatchProcessor(stores[0], engine)
        done, flip = 0, False
        for poll in _polls(args.events, args.poll):
            outcomes = processor.process_many(poll)
            if args.what == "recs-read":
                users = {o.partition: o.touched_users for o in outcomes if isinstance(o, BatchOutcome)}
                everyone = {user for group in users.values() for user in group}
                order = [(names[0], frozenset()), (names[1], everyone)]
                for name, held in reversed(order) if flip else order:
                    timed(name, lambda held=held, users=users: stores[0].recs_inputs(users, 0, held))
                flip = not flip
            done += args.poll
            if done % args.report_every < args.poll:
                mark = {"events": done}
                for name in names:
                    mark[f"redis_us_per_event[{name}]"] = round(server[name] / done * 1e6, 2)
                    if args.what == "recs-read":
                        mark[f"client_us_per_event[{name}]"] = round(client_cpu[name] / done * 1e6, 2)
                report["marks"].append(mark)
                print(mark, flush=True)
        if args.what == "script":
            report["digests"] = [_digest(client, p) for p in prefixes]
            same = report["digests"][0] == report["digests"][1]
            print("same keys and contents under both prefixes:", same, report["digests"], flush=True)
            report["same_state"] = same
    finally:
        drop_keys(args.redis_url, f"{tag}-")
        for store in stores:
            store.close()
        client.close()
    return report


if __name__ == "__main__":
    main()
