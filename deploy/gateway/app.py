"""The gateway's HTTP side: aiohttp, fed by a confluent-kafka consumer of ``recs``.

Why not a Faust agent with Faust's web server? Three reasons, all about what a gateway is:

* Every replica must see **every** user's records (a browser may be connected to any of them).
  A Faust agent is a consumer-group member and gets a share of the partitions; the feed here
  assigns itself all partitions with no group and commits nothing.
* A Faust app brings its own Kafka client (aiokafka), its own internal topics and a rebalance
  on start; the rest of streamrec speaks to Kafka through confluent-kafka and one
  ``client_config`` (SASL/TLS settings pass through unchanged), and so does this consumer.
* aiohttp is already installed (Faust's web server *is* aiohttp), serves WebSocket and streamed
  responses (Server-Sent Events) natively, and needs no ASGI server on top.

The consumer runs in a thread and hands each record to the event loop, where the :class:`Hub`
fans it out to the user's open streams. Pull requests read the engine's Redis state in a thread
pool (``pull.py``); posted events are validated with the engine's own rules and produced to the
events topic keyed by user (``intake.py``).

Public: the storefront page and static files, ``/catalogue.json``, ``/config.json``, the
recommendation endpoints and streams, ``/health`` and ``/metrics``. With a token configured,
``POST /events`` needs ``Authorization: Bearer <token>``; without one it is open (local demo).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, NoReturn

import orjson
from aiohttp import WSMsgType, web

from deploy.gateway.base import EventSink, RecsReader
from deploy.gateway.catalogue import Catalogue
from deploy.gateway.intake import events_from_body
from deploy.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from deploy.gateway.settings import GatewaySettings
from deploy.gateway.streams import CLOSED, Hub, InvalidRecsRecord, Mailbox, parse_recs_record
from engine.errors import BrokerError, InvalidEvent, StreamrecError
from engine.events import EVENT_TYPES, MAX_ID_LENGTH

log = logging.getLogger("streamrec.gateway")

STATIC = resources.files("deploy.gateway") / "static"


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _raise(exc_class: type[web.HTTPException], message: str) -> NoReturn:
    raise exc_class(text=orjson.dumps({"error": message}).decode(), content_type="application/json")


def _user(request: web.Request) -> str:
    user = request.match_info["user"]
    if not user or len(user) > MAX_ID_LENGTH or any(ch in user for ch in "\x00\n\r"):
        _raise(web.HTTPBadRequest, f"user id must be 1..{MAX_ID_LENGTH} characters")
    return user


class Gateway:
    """Request handlers over the two seams (recs reader, event sink) and the live hub."""

    def __init__(
        self,
        settings: GatewaySettings,
        reader: RecsReader,
        sink: EventSink,
        catalogue: Catalogue,
        default_k: int = 20,
        health_checks: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.sink = sink
        self.catalogue = catalogue
        self.default_k = min(default_k, settings.max_k)
        self.hub = Hub(settings.cache_users)
        self.metrics = GatewayMetrics()
        # name -> zero-argument callable returning (ok, detail); run in the thread pool.
        self.health_checks = dict(health_checks or {})
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="gateway-pull")
        self._token = settings.token.get_secret_value().encode() if settings.token else None
        self._streams: set[web.StreamResponse] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # -- records from the recs topic --------------------------------------------------------------

    def on_record_threadsafe(self, key: bytes | None, value: bytes | None) -> None:
        """For the feed thread: hands the record over to the event loop (see :meth:`bind_loop`)."""
        assert self._loop is not None, "bind_loop() first"
        self._loop.call_soon_threadsafe(self.on_record, key, value)

    def on_record(self, key: bytes | None, value: bytes | None) -> None:
        """Called on the event loop for each record of the recs topic; bad ones are counted and skipped."""
        try:
            record = parse_recs_record(value)
        except InvalidRecsRecord as exc:
            self.metrics.recs_records.labels("invalid").inc()
            log.warning("skipping recs record (key %r): %s", key[:64] if key else key, exc)
            return
        self.metrics.recs_records.labels("ok").inc()
        generated = record.get("generated_at")
        if isinstance(generated, (int, float)) and not isinstance(generated, bool):
            self.metrics.recs_age.observe(max(0.0, time.time() - generated))
        self.hub.publish(record)

    # -- application ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._observe], client_max_size=self.settings.max_body_bytes)
        app.router.add_get("/", self.index)
        app.router.add_static("/static/", str(STATIC), name="static")
        app.router.add_get("/catalogue.json", self.catalogue_json)
        app.router.add_get("/config.json", self.config_json)
        app.router.add_get("/users/{user}/recommendations", self.pull)
        app.router.add_get("/users/{user}/recommendations/stream", self.stream)
        app.router.add_post("/events", self.post_events)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_text)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._cleanup)
        return app

    @web.middleware
    async def _observe(self, request: web.Request, handler: Any) -> web.StreamResponse:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "other"
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, route)
            return _error(500, "internal error")
        finally:
            self.metrics.requests.labels(route, request.method, str(status)).inc()

    async def _shutdown(self, _app: web.Application) -> None:
        self.hub.close()  # every stream handler returns on its next wake-up
        for response in list(self._streams):
            if isinstance(response, web.WebSocketResponse):
                await response.close()

    async def _cleanup(self, _app: web.Application) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _in_pool(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # -- pages ------------------------------------------------------------------------------------

    async def index(self, _request: web.Request) -> web.StreamResponse:
        return web.Response(body=(STATIC / "index.html").read_bytes(), content_type="text/html")

    async def catalogue_json(self, _request: web.Request) -> web.Response:
        return _json(self.catalogue.to_dict())

    async def config_json(self, _request: web.Request) -> web.Response:
        return _json({"write_auth": self._token is not None, "event_types": list(EVENT_TYPES)})

    # -- pull -------------------------------------------------------------------------------------

    def _k(self, request: web.Request) -> int:
        text = request.query.get("k")
        if text is None:
            return self.default_k
        try:
            k = int(text)
        except ValueError:
            k = 0
        if not 1 <= k <= self.settings.max_k:
            _raise(web.HTTPBadRequest, f"k must be an integer in 1..{self.settings.max_k}")
        return k

    async def _snapshot(self, user: str, k: int) -> dict[str, Any]:
        try:
            return await self._in_pool(self.reader.recommend, user, k)
        except StreamrecError as exc:
            _raise(web.HTTPServiceUnavailable, f"state store unavailable: {exc}")

    async def pull(self, request: web.Request) -> web.Response:
        user, k = _user(request), self._k(request)
        return _json(await self._snapshot(user, k))

    # -- live streams -----------------------------------------------------------------------------

    async def _first_message(self, user: str, mailbox: Mailbox) -> tuple[str, dict[str, Any]] | None:
        """What a new subscriber sees first: the latest topic record, else the list from the state."""
        latest = self.hub.latest(user)
        if latest is not None:
            return "recs", latest
        try:
            snapshot = await self._snapshot(user, self.default_k)
        except web.HTTPServiceUnavailable:
            return None  # the stream still delivers the next record from the topic
        # A record that arrived while the state was read is at least as fresh: it goes out instead.
        return None if mailbox.pending else ("snapshot", snapshot)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        user = _user(request)
        ws = web.WebSocketResponse(heartbeat=self.settings.heartbeat_s)
        if ws.can_prepare(request).ok:
            return await self._websocket(request, ws, user)
        return await self._sse(request, user)

    async def _messages(self, user: str, transport: str) -> Any:
        """Yields (kind, payload) for one subscriber, and None on idle timeouts (heartbeat)."""
        mailbox = self.hub.subscribe(user)
        gauge = self.metrics.subscribers.labels(transport)
        gauge.inc()
        try:
            first = await self._first_message(user, mailbox)
            if first is not None:
                yield first
            while True:
                message = await mailbox.get(self.settings.heartbeat_s)
                if message is CLOSED:
                    return
                yield None if message is None else ("recs", message)
        finally:
            gauge.dec()
            self.metrics.conflated.inc(mailbox.conflated)
            self.hub.unsubscribe(user, mailbox)

    async def _sse(self, request: web.Request, user: str) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # proxies must not buffer a stream
            }
        )
        await response.prepare(request)
        self._streams.add(response)
        sent = 0
        try:
            await response.write(b"retry: 2000\n\n")
            async for message in self._messages(user, "sse"):
                if message is None:
                    await response.write(b": keep-alive\n\n")
                    continue
                kind, payload = message
                sent += 1
                await response.write(
                    b"event: %s\nid: %d\ndata: %s\n\n" % (kind.encode(), sent, orjson.dumps(payload))
                )
                self.metrics.stream_messages.labels("sse", kind).inc()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the browser went away
        finally:
            self._streams.discard(response)
        return response

    async def _websocket(
        self, request: web.Request, ws: web.WebSocketResponse, user: str
    ) -> web.StreamResponse:
        await ws.prepare(request)
        self._streams.add(ws)

        async def send_all() -> None:
            async for message in self._messages(user, "websocket"):
                if message is None:
                    continue  # aiohttp's ping/pong heartbeat keeps the socket alive
                kind, payload = message
                # Text frames: a browser hands binary ones over as Blobs, not strings.
                await ws.send_str(orjson.dumps({"event": kind, "data": payload}).decode())
                self.metrics.stream_messages.labels("websocket", kind).inc()

        sender = asyncio.create_task(send_all())
        try:
            # Clients have nothing to say; reading is how a close (or a dead peer) is noticed.
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            self._streams.discard(ws)
            await ws.close()
        return ws

    # -- event intake -----------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    async def post_events(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            self.metrics.events.labels("unauthorized").inc()
            return web.Response(
                body=orjson.dumps({"error": "POST /events needs 'Authorization: Bearer <token>'"}),
                status=401,
                content_type="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="streamrec"'},
            )
        try:
            body = orjson.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            self.metrics.events.labels("invalid").inc()
            raise
        except orjson.JSONDecodeError as exc:
            self.metrics.events.labels("invalid").inc()
            return _error(400, f"body is not JSON: {exc}")
        try:
            events = events_from_body(body, self.settings.max_batch)
        except InvalidEvent as exc:
            self.metrics.events.labels("invalid").inc()
            return _error(400, str(exc))
        try:
            await self.sink.send(events)
        except BrokerError as exc:
            self.metrics.events.labels("failed").inc(len(events))
            log.warning("events not accepted: %s", exc)
            return _error(503, f"events not accepted: {exc}")
        self.metrics.events.labels("accepted").inc(len(events))
        return _json({"accepted": len(events), "event_ids": [e.event_id for e in events]}, 202)

    # -- operations -------------------------------------------------------------------------------

    async def health(self, _request: web.Request) -> web.Response:
        checks: dict[str, Any] = {}
        for name, check in self.health_checks.items():
            try:
                ok, detail = await self._in_pool(check)
            except Exception as exc:  # a failing probe is a failed check, not a 500
                ok, detail = False, str(exc)
            checks[name] = {"ok": bool(ok), "detail": detail}
        healthy = all(c["ok"] for c in checks.values())
        return _json(
            {
                "status": "ok" if healthy else "degraded",
                "checks": checks,
                "subscribers": self.hub.subscriber_count(),
            },
            200 if healthy else 503,
        )

    async def metrics_text(self, _request: web.Request) -> web.Response:
        self.metrics.cached_users.set(self.hub.cached_users())
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})
