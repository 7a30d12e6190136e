"""Prometheus metrics of one gateway, in their own registry (text exposition on /metrics)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# The classic text format (generate_latest writes it); every Prometheus version scrapes it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds from a record's generated_at (worker clock) to its arrival here: the push latency a
# front end sees, minus the last hop to the browser.
AGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "streamrec_gateway_http_requests",
            "HTTP requests answered",
            ["route", "method", "status"],
            registry=r,
        )
        self.events = Counter(
            "streamrec_gateway_events",
            "events posted to /events, by outcome (accepted, invalid, unauthorized, failed)",
            ["outcome"],
            registry=r,
        )
        self.recs_records = Counter(
            "streamrec_gateway_recs_records",
            "records read from the recs topic, by outcome (ok, invalid)",
            ["outcome"],
            registry=r,
        )
        self.recs_age = Histogram(
            "streamrec_gateway_recs_age_seconds",
            "time from a recs record's generated_at to its arrival at the gateway",
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.stream_messages = Counter(
            "streamrec_gateway_stream_messages",
            "messages sent on live streams",
            ["transport", "kind"],
            registry=r,
        )
        self.conflated = Counter(
            "streamrec_gateway_stream_conflated",
            "records superseded by a newer one before a slow subscriber took them",
            registry=r,
        )
        self.subscribers = Gauge(
            "streamrec_gateway_subscribers", "open live streams", ["transport"], registry=r
        )
        self.cached_users = Gauge(
            "streamrec_gateway_cached_users", "users whose latest recs record is held in memory", registry=r
        )
        for transport in ("sse", "websocket"):
            self.subscribers.labels(transport)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
