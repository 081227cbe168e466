"""Where the load generator's clients connect: TCP (host, port), a Unix socket (`--unix`), and
either way MQTT straight or over WebSocket (`--ws`); and opening one client there, over TCP from
a chosen local address if asked (`--sources`)."""

from __future__ import annotations

import asyncio
import ipaddress
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
                      timeout: float, source: str | None = None) -> None:
    """Connect (and for WebSocket, the handshake), CONNECT, wait for CONNACK 0; every failure
    becomes a one-line BenchError.

    `source` is the local address a TCP connection is bound to (the kernel picks the port):
    each source address has its own ephemeral port range towards one broker address.
    """
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
            opening = loop.create_connection(
                lambda: layer, endpoint.host, endpoint.port,
                local_addr=None if source is None else (source, 0))
        await asyncio.wait_for(opening, timeout)
        if endpoint.websocket_path is not None:
            await asyncio.wait_for(websocket.opened, timeout)
    except TimeoutError:
        raise BenchError(f"cannot connect to {endpoint}: timed out after {timeout:g} s") from None
    except socket.gaierror as exc:
        raise BenchError(f"cannot resolve {endpoint.host}: {exc.strerror}") from None
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        origin = f" from {source}" if source is not None else ""
        raise BenchError(f"cannot connect to {endpoint}{origin}: {reason}") from None
    protocol.send(connect)
    try:
        refusal = await asyncio.wait_for(protocol.connack, timeout)
    except TimeoutError:
        protocol.close()
        raise BenchError(f"no CONNACK from {endpoint} within {timeout:g} s") from None
    if refusal is not None:
        protocol.close()
        raise BenchError(f"broker at {endpoint} refused the connection: {refusal}")


MAX_SOURCES = 254  # 127.0.0.1 .. 127.0.0.254
PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


def loopback_sources(count: int) -> tuple[str, ...]:
    """127.0.0.1 .. 127.0.0.`count`: every one is this host, and each has its own ephemeral
    ports towards the broker's address, so N of them hold N times the connections."""
    return tuple(f"127.0.0.{number}" for number in range(1, count + 1))


def is_ipv4_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback


def ephemeral_ports() -> int | None:
    """How many local ports one source address has for connections to one broker address
    (net.ipv4.ip_local_port_range), or None where that is not known."""
    try:
        with open(PORT_RANGE) as ports:
            low, high = (int(field) for field in ports.read().split())
    except (OSError, ValueError):
        return None
    return high - low + 1
