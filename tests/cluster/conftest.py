"""Fixtures of the cluster tests: real Redis servers (one instance, or a Redis Cluster of three
masters) and Culex nodes clustered on them, each node a `culex serve` subprocess.

Every node started must stop cleanly (exit 0 on SIGTERM) without a traceback in its log,
unless the test killed it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.redis_servers import RedisCluster, RedisServer
from tests.conftest import BrokerProcess, free_port
from tests.integration.clients import Clients, PahoClient

NODE_NAMES = ("node-a", "node-b", "node-c")
# Short, so the tests that kill or pause a node see it presumed dead quickly.
TEST_LEASE = 2


def offline_session(clients: Clients, client_id: str, topic_filter: str, qos: int = 1) -> None:
    """A persistent session `client_id` on the node of `clients`, subscribed to
    `topic_filter`, its client gone."""
    holder = clients.raw(client_id, clean=False)
    assert holder.subscribe([(topic_filter, qos)]) == [qos]
    holder.disconnect()


def publish_numbered(publisher: PahoClient, prefix: str, numbers: range, qos: int = 1) -> None:
    """`<prefix>/<n>` with the payload `<n>` for each of `numbers`, each acknowledged."""
    for number in numbers:
        publisher.publish(f"{prefix}/{number}", str(number).encode(), qos)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One Redis Cluster per module (creating one takes a second or two), emptied before each
    test that uses it through `redis_cluster_urls`."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_urls(redis_cluster: RedisCluster) -> list[str]:
    redis_cluster.flush()
    return redis_cluster.urls


NodeFactory = Callable[..., list[BrokerProcess]]


@pytest.fixture
def cluster_nodes(tmp_path: Path) -> Iterator[NodeFactory]:
    """`cluster_nodes(urls, names=NODE_NAMES, workers=1, cluster=None, **settings)`: Culex
    nodes (node-a, node-b, node-c by default) on the Redis at `urls`, each with its own
    directory, port and log, started in order; `cluster`: more keys of `[cluster]`."""
    started: list[BrokerProcess] = []

    def start(urls: list[str], names: Sequence[str] = NODE_NAMES, workers: int = 1,
              lease: float = TEST_LEASE, cluster: dict[str, Any] | None = None,
              **settings: Any) -> list[BrokerProcess]:
        nodes = []
        for name in names:
            work = tmp_path / name
            work.mkdir(exist_ok=True)
            node_settings = {"sys_interval": 1, **settings,
                             "cluster": {"redis": urls, "node": name, "lease": lease,
                                         **(cluster or {})}}
            node = BrokerProcess(work, node_settings, workers)
            node.port = free_port()
            node.start()
            started.append(node)
            nodes.append(node)
        return nodes

    yield start
    problems = []
    for node in started:  # every node is stopped, whatever the first one did
        if node.killed:
            continue
        try:
            code = node.stop()
        except AssertionError as exc:
            problems.append(str(exc))
            continue
        text = node.log_text()
        if "Traceback" in text:
            problems.append(f"node logged a traceback:\n{text}")
        elif code != 0:
            problems.append(f"node exit code {code}:\n{text}")
    assert not problems, "\n".join(problems)


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def nodes(request: pytest.FixtureRequest, redis_server: RedisServer,
          cluster_nodes: NodeFactory) -> list[BrokerProcess]:
    """Three nodes of one worker each, or of two (each worker a member of its own)."""
    return cluster_nodes([redis_server.url], workers=request.param)


def clients_of(nodes: list[BrokerProcess]) -> Iterator[list[Clients]]:
    opened = [Clients(node) for node in nodes]
    yield opened
    for clients in opened:
        clients.close()


@pytest.fixture
def per_node(nodes: list[BrokerProcess]) -> Iterator[list[Clients]]:
    """A client factory for each of `nodes`."""
    yield from clients_of(nodes)
