"""The Redis storage backend (culex/storage/redis_store.py) against a real `redis-server`, one
instance and a Redis Cluster: what is committed is read back by a new process as it was, a
session is taken from a member's store, and a commit that Redis does not take is held and
replayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from redis import asyncio as aioredis

from culex.storage.base import LoadedState, StoredEntry, StoredMessage, StoredSession
from culex.storage.redis_store import TAKE, Redis, RedisStorage, take_session
from tests.cluster.redis_servers import RedisServer

MEMBER = "node-x"


async def committed(storage: RedisStorage) -> bool:
    """Commit what is pending; whether Redis took it."""
    result = asyncio.get_running_loop().create_future()
    storage.commit(result.set_result)
    return bool(await result)


async def opened(redis: Redis) -> tuple[RedisStorage, LoadedState]:
    """The member's storage as a new process of it opens it, and what it reads."""
    storage = RedisStorage(MEMBER, asyncio.get_running_loop(), durable=True)
    await storage.read(redis)
    return storage, storage.load()


async def reopened(redis: Redis) -> LoadedState:
    """What a new process of the member reads."""
    return (await opened(redis))[1]


def fill(storage: RedisStorage) -> None:
    storage.session_saved("c1", 3600, "alice")
    storage.subscription_set("c1", "a/#", 2)
    storage.subscription_set("c1", "gone/#", 1)
    storage.subscription_removed("c1", "gone/#")
    storage.message_stored(StoredMessage(1, "a/b", b"hello\0", 2, False, b"\x02\0\0\0\x3c",
                                         60.0, 77))
    storage.message_stored(StoredMessage(2, "kept", b"retained", 1, True))
    storage.entry_queued("c1", StoredEntry(1, 1, 1, False, 0, False, 0))
    storage.entry_queued("c1", StoredEntry(2, 1, 2, True, 0, False, 5))
    storage.entry_sent("c1", 2, 7)
    storage.entry_released("c1", 2)
    storage.inbound_received("c1", 9)
    storage.inbound_received("c1", 10)
    storage.inbound_released("c1", 10)
    storage.session_admitted("c1", 41)
    storage.session_unfinished("c1", True)
    for cluster_id in (11, 12, 13):
        storage.session_given("c1", cluster_id)
    storage.session_given_forgotten("c1", {12})
    storage.session_saved("c1", 3600, "alice")  # saved again: it keeps its claim
    storage.retained_set("kept", 2, 5)
    storage.retained_cleared("cleared", 8)
    storage.will_set("c1", StoredMessage(0, "will/c1", b"bye", 1, True))
    storage.session_saved("c2", 0xFFFFFFFF, None)
    storage.cursor_saved(MEMBER, "node-y", 3, 41)
    storage.outbox_added(MEMBER, 2, 5, "node-y", b"rec\0ords")
    storage.outbox_added(MEMBER, 2, 6, "node-z", b"more")
    storage.outbox_sent(MEMBER, 2, 6)


def run(url: str, test: Callable[[Redis], Awaitable[None]], *, cluster: bool = False) -> None:
    async def main() -> None:
        redis: Redis = (aioredis.RedisCluster.from_url(url) if cluster
                        else aioredis.Redis.from_url(url))
        try:
            await test(redis)
        finally:
            await redis.aclose()

    asyncio.run(main())


async def round_trip(redis: Redis) -> None:
    storage, loaded = await opened(redis)
    assert loaded == LoadedState()
    fill(storage)
    assert storage.pending
    assert await committed(storage)
    assert not storage.pending
    state = await reopened(redis)
    sessions = {session.client_id: session for session in state.sessions}
    assert sessions["c1"] == StoredSession(
        "c1", 3600, {"a/#": 2}, True, "alice",
        [StoredEntry(1, 1, 1, False, 0, False, 0), StoredEntry(2, 1, 2, True, 7, True, 5)],
        {9}, 41, True, {11, 13})
    assert sessions["c2"] == StoredSession("c2", 0xFFFFFFFF, owner_known=True)
    first = state.messages[1]
    assert (first.topic, first.payload, first.qos, first.retain, first.properties,
            first.cluster_id) == ("a/b", b"hello\0", 2, False, b"\x02\0\0\0\x3c", 77)
    assert first.expires_in is not None and 55 < first.expires_in <= 60
    assert state.messages[2].expires_in is None
    assert state.retained == [(2, 5)]
    assert state.max_stamp == 8  # the tombstone's stamp counts
    assert state.max_message_id == 2
    assert [(client_id, will.topic, will.payload) for client_id, will in state.wills] == [
        ("c1", "will/c1", b"bye")]
    again = RedisStorage(MEMBER, asyncio.get_running_loop(), durable=True)
    await again.read(redis)
    assert again.cursors(MEMBER) == {("node-y", 3): 41}
    assert again.outbox(MEMBER) == [(2, 5, "node-y", b"rec\0ords")]
    # A session deleted goes with its rows; its message stays while an entry... of nobody
    # refers to it: the next start's first commit deletes it.
    again.load()
    again.session_deleted("c1")
    again.retained_cleared("kept", 9)
    assert await committed(again)
    state = await reopened(redis)
    assert [session.client_id for session in state.sessions] == ["c2"]
    assert state.retained == [] and state.messages == {} and state.max_stamp == 9


@pytest.mark.timeout(30)
def test_what_is_committed_is_read_back_as_it_was(redis_server: RedisServer) -> None:
    run(redis_server.url, round_trip)


@pytest.mark.timeout(60)
def test_what_is_committed_is_read_back_on_a_redis_cluster(
        redis_cluster_urls: list[str]) -> None:
    run(redis_cluster_urls[0], round_trip, cluster=True)


def test_what_is_done_within_one_commit_window_is_never_written(
        redis_server: RedisServer) -> None:
    async def test(redis: Redis) -> None:
        storage, _loaded = await opened(redis)
        storage.session_saved("c1", 60, None)
        storage.message_stored(StoredMessage(1, "t", b"x", 1, False))
        storage.entry_queued("c1", StoredEntry(1, 1, 1, False, 4, False))
        storage.entry_done("c1", 1)
        storage.message_deleted(1)
        assert await committed(storage)
        assert await redis.hlen(f"culex:{{{MEMBER}}}:messages") == 0
        assert await redis.hkeys(f"culex:{{{MEMBER}}}:s:c1") == [b"m"]

    run(redis_server.url, test)


def test_a_session_is_taken_from_a_members_store_with_what_it_held(
        redis_server: RedisServer) -> None:
    async def test(redis: Redis) -> None:
        storage, _loaded = await opened(redis)
        fill(storage)
        assert await committed(storage)
        take = redis.register_script(TAKE)
        taken = await take_session(take, MEMBER, "c1")
        assert taken is not None
        session, messages = taken
        assert session.subscriptions == {"a/#": 2}
        assert [(entry.seq, entry.packet_id, entry.released) for entry in session.entries] \
            == [(1, 0, False), (2, 7, True)]
        assert (session.awaiting_release, session.admitted, session.given) == ({9}, 41,
                                                                               {11, 13})
        assert set(messages) == {1} and messages[1].cluster_id == 77
        # What is left there: the session with its subscriptions, to collect what still
        # reaches that member, and nothing it held. Its message goes at the next start.
        state = await reopened(redis)
        left = {session.client_id: session for session in state.sessions}["c1"]
        assert (left.subscriptions, left.entries, left.awaiting_release, left.given) == (
            {"a/#": 2}, [], set(), set())
        assert set(state.messages) == {2}
        assert await take_session(take, MEMBER, "nobody") is None

    run(redis_server.url, test)


@pytest.mark.timeout(60)
def test_a_commit_redis_does_not_take_is_held_and_replayed(redis_server: RedisServer) -> None:
    async def test(redis: Redis) -> None:
        storage, _loaded = await opened(redis)
        storage.session_saved("c1", 60, None)
        assert await committed(storage)
        redis_server.kill()
        storage.subscription_set("c1", "during/#", 1)
        assert not await committed(storage)
        assert storage.pending  # put back, to go first
        redis_server.start()
        for _ in range(100):
            if await committed(storage):
                break
            await asyncio.sleep(0.1)
        state = await reopened(redis)
        assert state.sessions[0].subscriptions == {"during/#": 1}

    run(redis_server.url, test)
