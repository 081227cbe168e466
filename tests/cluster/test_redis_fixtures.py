"""The Redis the cluster tests run on is the Redis a cluster must run on: AOF with an fsync per
write (a kill -9 loses nothing written), and a real Redis Cluster whose slots are spread over
three masters."""

from __future__ import annotations

from tests.cluster.redis_servers import RedisCluster, RedisServer


def test_single_redis_fsyncs_every_write_and_keeps_it_across_kill9(
        redis_server: RedisServer) -> None:
    client = redis_server.client()
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "always"}
    client.xadd("culex-fixture-stream", {"n": "1"})
    redis_server.restart()
    assert redis_server.client().xlen("culex-fixture-stream") == 1


def test_redis_cluster_has_three_masters_covering_every_slot(
        redis_cluster: RedisCluster, redis_cluster_urls: list[str]) -> None:
    assert len(redis_cluster_urls) == 3
    client = redis_cluster.client()
    masters = [node for node in client.get_nodes() if node.server_type == "primary"]
    assert len(masters) == 3
    info = redis_cluster.servers[0].client().cluster("info")
    assert info["cluster_state"] == "ok"
    assert int(info["cluster_slots_assigned"]) == 16384
    # Keys of different hash tags land on different masters.
    holders = {client.get_node_from_key(f"{{node-{tag}}}:x").name for tag in "abcdefgh"}
    assert len(holders) > 1
