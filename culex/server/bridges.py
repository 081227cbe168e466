"""The bridges' sockets: connect to the remote (TCP or TLS, each address in turn), feed the
bridge's link, and connect again after a failure, with exponential backoff and jitter.

One `BridgeRunner` per bridge this process runs (culex/bridge/bridge.py). A connection that
cannot be made, or that ends, is one log line naming the bridge, the address, the cause and
when the next attempt is: a refused TCP connection, a TLS handshake that failed (and why: an
untrusted certificate, a name mismatch, a protocol version), no answer in `connect_timeout`, a
CONNACK refusal (wrong credentials, not authorized), a remote that closed the connection
before CONNACK or stopped answering keep-alive pings. Within a round every address is tried in
order; once all have failed, the next round waits `reconnect_delay`, doubled after each failed
round up to `reconnect_delay_max`, each wait drawn at random between its half and its whole so
that many edge brokers cut off together do not come back at the same instant. A connection
that the remote accepted and that lasted `STABLE_SECONDS` starts the backoff afresh.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from typing import cast

from ..bridge.bridge import Bridge
from ..bridge.link import BridgeLink
from ..bridge.settings import BridgeSettings, join_address
from .transport import tune_socket

log = logging.getLogger("culex")

# An accepted connection that lasted this long ends a run of failures: the backoff restarts.
STABLE_SECONDS = 30.0


class BridgeTLSError(Exception):
    """A bridge's TLS files cannot be used (a configuration error at start-up)."""


def bridge_tls_context(settings: BridgeSettings) -> ssl.SSLContext | None:
    """The client-side TLS context of a bridge (None without TLS): the remote's certificate
    must chain to `cafile` (or the system's CA certificates) and name the host connected to."""
    if not settings.tls_enabled:
        return None
    try:
        context = ssl.create_default_context(cafile=settings.cafile or None)
        context.minimum_version = (ssl.TLSVersion.TLSv1_3 if settings.tls_version == "1.3"
                                   else ssl.TLSVersion.TLSv1_2)
        if settings.certfile:
            context.load_cert_chain(settings.certfile, settings.keyfile or None)
    except (ssl.SSLError, OSError) as exc:
        raise BridgeTLSError(f"bridges {settings.name!r}: cannot load TLS files: {exc}") from None
    return context


def describe_tls_failure(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS handshake failed: the remote's certificate: {exc.verify_message}"
    return f"TLS handshake failed: {exc.reason or exc}"


class BridgeProtocol(asyncio.Protocol):
    """Bytes between one socket to the remote and the bridge's link."""

    def __init__(self, runner: BridgeRunner, address: str, password: bytes | None) -> None:
        self.runner = runner
        self.address = address
        self.password = password
        self.link: BridgeLink | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        tune_socket(transport)
        high = self.runner.bridge.broker.limits.max_write_buffer
        transport.set_write_buffer_limits(high=high, low=high // 4)
        self.link = self.runner.opened(transport, self.address, self.password)

    def data_received(self, data: bytes) -> None:
        assert self.link is not None
        self.link.data_received(data, self.runner.loop.time())

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.link is not None:
            error = "" if exc is None else f"connection lost: {exc}"
            self.link.connection_lost(self.runner.loop.time(), error)

    def pause_writing(self) -> None:
        if self.link is not None:
            self.link.pause_writing(self.runner.loop.time())

    def resume_writing(self) -> None:
        if self.link is not None:
            self.link.resume_writing()


class BridgeRunner:
    """Keeps one bridge connected to its remote, as long as the broker runs."""

    def __init__(self, bridge: Bridge, loop: asyncio.AbstractEventLoop) -> None:
        self.bridge = bridge
        self.loop = loop
        settings = bridge.settings
        self.name = settings.name
        self.endpoints = settings.endpoints()
        self.tls = bridge_tls_context(settings)
        self.next_address = 0
        # Consecutive failed rounds (every address tried): how long the next wait is.
        self.failed_rounds = 0
        self.stopping = False
        self._timer: asyncio.TimerHandle | None = None
        self._attempt: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._connect_soon(0.0)

    def stop(self) -> None:
        """No more attempts (the broker stops; it closes the open link itself)."""
        self.stopping = True
        if self._timer is not None:
            self._timer.cancel()
        if self._attempt is not None:
            self._attempt.cancel()

    def _connect_soon(self, delay: float) -> None:
        self._timer = self.loop.call_later(delay, self._connect)

    def _connect(self) -> None:
        self._timer = None
        if not self.stopping:
            self._attempt = self.loop.create_task(self._open())

    async def _open(self) -> None:
        host, port = self.endpoints[self.next_address]
        address = join_address(host, port)
        settings = self.bridge.settings
        timeout = settings.connect_timeout
        try:
            # Read at every attempt: a new password needs no restart.
            password = settings.password()
        except OSError as exc:
            self._failed(address, f"cannot read password_file {settings.password_file}: "
                                  f"{exc.strerror}")
            return
        try:
            async with asyncio.timeout(timeout):
                await self.loop.create_connection(
                    lambda: BridgeProtocol(self, address, password), host, port, ssl=self.tls,
                    server_hostname=host if self.tls is not None else None,
                    ssl_handshake_timeout=timeout if self.tls is not None else None)
        except TimeoutError:
            self._failed(address, f"no connection within {timeout:g} s")
        except ssl.SSLError as exc:
            self._failed(address, describe_tls_failure(exc))
        except OSError as exc:
            self._failed(address, f"cannot connect: {(exc.strerror or str(exc)).lower()}")

    def opened(self, transport: asyncio.Transport, address: str,
               password: bytes | None) -> BridgeLink:
        log.debug("bridge %s: reached %s, sending CONNECT", self.name, address)
        return self.bridge.open(transport, address, self.loop.time(), password,
                                lambda error, lasted: self._ended(address, error, lasted))

    def _ended(self, address: str, error: str, lasted: float | None) -> None:
        """The link to `address` ended (why: `error`, "" for our own shutdown), after
        `lasted` seconds of being accepted (None: the remote never accepted it)."""
        if lasted is not None:
            if lasted >= STABLE_SECONDS:
                self.failed_rounds = 0
            self.next_address = 0  # back to the first address, the preferred one
            if self.stopping:
                log.info("bridge %s: disconnected from %s", self.name, address)
                return
            delay = self._delay()
            if lasted < STABLE_SECONDS:
                self.failed_rounds += 1  # accepted, then dropped at once: still failing
            log.warning("bridge %s: connection to %s ended: %s; connecting again in %.1f s",
                        self.name, address, error, delay)
            self._connect_soon(delay)
            return
        self._failed(address, error)

    def _failed(self, address: str, error: str) -> None:
        if self.stopping:
            return
        self.next_address = (self.next_address + 1) % len(self.endpoints)
        if self.next_address:  # another address to try in this round: at once
            log.warning("bridge %s: %s: %s; trying %s", self.name, address, error,
                        join_address(*self.endpoints[self.next_address]))
            self._connect_soon(0.0)
            return
        delay = self._delay()
        self.failed_rounds += 1
        log.warning("bridge %s: %s: %s; connecting again in %.1f s", self.name, address, error,
                    delay)
        self._connect_soon(delay)

    def _delay(self) -> float:
        settings = self.bridge.settings
        ceiling = min(settings.reconnect_delay_max,
                      settings.reconnect_delay * 2 ** min(self.failed_rounds, 32))
        return random.uniform(ceiling / 2, ceiling)
