"""A cluster node's connection to Redis, and how it lives with Redis being unavailable.

`connect` makes the client: a Redis Cluster client when several seeds are configured, or when
the one URL's server says it is part of a Redis Cluster; a plain client otherwise.
`RedisHealth` is what every Redis call of a node goes through when it fails: the first failure
is logged once ("unavailable"), attempts are retried with a growing delay (at most
`MAX_RETRY`), and the first success after failures is logged again ("answers again").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as RedisClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..cluster import keys
from ..cluster.keys import Lease
from ..cluster.settings import ClusterConfig
from ..storage.redis_primaries import Redis

log = logging.getLogger("culex")

# How long one WAIT for replicas may take before the write is sent again and waited for again.
REPLICA_WAIT_MS = 1000
# The longest wait between two attempts while Redis does not answer.
MAX_RETRY = 1.0

T = TypeVar("T")

async def connect(settings: ClusterConfig) -> Redis:
    """A client for the configured Redis: a Redis Cluster when several seeds are given or
    when the one URL's server says it is part of one."""
    # No retries inside redis-py: a command it sends again after a connection error may have
    # run already, and a read that ran twice hides the entries it handed out the first time
    # (see stream_reading.py). Every failure reaches the node, which retries, and logs, itself.
    options: dict[str, Any] = {"socket_connect_timeout": settings.lease,
                               "socket_timeout": max(5.0, settings.lease),
                               "retry": Retry(NoBackoff(), 0)}
    if settings.is_redis_cluster:
        nodes = [RedisClusterNode(urlsplit(url).hostname or "", urlsplit(url).port or 6379)
                 for url in settings.redis]
        client: Redis = aioredis.RedisCluster(startup_nodes=nodes, **options)
        await client.initialize()
        return client
    single = aioredis.Redis.from_url(settings.redis[0], **options)
    info = await single.info("cluster")
    if not info.get("cluster_enabled"):
        return single
    await single.aclose()
    client = aioredis.RedisCluster.from_url(settings.redis[0], **options)
    await client.initialize()
    return client


@dataclass
class Members:
    """The cluster's membership as Redis has it."""

    # Every member's name, live or down (not those forgotten, `culex cluster forget`).
    names: set[str]
    # The live members' leases.
    alive: dict[str, Lease]
    # For the members that are down and not known to the reader: their number and the
    # filters Redis keeps for them.
    down: dict[str, tuple[int, list[str]]]


async def read_members(redis: Redis, known: Collection[str]) -> Members:
    """Who the members are; `known`: those the reader has the filters of."""
    members = cast(set[bytes], await redis.smembers(keys.MEMBERS))
    names = sorted(name.decode() for name in members)
    if not names:
        return Members(set(), {}, {})
    values = cast(list[bytes | None], await redis.mget([keys.member_key(name) for name in names]))
    alive = {name: Lease.parse(value) for name, value in zip(names, values, strict=True)
             if value is not None}
    down: dict[str, tuple[int, list[str]]] = {}
    for name in names:
        if name in alive or name in known:
            continue
        index = await redis.hget(keys.INDEX, name)
        filters = cast(set[bytes], await redis.smembers(keys.filters_key(name)))
        if index is not None:
            down[name] = (int(index), sorted(value.decode() for value in filters))
    return Members(set(names), alive, down)


class NotReplicated(RedisError):
    """Fewer replicas than configured confirmed a write within `REPLICA_WAIT_MS`."""


class RedisHealth:
    def __init__(self) -> None:
        self.down = False
        # Shutting down: failures are expected and not logged; retries end.
        self.stopping = False

    async def retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()` until it succeeds (or the node stops: CancelledError)."""
        delay = 0.05
        while not self.stopping:
            try:
                return await attempt()
            except RedisError as exc:
                self.unavailable(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY)
        raise asyncio.CancelledError

    def unavailable(self, exc: Exception) -> None:
        if not self.down and not self.stopping:
            self.down = True
            log.error("cluster: Redis unavailable (%s); messages to and from other nodes wait, "
                      "and so do the acknowledgements that depend on them; retrying", exc)

    def available(self) -> None:
        if self.down:
            self.down = False
            log.warning("cluster: Redis answers again; sending what waited")
