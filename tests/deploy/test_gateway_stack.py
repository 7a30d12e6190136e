"""The gateway and the recs topic contract against the real broker, Redis and an engine worker."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from consumers.reader import read_topic
from deploy.examples.recs_consumer import follow
from deploy.gateway.server import build
from deploy.gateway.settings import GatewaySettings
from deploy.schemas import recs_schema
from engine.generator import generate_events
from producers.kafka import KafkaSettings
from producers.replay import replay_events
from tests.support.gateway import WorkerThread, co_views, stack_settings
from tests.support.workers import STREAMREC, stack_env

pytestmark = pytest.mark.stack


def test_recs_records_match_the_schema_and_the_example_consumer_follows_them(
    kafka_settings: KafkaSettings, redis_url: str, tmp_path: Path
) -> None:
    events = generate_events(400, n_users=30, n_items=60, seed=3)
    started = time.time()
    replay_events(events, kafka_settings)
    settings = stack_settings(kafka_settings, redis_url, tmp_path / "models")
    with WorkerThread(settings) as worker:
        worker.wait_applied(len(events))
    records = [r for rows in read_topic(kafka_settings, kafka_settings.recs_topic).values() for r in rows]
    finished = time.time()

    validator = jsonschema.Draft202012Validator(recs_schema())
    last: dict[str, list[str]] = {}
    for record in records:  # partition order: a user's later record comes later
        value = orjson.loads(record.value)
        validator.validate(value)
        assert record.key.decode() == value["user_id"]
        assert value["source"]["topic"] == kafka_settings.events_topic
        # received (the poll's time, shared by its records) before computed, both within the run
        assert started < value["received_at"] < value["generated_at"] < finished
        last[value["user_id"]] = value["items"]
    assert set(last) == {e.user_id for e in events}  # every user got a list
    polls = {orjson.loads(record.value)["received_at"] for record in records}
    assert 1 <= len(polls) <= worker.worker.stats.batches < len(records)
    # The schema is not vacuous: a record without its source coordinates fails it.
    broken = orjson.loads(records[0].value)
    del broken["source"]
    assert not validator.is_valid(broken)

    followed: dict[str, list[str]] = {}

    def handle(user: str, record: dict[str, Any] | None) -> None:
        assert record is not None
        followed[user] = record["items"]

    deadline = time.monotonic() + 60
    # A fresh group reads the compacted topic from the start: the latest list of every user.
    seen = follow(
        kafka_settings,
        f"example-{uuid.uuid4().hex[:8]}",
        handle,
        should_stop=lambda: followed == last or time.monotonic() > deadline,
        validate=True,
    )
    assert followed == last
    assert seen == len(records)


async def _next_ws(ws: Any, timeout: float = 15.0) -> tuple[str, dict[str, Any]]:
    message = orjson.loads((await ws.receive(timeout=timeout)).data)
    return message["event"], message["data"]


async def _until(ws: Any, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
    """Pushed records until one satisfies ``predicate`` (the worker may publish intermediate lists)."""
    deadline = time.monotonic() + timeout
    while True:
        kind, data = await _next_ws(ws, max(0.1, deadline - time.monotonic()))
        if kind == "recs" and predicate(data["items"]):
            return data


def test_posted_events_come_back_as_live_recommendations(
    kafka_settings: KafkaSettings, redis_url: str, tmp_path: Path
) -> None:
    # Histories are not excluded, so an item leaves the list only because it was bought.
    settings = stack_settings(kafka_settings, redis_url, tmp_path / "models", exclude_history=False)
    seed = co_views([["m1", "m2", "m3"], ["m7", "m8", "m9"]])
    replay_events(seed, kafka_settings)
    token = "gateway-test-token"
    gateway, feed = build(settings, GatewaySettings(token=token, heartbeat_s=1.0))
    user = f"shopper-{uuid.uuid4().hex[:6]}"
    auth = {"Authorization": f"Bearer {token}"}

    async def scenario(worker: WorkerThread) -> None:
        gateway.bind_loop(asyncio.get_running_loop())
        feed.start()
        assert await asyncio.to_thread(feed.wait_ready, 30), feed.error
        async with TestClient(TestServer(gateway.app())) as client:
            await asyncio.to_thread(worker.wait_applied, len(seed))
            ws = await client.ws_connect(f"/users/{user}/recommendations/stream")
            kind, first = await _next_ws(ws)
            assert kind == "snapshot"  # a cold user: trending items from the state

            event = {"user_id": user, "item_id": "m1", "type": "view"}
            resp = await client.post("/events", json=event)
            assert resp.status == 401
            resp = await client.post("/events", json=event, headers=auth)
            assert resp.status == 202, await resp.text()
            pushed = await _until(ws, lambda items: {"m2", "m3"} <= set(items))
            assert pushed["user_id"] == user and pushed["source"]["topic"] == kafka_settings.events_topic
            assert (
                pushed["items"].index("m2") < pushed["items"].index("m7") if "m7" in pushed["items"] else True
            )

            resp = await client.post(
                "/events", json=event | {"item_id": "m2", "type": "purchase"}, headers=auth
            )
            assert resp.status == 202
            after = await _until(ws, lambda items: "m2" not in items)
            assert "m3" in after["items"]

            pulled = await (await client.get(f"/users/{user}/recommendations", params={"k": "20"})).json()
            assert "m2" not in pulled["items"] and pulled["items"][:2] == after["items"][:2]

            health = await client.get("/health")
            assert health.status == 200, await health.text()
            metrics = await (await client.get("/metrics")).text()
            assert 'streamrec_gateway_events_total{outcome="accepted"} 2.0' in metrics
            assert 'streamrec_gateway_events_total{outcome="unauthorized"} 1.0' in metrics
            await ws.close()

    try:
        with WorkerThread(settings) as worker:
            asyncio.run(scenario(worker))
    finally:
        feed.stop()
        gateway.sink.close()
        gateway.reader.close()


def test_serve_command_says_when_its_port_is_taken(
    kafka_settings: KafkaSettings, redis_url: str, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*STREAMREC, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env=stack_env(kafka_settings, redis_url, STREAMREC_GATEWAY_TOKEN="not-to-be-printed"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr and "not-to-be-printed" not in result.stdout + result.stderr
