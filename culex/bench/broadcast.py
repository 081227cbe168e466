"""`conns --broadcast`: one message to every idle client, and how long the last one waited.

Every idle client subscribes (QoS 0) to the run's broadcast topic and counts as connected only
once its SUBACK is in, so when the last client is connected, every one of them is a subscriber.
Then the coordinator opens one client of its own, publishes one QoS 0 message on the topic, and
polls the load-generator processes until every connected client has it or the timeout
(`--broadcast-timeout`, `BROADCAST_TIMEOUT` seconds unless told) has passed. 100,000 clients over
several broker workers take a few seconds at most on a loaded 2-core machine (see
BENCHMARKS.md); a message that has not reached them all after 30 s is lost, not late.

Each arrival is stamped with `time.monotonic_ns()` when its load-generator process read it: one
clock for every process on the host, the coordinator's publish instant included. The time of
the last arrival therefore also holds the load generator's own time to read the message off
every socket, which at 100,000 clients is part of the figure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .clients import NS, IdleClient, WorkerState
from .endpoint import Endpoint, open_client
from .wire import STAMP_SIZE, PublishTemplate, connect_frame
from .worker import CONNECT_TIMEOUT, KEEPALIVE, Snapshot

BROADCAST_TIMEOUT = 30.0  # seconds from the publish to the last arrival, or the run fails
POLL_SECONDS = 0.02
PROGRESS_SECONDS = 1.0


def broadcast_topic(run_id: str) -> str:
    return f"culex-bench/{run_id}/broadcast"


@dataclass(frozen=True, slots=True)
class BroadcastFigures:
    expected: int  # idle clients connected (so subscribed) when it was published
    received: int
    last_ms: float | None  # from the publish to the last arrival; None if none arrived

    @property
    def complete(self) -> bool:
        return self.received >= self.expected


@dataclass(frozen=True, slots=True)
class Broadcaster:
    """The coordinator's own publishing client for one run's broadcast."""

    endpoint: Endpoint
    run_id: str
    mqtt5: bool = False
    username: str | None = None
    password: str | None = None
    source: str | None = None
    timeout: float = BROADCAST_TIMEOUT

    async def run(self, expected: int, totals: Callable[[], Awaitable[Snapshot]],
                  progress: Callable[[str], None]) -> BroadcastFigures:
        """Publish the broadcast, then wait for `expected` arrivals (summed by `totals`)."""
        client = IdleClient(WorkerState(), f"cb{self.run_id}b", mqtt5=self.mqtt5)
        await open_client(client, self.endpoint,
                          connect_frame(client.client_id, KEEPALIVE, self.username,
                                        self.password, mqtt5=self.mqtt5),
                          CONNECT_TIMEOUT, self.source)
        try:
            frame = PublishTemplate(broadcast_topic(self.run_id), STAMP_SIZE, 0, 1,
                                    mqtt5=self.mqtt5).buffer
            published = time.monotonic_ns()
            client.send(bytes(frame))
            deadline = published + int(self.timeout * NS)
            tick = published + int(PROGRESS_SECONDS * NS)
            while True:
                total = await totals()
                now = time.monotonic_ns()
                if total.broadcast_received >= expected or now >= deadline:
                    break
                if now >= tick:
                    progress(f"broadcast: received by {total.broadcast_received:,}/{expected:,}"
                             f" after {(now - published) / NS:.1f} s")
                    tick += int(PROGRESS_SECONDS * NS)
                await asyncio.sleep(POLL_SECONDS)
        finally:
            client.close()
        last = (max(0, total.broadcast_last_ns - published) / 1e6
                if total.broadcast_received else None)
        return BroadcastFigures(expected, total.broadcast_received, last)
