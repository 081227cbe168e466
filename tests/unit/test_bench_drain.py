"""The coordinator's drain: after publishing stops it waits while messages keep arriving, so a
backlog in socket buffers is counted as delivered rather than lost, and it stops once nothing
has arrived for `--drain` seconds. Scripted snapshots stand in for the load processes: the
question is only when the coordinator stops waiting."""

from __future__ import annotations

import asyncio
import time

from culex.bench.endpoint import Endpoint
from culex.bench.plan import build_plans
from culex.bench.runner import NS, Coordinator, Options
from culex.bench.worker import Snapshot

EXPECTED = 1000


class Trickle(Coordinator):
    """Deliveries arrive at `per_second` once publishing stopped, until `stop_after` of them."""

    def __init__(self, per_second: float, stop_after: int, drain: float) -> None:
        [plan] = build_plans("pubsub", "t", payload=None, publishers=None, subscribers=None,
                             clients=None)
        options = Options(endpoint=Endpoint("127.0.0.1", 1), qos=0, duration=0.1, warmup=0.0,
                          rate=0.0, inflight=1, procs=1, drain=drain)
        super().__init__(plan, options, "t", lambda line: None)
        self.per_second = per_second
        self.stop_after = stop_after
        self.end = 0

    async def snapshots(self) -> list[Snapshot]:
        since_end = max(0, time.monotonic_ns() - self.end) / NS
        delivered = min(self.stop_after, int(since_end * self.per_second))
        return [Snapshot(expected=EXPECTED, delivered=delivered, open_clients=2)]

    def watch(self) -> float:
        """Run the watch from the end of publishing; seconds it waited."""
        self.end = time.monotonic_ns()
        asyncio.run(self.watch_traffic(self.end - NS, self.end - NS, self.end))
        return (time.monotonic_ns() - self.end) / NS


def test_drain_waits_past_its_quiet_time_while_messages_keep_arriving() -> None:
    # 200/s for 1.5 s: each poll sees progress, so a 0.3 s quiet time never runs out.
    waited = Trickle(per_second=200, stop_after=300, drain=0.3).watch()
    assert 1.5 + 0.3 <= waited < 1.5 + 0.3 + 1.0


def test_drain_ends_when_every_expected_message_arrived() -> None:
    waited = Trickle(per_second=4000, stop_after=EXPECTED, drain=5).watch()
    assert waited < 1.0


def test_drain_ends_after_its_quiet_time_when_nothing_arrives() -> None:
    waited = Trickle(per_second=0, stop_after=0, drain=0.4).watch()
    assert 0.4 <= waited < 1.0
