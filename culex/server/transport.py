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
from .host import LoopHost

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
    """TCP_NODELAY: latency over packet count, since frames are already batched per loop tick.
    uvloop sets it on every TCP transport itself; asyncio's own loop (the fallback without
    uvloop) does not on accepted sockets. Asking uvloop for the socket would make a wrapper
    object per connection (72 bytes each, kept), so it is asked only on the fallback."""
    if type(asyncio.get_running_loop()).__module__.startswith("uvloop"):
        return
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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
        """A slot for a connection that several layers may end (see `Slot`), or None."""
        return Slot(self) if self.enter(peer) else None

    def enter(self, peer: object) -> bool:
        """Count a new connection in, or say no (logged once per episode). A connection
        admitted this way calls `release` exactly once itself."""
        limit = self.listener.max_connections
        if self.files is not None:
            self.files.check()
        if limit < 0 or self.open < limit:
            self.open += 1
            return True
        self.refused += 1
        if self.refused == 1:
            log.warning("listener %s: max_connections (%d) reached: closing new connections "
                        "(first from %s) until one ends", self.listener.address, limit, peer)
        return False

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

    __slots__ = ("accepted", "broker", "connection", "gate", "host", "moved", "relay", "slot",
                 "transport")

    def __init__(self, broker: Broker, loop: asyncio.AbstractEventLoop,
                 gate: ListenerGate, moved: Moved | None = None,
                 accepted: Accepted | None = None) -> None:
        self.broker = broker
        host = broker.host
        assert isinstance(host, LoopHost)  # a broker the server runs has the loop's host
        self.host = host
        self.gate = gate
        self.moved = moved
        # Set when outer layers of this connection admitted it and know its peer.
        self.accepted = accepted
        # What to release when the connection ends: the gate itself for a plain socket (no
        # object per connection), or the slot the outer layers admitted it with.
        self.slot: Slot | ListenerGate | None = None
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
            if not self.gate.enter(peer):
                transport.abort()
                return
            self.slot = self.gate
            tune_socket(transport)
        else:
            self.slot = accepted.slot
        high = self.broker.limits.max_write_buffer
        transport.set_write_buffer_limits(high=high, low=high // 4)
        moved = self.moved
        if moved is not None:
            connection = self.connection = self.broker.open_connection(
                transport, moved.peer, self.host.loop.time())
            connection.certificate_username = moved.certificate_username
            connection.listener = self.gate.name
            self.moved = None
            connection.data_received(moved.data, self.host.loop.time())
            return
        label = accepted.peer if accepted is not None else peer_label(peer, self.gate.listener)
        self.connection = self.broker.open_connection(transport, label, self.host.loop.time())
        self.connection.listener = self.gate.name
        if self.gate.listener.use_identity_as_username:
            self.connection.certificate_username = certificate_name(
                transport.get_extra_info("peercert"))

    def data_received(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.write(data)
            return
        assert self.connection is not None
        self.host.read(self.connection, data)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.relay is not None:
            self.relay.close()
        if self.connection is not None and self.slot is not None:
            self.slot.release()
            self.connection.connection_lost(self.host.loop.time())

    def pause_writing(self) -> None:
        if self.relay is not None:
            self.relay.pause_reading()
        elif self.connection is not None:
            self.connection.pause_writing(self.host.loop.time())

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

