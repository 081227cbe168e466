"""MQTT over WebSocket (RFC 6455; MQTT 5 chapter 6): a layer between the socket and MQTT.

The WebSocket protocol is the `websockets` package's sans-I/O `ServerProtocol`: bytes in
(`receive_data`), events out (the handshake request, frames), bytes to send (`data_to_send`).
It handles the handshake checks, masking, fragmentation, ping/pong, the close handshake and
its codes; this module only moves bytes and decides what MQTT needs:

- the handshake: the configured path (else 404), the `mqtt` subprotocol (or `mqttv3.1`, which
  older clients offer; none or another is 400), the Origin when `allowed_origins` is set (else
  403), all within `connect_timeout` (else 408);
- binary frames carry the MQTT byte stream, whatever the frame boundaries (a packet may span
  frames, a frame may hold several packets); a text frame closes with 1003 [MQTT-6.0.0-1];
- incoming messages are bounded by `max_packet_size` (1009 beyond it);
- outgoing: the core hands its whole outbox for the loop tick to `writelines` at once, and
  that is one binary frame, so a WebSocket client costs a frame header per flush, not per
  packet.

Once the handshake is done, `MQTTProtocol` (the same one as for TCP) runs over a
`WebSocketTransport`, which looks to it like any other asyncio transport.
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import Protocol as WebSocketProtocolState
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Origin, Subprotocol

from ..core.broker import Broker
from .host import LINGER_SECONDS, lingering_close
from .transport import (
    Accepted,
    ListenerGate,
    MQTTProtocol,
    Slot,
    let_go,
    peer_label,
    tune_socket,
)

log = logging.getLogger("culex")
# The library's own logger: it would log every frame at debug level (a cost per message) and
# every connection at info; what matters is in culex's own lines.
library_log = logging.getLogger("culex.websocket.library")
library_log.setLevel(logging.WARNING)

SUBPROTOCOLS = [Subprotocol("mqtt"), Subprotocol("mqttv3.1")]
CARRIES_MQTT = (Opcode.BINARY, Opcode.CONT)


class WebSocketProtocol(asyncio.Protocol):
    """The WebSocket layer of one connection, and the `MQTTProtocol` above it once open."""

    def __init__(self, broker: Broker, loop: asyncio.AbstractEventLoop, gate: ListenerGate,
                 accepted: Accepted | None) -> None:
        self.broker = broker
        self.loop = loop
        self.gate = gate
        self.accepted = accepted
        self.peer = ""
        self.slot: Slot | None = None
        self.transport: asyncio.Transport | None = None
        self.mqtt: MQTTProtocol | None = None
        # The handshake's deadline, then the closing handshake's.
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False
        listener = gate.listener
        origins: list[Origin | None] | None = None
        if listener.allowed_origins:
            origins = [*map(Origin, listener.allowed_origins), None]
        self.websocket = ServerProtocol(origins=origins, subprotocols=SUBPROTOCOLS,
                                        max_size=broker.limits.max_packet_size,
                                        logger=library_log)
        self.failure_logged = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        if self.accepted is None:
            self.peer = peer_label(transport.get_extra_info("peername"), self.gate.listener)
            self.slot = self.gate.admit(self.peer)
            if self.slot is None:
                transport.abort()
                return
            tune_socket(transport)
        else:
            self.peer, self.slot = self.accepted.peer, self.accepted.slot
        high = self.broker.limits.max_write_buffer
        transport.set_write_buffer_limits(high=high, low=high // 4)
        timeout = self.broker.limits.connect_timeout
        self.timer = self.loop.call_later(timeout, self.handshake_timed_out, timeout)

    def data_received(self, data: bytes) -> None:
        websocket = self.websocket
        websocket.receive_data(data)
        for event in websocket.events_received():
            if not isinstance(event, Frame):
                self.handshake(cast(Request, event))
            elif event.opcode in CARRIES_MQTT:
                if self.mqtt is not None:
                    self.mqtt.data_received(bytes(event.data))  # bytes already: no copy
            elif event.opcode is Opcode.TEXT:
                self.fail(CloseCode.UNSUPPORTED_DATA,
                          "text frame: MQTT is carried in binary frames [MQTT-6.0.0-1]")
                break
        exc = websocket.parser_exc
        if exc is not None and not self.failure_logged and not isinstance(exc, EOFError):
            self.failure_logged = True
            close = websocket.close_sent
            code = close.code if close is not None else CloseCode.ABNORMAL_CLOSURE
            log.warning("websocket client %s: closing with %d (%s): %s", self.describe(),
                        code, _close_name(code), exc)
        self.send_pending()

    def handshake(self, request: Request) -> None:
        websocket = self.websocket
        listener = self.gate.listener
        path = urlsplit(request.path).path
        if path != listener.path:
            response = websocket.reject(http.HTTPStatus.NOT_FOUND,
                                        f"No MQTT over WebSocket at {path}.\n")
            reason = f"path {path!r} is not {listener.path!r}"
        else:
            response = websocket.accept(request)
            reason = str(websocket.handshake_exc)
        websocket.send_response(response)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
            log.warning("websocket client %s: handshake refused with HTTP %d %s: %s",
                        self.peer, response.status_code, response.reason_phrase, reason)
            return
        assert self.slot is not None
        log.debug("websocket client %s: open (subprotocol %s, origin %s)", self.peer,
                  websocket.subprotocol, websocket.origin or "-")
        self.mqtt = MQTTProtocol(self.broker, self.loop, self.gate,
                                 accepted=Accepted(self.peer, self.slot))
        self.mqtt.connection_made(WebSocketTransport(self))

    def handshake_timed_out(self, timeout: float) -> None:
        websocket = self.websocket
        if websocket.state is not State.CONNECTING:
            return
        log.warning("websocket client %s: no complete handshake within %g s; closing",
                    self.peer, timeout)
        websocket.send_response(websocket.reject(http.HTTPStatus.REQUEST_TIMEOUT,
                                                 "WebSocket handshake timed out.\n"))
        self.send_pending()

    def fail(self, code: CloseCode, reason: str) -> None:
        """Close for a fault of the client's, saying why in the close frame and the log."""
        if self.websocket.state is State.OPEN:
            self.failure_logged = True
            log.warning("websocket client %s: closing with %d (%s): %s", self.describe(),
                        code, _close_name(code), reason)
            self.websocket.fail(code, reason)

    def send(self, data: bytes) -> None:
        """MQTT bytes out, as one binary frame."""
        websocket = self.websocket
        if websocket.state is State.OPEN:
            websocket.send_binary(data)
            self.send_pending()

    def close(self) -> None:
        """The MQTT side is done: the close handshake, then the TCP close."""
        if self.websocket.state is State.OPEN:
            self.websocket.send_close(CloseCode.NORMAL_CLOSURE)
            self.send_pending()

    def send_pending(self) -> None:
        """Write what the protocol has for the socket. An empty chunk means "end the stream"
        (the close handshake is over, or the connection failed): FIN after the last bytes,
        then read and discard until the client closes too, as for MQTT (`lingering_close`).
        While the closing handshake waits for the client, `LINGER_SECONDS` bound it."""
        transport = self.transport
        assert transport is not None
        chunks = self.websocket.data_to_send()
        for position, chunk in enumerate(chunks):
            if not chunk:
                transport.writelines(chunks[:position])
                lingering_close(transport, self.loop)
                return
        if chunks:
            transport.writelines(chunks)
        if not self.closing and self.websocket.close_expected():
            self.closing = True
            self.timer = self.loop.call_later(LINGER_SECONDS, transport.abort)

    def describe(self) -> str:
        connection = self.mqtt.connection if self.mqtt is not None else None
        return f"{self.peer} ({connection.client_id})" if connection is not None else self.peer

    def eof_received(self) -> bool:
        self.websocket.receive_eof()
        self.send_pending()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        let_go(self.timer, self.slot)
        if self.mqtt is not None:
            self.mqtt.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.mqtt is not None:
            self.mqtt.pause_writing()

    def resume_writing(self) -> None:
        if self.mqtt is not None:
            self.mqtt.resume_writing()


def _close_name(code: int) -> str:
    try:
        return CloseCode(code).name.lower().replace("_", " ")
    except ValueError:
        return "unknown"


class MessageLayer(Protocol):
    """A WebSocket layer under an MQTT protocol: this server's `WebSocketProtocol`, or the
    load generator's client one (culex/bench/websocket.py)."""

    transport: asyncio.Transport | None
    mqtt: Any

    @property
    def websocket(self) -> WebSocketProtocolState: ...

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class WebSocketTransport(asyncio.Transport):
    """What the MQTT protocol above a WebSocket writes to: each write or `writelines` call is
    one binary frame; closing is the WebSocket close handshake; flow control and everything
    else is the socket's."""

    def __init__(self, layer: MessageLayer) -> None:
        super().__init__()
        self.layer = layer
        assert layer.transport is not None
        self.socket = layer.transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.layer.send(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.layer.send(b"".join(list_of_data))

    def close(self) -> None:
        self.layer.close()

    def abort(self) -> None:
        self.socket.abort()

    def is_closing(self) -> bool:
        return self.layer.websocket.state is not State.OPEN or self.socket.is_closing()

    def can_write_eof(self) -> bool:
        return False  # a WebSocket ends with its close handshake

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "websocket":
            return self.layer.websocket
        return self.socket.get_extra_info(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return cast(asyncio.BaseProtocol, self.layer.mqtt)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.layer.mqtt = protocol

    def pause_reading(self) -> None:
        self.socket.pause_reading()

    def resume_reading(self) -> None:
        self.socket.resume_reading()

    def is_reading(self) -> bool:
        return self.socket.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.socket.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.socket.get_write_buffer_size()
