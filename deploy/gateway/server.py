"""``streamrec serve``: the gateway wired to the real Kafka and Redis, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

from deploy.gateway.app import Gateway
from deploy.gateway.catalogue import load_catalogue
from deploy.gateway.feed import RecsFeed
from deploy.gateway.intake import KafkaEventSink
from deploy.gateway.pull import StateRecs
from deploy.gateway.settings import GatewaySettings
from deploy.settings import Settings, stack_env_path
from engine.errors import ConfigurationError

log = logging.getLogger("streamrec.gateway")


def load_gateway_settings() -> GatewaySettings:
    env_file = stack_env_path()
    return GatewaySettings(_env_file=str(env_file) if env_file.is_file() else None)  # type: ignore[call-arg]


def build(settings: Settings, gateway: GatewaySettings) -> tuple[Gateway, RecsFeed]:
    """The gateway over Redis (pull) and Kafka (intake, live feed); the feed is not started yet."""
    catalogue = load_catalogue(gateway.catalogue)
    reader = StateRecs(settings)
    sink = KafkaEventSink(settings.kafka, gateway.produce_timeout_s)
    feed_ref: dict[str, RecsFeed] = {}

    def feed_check() -> tuple[bool, dict[str, Any]]:
        feed = feed_ref["feed"]
        ok = feed.alive and feed.ready.is_set()
        return ok, {"topic": feed.topic, "records": feed.records, "error": feed.error}

    def redis_check() -> tuple[bool, str]:
        return reader.ping(), settings.redis.key_prefix

    app = Gateway(
        gateway,
        reader,
        sink,
        catalogue,
        default_k=settings.engine.top_k,
        health_checks={"recs_feed": feed_check, "redis": redis_check},
    )
    feed_ref["feed"] = RecsFeed(settings.kafka, app.on_record_threadsafe, gateway.recs_from)
    return app, feed_ref["feed"]


async def _serve(settings: Settings, gateway: GatewaySettings, say: Callable[[str], object]) -> None:
    app, feed = build(settings, gateway)
    app.bind_loop(asyncio.get_running_loop())
    runner = web.AppRunner(app.app())
    try:
        feed.start()
        await runner.setup()
        try:
            await web.TCPSite(runner, gateway.host, gateway.port).start()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {gateway.host}:{gateway.port}: {exc.strerror or exc}"
            ) from None
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        host, port = runner.addresses[0][:2]
        writes = "need a bearer token" if gateway.token is not None else "open (no STREAMREC_GATEWAY_TOKEN)"
        say(f"gateway on http://{host}:{port}/  catalogue: {app.catalogue.source}  POST /events: {writes}")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await runner.cleanup()
        feed.stop()
        app.sink.close()
        app.reader.close()


def serve_gateway(
    settings: Settings,
    gateway: GatewaySettings,
    host: str | None = None,
    port: int | None = None,
    say: Callable[[str], object] = print,
) -> None:
    """Serve until SIGINT/SIGTERM; ``host``/``port`` override the settings."""
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    asyncio.run(_serve(settings, gateway.model_copy(update=overrides), say))
