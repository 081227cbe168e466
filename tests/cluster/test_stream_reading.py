"""A node reads its stream through a consumer group, and an XREADGROUP whose reply is lost
(Redis killed, or the connection cut, after it ran) has already handed its entries out: they
are pending, and `>` never returns them again. Unread, they were never applied: a barrier in
one never answered, an answer in one never counted, and the acknowledgements waiting on them
held for good (the chaos test's publishers left waiting after Redis restarts).

Here a real Redis sits behind a proxy that lets the next XREADGROUP through and cuts the
connection instead of passing its reply on, every time at the same point.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from redis.exceptions import RedisError

from culex.cluster import keys
from culex.cluster.settings import ClusterConfig
from culex.server.cluster_redis import connect
from culex.server.stream_reading import NEW, StreamReader
from tests.cluster.redis_servers import RedisServer

STREAM = keys.stream_key("node-r")


class ReplyCutter:
    """A TCP proxy to Redis that, once `cut_after` is given a command name, forwards the next
    such command and closes the client's connection when Redis answers it, the answer unsent."""

    def __init__(self, redis_port: int) -> None:
        self._redis_port = redis_port
        self._command: bytes | None = None
        self.cut = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut_after(self, command: bytes) -> None:
        self._command = command

    async def _connected(self, client_in: asyncio.StreamReader,
                         client_out: asyncio.StreamWriter) -> None:
        redis_in, redis_out = await asyncio.open_connection("127.0.0.1", self._redis_port)
        waiting = asyncio.Event()  # the command to cut after went to Redis on this connection
        for pump in (self._requests(client_in, redis_out, waiting),
                     self._replies(redis_in, client_out, waiting)):
            task = asyncio.create_task(pump)
            self._tasks.add(task)

    async def _requests(self, client_in: asyncio.StreamReader, redis_out: asyncio.StreamWriter,
                        waiting: asyncio.Event) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await client_in.read(65536):
                if self._command is not None and self._command in data.upper():
                    self._command = None
                    waiting.set()
                redis_out.write(data)
                await redis_out.drain()
        redis_out.close()

    async def _replies(self, redis_in: asyncio.StreamReader, client_out: asyncio.StreamWriter,
                       waiting: asyncio.Event) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await redis_in.read(65536):
                if waiting.is_set():
                    self.cut.set()
                    break  # Redis ran it and answered; the answer goes nowhere
                client_out.write(data)
                await client_out.drain()
        client_out.close()


async def read_until(reader: StreamReader, count: int) -> list[bytes]:
    """Entry ids, reading until `count` came or a read brings none."""
    ids: list[bytes] = []
    while len(ids) < count:
        entries = await reader.read()
        if not entries:
            break
        ids += [entry_id for entry_id, _ in entries]
    return ids


@pytest.mark.timeout(30)
def test_entries_handed_out_by_a_read_whose_reply_was_lost_are_read_next(
        redis_server: RedisServer) -> None:
    direct = redis_server.client()
    direct.xgroup_create(STREAM, keys.GROUP, id="0", mkstream=True)

    async def scenario() -> None:
        cutter = ReplyCutter(redis_server.port)
        await cutter.start()
        redis = await connect(ClusterConfig((f"redis://127.0.0.1:{cutter.port}",), "node-r",
                                            2.0))
        try:
            reader = StreamReader(redis, STREAM, "node-r")
            assert await reader.read() == []  # nothing pending from an earlier run
            assert reader.position == NEW
            sent = [direct.xadd(STREAM, {"s": str(seq)}) for seq in range(3)]

            cutter.cut_after(b"XREADGROUP")
            # The failure reaches the reader: redis-py sending the read again by itself would
            # get nothing new, and the reader would never know what the first one handed out.
            with pytest.raises(RedisError):
                await reader.read()
            assert cutter.cut.is_set()
            assert direct.xpending(STREAM, keys.GROUP)["pending"] == 3, \
                "Redis ran the read whose reply was cut: its entries are pending"
            assert await read_until(reader, 3) == sent, "the entries of the lost reply"
            assert await reader.read() == []  # none pending left: new entries now
            assert reader.position == NEW
            later = direct.xadd(STREAM, {"s": "3"})
            assert [entry_id for entry_id, _ in await reader.read()] == [later]

            # An XACK that failed leaves applied entries pending: read (and acknowledged) again.
            direct.xack(STREAM, keys.GROUP, *sent)
            reader.read_pending_again()
            assert await read_until(reader, 2) == [later]
        finally:
            await redis.aclose()
            await cutter.stop()

    asyncio.run(scenario())
