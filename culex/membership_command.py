"""`culex cluster`: what the cluster's members are, and removing one that is gone for good.

    culex cluster members --config culex.toml
    culex cluster forget node-b --config culex.toml

A member that is down stays a member: the others keep routing what its subscriptions match
into its stream, for when it comes back. `forget` is for a node that will not: it leaves the
membership (every member of that node, `node-b/0`, `node-b/1`, ... with workers), and the
other nodes stop routing to it at their next heartbeat, without a restart, and take the
sessions in its store, each with what its stream held for it, shared out among them: from
then on they collect for those sessions, which expire there as any other, until their clients
connect. A node whose lease is alive is not forgotten. A node forgotten and started again
simply joins again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import cast

from redis.exceptions import RedisError

from .cluster import keys
from .cluster.keys import Lease
from .cluster.settings import ClusterConfig
from .config import ConfigError, load_config
from .server.cluster_redis import connect
from .storage.redis_primaries import Redis


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    members = actions.add_parser("members", help="list the members, live or down, and how "
                                 "much each one's stream holds")
    forget = actions.add_parser("forget", help="remove a node that is down for good: the "
                                "others stop routing to it; its sessions stay reachable")
    forget.add_argument("node", help="the node's name ([cluster] node)")
    for action in (members, forget):
        action.add_argument("--config", type=Path, required=True,
                            help="a culex.toml with the [cluster] table of the nodes")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_config(args.config).cluster
    except ConfigError as exc:
        print(f"culex: configuration error: {exc}", file=sys.stderr)
        return 2
    if settings is None:
        print(f"culex: {args.config}: no [cluster] table", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, settings))
    except RedisError as exc:
        print(f"culex: cluster: {', '.join(settings.redis)}: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, settings: ClusterConfig) -> int:
    redis = await connect(settings)
    try:
        if args.action == "members":
            await _members(redis)
            return 0
        return await _forget(redis, args.node)
    finally:
        await redis.aclose()


async def _names(redis: Redis) -> list[str]:
    return sorted(name.decode() for name in
                  cast(set[bytes], await redis.smembers(keys.MEMBERS)))


async def _members(redis: Redis) -> None:
    print(f"{'member':<24} {'number':>6} {'epoch':>6}  {'state':<5} {'stream entries':>14}")
    for name in await _names(redis):
        lease = cast(bytes | None, await redis.get(keys.member_key(name)))
        index = cast(bytes | None, await redis.hget(keys.INDEX, name))
        # The epoch it runs under; down, the one it last ran under.
        epoch = int(cast(bytes | None, await redis.get(keys.epoch_key(name))) or 0) \
            if lease is None else Lease.parse(lease).epoch
        entries = await redis.xlen(keys.stream_key(name))
        print(f"{name:<24} {int(index or -1):>6} {epoch:>6}  "
              f"{'down' if lease is None else 'live':<5} {entries:>14}")


async def _forget(redis: Redis, node: str) -> int:
    """Forget `node`'s members (the node, or its workers `node/0`, `node/1`, ...)."""
    names = [name for name in await _names(redis)
             if name == node or name.startswith(f"{node}/")]
    if not names:
        print(f"culex: cluster: {node} is not a member", file=sys.stderr)
        return 2
    forget = redis.register_script(keys.FORGET)
    alive = []
    for name in names:
        removed = await forget(keys=[keys.member_key(name), keys.MEMBERS,
                                     keys.filters_key(name)], args=[name])
        if removed == -1:
            alive.append(name)
        else:
            print(f"{name}: forgotten; its stream holds {await redis.xlen(keys.stream_key(name))}"
                  " entries for its sessions, which the other nodes take")
    if alive:
        print(f"culex: cluster: {', '.join(alive)}: the lease is alive (running, or down for "
              "less than a lease); not forgotten", file=sys.stderr)
        return 2
    return 0
