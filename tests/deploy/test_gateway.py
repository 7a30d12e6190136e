"""The gateway's HTTP contract over in-memory seams: pull, streams (SSE and WebSocket), intake, auth, ops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from deploy.gateway.app import Gateway
from deploy.gateway.catalogue import generated, load_catalogue
from deploy.gateway.intake import events_from_body
from deploy.gateway.settings import GatewaySettings
from deploy.gateway.streams import CLOSED, Hub, InvalidRecsRecord, Mailbox, parse_recs_record
from engine.errors import InvalidEvent, StreamrecError
from tests.support.gateway import FakeReader, FakeSink, next_sse, recs_value

TOKEN = "s3cret-token-value"
ML100K_ITEMS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ml-100k" / "ml-100k.item"
EVENT = {"user_id": "u1", "item_id": "i9", "type": "view"}


def make_gateway(token: str | None = None, **settings: Any) -> tuple[Gateway, FakeReader, FakeSink]:
    reader, sink = FakeReader({"u1": ["a", "b", "c", "d"]}), FakeSink()
    gw_settings = GatewaySettings(token=SecretStr(token) if token else None, heartbeat_s=0.2, **settings)
    return Gateway(gw_settings, reader, sink, generated(20), default_k=3), reader, sink


def with_client(gateway: Gateway, body: Callable[[TestClient], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        async with TestClient(TestServer(gateway.app())) as client:
            return await body(client)

    return asyncio.run(run())


# -- pull --------------------------------------------------------------------------------------------


def test_pull_returns_the_readers_list_with_k() -> None:
    gateway, reader, _ = make_gateway()

    async def body(client: TestClient) -> None:
        resp = await client.get("/users/u1/recommendations", params={"k": "2"})
        assert resp.status == 200
        data = await resp.json()
        assert data["items"] == ["a", "b"] and data["user_id"] == "u1"
        resp = await client.get("/users/u1/recommendations")  # default k
        assert (await resp.json())["items"] == ["a", "b", "c"]

    with_client(gateway, body)
    assert reader.calls == [("u1", 2), ("u1", 3)]


@pytest.mark.parametrize("k", ["0", "-1", "abc", "101", "2.5"])
def test_pull_rejects_bad_k(k: str) -> None:
    gateway, reader, _ = make_gateway()

    async def body(client: TestClient) -> None:
        resp = await client.get("/users/u1/recommendations", params={"k": k})
        assert resp.status == 400
        assert "k must be an integer in 1..100" in (await resp.json())["error"]

    with_client(gateway, body)
    assert reader.calls == []


def test_pull_answers_503_when_the_state_store_fails() -> None:
    gateway, reader, _ = make_gateway()
    reader.fail = True

    async def body(client: TestClient) -> None:
        resp = await client.get("/users/u1/recommendations")
        assert resp.status == 503
        assert "Redis is down" in (await resp.json())["error"]

    with_client(gateway, body)


def test_user_id_too_long_is_a_clear_400() -> None:
    gateway, _, _ = make_gateway()

    async def body(client: TestClient) -> None:
        resp = await client.get(f"/users/{'x' * 300}/recommendations")
        assert resp.status == 400
        assert "user id must be 1..256 characters" in (await resp.json())["error"]

    with_client(gateway, body)


# -- event intake and auth ---------------------------------------------------------------------------


def test_post_events_without_a_configured_token_is_open() -> None:
    gateway, _, sink = make_gateway()

    async def body(client: TestClient) -> None:
        resp = await client.post("/events", json=EVENT)
        assert resp.status == 202
        data = await resp.json()
        assert data["accepted"] == 1 and len(data["event_ids"]) == 1
        assert data["event_ids"] == [sink.sent[0].event_id]

    with_client(gateway, body)
    (event,) = sink.sent
    assert (event.user_id, event.item_id, event.type) == ("u1", "i9", "view")
    assert event.ts > 1.7e9  # the gateway's clock filled it in


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, "Bearer", f"Bearer {TOKEN}x"]
)
def test_post_events_needs_the_bearer_token(header: str | None, caplog: pytest.LogCaptureFixture) -> None:
    gateway, _, sink = make_gateway(token=TOKEN)
    caplog.set_level(logging.DEBUG)

    async def body(client: TestClient) -> None:
        headers = {"Authorization": header} if header else {}
        resp = await client.post("/events", json=EVENT, headers=headers)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        resp = await client.post("/events", json=EVENT, headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status == 202

    with_client(gateway, body)
    assert len(sink.sent) == 1
    assert TOKEN not in caplog.text


def test_the_token_never_shows_in_settings_output() -> None:
    settings = GatewaySettings(token=SecretStr(TOKEN))
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())
    assert settings.token is not None and settings.token.get_secret_value() == TOKEN


def test_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_GATEWAY_TOKEN", TOKEN)
    monkeypatch.setenv("STREAMREC_GATEWAY_PORT", "9999")
    settings = GatewaySettings()
    assert settings.port == 9999 and settings.token is not None
    assert settings.token.get_secret_value() == TOKEN


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "body is not JSON"),
        (b'{"user_id": "u1", "item_id": "i9", "type": "teleport"}', "unknown event type 'teleport'"),
        (b'{"user_id": "u1", "type": "view"}', "missing field 'item_id'"),
        (b'{"user_id": "u1", "item_id": "i9", "type": "view", "ts": 1.7e12}', "outside unix seconds"),
        (b"[]", "no events in the request"),
        (b"[1]", "event 0: record must be a JSON object"),
        (
            b'[{"user_id": "u1", "item_id": "i9", "type": "view"}, {"user_id": "u1"}]',
            "event 1: missing field",
        ),
        (b'{"user_id": "u1", "item_id": "i9", "type": "view", "price": -1}', "'price' must not be negative"),
    ],
)
def test_invalid_events_are_rejected_with_the_reason_and_nothing_is_sent(payload: bytes, reason: str) -> None:
    gateway, _, sink = make_gateway()

    async def body(client: TestClient) -> None:
        resp = await client.post("/events", data=payload, headers={"Content-Type": "application/json"})
        assert resp.status == 400
        assert reason in (await resp.json())["error"]

    with_client(gateway, body)
    assert sink.sent == []


def test_batches_too_large_bodies_and_broker_failures() -> None:
    gateway, _, sink = make_gateway(max_batch=3, max_body_bytes=4096)

    async def body(client: TestClient) -> None:
        resp = await client.post("/events", json=[EVENT, EVENT | {"type": "purchase"}])
        assert resp.status == 202 and (await resp.json())["accepted"] == 2
        resp = await client.post("/events", json=[EVENT] * 4)
        assert resp.status == 400 and "at most 3" in (await resp.json())["error"]
        resp = await client.post("/events", json=EVENT | {"category": "x" * 5000})
        assert resp.status == 413
        sink.fail = True
        resp = await client.post("/events", json=EVENT)
        assert resp.status == 503 and "broker unreachable" in (await resp.json())["error"]
        metrics = await (await client.get("/metrics")).text()
        assert 'streamrec_gateway_events_total{outcome="accepted"} 2.0' in metrics
        assert 'streamrec_gateway_events_total{outcome="invalid"} 2.0' in metrics
        assert 'streamrec_gateway_events_total{outcome="failed"} 1.0' in metrics

    with_client(gateway, body)
    assert [e.type for e in sink.sent] == ["view", "purchase"]


def test_events_from_body_fills_id_and_ts_but_keeps_given_ones() -> None:
    (event,) = events_from_body(EVENT, 10, now=lambda: 1.8e9, new_id=lambda: "gen-1")
    assert (event.event_id, event.ts) == ("gen-1", 1.8e9)
    (event,) = events_from_body(EVENT | {"event_id": "mine", "ts": 1.75e9}, 10, now=lambda: 1.8e9)
    assert (event.event_id, event.ts) == ("mine", 1.75e9)
    with pytest.raises(InvalidEvent, match="at most 1"):
        events_from_body([EVENT, EVENT], 1)


# -- live streams ------------------------------------------------------------------------------------


def test_sse_sends_a_snapshot_then_pushed_records_and_skips_bad_ones() -> None:
    gateway, _, _ = make_gateway()

    async def body(client: TestClient) -> None:
        resp = await client.get("/users/u1/recommendations/stream", headers={"Accept": "text/event-stream"})
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        kind, data = await next_sse(resp)
        assert (kind, data["items"]) == ("snapshot", ["a", "b", "c"])
        gateway.on_record(b"u1", b"{broken")
        gateway.on_record(b"u2", recs_value("u2", ["zz"]))  # someone else's list
        gateway.on_record(b"u1", recs_value("u1", ["x", "y"], offset=7))
        kind, data = await next_sse(resp)
        assert kind == "recs" and data["items"] == ["x", "y"] and data["source"]["offset"] == 7
        # Idle: keep-alive comments flow (heartbeat 0.2 s) and the next record still arrives.
        await asyncio.sleep(0.5)
        gateway.on_record(b"u1", recs_value("u1", ["y"], offset=8))
        kind, data = await next_sse(resp)
        assert data["items"] == ["y"]
        resp.close()
        metrics = await (await client.get("/metrics")).text()
        assert 'streamrec_gateway_recs_records_total{outcome="invalid"} 1.0' in metrics
        assert 'streamrec_gateway_recs_records_total{outcome="ok"} 3.0' in metrics
        assert 'streamrec_gateway_stream_messages_total{kind="recs",transport="sse"} 2.0' in metrics

    with_client(gateway, body)


def test_a_new_subscriber_gets_the_latest_topic_record_first() -> None:
    gateway, reader, _ = make_gateway()
    gateway.on_record(b"u1", recs_value("u1", ["from-topic"]))

    async def body(client: TestClient) -> None:
        resp = await client.get("/users/u1/recommendations/stream")
        kind, data = await next_sse(resp)
        assert (kind, data["items"]) == ("recs", ["from-topic"])
        resp.close()

    with_client(gateway, body)
    assert reader.calls == []  # no state read needed


def test_websocket_stream_and_metrics() -> None:
    gateway, _, _ = make_gateway()

    async def body(client: TestClient) -> None:
        ws = await client.ws_connect("/users/u1/recommendations/stream")
        first = orjson.loads((await ws.receive(timeout=5)).data)
        assert first["event"] == "snapshot" and first["data"]["items"] == ["a", "b", "c"]
        metrics = await (await client.get("/metrics")).text()
        assert 'streamrec_gateway_subscribers{transport="websocket"} 1.0' in metrics
        gateway.on_record(b"u1", recs_value("u1", ["q"]))
        message = await ws.receive(timeout=5)
        assert message.type == WSMsgType.TEXT
        assert orjson.loads(message.data) == {"event": "recs", "data": orjson.loads(recs_value("u1", ["q"]))}
        await ws.close()
        for _ in range(50):  # the server notices the close on its next read
            metrics = await (await client.get("/metrics")).text()
            if 'streamrec_gateway_subscribers{transport="websocket"} 0.0' in metrics:
                break
            await asyncio.sleep(0.05)
        assert 'streamrec_gateway_subscribers{transport="websocket"} 0.0' in metrics
        assert gateway.hub.subscriber_count() == 0

    with_client(gateway, body)


def test_stream_still_opens_when_the_state_store_is_down() -> None:
    gateway, reader, _ = make_gateway()
    reader.fail = True

    async def body(client: TestClient) -> None:
        resp = await client.get("/users/u1/recommendations/stream")
        assert resp.status == 200
        await asyncio.sleep(0.1)
        gateway.on_record(b"u1", recs_value("u1", ["later"]))
        kind, data = await next_sse(resp)
        assert (kind, data["items"]) == ("recs", ["later"])
        resp.close()

    with_client(gateway, body)


# -- operations and page -----------------------------------------------------------------------------


def test_health_reports_each_check_and_503_when_one_fails() -> None:
    gateway, _, _ = make_gateway()
    status = {"ok": True}
    gateway.health_checks = {"feed": lambda: (status["ok"], "detail"), "boom": lambda: (True, "fine")}

    async def body(client: TestClient) -> None:
        resp = await client.get("/health")
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
        status["ok"] = False
        resp = await client.get("/health")
        data = await resp.json()
        assert resp.status == 503 and data["status"] == "degraded"
        assert data["checks"]["feed"] == {"ok": False, "detail": "detail"}

        def raises() -> tuple[bool, str]:
            raise RuntimeError("probe exploded")

        gateway.health_checks = {"broken": raises}
        resp = await client.get("/health")
        assert resp.status == 503 and "probe exploded" in (await resp.json())["checks"]["broken"]["detail"]

    with_client(gateway, body)


def test_metrics_use_the_prometheus_text_format() -> None:
    gateway, _, _ = make_gateway()

    async def body(client: TestClient) -> None:
        await client.get("/users/u1/recommendations")
        resp = await client.get("/metrics")
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
        assert "# TYPE streamrec_gateway_http_requests_total counter" in text
        assert (
            'streamrec_gateway_http_requests_total{method="GET",route="/users/{user}/recommendations",status="200"} 1.0'
            in text
        )
        assert "# TYPE streamrec_gateway_recs_age_seconds histogram" in text

    with_client(gateway, body)


def test_storefront_page_and_its_assets_are_served() -> None:
    gateway, _, _ = make_gateway(token=TOKEN)

    async def body(client: TestClient) -> None:
        page = await (await client.get("/")).text()
        assert "Recommended for you" in page and "/static/app.js" in page
        assert "http" not in page.replace("http-equiv", "")  # no CDN: everything is local
        for asset in ("app.js", "style.css"):
            resp = await client.get(f"/static/{asset}")
            assert resp.status == 200 and len(await resp.read()) > 500
        assert (await (await client.get("/config.json")).json())["write_auth"] is True
        catalogue = await (await client.get("/catalogue.json")).json()
        assert len(catalogue["items"]) == 20 and catalogue["items"][0]["item_id"] == "i0"

    with_client(gateway, body)


def test_catalogue_sources() -> None:
    products = generated(50)
    assert [i["item_id"] for i in products.items] == [f"i{n}" for n in range(50)]
    assert products == generated(50)  # deterministic
    with pytest.raises(StreamrecError, match="does not exist"):
        load_catalogue(Path("/nonexistent/items.item"))


@pytest.mark.skipif(not ML100K_ITEMS.is_file(), reason=f"shared dataset not present at {ML100K_ITEMS}")
def test_catalogue_reads_movielens_titles() -> None:
    catalogue = load_catalogue(ML100K_ITEMS)
    assert len(catalogue.items) == 1682
    assert catalogue.items[0]["item_id"] == "1" and catalogue.items[0]["title"] == "Toy Story"
    assert catalogue.source.startswith("MovieLens-100k")


# -- the hub and record parsing (pure) ---------------------------------------------------------------


def test_mailbox_keeps_only_the_newest_record() -> None:
    async def run() -> None:
        box = Mailbox()
        assert await box.get(0.01) is None
        for n in range(5):
            box.put({"n": n})
        assert await box.get(0.01) == {"n": 4} and box.conflated == 4
        assert await box.get(0.01) is None
        box.close()
        box.put({"n": 9})
        assert await box.get(0.01) is CLOSED

    asyncio.run(run())


def test_hub_routes_by_user_and_bounds_its_cache() -> None:
    async def run() -> None:
        hub = Hub(cache_users=2)
        box = hub.subscribe("u1")
        assert hub.publish({"user_id": "u2", "items": []}) == 0
        assert hub.publish({"user_id": "u1", "items": ["a"]}) == 1
        assert await box.get(0.01) == {"user_id": "u1", "items": ["a"]}
        hub.publish({"user_id": "u3", "items": []})
        assert hub.cached_users() == 2 and hub.latest("u2") is None and hub.latest("u1") is not None
        hub.unsubscribe("u1", box)
        assert hub.subscriber_count() == 0 and hub.publish({"user_id": "u1", "items": []}) == 0
        late = hub.subscribe("u4")
        hub.close()
        assert await late.get(0.01) is CLOSED and await hub.subscribe("u5").get(0.01) is CLOSED

    asyncio.run(run())


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "tombstone"),
        (b"\xff", "not valid JSON"),
        (b"[1]", "expected a JSON object"),
        (b'{"items": [], "scores": []}', "user_id"),
        (b'{"user_id": "u", "items": [1], "scores": [1]}', "list of strings"),
        (b'{"user_id": "u", "items": ["a"], "scores": []}', "as long as"),
        (b'{"user_id": "u", "items": ["a"], "scores": [true]}', "finite numbers"),
    ],
)
def test_bad_recs_records_are_refused_with_a_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidRecsRecord, match=reason):
        parse_recs_record(value)


def test_valid_recs_record_parses() -> None:
    assert parse_recs_record(recs_value("u1", ["a", "b"]))["items"] == ["a", "b"]


def test_shutdown_ends_open_streams() -> None:
    gateway, _, _ = make_gateway()

    async def run() -> None:
        client = TestClient(TestServer(gateway.app()))
        await client.start_server()
        sse = await client.get("/users/u1/recommendations/stream")
        ws = await client.ws_connect("/users/u1/recommendations/stream")
        await next_sse(sse)
        await ws.receive(timeout=5)
        assert gateway.hub.subscriber_count() == 2
        # A hang here would mean open streams keep the server from stopping (the guard, not a timing claim).
        await asyncio.wait_for(client.close(), 30)
        assert gateway.hub.subscriber_count() == 0

    asyncio.run(run())
