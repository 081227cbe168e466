"""`asyncio.Protocol` glue between one socket and its core `Connection`.

Protocol callbacks rather than streams: no coroutine and no Future per packet. The protocol only
moves bytes and reports time and flow control; every decision is the core's.
"""

from __future__ import annotations

import asyncio
import socket
from typing import cast

from ..config import Listener
from ..core.broker import Broker
from ..core.connection import Connection


def certificate_name(peercert: object) -> str | None:
    """The subject CN of a verified client certificate (`ssl.SSLSocket.getpeercert()` form)."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class MQTTProtocol(asyncio.Protocol):
    __slots__ = ("broker", "connection", "listener", "loop")

    def __init__(self, broker: Broker, loop: asyncio.AbstractEventLoop,
                 listener: Listener) -> None:
        self.broker = broker
        self.loop = loop
        self.listener = listener
        self.connection: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Latency over packet count: frames are already batched per loop tick.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        high = self.broker.limits.max_write_buffer
        transport.set_write_buffer_limits(high=high, low=high // 4)
        peer = transport.get_extra_info("peername")
        label = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.connection = self.broker.open_connection(transport, label, self.loop.time())
        if self.listener.use_identity_as_username:
            self.connection.certificate_username = certificate_name(
                transport.get_extra_info("peercert"))

    def data_received(self, data: bytes) -> None:
        assert self.connection is not None
        self.connection.data_received(data, self.loop.time())

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None:
            self.connection.connection_lost(self.loop.time())

    def pause_writing(self) -> None:
        if self.connection is not None:
            self.connection.pause_writing(self.loop.time())

    def resume_writing(self) -> None:
        if self.connection is not None:
            self.connection.resume_writing()
