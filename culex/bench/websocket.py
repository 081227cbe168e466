"""`culex bench --ws`: the load generator's MQTT clients over WebSocket.

The clients of clients.py stay as they are; this layer sits between them and the socket, as
the broker's does on its side: the `websockets` package's sans-I/O `ClientProtocol` does the
handshake (subprotocol `mqtt`) and the framing, each write of a client is one masked binary
frame (a publisher's whole batch), and the payload of every binary frame received goes up as
the MQTT bytes it carries. The transport the clients see is the broker's own adapter
(`WebSocketTransport`), so flow control (pause_writing, write buffer limits, TCP options) is
the socket's, as over TCP.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from ..server.websocket import WebSocketTransport
from .clients import BenchError

# The library logs every frame at debug level: a cost per message the generator cannot pay.
library_log = logging.getLogger("culex.bench.websocket")
library_log.setLevel(logging.WARNING)


class WebSocketClient(asyncio.Protocol):
    """One client connection's WebSocket layer; `opened` resolves once the broker accepted
    the handshake (and the MQTT client above has its transport)."""

    def __init__(self, mqtt: asyncio.Protocol, uri: str) -> None:
        self.mqtt = mqtt
        self.websocket = ClientProtocol(parse_uri(uri), subprotocols=[Subprotocol("mqtt")],
                                        max_size=None, logger=library_log)
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.websocket.send_request(self.websocket.connect())
        self.send_pending()

    def data_received(self, data: bytes) -> None:
        websocket = self.websocket
        websocket.receive_data(data)
        mqtt = self.mqtt
        for event in websocket.events_received():
            if not isinstance(event, Frame):
                self.handshake_done(cast(Response, event))
            elif event.opcode is Opcode.BINARY or event.opcode is Opcode.CONT:
                mqtt.data_received(bytes(event.data))
        self.send_pending()

    def handshake_done(self, response: Response) -> None:
        if self.websocket.state is not State.OPEN:
            self.opened.set_exception(BenchError(
                f"WebSocket handshake refused: HTTP {response.status_code} "
                f"{response.reason_phrase}: {self.websocket.handshake_exc}"))
            return
        self.mqtt.connection_made(WebSocketTransport(self))
        self.opened.set_result(None)

    def send(self, data: bytes) -> None:
        if self.websocket.state is State.OPEN:
            self.websocket.send_binary(data)
            self.send_pending()

    def close(self) -> None:
        if self.websocket.state is State.OPEN:
            self.websocket.send_close()
            self.send_pending()
        elif self.transport is not None:
            self.transport.close()

    def send_pending(self) -> None:
        transport = self.transport
        assert transport is not None
        for chunk in self.websocket.data_to_send():
            if chunk:
                transport.write(chunk)
            else:  # the client's side ends when the server has closed
                transport.close()

    def eof_received(self) -> bool:
        self.websocket.receive_eof()
        self.send_pending()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(BenchError(
                f"connection closed during the WebSocket handshake: {exc or 'by the broker'}"))
        else:
            self.mqtt.connection_lost(exc)

    def pause_writing(self) -> None:
        self.mqtt.pause_writing()

    def resume_writing(self) -> None:
        self.mqtt.resume_writing()
