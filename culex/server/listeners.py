"""Listening sockets, and the layers that serve a connection accepted on one.

Binding and serving are apart: every configured listener is bound first (`ListeningSockets`:
TCP over IPv4 or IPv6, or a Unix socket), by the supervisor when there are worker processes
and by the broker itself otherwise, and then served (`start_serving`) by the event loop of each
process with the layers its kind needs, outermost first:

    [PROXY header] -> [TLS] -> [WebSocket] -> MQTT (`MQTTProtocol` and the core's Connection)

A plain TCP or Unix connection is `MQTTProtocol` alone, as it always was: no layer costs
anything where it is not configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
import stat
from collections.abc import Callable, Sequence

from ..config import Listener
from ..core.broker import Broker
from .proxy import ProxyHeaderProtocol
from .transport import Accepted, ListenerGate, ListenError, MQTTProtocol, listen_failure

log = logging.getLogger("culex")

LISTEN_BACKLOG = 4096
# How long binding waits for an answer from a process listening on an existing socket file.
LIVE_SOCKET_PROBE_SECONDS = 1.0

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class ListeningSockets:
    """Every configured listener bound, in configuration order. The Unix socket files created
    here are removed by `remove_files` (at exit, by the process that bound them), and only
    while they are still the same files: a later broker's socket at the path is left alone."""

    def __init__(self, listeners: Sequence[Listener]) -> None:
        self.sockets: list[socket.socket] = []
        self._files: dict[str, tuple[int, int]] = {}
        try:
            for listener in listeners:
                self.sockets.append(self._bind(listener))
        except BaseException:
            self.close()
            self.remove_files()
            raise

    def _bind(self, listener: Listener) -> socket.socket:
        if listener.unix:
            sock = bind_unix(listener)
            status = os.stat(listener.unix)
            self._files[listener.unix] = (status.st_dev, status.st_ino)
            return sock
        try:
            sock = socket.create_server((listener.host, listener.port), backlog=LISTEN_BACKLOG,
                                        family=socket.AF_INET6 if ":" in listener.host
                                        else socket.AF_INET)
        except OSError as exc:
            raise listen_failure(listener, exc) from None
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()

    def remove_files(self) -> None:
        for path, identity in self._files.items():
            with contextlib.suppress(OSError):
                status = os.stat(path)
                if (status.st_dev, status.st_ino) == identity:
                    os.unlink(path)
        self._files.clear()


def bind_unix(listener: Listener) -> socket.socket:
    """A listening Unix socket at `listener.unix`, with its file mode set before it listens
    (until `listen` a connect is refused, so nobody gets in under the umask's mode).

    A socket file already there is removed only when nothing listens on it: connecting is
    refused (ECONNREFUSED), so it is what a broker that died left behind. A live one is
    "address already in use", and anything but a socket is an error: never unlink what
    another process is serving, or a file that was never ours."""
    path = listener.unix
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise listen_failure(listener, exc) from None
    else:
        if not stat.S_ISSOCK(status.st_mode):
            raise ListenError(f"cannot listen on {listener.address}: the file exists and is not "
                              "a socket")
        if socket_is_live(path):
            raise ListenError(f"cannot listen on {listener.address}: address already in use "
                              "(a process is listening on it)")
        os.unlink(path)
        log.info("listener %s: removed a stale socket file (nothing listened on it)",
                 listener.address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, listener.file_mode())
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise listen_failure(listener, exc) from None
    sock.setblocking(False)
    return sock


def socket_is_live(path: str) -> bool:
    """Whether a process accepts connections on the Unix socket at `path`. Anything but a
    clear refusal (a timeout, no permission to connect) counts as live: the file stays."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(LIVE_SOCKET_PROBE_SECONDS)
        try:
            probe.connect(path)
        except OSError as exc:
            return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
        return True


def protocol_factory(broker: Broker, loop: asyncio.AbstractEventLoop, gate: ListenerGate,
                     context: ssl.SSLContext | None) -> ProtocolFactory:
    """What serves a connection accepted on `gate.listener`."""
    listener = gate.listener
    if listener.websocket:
        # The websockets package is imported only by a broker with a WebSocket listener.
        from .websocket import WebSocketProtocol  # noqa: PLC0415

        def serve(accepted: Accepted | None) -> asyncio.Protocol:
            return WebSocketProtocol(broker, loop, gate, accepted)
    else:
        def serve(accepted: Accepted | None) -> asyncio.Protocol:
            return MQTTProtocol(broker, loop, gate, accepted=accepted)

    if listener.proxy_protocol:
        timeout = broker.limits.connect_timeout
        return lambda: ProxyHeaderProtocol(loop, gate, timeout, serve, context)
    return lambda: serve(None)


async def start_serving(loop: asyncio.AbstractEventLoop, listener: Listener,
                        sock: socket.socket, factory: ProtocolFactory, *,
                        context: ssl.SSLContext | None,
                        handshake_timeout: float) -> asyncio.Server:
    """Serve a bound socket. Behind a PROXY header, TLS starts only after it
    (`ProxyHeaderProtocol`), so the server itself is then plain."""
    if listener.proxy_protocol:
        context = None
    # A stalled handshake holds a socket and some memory: same bound as CONNECT.
    timeout = handshake_timeout if context is not None else None
    # The loop listens again on the bound socket, with its own backlog (asyncio's default is
    # 100) unless told: a connection storm would overflow that and clients wait for SYN
    # retransmits.
    if listener.unix:
        return await loop.create_unix_server(factory, sock=sock, ssl=context,
                                             ssl_handshake_timeout=timeout,
                                             backlog=LISTEN_BACKLOG)
    return await loop.create_server(factory, sock=sock, ssl=context,
                                    ssl_handshake_timeout=timeout, backlog=LISTEN_BACKLOG)


def bound_address(listener: Listener, sock: socket.socket) -> str:
    """`host:port` with the port actually bound (port 0 picks a free one), or the Unix
    socket: how logs, metrics and the admin API name a listener."""
    if listener.unix:
        return listener.address
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def describe(listener: Listener, sock: socket.socket) -> str:
    """`host:port (kinds)` for the log line that says a listener is up."""
    where = bound_address(listener, sock)
    kinds = [kind for kind, present in (("WebSocket " + listener.path, listener.websocket),
                                        ("PROXY protocol", listener.proxy_protocol),
                                        ("TLS", listener.tls)) if present]
    return where + (f" ({', '.join(kinds)})" if kinds else "")
