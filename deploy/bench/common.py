"""What every benchmark shares: the stack it runs against, fresh topics, events, memory, percentiles.

Each ingest/latency run gets its own topics and consumer group (a uuid suffix) and its own Redis
key prefix, so a run never sees another run's records or state, and an existing stack can be
reused without touching what is already in it.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploy.settings import Settings, load_settings
from engine.errors import StreamrecError
from engine.events import Event
from engine.generator import MEAN_SESSION_GAP_S, generate_events
from producers.admin import ensure_topics
from producers.kafka import KafkaSettings

if TYPE_CHECKING:
    from deploy.stack import StackInfo


class BenchError(StreamrecError):
    """A benchmark could not run (a peer failed, a run did not finish in time)."""


#: Generator catalogue for the ingest and latency runs: a mid-size shop.
GEN_USERS = 20_000
GEN_ITEMS = 50_000
#: Events generated per call; a big replay is generated and produced chunk by chunk.
GEN_CHUNK = 200_000


@dataclass(frozen=True)
class StreamShape:
    """The generator stream a bench replays. The default is a log of a mid-size shop replayed much
    faster than it was recorded: ~5 sessions open at once, so a poll of 2,000 events holds ~330
    users with ~6 events each and each is scored once per poll. A live stream at the same rate has
    as many open sessions as users active in the last minutes: a small ``session_gap_s`` and many
    ``users`` give that shape (nearly one event per user per poll)."""

    users: int = GEN_USERS
    session_gap_s: float = MEAN_SESSION_GAP_S

    def describe(self, users_per_batch: Sequence[int]) -> dict[str, float]:
        """The shape's settings and what it gave (see :func:`users_per_batch`)."""
        mean = sum(users_per_batch) / len(users_per_batch) if users_per_batch else 0.0
        return {"users": self.users, "session_gap_s": self.session_gap_s, "users_per_batch": round(mean, 1)}


def users_per_batch(events: Sequence[Event], batch_size: int) -> list[int]:
    """Distinct users in each ``batch_size`` consecutive events: about a poll's users, as polls
    are batch-sized under a backlog (a poll reads several partitions, each in this order)."""
    return [len({e.user_id for e in events[i : i + batch_size]}) for i in range(0, len(events), batch_size)]


@dataclass(frozen=True)
class BenchStack:
    """Where the broker and Redis answer, and whether this run started them."""

    kafka_bootstrap: str
    redis_url: str
    partitions: int
    started_here: bool
    # The embedded stack's processes (broker, redis) when this run started them, for CPU figures.
    pids: dict[str, int] = field(default_factory=dict)


@contextmanager
def bench_stack(use_existing: bool, partitions: int) -> Iterator[BenchStack]:
    """The stack of the current directory's settings, or a fresh embedded one in a temp dir.

    A fresh stack is stopped by its recorded PIDs at the end, also after a failure.
    """
    if use_existing:
        settings = load_settings()
        yield BenchStack(
            settings.kafka.bootstrap_servers,
            settings.redis.url.get_secret_value(),
            settings.kafka.partitions,
            started_here=False,
        )
        return
    with scratch_stack(partitions) as info:
        yield BenchStack(
            info.kafka_bootstrap,
            info.redis_url,
            partitions,
            started_here=True,
            pids={"broker": info.broker_pid, "redis": info.redis_pid},
        )


@contextmanager
def scratch_stack(partitions: int, prefix: str = "streamrec-bench-") -> Iterator[StackInfo]:
    """An embedded stack in a new temporary directory: stopped by its recorded PIDs at the end,
    also after a failure, and the directory (its logs) removed."""
    from deploy.stack import start_stack, stop_stack

    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield start_stack(workdir, partitions=partitions)
    finally:
        stop_stack(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def run_settings(stack: BenchStack, name: str, partitions: int) -> Settings:
    """Settings for one run: its own topics (created), consumer group and Redis key prefix."""
    suffix = f"{name}-{uuid.uuid4().hex[:8]}"
    settings = load_settings()
    settings.kafka = settings.kafka.model_copy(
        update={
            "bootstrap_servers": stack.kafka_bootstrap,
            "events_topic": f"bench-events-{suffix}",
            "dlq_topic": f"bench-events.dlq-{suffix}",
            "recs_topic": f"bench-recs-{suffix}",
            "group_id": f"bench-{suffix}",
            "partitions": partitions,
        }
    )
    from pydantic import SecretStr

    settings.redis = settings.redis.model_copy(
        update={"url": SecretStr(stack.redis_url), "key_prefix": f"bench:{suffix}"}
    )
    k = settings.kafka
    ensure_topics(k, dict.fromkeys((k.events_topic, k.dlq_topic, k.recs_topic), partitions))
    return settings


def drop_keys(redis_url: str, prefix: str) -> int:
    """Delete a run's Redis keys (``prefix*``) so a run on an existing stack leaves no state."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += client.unlink(*batch)
        return deleted
    finally:
        client.close()


def redis_cpu_s(client: Any) -> float:
    """Seconds of CPU the Redis server behind ``client`` has used (``INFO cpu``, user + system)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def event_chunks(n_events: int, seed: int = 0, shape: StreamShape = StreamShape()) -> Iterator[list[Event]]:
    """``n_events`` generator events in chunks of at most :data:`GEN_CHUNK`, in time order.

    Each chunk is its own generator run (its own seed, starting after the previous chunk's last
    event), so ids stay unique and memory stays bounded whatever ``n_events`` is.
    """
    start_ts = 1_700_000_000.0
    produced = 0
    chunk_no = 0
    while produced < n_events:
        size = min(GEN_CHUNK, n_events - produced)
        chunk = generate_events(
            size,
            n_users=shape.users,
            n_items=GEN_ITEMS,
            seed=seed * 100_003 + chunk_no,
            start_ts=start_ts,
            session_gap_s=shape.session_gap_s,
        )
        if chunk:
            start_ts = chunk[-1].ts + 1.0
        yield chunk
        produced += size
        chunk_no += 1


def produce_events(
    n_events: int,
    kafka: KafkaSettings,
    seed: int = 0,
    shape: StreamShape = StreamShape(),
    seen: Callable[[list[Event]], None] | None = None,
) -> int:
    """Replay ``n_events`` generator events into ``kafka.events_topic`` as fast as possible
    (``seen`` gets each chunk first)."""
    from producers.replay import replay_events

    produced = 0
    for chunk in event_chunks(n_events, seed, shape):
        if seen is not None:
            seen(chunk)
        produced += replay_events(chunk, kafka)
    return produced


def peak_rss_mb(children: bool = False) -> float:
    """This process's peak resident set size, or with ``children`` the largest peak of its ended
    children (Linux reports ru_maxrss in KiB)."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0


def rss_mb() -> float:
    """This process's current resident set size, from /proc (0 where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def own_cpu_s(children: bool = False) -> float:
    """CPU seconds (user + system) of this process, or of its ended children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_pids(pid: int) -> list[int]:
    """A process's direct children (Linux /proc; empty where there is none)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far, from /proc (None where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # after the command name: state is field 3 of stat(5), utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
