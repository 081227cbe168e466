"""Chaos across nodes: QoS 1 and QoS 2 publishers and persistent subscribers spread over three
nodes, and one node at a time killed with kill -9 and started again, ten times (`make soak`:
CULEX_SOAK_KILLS). The clients of the killed node reconnect to it as soon as it is back (their
sessions are in its database); the others go on meanwhile, their acknowledgements held while
the dead node's answer is due. In the roaming run they reconnect to the other nodes instead,
which take their sessions from the dead node's store in Redis. At the end: no acknowledged
message lost, no QoS 2 message delivered twice, nothing forged, each publisher's messages in
order.

The publishers and subscribers are those of the single-node crash test
(tests/robustness/test_crash.py): raw MQTT over asyncio, keeping their session state across
connections as MQTT requires.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.cluster.conftest import TEST_LEASE, NodeFactory
from tests.cluster.redis_servers import RedisServer
from tests.conftest import BrokerProcess
from tests.robustness.durability_clients import commit_barrier
from tests.robustness.test_crash import (
    KILLS,
    LIMITS,
    LOAD_SECONDS,
    SEED,
    OnlineSubscriber,
    Publisher,
    check,
    subscribe_offline,
)

CHAOS_KILLS = min(KILLS, 10) if KILLS == 20 else KILLS  # CI: ten; `make soak`: as many as asked
# Three nodes' worth of publishers: more acknowledged messages than one broker's run needs.
MIN_ACKED = 300


async def kill_nodes(nodes: list[BrokerProcess], kills: int, rng: random.Random,
                     log: list[str], down: float = 0.0) -> None:
    """`kills` times: a node killed, and started again after `down` s and up to 0.3 s more."""
    for number in range(kills):
        await asyncio.sleep(rng.uniform(0.2, 0.8))
        node = rng.choice(nodes)
        await asyncio.to_thread(node.kill)
        await asyncio.sleep(down + rng.uniform(0.0, 0.3))
        started = time.monotonic()
        await asyncio.to_thread(node.start)
        took = time.monotonic() - started
        log.append(f"kill {number + 1}: {node.tmp.name}, back in {took:.2f} s")
    await asyncio.sleep(0.5)


class Roaming:
    """Where a client connects when it roams: each attempt goes to the next node, so the
    clients of a killed node reconnect to the others (their sessions taken from its store),
    and its first attempt to its own node."""

    def __init__(self, nodes: list[BrokerProcess], first: int) -> None:
        self.host = nodes[first].host
        self._nodes = nodes
        self._next = first

    @property
    def port(self) -> int:
        node = self._nodes[self._next % len(self._nodes)]
        self._next += 1
        return node.port


def run_chaos(nodes: list[BrokerProcess],
              chaos: Callable[[list[str]], Awaitable[None]], *, roam: bool = False) -> None:
    """QoS 1 and 2 publishers on every node and persistent subscribers on node-b and node-c
    while `chaos` runs, and after it until `MIN_ACKED` messages are acknowledged (for at most
    `LOAD_SECONDS` more: the machine may be busy with other suites); then the checks. With
    `roam` every client reconnects to the next node, not to its own."""
    subscriber_ids = ("chaos-sub-b", "chaos-sub-c")
    homes = {"chaos-sub-b": 1, "chaos-sub-c": 2}
    for client_id, home in homes.items():
        subscribe_offline(nodes[home], client_id)
        commit_barrier(nodes[home])

    def where(index: int) -> Any:
        return Roaming(nodes, index) if roam else nodes[index]

    publishers = [Publisher(index, qos, where(index % 3))
                  for index, qos in enumerate((1, 2, 1, 2, 1, 2))]
    subscribers = [OnlineSubscriber(client_id, where(homes[client_id]))
                   for client_id in subscriber_ids]

    async def run() -> list[str]:
        stop, done = asyncio.Event(), asyncio.Event()
        log: list[str] = []
        reading = [asyncio.create_task(s.run(done)) for s in subscribers]
        await asyncio.sleep(0.3)
        publishing = [asyncio.create_task(p.run(stop)) for p in publishers]
        await chaos(log)
        deadline = time.monotonic() + LOAD_SECONDS
        while sum(len(p.acked) for p in publishers) <= MIN_ACKED \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        finished, pending = await asyncio.wait(publishing, timeout=60)
        assert not pending, f"publishers still waiting: {[len(p.inflight) for p in publishers]}"
        for task in finished:
            task.result()
        done.set()
        finished, pending = await asyncio.wait(reading, timeout=60)
        assert not pending, "subscribers still receiving 60 s after the last kill"
        for task in finished:
            task.result()
        return log

    log = asyncio.run(run())
    counts, problems = check(publishers, {s.client_id: s.got for s in subscribers})
    for client in (*publishers, *subscribers):
        problems += client.problems
    if roam:
        # What reaches a session's old node while it moves is queued after what reaches the
        # new one directly (README.md, "Limits, today"): order across a move is reported,
        # not required. Loss and QoS 2 duplicates still fail.
        reordered = [problem for problem in problems if problem.endswith("out of order")]
        problems = [problem for problem in problems if problem not in reordered]
        print("\n".join(reordered))
    print("\n".join(log))
    print("counts:", ", ".join(f"{name} {value}" for name, value in sorted(counts.items())))
    assert counts["acked"] > MIN_ACKED, f"too little load to mean much: {counts}"
    assert not problems, (f"seed {SEED}:\n" + "\n".join(problems[:30])
                          + (f"\n... {len(problems) - 30} more" if len(problems) > 30 else ""))


@pytest.mark.timeout(120 + 5 * CHAOS_KILLS)
@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
def test_kill9_nodes_one_at_a_time_loses_nothing_acknowledged(
        redis_server: RedisServer, cluster_nodes: NodeFactory, workers: int) -> None:
    rng = random.Random(SEED)
    nodes = cluster_nodes([redis_server.url], workers=workers, limits=LIMITS)
    run_chaos(nodes, lambda log: kill_nodes(nodes, CHAOS_KILLS, rng, log))


@pytest.mark.timeout(180 + 10 * CHAOS_KILLS)
@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
def test_kill9_nodes_whose_clients_reconnect_elsewhere_loses_nothing_acknowledged(
        redis_server: RedisServer, cluster_nodes: NodeFactory, workers: int) -> None:
    """As above, but the killed node stays down for longer than its lease, and its clients
    reconnect to the other nodes, which take their sessions from its store in Redis: no
    acknowledged message lost, no QoS 2 message delivered twice, and every reconnection
    finds its session (Session Present 1)."""
    rng = random.Random(SEED)
    nodes = cluster_nodes([redis_server.url], workers=workers, limits=LIMITS)
    run_chaos(nodes, lambda log: kill_nodes(nodes, CHAOS_KILLS, rng, log, down=TEST_LEASE),
              roam=True)


@pytest.mark.timeout(180)
def test_redis_killed_and_restarted_mid_run_loses_nothing_acknowledged(
        redis_server: RedisServer, cluster_nodes: NodeFactory) -> None:
    """Redis itself is killed (kill -9) and started again from its AOF, three times, under
    the same load: the nodes hold what depends on it, then go on."""
    rng = random.Random(SEED)
    nodes = cluster_nodes([redis_server.url], limits=LIMITS)

    async def restart_redis(log: list[str]) -> None:
        for number in range(3):
            await asyncio.sleep(rng.uniform(0.5, 1.0))
            await asyncio.to_thread(redis_server.kill)
            down = rng.uniform(0.2, 3.0)  # past the lease now and then
            await asyncio.sleep(down)
            await asyncio.to_thread(redis_server.start)
            log.append(f"Redis restart {number + 1}: down {down:.2f} s")
        await asyncio.sleep(1.0)

    run_chaos(nodes, restart_redis)
