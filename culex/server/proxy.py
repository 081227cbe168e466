"""The PROXY header layer of a `proxy_protocol = true` listener (asyncio side).

It is a `BufferedProtocol` so that it decides how many bytes each read may take: exactly the
header's (`ProxyHeaderReader.wanted`), never past it. The socket then continues with what
follows the header untouched, which lets TLS start on it (`loop.start_tls`) as well as
WebSocket or MQTT. The header's source address becomes the client's address everywhere (logs,
$SYS, hand-overs to other workers).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import cast

from .proxy_header import ProxyHeaderError, ProxyHeaderReader
from .transport import Accepted, ListenerGate, Slot, let_go, peer_label, tune_socket

log = logging.getLogger("culex")

Serve = Callable[[Accepted], asyncio.Protocol]


class ProxyHeaderProtocol(asyncio.BufferedProtocol):
    """Reads the header (within `timeout`), then hands the socket to `serve`'s protocol."""

    def __init__(self, loop: asyncio.AbstractEventLoop, gate: ListenerGate, timeout: float,
                 serve: Serve, context: ssl.SSLContext | None) -> None:
        self.loop = loop
        self.gate = gate
        self.timeout = timeout
        self.serve = serve
        self.context = context
        self.reader = ProxyHeaderReader()
        self.chunk = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.slot: Slot | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.handshake: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = peer_label(transport.get_extra_info("peername"), self.gate.listener)
        self.slot = self.gate.admit(self.peer)
        if self.slot is None:
            self.transport.abort()
            return
        tune_socket(transport)
        self.timer = self.loop.call_later(self.timeout, self.refuse,
                                          f"no complete header within {self.timeout:g} s")

    def get_buffer(self, sizehint: int) -> bytearray:
        self.chunk = bytearray(self.reader.wanted())
        return self.chunk

    def buffer_updated(self, nbytes: int) -> None:
        try:
            header = self.reader.feed(bytes(self.chunk[:nbytes]))
        except ProxyHeaderError as exc:
            self.refuse(str(exc))
            return
        if header is None:
            return
        transport = self.transport
        assert transport is not None and self.slot is not None
        if self.timer is not None:
            self.timer.cancel()
        if header.source is not None:
            self.peer = f"{header.source[0]}:{header.source[1]}"
        log.debug("listener %s: connection from %s is from %s (PROXY protocol v%d)",
                  self.gate.listener.address, peer_label(transport.get_extra_info("peername"),
                                                         self.gate.listener),
                  self.peer, header.version)
        accepted = Accepted(self.peer, self.slot)
        self.slot = None  # the next layer holds it now
        # Reading stops while the protocol changes: an event loop reading with this one's
        # buffer must not go on with it for the next.
        transport.pause_reading()
        if self.context is not None:
            self.handshake = self.loop.create_task(self.start_tls(transport, accepted))
            return
        protocol = self.serve(accepted)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        transport.resume_reading()

    async def start_tls(self, transport: asyncio.Transport, accepted: Accepted) -> None:
        assert self.context is not None
        waiting = PendingTLS()
        try:
            tls = await self.loop.start_tls(transport, waiting, self.context, server_side=True,
                                            ssl_handshake_timeout=self.timeout)
        except OSError as exc:  # ssl.SSLError, a reset, the handshake timeout
            log.warning("listener %s: client %s: TLS handshake failed: %s",
                        self.gate.listener.address, accepted.peer, exc or type(exc).__name__)
            transport.abort()
            accepted.slot.release()
            return
        if tls is None:  # the connection closed meanwhile
            accepted.slot.release()
            return
        waiting.attach(self.serve(accepted), tls)

    def refuse(self, reason: str) -> None:
        log.warning("listener %s: connection from %s closed: invalid PROXY protocol header: %s",
                    self.gate.listener.address, self.peer, reason)
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        let_go(self.timer, self.slot)


class PendingTLS(asyncio.Protocol):
    """The protocol `start_tls` is given until it returns: the first application data can
    arrive in the same flight as the client's last handshake message, before the layer that
    will read it has the new transport. It keeps what comes, and `attach` passes it on."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.lost: tuple[Exception | None] | None = None
        self.protocol: asyncio.Protocol | None = None

    def attach(self, protocol: asyncio.Protocol, transport: asyncio.Transport) -> None:
        self.protocol = protocol
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for data in self.data:
            protocol.data_received(data)
        self.data = []
        if self.lost is not None:
            protocol.connection_lost(self.lost[0])

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)
