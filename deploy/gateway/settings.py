"""Gateway settings (``STREAMREC_GATEWAY_*``); the write token is a secret and never logged."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """Environment: ``STREAMREC_GATEWAY_<FIELD>`` (e.g. ``STREAMREC_GATEWAY_TOKEN``)."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_GATEWAY_", extra="ignore")

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8080, ge=0, le=65535, description="port to listen on (0 = any free port)")
    token: SecretStr | None = Field(
        None, description="when set, POST /events needs `Authorization: Bearer <token>`"
    )
    recs_from: str = Field(
        "latest",
        pattern="^(latest|earliest)$",
        description="where the recs feed starts: latest, or earliest to warm the cache from the compacted topic",
    )
    cache_users: int = Field(100_000, ge=1, description="latest recs records kept in memory (LRU)")
    max_k: int = Field(100, ge=1, description="largest k the pull endpoint accepts")
    max_batch: int = Field(100, ge=1, description="events one POST /events may carry")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest request body accepted")
    produce_timeout_s: float = Field(10.0, gt=0, description="wait for the broker to acknowledge events")
    heartbeat_s: float = Field(15.0, gt=0, description="keep-alive interval of idle streams")
    catalogue: Path | None = Field(
        None,
        description="item metadata for the storefront page (RecBole .item); default: ML-100k under "
        "../shared/data if present, else generated products",
    )
