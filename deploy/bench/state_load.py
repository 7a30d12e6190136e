"""A poll's state read (``RedisStore.load_many``) with and without the users' histories.

The worker reads, before each batch, what its delta needs of every user in it; the histories
only where the delta reads them (:func:`engine.logic.needs_history`). This fills a Redis with
``--users`` users (histories of ``--history`` items, a few seen ids each) under a key prefix of
its own, times ``--polls`` loads of ``--poll-users`` users both ways, alternating, and deletes
its keys again. It prints the worker's (client) CPU, Redis's CPU and the wall time a poll.

Run: ``streamrec up`` and then ``python -m deploy.bench.state_load --redis-url URL`` (the URL
``streamrec up`` prints); never against a Redis whose CPU others are using.
"""

from __future__ import annotations

import argparse
import random
import time
import uuid

import redis

from deploy.bench.common import drop_keys, redis_cpu_s
from engine.config import EngineSettings
from engine.state.redis_store import RedisSettings, RedisStore

PARTITIONS = 4
SEEN_IDS = 6


def _fill(client: redis.Redis, prefix: str, users: int, history: int, rng: random.Random) -> None:
    for partition in range(PARTITIONS):
        pipe = client.pipeline(transaction=False)
        base = f"{prefix}:{{{partition}}}:"
        for user in range(partition, users, PARTITIONS):
            pipe.rpush(f"{base}h:u{user}", *[f"i{rng.randrange(50_000)}" for _ in range(history)])
            pipe.zadd(f"{base}seen:u{user}", {f"e{user}-{k}": 1.7e9 + k for k in range(SEEN_IDS)})
            pipe.hset(f"{base}s:u{user}", mapping={"id": f"u{user}@1", "ts": "1700000000"})
        pipe.execute()


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--redis-url", required=True, help="a Redis of your own (streamrec up)")
    parser.add_argument("--users", type=int, default=20_000, help="users stored")
    parser.add_argument("--history", type=int, default=50, help="items in each stored history")
    parser.add_argument("--poll-users", type=int, default=330, help="users a poll reads")
    parser.add_argument("--polls", type=int, default=50, help="polls timed each way, each round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (with, without)")
    args = parser.parse_args(argv)
    if (
        min(args.users, args.history, args.poll_users, args.polls, args.rounds) < 1
        or args.poll_users > args.users
    ):
        parser.error("sizes must be >= 1, and --poll-users at most --users")

    prefix = f"bench-load-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(args.redis_url)
    store = RedisStore(
        RedisSettings(url=args.redis_url, key_prefix=prefix), PARTITIONS, engine=EngineSettings()
    )
    rng = random.Random(1)
    rows: list[dict[str, float]] = []
    try:
        _fill(client, prefix, args.users, args.history, rng)
        polls = []
        for _ in range(args.polls):
            chosen = rng.sample(range(args.users), args.poll_users)
            polls.append(
                {
                    p: {
                        f"u{u}": [f"new{u}-{k}" for k in range(SEEN_IDS)]
                        for u in chosen
                        if u % PARTITIONS == p
                    }
                    for p in range(PARTITIONS)
                }
            )
        for _ in range(args.rounds):
            for history in (True, False):
                server, client_cpu, wall = redis_cpu_s(client), time.process_time(), time.perf_counter()
                for wanted in polls:
                    store.load_many(wanted, history)
                row = {
                    "history": float(history),
                    "client_ms": (time.process_time() - client_cpu) / args.polls * 1e3,
                    "server_ms": (redis_cpu_s(client) - server) / args.polls * 1e3,
                    "wall_ms": (time.perf_counter() - wall) / args.polls * 1e3,
                }
                rows.append(row)
                print(
                    f"{'with' if history else 'without'} histories: worker CPU {row['client_ms']:.2f} ms a poll, "
                    f"Redis CPU {row['server_ms']:.2f} ms, wall {row['wall_ms']:.2f} ms "
                    f"({args.poll_users} users of {args.users:,}, {args.history}-item histories)",
                    flush=True,
                )
    finally:
        drop_keys(args.redis_url, f"{prefix}:")
        store.close()
        client.close()
    return rows


if __name__ == "__main__":
    main()
