"""Kafka connection settings and the one place that turns them into client configuration.

Both the consumers and the producers build their clients from :func:`client_config`, so
SASL/TLS settings pass through to every client the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """Environment: ``STREAMREC_KAFKA_<FIELD>`` (e.g. ``STREAMREC_KAFKA_BOOTSTRAP_SERVERS``)."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_KAFKA_", extra="ignore")

    bootstrap_servers: str = Field("127.0.0.1:9092", description="comma-separated host:port list")
    security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    events_topic: str = "events"
    dlq_topic: str = "events.dlq"
    recs_topic: str = "recs"
    partitions: int = Field(4, ge=1, description="partitions of the topics `streamrec up` creates")
    replication_factor: int = Field(1, ge=1)
    group_id: str = "streamrec-engine"
    session_timeout_ms: int = Field(6000, ge=1000)
    max_poll_interval_ms: int = Field(
        300_000,
        ge=1000,
        description="longest a worker may spend on one batch before it leaves the group; also how "
        "long a rebalance waits for a member that died without leaving",
    )
    max_message_bytes: int = Field(1_000_000, ge=1024, description="largest record the consumer accepts")
    linger_ms: int = Field(
        10,
        ge=0,
        le=1000,
        description="how long a producer gathers records into one batch (events from the gateway, "
        "recs between flushes): fewer, larger batches cost the broker less per record",
    )


def client_config(settings: KafkaSettings) -> dict[str, Any]:
    """librdkafka settings shared by every client: servers and security."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism:
        config["sasl.mechanism"] = settings.sasl_mechanism
    if settings.sasl_username:
        config["sasl.username"] = settings.sasl_username
    if settings.sasl_password is not None:
        config["sasl.password"] = settings.sasl_password.get_secret_value()
    for name in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
        value = getattr(settings, name)
        if value:
            config[name.replace("_", ".")] = value
    if settings.ssl_key_password is not None:
        config["ssl.key.password"] = settings.ssl_key_password.get_secret_value()
    return config
