"""Load across nodes: `culex bench` with its publishers on node A and its subscribers on node
B (`--subscriber-port`), so that every message crosses nodes through Redis; at QoS 1 and 2
below capacity nothing is lost, and a QoS 0 fan-out arrives whole."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.cluster.conftest import NodeFactory
from tests.cluster.redis_servers import RedisServer
from tests.integration.test_bench import SHORT, bench


@pytest.mark.parametrize(("scenario", "qos", "extra"), [
    ("pairs", "1", ("--publishers", "5", "--rate", "1000")),
    ("pubsub", "2", ("--rate", "500")),
    ("fanout", "0", ("--subscribers", "20", "--rate", "500")),
], ids=["pairs-qos1", "pubsub-qos2", "fanout-qos0"])
def test_bench_across_nodes_loses_nothing(redis_server: RedisServer, cluster_nodes: NodeFactory,
                                          tmp_path: Path, scenario: str, qos: str,
                                          extra: tuple[str, ...]) -> None:
    first, second = cluster_nodes([redis_server.url], names=("node-a", "node-b"))
    out = tmp_path / "out.json"
    result = bench(scenario, "--qos", qos, *extra, *SHORT, "--port", str(first.port),
                   "--subscriber-port", str(second.port), "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = json.loads(out.read_text())["results"]
    assert row["sent"] > 0
    assert row["delivered"] == row["expected"], row



def test_a_flood_to_a_crowd_on_another_node_trips_no_node(
        redis_server: RedisServer, cluster_nodes: NodeFactory, tmp_path: Path) -> None:
    """A publisher on node A, flat out, and 100 subscribers on node B, all connecting at once
    and leaving at once. Node B applies what its stream holds a tick's share at a time, so
    its loop is never held past its lease (which it would lose) nor its subscribers left
    unwritten for seconds (which would count them as stalled, their messages dropped). Each
    CONNECT claims its id in Redis and each session that ends gives its claim up, a hundred
    calls together: they wait their turn rather than take every Redis connection, so no
    commit fails for want of one (which would hold every acknowledgement). No node logs an
    error."""
    first, second = cluster_nodes([redis_server.url], names=("node-a", "node-b"))
    out = tmp_path / "out.json"
    result = bench("fanout", "--subscribers", "100", *SHORT, "--port", str(first.port),
                   "--subscriber-port", str(second.port), "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = json.loads(out.read_text())["results"]
    assert row["delivered"] > 0, row
    time.sleep(1.0)  # the 101 sessions that end give their claims up
    for node in (first, second):
        errors = [line for line in node.log_text().splitlines() if " ERROR " in line]
        assert not errors, "\n".join(errors[:5])
