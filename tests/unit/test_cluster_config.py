"""`[cluster]` in culex.toml: the contract keys (redis, node, lease), and every bad value
refused with the file and key named."""

from __future__ import annotations

import pytest

from culex.cluster.settings import ClusterConfig
from culex.config import Config, ConfigError, parse_config


def test_without_cluster_table_a_node_is_on_its_own() -> None:
    assert parse_config({}, "x.toml").cluster is None
    assert Config().cluster is None


def test_cluster_table() -> None:
    config = parse_config({"cluster": {"redis": ["redis://127.0.0.1:6379"], "node": "node-a"}},
                          "x.toml")
    assert config.cluster == ClusterConfig(("redis://127.0.0.1:6379",), "node-a", 5.0)
    assert not config.cluster.is_redis_cluster
    seeds = parse_config({"cluster": {"redis": ["redis://10.0.0.1:7000", "rediss://r2:7001",
                                                "unix:///run/redis.sock"],
                                      "node": "n_1.eu-west", "lease": 2}}, "x.toml").cluster
    assert seeds is not None and seeds.is_redis_cluster and seeds.lease == 2.0


@pytest.mark.parametrize(("table", "message"), [
    ({"node": "a"}, "x.toml: cluster.redis: at least one"),
    ({"redis": [], "node": "a"}, "x.toml: cluster.redis: at least one"),
    ({"redis": "redis://h:1", "node": "a"}, "cluster.redis: expected an array of strings"),
    ({"redis": ["http://h:1"], "node": "a"}, "'http://h:1': the scheme must be one of"),
    ({"redis": ["redis://:6379"], "node": "a"}, "'redis://:6379': no host"),
    ({"redis": ["redis://h:99999"], "node": "a"}, "'redis://h:99999': Port out of range"),
    ({"redis": ["unix://relative"], "node": "a"}, "needs an absolute path"),
    ({"redis": ["redis://h:1", "redis://h:1"], "node": "a"}, "a URL is listed twice"),
    ({"redis": ["redis://h:1"]}, "x.toml: cluster.node: '' must be"),
    ({"redis": ["redis://h:1"], "node": "a b"}, "cluster.node: 'a b' must be"),
    ({"redis": ["redis://h:1"], "node": "x" * 64}, "must be 1-63 letters"),
    ({"redis": ["redis://h:1"], "node": "a", "lease": 0.5}, "cluster.lease: 0.5 s must be"),
    ({"redis": ["redis://h:1"], "node": "a", "lease": "5"}, "cluster.lease: expected float"),
    ({"redis": ["redis://h:1"], "node": "a", "nodes": 3}, "cluster.nodes: unknown key"),
])
def test_bad_cluster_values_are_refused(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")
                       .replace("*", r"\*").replace("[", r"\[")):
        parse_config({"cluster": table}, "x.toml")


def test_replicas_are_a_number_a_primary_can_have() -> None:
    assert ClusterConfig(redis=("redis://127.0.0.1:7000", "redis://127.0.0.1:7001"),
                         node="node-a", replicas=1).problems() == []  # each primary's replica
    assert ClusterConfig(redis=("redis://127.0.0.1:7000",), node="node-a",
                         replicas=17).problems() == ["replicas: 17 must be between 0 and 16"]
    assert ClusterConfig(redis=("redis://127.0.0.1:7000",), node="node-a",
                         replicas=2).problems() == []


CLUSTER = {"redis": ["redis://127.0.0.1:6379"], "node": "node-a"}


@pytest.mark.parametrize(("storage", "cluster", "in_redis"), [
    ({}, CLUSTER, True),  # the default when clustered
    ({"backend": "redis"}, CLUSTER, True),
    ({"backend": "sqlite"}, CLUSTER, False),
    ({}, None, False),  # one node on its own: its file
    ({"backend": "sqlite"}, None, False),
    ({"durability": "none"}, CLUSTER, False),  # nothing is stored anywhere
])
def test_where_the_state_is_kept(storage: dict[str, str], cluster: dict[str, object] | None,
                                 in_redis: bool) -> None:
    data: dict[str, object] = {"storage": storage}
    if cluster is not None:
        data["cluster"] = cluster
    assert parse_config(data, "x.toml").state_in_redis() is in_redis


@pytest.mark.parametrize(("data", "error"), [
    ({"storage": {"backend": "postgres"}}, "storage.backend: 'postgres' is not one of sqlite, "
                                           "redis"),
    ({"storage": {"backend": "redis"}}, "needs a [cluster] section"),
])
def test_a_backend_that_cannot_be_used_is_refused(data: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace("[", r"\[").replace("]", r"\]")):
        parse_config(data, "x.toml")
