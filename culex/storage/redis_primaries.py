"""Writes that must reach Redis replicas before they count (`[cluster] replicas`).

WAIT counts only the writes made on its own connection. On one Redis primary a pipeline of the
writes and the WAIT is enough. A Redis Cluster client sends each primary its share of a
pipeline on a connection of its own and a keyless WAIT to any one of them, so there the writes
go, primary by primary, through a plain client of the primary that holds their keys' slots
(`Primaries.of`), each batch followed by its WAIT. After a failure the slot map is read again
(`Primaries.refresh`): a replica may have been promoted, or slots moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

Redis = aioredis.Redis | aioredis.RedisCluster
# A command for a pipeline: the key it is sent for, and what adds it to a pipeline (a script
# call through a pipeline is awaited).
PipelineCommand = tuple[str, Callable[[Any], object]]


class Primaries:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        # A Redis Cluster primary's name (host:port) -> a plain client of it.
        self._clients: dict[str, aioredis.Redis] = {}

    def of(self, key: str) -> aioredis.Redis:
        """A plain client of the primary that holds `key`."""
        redis = self._redis
        if not isinstance(redis, aioredis.RedisCluster):
            return redis
        node = redis.get_node_from_key(key)
        if node is None:
            raise RedisError(f"no Redis Cluster primary holds the slot of {key!r}")
        client = self._clients.get(node.name)
        if client is None:
            pool = aioredis.ConnectionPool(connection_class=node.connection_class,
                                           **node.connection_kwargs)
            client = self._clients[node.name] = aioredis.Redis(connection_pool=pool)
        return client

    async def write_waited(self, commands: list[PipelineCommand], replicas: int, wait_ms: int
                           ) -> tuple[list[Any], int]:
        """Send `commands`, each primary's share in one pipeline ended by a WAIT for
        `replicas` (at most `wait_ms`): their replies in order, and the fewest replicas any
        primary had confirm its share by then."""
        shares: dict[int, tuple[aioredis.Redis, list[int]]] = {}
        for position, (key, _add) in enumerate(commands):
            client = self.of(key)
            shares.setdefault(id(client), (client, []))[1].append(position)
        replies: list[Any] = [None] * len(commands)

        async def send(client: aioredis.Redis, positions: list[int]) -> int:
            async with client.pipeline(transaction=False) as pipe:
                for position in positions:
                    added = commands[position][1](pipe)
                    if inspect.isawaitable(added):
                        await added
                pipe.wait(replicas, wait_ms)
                results = await pipe.execute()
            for position, result in zip(positions, results, strict=False):
                replies[position] = result
            return int(results[-1])

        outcomes = await asyncio.gather(*(send(client, positions)
                                          for client, positions in shares.values()),
                                        return_exceptions=True)
        confirmed = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                with contextlib.suppress(RedisError):  # (the write's own error is the one)
                    await self.refresh()  # a primary may have failed over, or slots moved
                raise outcome
            confirmed.append(outcome)
        return replies, min(confirmed, default=replicas)

    async def refresh(self) -> None:
        """Read the slot map again, after a write through `of` failed."""
        redis = self._redis
        if isinstance(redis, aioredis.RedisCluster):
            await redis.nodes_manager.initialize()

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose(close_connection_pool=True)
