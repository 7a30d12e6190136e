"""Example: a storefront back end that keeps every user's latest recommendations from ``recs``.

Run it against the embedded stack (``streamrec up`` first)::

    python -m deploy.examples.recs_consumer --group my-shop-backend --validate

The topic is compacted and keyed by user id, so the latest record per key *is* the user's
current list. Consumer settings, and why (see also README, "Gateway and live recommendations"):

``group.id``
    One group per service that shards users across its replicas. When every replica needs every
    user (a cache in each), give each replica its own group, or ``assign()`` all partitions.
``auto.offset.reset = earliest``
    A new group first reads the compacted topic from the start, which rebuilds the latest list of
    every user, then follows live records.
``enable.auto.commit = true``
    Records are whole lists, so handling one twice after a restart is a harmless upsert.
``partition.assignment.strategy = cooperative-sticky``
    Adding a replica moves a few partitions instead of stopping the whole group.
``fetch.wait.max.ms = 100``
    Recommendations are wanted quickly; the broker should not sit on a record.

A record whose value is null (a tombstone) removes the user. Records are JSON matching
``deploy/schemas/recs.schema.json``; ``--validate`` checks each one with ``jsonschema``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError

from producers.kafka import KafkaSettings, client_config

Handler = Callable[[str, dict[str, Any] | None], None]


def consumer_config(kafka: KafkaSettings, group_id: str) -> dict[str, Any]:
    return client_config(kafka) | {
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "partition.assignment.strategy": "cooperative-sticky",
        "fetch.wait.max.ms": 100,
        "session.timeout.ms": kafka.session_timeout_ms,
    }


def follow(
    kafka: KafkaSettings,
    group_id: str,
    handle: Handler,
    should_stop: Callable[[], bool] = lambda: False,
    validate: bool = False,
) -> int:
    """Call ``handle(user_id, record_or_None)`` for each record until ``should_stop()``; returns the count.

    Undecodable or (with ``validate``) schema-violating records are reported on stderr and skipped.
    """
    check = _validator() if validate else None
    consumer = Consumer(consumer_config(kafka, group_id))
    consumer.subscribe([kafka.recs_topic])
    seen = 0
    try:
        while not should_stop():
            for msg in consumer.consume(500, 0.5):
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        print(f"consumer error: {msg.error()}", file=sys.stderr)
                    continue
                user = (msg.key() or b"").decode("utf-8", "replace")
                if msg.value() is None:
                    handle(user, None)
                    seen += 1
                    continue
                try:
                    record = orjson.loads(msg.value())
                    if check is not None:
                        check(record)
                except Exception as exc:  # one bad record must not stop the feed
                    print(f"skipping record at {msg.partition()}:{msg.offset()}: {exc}", file=sys.stderr)
                    continue
                handle(user, record)
                seen += 1
    finally:
        consumer.close()
    return seen


def _validator() -> Callable[[Any], None]:
    import jsonschema

    from deploy.schemas import recs_schema

    return jsonschema.Draft202012Validator(recs_schema()).validate


def main(argv: list[str] | None = None) -> int:
    from deploy.settings import load_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default="recs-example", help="consumer group id")
    parser.add_argument("--validate", action="store_true", help="check each record against the JSON Schema")
    parser.add_argument("--max-users", type=int, default=None, help="stop once this many users are followed")
    args = parser.parse_args(argv)
    kafka = load_settings().kafka  # STREAMREC_KAFKA_* or the embedded stack's settings
    latest: dict[str, list[str]] = {}

    def handle(user: str, record: dict[str, Any] | None) -> None:
        if record is None:
            latest.pop(user, None)
            print(f"{user}: removed")
            return
        latest[user] = record["items"]
        print(f"{user}: {', '.join(record['items'][:5])}{' ...' if len(record['items']) > 5 else ''}")

    limit = args.max_users
    try:
        follow(kafka, args.group, handle, lambda: limit is not None and len(latest) >= limit, args.validate)
    except KeyboardInterrupt:
        pass
    print(f"{len(latest)} users followed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
