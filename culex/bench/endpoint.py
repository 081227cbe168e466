"""Where the load generator's clients connect: TCP (host, port), a Unix socket (`--unix`), and
either way MQTT straight or over WebSocket (`--ws`); and opening one client there."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from .clients import BenchError, ClientProtocol


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    unix: str | None = None
    websocket_path: str | None = None  # set: MQTT over WebSocket, at this HTTP path

    def __str__(self) -> str:
        where = f"unix:{self.unix}" if self.unix else f"{self.host}:{self.port}"
        return f"ws://{where}{self.websocket_path}" if self.websocket_path else where

    @property
    def transport(self) -> str:
        """As the report names it."""
        return ("unix+" if self.unix else "") + ("websocket" if self.websocket_path else "tcp")


async def open_client(protocol: ClientProtocol, endpoint: Endpoint, connect: bytes,
                      timeout: float) -> None:
    """Connect (and for WebSocket, the handshake), CONNECT, wait for CONNACK 0; every failure
    becomes a one-line BenchError."""
    loop = asyncio.get_running_loop()
    layer: asyncio.Protocol = protocol
    if endpoint.websocket_path is not None:
        from .websocket import WebSocketClient  # noqa: PLC0415 - only --ws needs websockets

        layer = websocket = WebSocketClient(
            protocol, f"ws://{endpoint.host}:{endpoint.port}{endpoint.websocket_path}")
    try:
        if endpoint.unix:
            opening = loop.create_unix_connection(lambda: layer, endpoint.unix)
        else:
            opening = loop.create_connection(lambda: layer, endpoint.host, endpoint.port)
        await asyncio.wait_for(opening, timeout)
        if endpoint.websocket_path is not None:
            await asyncio.wait_for(websocket.opened, timeout)
    except TimeoutError:
        raise BenchError(f"cannot connect to {endpoint}: timed out after {timeout:g} s") from None
    except socket.gaierror as exc:
        raise BenchError(f"cannot resolve {endpoint.host}: {exc.strerror}") from None
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise BenchError(f"cannot connect to {endpoint}: {reason}") from None
    protocol.send(connect)
    try:
        refusal = await asyncio.wait_for(protocol.connack, timeout)
    except TimeoutError:
        protocol.close()
        raise BenchError(f"no CONNACK from {endpoint} within {timeout:g} s") from None
    if refusal is not None:
        protocol.close()
        raise BenchError(f"broker at {endpoint} refused the connection: {refusal}")
