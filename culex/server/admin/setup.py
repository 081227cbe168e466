"""The admin API's parts in one process, in start-up order (see app.serve):

1. `Admin(...)` (every worker, before the workers announce themselves ready): the `AdminPeer`
   that answers for this worker, and with workers the `WorkerQueries` on its links, so that
   no question from worker 0 can arrive before there is someone to answer it;
2. `serve` (once clients may come): the loop-lag timer, and in the process given the bound
   admin socket (worker 0, or the single process) the HTTP server, once the first
   connection to it comes;
3. `stop` at shutdown, before the MQTT listeners close: trace streams end first.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from ...config import Config
from ...core.broker import Broker
from ...core.worker_queries import WorkerQueries
from ...storage.base import ClusterStorage
from ...storage.sqlite import SqliteStorage
from ..transport import ListenerGate
from .peer import AdminPeer
from .token import BearerToken

log = logging.getLogger("culex")

# A request body may carry a whole message: its payload in base64 (4/3 of it) and some JSON.
BODY_OVERHEAD = 64 * 1024


class Admin:
    """See the module docstring."""

    def __init__(self, config: Config, broker: Broker, loop: asyncio.AbstractEventLoop, *,
                 index: int, storage: SqliteStorage | ClusterStorage | None,
                 gates: list[ListenerGate],
                 sock: socket.socket | None, token: str | None) -> None:
        self._config = config
        self.peer = AdminPeer(broker, loop, index=index, storage=storage, gates=gates)
        self._queries = None if broker.links is None else WorkerQueries(
            broker.links, self.peer.answers, self._notice)
        self.peer.queries = self._queries
        self._sock = sock
        self.token = BearerToken(config.admin, token)
        self._server: Any = None
        self._view: Any = None
        self._starting: asyncio.Task[None] | None = None

    def _notice(self, worker: int, op: str, body: Any) -> None:
        if self._view is not None:
            self._view.notice(worker, op, body)

    async def serve(self) -> None:
        self.peer.start()
        sock = self._sock
        if sock is None:
            return
        host, port = sock.getsockname()[:2]
        log.info("admin API listening on http://%s/ (/metrics, /api/v1/, the explorer at /)%s",
                 f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                 "; bearer token required" if self.token.value else "")
        # The HTTP server (aiohttp, prometheus-client: some 14 MB) is started by the first
        # connection, which waits in the listen backlog meanwhile (~0.3 s, once): until then
        # the listener costs a socket and this reader.
        self.peer.loop.add_reader(sock.fileno(), self._first_connection)

    def _first_connection(self) -> None:
        assert self._sock is not None
        self.peer.loop.remove_reader(self._sock.fileno())
        self._starting = self.peer.loop.create_task(self._start_http())

    async def _start_http(self) -> None:
        from .http import start_http  # noqa: PLC0415
        from .view import BrokerView  # noqa: PLC0415

        assert self._sock is not None
        self._view = BrokerView(self.peer, self._queries)
        max_body = self.peer.broker.limits.max_packet_size * 4 // 3 + BODY_OVERHEAD
        self._server = await start_http(self._view, self._sock, self._config.admin,
                                        self.token, max_body)

    async def stop(self) -> None:
        self.peer.stop()
        if self._sock is not None:
            self.peer.loop.remove_reader(self._sock.fileno())
        if self._starting is not None:
            await self._starting
        if self._server is not None:
            await self._server.stop()
