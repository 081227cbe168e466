"""Back-pressure across Redis: a member that reads its stream slower than it is sent to (its
own subscribers are slow, so its reading is paused) counts as a full link for its senders.

A sender learns the size of each live receiver's stream with every write (`MEMORY USAGE`, which
samples a few of the stream's nodes, in the same pipelined round trip). Past `HIGH_BYTES` the
link to it is paused as a full socket would be (the publishers that route to it stop being
read, QoS 0 ones too, as on one node); while it is, the size is polled every `POLL_SECONDS`,
and below `LOW_BYTES` the link goes on. So a flood bounds Redis's memory, not only a node's.
A member that is down never pauses anyone: its stream is where its persistent sessions'
messages wait for it (QoS 0 is not sent to it at all).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from ..cluster import keys
from ..core.node_links import NodeLinks
from ..storage.redis_primaries import Redis
from .cluster_entries import Peer

log = logging.getLogger("culex")

# Above what a reader that keeps up leaves in its stream (cross-node 1 -> 1 is as fast with
# these bounds as with four times them, BENCHMARKS.md), far below what strains a Redis.
HIGH_BYTES = 16 * 1024 * 1024
LOW_BYTES = 4 * 1024 * 1024
POLL_SECONDS = 0.02


class StreamBacklog:
    def __init__(self, redis: Callable[[], Redis], links: Callable[[], NodeLinks],
                 resume: Callable[[Peer], None], loop: asyncio.AbstractEventLoop) -> None:
        """`resume(peer)`: the backlog of `peer` is gone; its link goes on unless something
        else still holds it."""
        self._redis = redis
        self._links = links
        self._resume = resume
        self._loop = loop
        self._behind: dict[str, Peer] = {}
        self._watching: asyncio.Task[None] | None = None

    def measured(self, peer: Peer, size: int | None) -> None:
        """`peer`'s stream took `size` bytes after this node's last write to it."""
        if (size or 0) <= HIGH_BYTES or not peer.alive or peer.name in self._behind:
            return
        peer.backlogged = True
        self._behind[peer.name] = peer
        links = self._links()
        link = links.links.get(peer.index)
        if link is not None and not link.write_paused:
            links.pause_writing(peer.index, self._loop.time())
        log.info("cluster: %s's stream takes %d MB (it reads slower than it is sent to); "
                 "publishers to it wait", peer.name, (size or 0) >> 20)
        if self._watching is None:
            self._watching = self._loop.create_task(self._watch())

    def stop(self) -> None:
        if self._watching is not None:
            self._watching.cancel()

    def forget(self, peer: Peer) -> None:
        """`peer` is down (or gone): it holds nobody back any more."""
        if self._behind.pop(peer.name, None) is not None:
            peer.backlogged = False
            self._resume(peer)

    async def _watch(self) -> None:
        try:
            while self._behind:
                await asyncio.sleep(POLL_SECONDS)
                peers = list(self._behind.values())
                try:
                    async with self._redis().pipeline(transaction=False) as pipe:
                        for peer in peers:
                            pipe.memory_usage(keys.stream_key(peer.name))
                        sizes = await pipe.execute()
                except RedisError:
                    continue  # the node's other Redis calls report it
                for peer, size in zip(peers, sizes, strict=True):
                    if (size or 0) <= LOW_BYTES and self._behind.pop(peer.name, None):
                        peer.backlogged = False
                        log.info("cluster: %s has caught up (its stream takes %d MB)",
                                 peer.name, (size or 0) >> 20)
                        self._resume(peer)
        finally:
            self._watching = None
