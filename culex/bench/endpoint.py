"""Where the load generator's clients connect: TCP (host, port), a Unix socket (`--unix`), and
either way MQTT straight or over WebSocket (`--ws`); and opening one client there, over TCP from
a chosen local address if asked (`--sources`)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
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

    `source` is the local address a TCP connection is bound to (see `connect_from`): each
    source address has its own ephemeral port range towards one broker address.
    """
    loop = asyncio.get_running_loop()
    layer: asyncio.Protocol = protocol
    if endpoint.websocket_path is not None:
        from .websocket import WebSocketClient  # noqa: PLC0415 - only --ws needs websockets

        layer = websocket = WebSocketClient(
            protocol, f"ws://{endpoint.host}:{endpoint.port}{endpoint.websocket_path}")
    try:
        if endpoint.unix:
            await asyncio.wait_for(loop.create_unix_connection(lambda: layer, endpoint.unix),
                                   timeout)
        elif source is not None:
            await asyncio.wait_for(connect_from(source, endpoint, layer), timeout)
        else:
            await asyncio.wait_for(
                loop.create_connection(lambda: layer, endpoint.host, endpoint.port), timeout)
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


async def connect_from(source: str, endpoint: Endpoint, layer: asyncio.Protocol) -> None:
    """A TCP connection from the local address `source`, bound with IP_BIND_ADDRESS_NO_PORT
    so that the kernel picks the port when it connects, by the whole address quadruple.

    A plain bind to port 0 (what `create_connection(local_addr=...)` does) makes the kernel
    search the port range for a port that is free on that address, at every bind: at 2,500
    clients per address that search was 20% of the load generator's CPU, and it grows with
    the clients. The connect is non-blocking and awaited here: uvloop's `sock_connect` would
    resolve the literal address on its thread pool for every client.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
        code = sock.connect_ex((endpoint.host, endpoint.port))
        if code == errno.EINPROGRESS:
            writable: asyncio.Future[None] = loop.create_future()

            def ready() -> None:  # level-triggered: may fire again before the await resumes
                if not writable.done():
                    writable.set_result(None)

            loop.add_writer(sock, ready)
            try:
                await writable
            finally:
                loop.remove_writer(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
        await loop.create_connection(lambda: layer, sock=sock)
    except BaseException:
        sock.close()
        raise


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
