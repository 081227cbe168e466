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
    return ListenError(f"cannot listen on {listener.address}: {reason}")


def peer_label(peername: object, listener: Listener) -> str:
    """A client's address as logs and $SYS show it: host:port, or the Unix socket it came
    through (a Unix client has no address of its own)."""
    if isinstance(peername, tuple):
        return f"{peername[0]}:{peername[1]}"
    return str(peername) if peername else listener.address


def tune_socket(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        # Latency over packet count: frames are already batched per loop tick.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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
    per episode (until a slot frees), not once per socket of a flood. Every admission and
    release also asks the process's `OpenFileWatch` whether descriptors are running out.
    """

    __slots__ = ("files", "listener", "name", "open", "refused")

    def __init__(self, listener: Listener, files: OpenFileWatch | None = None,
                 name: str = "") -> None:
        self.listener = listener
        # Its bound address (listeners.bound_address): what each connection's `listener` says.
        self.name = name or listener.address
        self.files = files
        self.open = 0
        self.refused = 0

    def admit(self, peer: object) -> Slot | None:
        limit = self.listener.max_connections
        if self.files is not None:
            self.files.check()
        if limit < 0 or self.open < limit:
            self.open += 1
            return Slot(self)
        self.refused += 1
        if self.refused == 1:
            log.warning("listener %s: max_connections (%d) reached: closing new connections "
                        "(first from %s) until one ends", self.listener.address, limit, peer)
        return None

    def release(self) -> None:
        self.open -= 1
        if self.files is not None:
            self.files.check()
        if self.refused:
            log.info("listener %s: accepting connections again (%d refused meanwhile)",
                     self.listener.address, self.refused)
            self.refused = 0


class Slot:
    """One admitted connection's place in its `ListenerGate`. Where layers stack on one
    socket (PROXY header, TLS, WebSocket, MQTT), each may see the connection end; the first
    to release the slot frees it."""

    __slots__ = ("gate", "held")

    def __init__(self, gate: ListenerGate) -> None:
        self.gate = gate
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.gate.release()


def let_go(deadline: asyncio.TimerHandle | None, slot: Slot | None) -> None:
    """What an outer layer of a connection holds until it ends: a deadline (for its header or
    handshake) and, until it passes the connection on, its listener slot."""
    if deadline is not None:
        deadline.cancel()
    if slot is not None:
        slot.release()


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the outer layers of a connection (PROXY header, WebSocket) know by the time
    MQTT starts: who the client is, and the slot they admitted it to."""

    peer: str
    slot: Slot


@dataclass(frozen=True, slots=True)
class Moved:
    """A connection another worker read a CONNECT from, for a client id this worker owns: its
    peer's address, the user name its TLS certificate gave, and the bytes read so far."""

    peer: str
    certificate_username: str | None
    data: bytes


class MQTTProtocol(asyncio.Protocol):
    """MQTT bytes between a transport and the core's `Connection`. The transport is the socket
    itself (TCP, TLS, Unix) or a layer that unwraps them (WebSocket): the same protocol and
    the same `Connection` either way."""

    __slots__ = ("accepted", "broker", "connection", "gate", "loop", "moved", "relay", "slot",
                 "transport")

    def __init__(self, broker: Broker, loop: asyncio.AbstractEventLoop,
                 gate: ListenerGate, moved: Moved | None = None,
                 accepted: Accepted | None = None) -> None:
        self.broker = broker
        self.loop = loop
        self.gate = gate
        self.moved = moved
        # Set when outer layers of this connection admitted it and know its peer.
        self.accepted = accepted
        self.slot: Slot | None = None
        self.connection: Connection | None = None
        self.transport: asyncio.Transport | None = None
        # After a TLS or WebSocket connection moved to another worker: the link its MQTT
        # bytes are relayed on.
        self.relay: Relay | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        accepted = self.accepted
        if accepted is None:
            self.slot = self.gate.admit(peer)
            if self.slot is None:
                transport.abort()
                return
            tune_socket(transport)
        else:
            self.slot = accepted.slot
        high = self.broker.limits.max_write_buffer
        transport.set_write_buffer_limits(high=high, low=high // 4)
        moved = self.moved
        if moved is not None:
            connection = self.connection = self.broker.open_connection(
                transport, moved.peer, self.loop.time())
            connection.certificate_username = moved.certificate_username
            connection.listener = self.gate.name
            self.moved = None
            connection.data_received(moved.data, self.loop.time())
            return
        label = accepted.peer if accepted is not None else peer_label(peer, self.gate.listener)
        self.connection = self.broker.open_connection(transport, label, self.loop.time())
        self.connection.listener = self.gate.name
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
        if self.connection is not None and self.slot is not None:
            self.slot.release()
            self.connection.connection_lost(self.loop.time())

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
    """The local end of a socket pair that carries a moved connection's MQTT bytes to the
    worker that owns its client, when the state of its transport cannot cross processes (TLS,
    WebSocket): the bytes do. Flow control is mirrored both ways."""

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

