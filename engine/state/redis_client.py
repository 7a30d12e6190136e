"""Builds the Redis client the state store talks through: a single server or a Redis Cluster.

This is the one seam between the store and the deployment topology. The store only issues
commands whose keys share one ``{partition}`` hash tag per call (the batch script, per-partition
pipelines), or non-transactional pipelines that redis-py's cluster client splits per node, so the
same store code runs on both clients.
"""

from __future__ import annotations

from typing import Any, Protocol

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from engine.errors import StateStoreError


class ClientSettings(Protocol):
    """The connection fields of ``engine.state.redis_store.RedisSettings``."""

    url: Any  # SecretStr
    username: str | None
    password: Any  # SecretStr | None
    ssl_ca_certs: str | None
    socket_timeout_s: float
    cluster: bool


def client_kwargs(settings: ClientSettings) -> dict[str, Any]:
    # RESP2: redis-py converts RESP3 sorted-set replies score by score, which dominated reads.
    kwargs: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": 5.0,
        "protocol": 2,
    }
    if settings.username:
        kwargs["username"] = settings.username
    if settings.password is not None:
        kwargs["password"] = settings.password.get_secret_value()
    if settings.ssl_ca_certs:
        kwargs["ssl_ca_certs"] = settings.ssl_ca_certs
    return kwargs


def build_client(settings: ClientSettings) -> redis.Redis | RedisCluster:
    """``redis.Redis`` for one server; ``RedisCluster`` (slot-aware routing) when ``cluster`` is set.

    With a cluster the URL names any one node: the client discovers the others from it. Raises
    :class:`StateStoreError` when the cluster cannot be reached or does not cover every slot.
    """
    url = settings.url.get_secret_value()
    kwargs = client_kwargs(settings)
    if not getattr(settings, "cluster", False):
        return redis.Redis.from_url(url, **kwargs)
    try:
        return RedisCluster.from_url(url, **kwargs)
    except (RedisClusterException, redis.RedisError) as exc:
        raise StateStoreError(f"cannot connect to the Redis Cluster: {exc}") from exc
