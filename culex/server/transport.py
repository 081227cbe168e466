"""`asyncio.Protocol` glue between one socket and its core `Connection`.

Protocol callbacks rather than streams: no coroutine and no Future per packet. The protocol only
moves bytes and reports time and flow control; every decision is the core's.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from dataclasses import dataclass
from typing import cast

from ..config import Listener
from ..core.broker import Broker
from ..core.connection import Connection
from ..fdlimit import OpenFileWatch

log = logging.getLogger("culex")


def certificate_name(peercert: object) -> str | None:
    """The subject CN of a verified client certificate (`ssl.SSLSocket.getpeercert()` form)."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class ListenError(Exception):
    """A listener could not be opened (port in use, no permission): a one-line fatal error."""


def listen_failure(listener: Listener, exc: OSError) -> ListenError:
    reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
    return ListenError(f"cannot listen on {listener.host}:{listener.port}: {reason}")


# How long a closed connection keeps reading (and discarding) what its client still sends.
LINGER_SECONDS = 2.0


def lingering_close(transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
    """Close after our last frames without turning the close into a reset.

    Closing a socket whose receive buffer holds unread bytes makes the kernel send RST, and a
    client that pipelined packets behind the one we refused (a burst of QoS 2 PUBLISHes past
    our Receive Maximum, say) then gets ECONNRESET on its next send, possibly before it has read
    our DISCONNECT and its reason. So: send FIN after the buffered frames, keep reading and
    discarding (the Connection is closed and ignores input) until the client closes too or
    LINGER_SECONDS pass. TLS transports cannot half-close; they close at once.
    """
    if transport.is_closing():
        return
    if not transport.can_write_eof():
        transport.close()
        return
    transport.write_eof()
    transport.resume_reading()  # it may have been paused (back-pressure, rate limit)
    loop.call_later(LINGER_SECONDS, transport.close)


class ListenerGate:
    """One listener's open sockets, against its `max_connections`.

    Counted in the transport, not the core: a socket that never sends CONNECT still holds a
    file descriptor and buffers, and this is the bound that covers it. Refusals are logged once
    per episode (until a slot frees), not once per socket of a flood.
    """

    __slots__ = ("listener", "open", "refused")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.open = 0
        self.refused = 0

    def admit(self, peer: object) -> bool:
        limit = self.listener.max_connections
        if limit < 0 or self.open < limit:
            self.open += 1
            return True
        self.refused += 1
        if self.refused == 1:
            log.warning("listener %s:%d: max_connections (%d) reached: closing new connections "
                        "(first from %s) until one ends", self.listener.host,
                        self.listener.port, limit, peer)
        return False

    def release(self) -> None:
        self.open -= 1
        if self.refused:
            log.info("listener %s:%d: accepting connections again (%d refused meanwhile)",
                     self.listener.host, self.listener.port, self.refused)
            self.refused = 0


@dataclass(frozen=True, slots=True)
class Moved:
    """A connection another worker read a CONNECT from, for a client id this worker owns: its
    client's address, the user name its TLS certificate gave, and the bytes read so far."""

    address: str
    certificate_username: str | None
    data: bytes


class MQTTProtocol(asyncio.Protocol):
    __slots__ = ("broker", "connection", "files", "gate", "loop", "moved", "relay", "transport")

    def __init__(self, broker: Broker, loop: asyncio.AbstractEventLoop, gate: ListenerGate,
                 files: OpenFileWatch, moved: Moved | None = None) -> None:
        self.broker = broker
        self.loop = loop
        self.gate = gate
        self.files = files
        self.moved = moved
        self.connection: Connection | None = None
        self.transport: asyncio.Transport | None = None
        # After a TLS connection moved to another worker: the link its bytes are relayed on.
        self.relay: Relay | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if not self.gate.admit(peer):
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Latency over packet count: frames are already batched per loop tick.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        high = self.broker.limits.max_write_buffer
        transport.set_write_buffer_limits(high=high, low=high // 4)
        self.files.check()
        moved = self.moved
        if moved is not None:
            connection = self.connection = self.broker.open_connection(
                transport, moved.address, self.loop.time())
            connection.certificate_username = moved.certificate_username
            self.moved = None
            connection.data_received(moved.data, self.loop.time())
            return
        label = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.connection = self.broker.open_connection(transport, label, self.loop.time())
        if self.gate.listener.use_identity_as_username:
            self.connection.certificate_username = certificate_name(
                transport.get_extra_info("peercert"))

    def data_received(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.write(data)
            return
        assert self.connection is not None
        self.connection.data_received(data, self.loop.time())

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.relay is not None:
            self.relay.close()
        if self.connection is not None:
            self.gate.release()
            self.connection.connection_lost(self.loop.time())
            self.files.check()

    def pause_writing(self) -> None:
        if self.relay is not None:
            self.relay.pause_reading()
        elif self.connection is not None:
            self.connection.pause_writing(self.loop.time())

    def resume_writing(self) -> None:
        if self.relay is not None:
            self.relay.resume_reading()
        elif self.connection is not None:
            self.connection.resume_writing()


class Relay(asyncio.Protocol):
    """The local end of a socket pair that carries a moved TLS connection's plaintext to the
    worker that owns its client: TLS state cannot cross processes, so the bytes do. Flow
    control is mirrored both ways."""

    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.waiting: list[bytes] = []  # client bytes that came before the pair was up
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.closing:
            self.transport.close()
        elif self.waiting:
            self.transport.writelines(self.waiting)
        self.waiting = []

    def write(self, data: bytes) -> None:
        if self.transport is None:
            self.waiting.append(data)
        else:
            self.transport.write(data)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()

    def pause_writing(self) -> None:
        self.client.pause_reading()

    def resume_writing(self) -> None:
        self.client.resume_reading()

