"""Peer (a): the engine's logic as a Faust (faust-streaming) agent pipeline, per event.

The idiomatic Faust shape: one agent over the ``events`` topic, state in Faust tables (in-memory
store, each table backed by a changelog topic that Faust creates itself), recommendations sent to
the ``recs`` topic when a user's list changes. Per event it does what the engine does per batch:
decode and validate (``engine.events``), deduplicate by event id, history, purchases,
co-occurrence with the previous ``cooccurrence_window`` items (same weights and decay),
forward-decayed popularity, then scores the user with the engine's own ``score_user``.

Runs in its own process (``python -m deploy.bench.peers_faust CONFIG.json``): Faust owns the event
loop and signal handling. Once ``n_events`` records are processed it writes the result JSON; the
parent stops it by PID. Faust commits offsets in the background (``broker_commit_interval``), so
unlike our worker, an offset commit here is not tied to a state write.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from deploy.bench.common import BenchError
from deploy.stack import stop_child
from engine.config import EngineSettings
from engine.errors import InvalidEvent
from engine.events import decode_event
from engine.scoring import score_user
from engine.state.base import UserProfile, keep_strongest
from producers.kafka import KafkaSettings


def make_app(config: dict[str, Any]) -> Any:
    import faust

    engine = EngineSettings()
    partitions = int(config["partitions"])
    app = faust.App(
        config["app_id"],
        broker=f"kafka://{config['bootstrap']}",
        store="memory://",
        topic_partitions=partitions,
        topic_replication_factor=1,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )

    def raw_topic(name: str) -> Any:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
        )

    events, recs = raw_topic(config["events_topic"]), raw_topic(config["recs_topic"])
    dlq = app.topic(config["dlq_topic"], key_serializer="raw", value_serializer="raw", partitions=partitions)
    users = app.Table("users", default=dict, partitions=partitions)
    cooc = app.Table("cooc", default=dict, partitions=partitions)
    popularity = app.Table("pop", default=float, partitions=partitions)
    n_target = int(config["n_events"])
    out_path = Path(config["out"])
    state: dict[str, Any] = {"count": 0, "first": None, "published": 0, "invalid": 0, "trending": []}

    def neighbours(items: list[str], n: int) -> dict[str, dict[str, float]]:
        rows = {}
        for item in items:
            row = dict(cooc[item])
            keep_strongest(row, n)
            rows[item] = row
        return rows

    @app.agent(events)
    async def process(stream: Any) -> None:
        async for value in stream:
            if state["first"] is None:
                state["first"] = time.monotonic()
            state["count"] += 1
            try:
                event = decode_event(value)
            except InvalidEvent as exc:
                state["invalid"] += 1
                await dlq.send(key=b"invalid", value=str(exc).encode())
                event = None
            if event is not None:
                user = users[event.user_id]
                history: list[str] = user.get("h", [])
                seen: list[str] = user.get("seen", [])
                if event.event_id not in seen:
                    seen = (seen + [event.event_id])[-engine.dedup_window :]
                    weight = engine.type_weight(event.type)
                    factor = 1.0
                    for earlier in history[: engine.cooccurrence_window]:
                        if earlier != event.item_id:
                            for a, b in ((earlier, event.item_id), (event.item_id, earlier)):
                                row = dict(cooc[a])
                                row[b] = row.get(b, 0.0) + weight * factor
                                if len(row) > 2 * engine.max_neighbours:
                                    keep_strongest(row, engine.max_neighbours)
                                cooc[a] = row
                        factor *= engine.cooccurrence_decay
                    history = [event.item_id, *history][: engine.history_length]
                    purchased: list[str] = user.get("b", [])
                    if event.type == "purchase" and event.item_id not in purchased:
                        purchased = [*purchased, event.item_id]
                    popularity[event.item_id] = popularity[event.item_id] + weight
                    if state["count"] % 1000 == 1:  # trending refreshed now and then, not per event
                        state["trending"] = sorted(popularity.items(), key=lambda kv: (-kv[1], kv[0]))[
                            : engine.trending_candidates
                        ]
                    profile = UserProfile(history=history, purchased=set(purchased))
                    recent = list(dict.fromkeys(history))[: engine.recent_items]
                    ranked = score_user(
                        profile, neighbours(recent, 50), state["trending"], engine, engine.top_k
                    )
                    items = [i for i, _ in ranked]
                    if items != user.get("r"):
                        payload = {"user_id": event.user_id, "items": items, "generated_at": time.time()}
                        await recs.send(key=event.user_id.encode(), value=json.dumps(payload).encode())
                        state["published"] += 1
                    users[event.user_id] = {"h": history, "seen": seen, "b": purchased, "r": items}
            if state["count"] == n_target:
                elapsed = time.monotonic() - state["first"]
                result = {
                    "events": state["count"],
                    "seconds": elapsed,
                    "events_per_s": state["count"] / max(elapsed, 1e-9),
                    "recs_published": state["published"],
                    "invalid": state["invalid"],
                }
                tmp = out_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(result))
                tmp.replace(out_path)

    return app


def run_faust_peer(kafka: KafkaSettings, n_events: int, timeout_s: float = 300.0) -> dict[str, Any]:
    """Run the Faust pipeline over the first ``n_events`` records of ``kafka.events_topic``.

    The events must already be in the topic; returns the child's result (events/s from its first
    record to its ``n_events``-th). The child is stopped by its PID whatever happens.
    """
    with tempfile.TemporaryDirectory(prefix="streamrec-faust-") as tmp:
        out = Path(tmp) / "result.json"
        config = {
            "app_id": f"faustpeer-{uuid.uuid4().hex[:8]}",
            "bootstrap": kafka.bootstrap_servers,
            "events_topic": kafka.events_topic,
            "recs_topic": kafka.recs_topic + "-faust",
            "dlq_topic": kafka.dlq_topic + "-faust",
            "partitions": kafka.partitions,
            "n_events": n_events,
            "out": str(out),
        }
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(config))
        log_path = Path(tmp) / "faust.log"
        started = time.monotonic()
        with open(log_path, "wb") as log:
            # cwd=tmp: Faust writes its data directory into the working directory.
            proc = subprocess.Popen(
                [sys.executable, "-m", "deploy.bench.peers_faust", str(config_path)],
                cwd=tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            while not out.exists():
                if proc.poll() is not None:
                    raise BenchError(f"faust peer exited with {proc.returncode}:\n{_tail(log_path)}")
                if time.monotonic() - started > timeout_s:
                    raise BenchError(f"faust peer did not finish {n_events} events in {timeout_s:.0f} s")
                time.sleep(0.2)
            result = json.loads(out.read_text())
        finally:
            _stop(proc)
        result["wall_s"] = time.monotonic() - started
        return result


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_child(proc, 15)


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def main(config_path: str) -> None:
    import faust

    config = json.loads(Path(config_path).read_text())
    logging.basicConfig(level=logging.WARNING)
    app = make_app(config)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1])
