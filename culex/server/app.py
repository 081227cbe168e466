"""Run the broker: event loop, listeners, the per-tick flush, the timer tick and signals."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import time
from functools import partial
from pathlib import Path

from ..config import Config, Listener, anonymous_allowed
from ..core.broker import Broker, WorkerSetup
from ..fdlimit import OpenFileWatch, raise_open_file_limit
from ..storage.sqlite import SqliteStorage, StorageError
from .host import LoopHost
from .security import Security, SecurityError
from .transport import ListenerGate, ListenError, MQTTProtocol, listen_failure
from .workers import STOP_SIGNALS, Handovers, LinkProtocol, PeerLost, WorkerPlan, run_supervisor

log = logging.getLogger("culex")

SHUTDOWN_GRACE_SECONDS = 4.0


def tls_context(listener: Listener) -> ssl.SSLContext | None:
    """The server-side TLS context of a listener, or None for plain TCP."""
    if not listener.tls:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (ssl.TLSVersion.TLSv1_3 if listener.min_tls_version == "1.3"
                               else ssl.TLSVersion.TLSv1_2)
    try:
        context.load_cert_chain(listener.certfile, listener.keyfile or None)
        if listener.cafile:
            context.load_verify_locations(listener.cafile)
            context.verify_mode = (ssl.CERT_REQUIRED if listener.require_certificate
                                   else ssl.CERT_OPTIONAL)
        if listener.ciphers:
            context.set_ciphers(listener.ciphers)
    except (ssl.SSLError, OSError) as exc:
        raise ListenError(f"listener {listener.host}:{listener.port}: cannot load TLS "
                          f"certificates: {exc}") from None
    return context


def open_storage(config: Config, loop: asyncio.AbstractEventLoop) -> SqliteStorage | None:
    settings = config.storage
    if settings.durability == "none":
        log.info("storage: durability none, state is kept in memory only")
        return None
    return SqliteStorage(Path(settings.path), durable=settings.durability == "sync",
                         call_soon_threadsafe=loop.call_soon_threadsafe)


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # noqa: PLC0415 - optional at import time, preferred at run time
    except ImportError:
        log.warning("uvloop is not installed; falling back to the slower asyncio event loop")
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(config: Config) -> int:
    """Serve until SIGTERM/SIGINT: in this process, or in `workers` forked ones."""
    if config.worker_count() > 1:
        try:
            return run_supervisor(config, run_worker)
        except (ListenError, StorageError) as exc:
            log.error("%s", exc)
            return 1
    return run_worker(config, None)


def run_worker(config: Config, plan: WorkerPlan | None) -> int:
    loop = new_event_loop()
    try:
        loop.run_until_complete(serve(config, plan))
    except (ListenError, StorageError, SecurityError, PeerLost) as exc:
        log.error("%s", exc)
        return 1
    finally:
        loop.close()
    return 0


async def serve(config: Config, plan: WorkerPlan | None = None) -> None:
    loop = asyncio.get_running_loop()
    storage = open_storage(config, loop)
    security = Security(config.auth, anonymous_allowed(config), loop,
                        reports=plan is None or plan.index == 0)
    host = LoopHost(loop)
    peers_ready = asyncio.Event()
    peer_lost = asyncio.Event()
    handovers: Handovers | None = None

    def hand_over(worker: int, sink: object, data: bytes, address: str,
                  certificate_username: str | None) -> None:
        assert handovers is not None
        handovers.send(worker, sink, data, address, certificate_username)

    workers = None if plan is None else WorkerSetup(
        plan.index, plan.size, hand_over=hand_over, all_ready=peers_ready.set,
        link_lost=lambda index: peer_lost.set())
    broker = Broker(config.limits, host=host, sys_interval=config.sys_interval,
                    storage=storage, now=loop.time(), mqtt5=config.mqtt5,
                    batch_interval=config.storage.batch_interval,
                    access=security.access_policy(), workers=workers)
    host.serve(broker)
    if storage is not None:
        started = time.monotonic()
        if plan is None:  # with workers, the supervisor has done it
            storage.prepare(lambda key: 0)
        state = broker.restore()
        queued = sum(len(session.entries) for session in state.sessions)
        log.info("storage: %s (durability %s): loaded %d sessions, %d queued or in-flight "
                 "messages, %d retained, %d wills in %.3f s", storage.path,
                 config.storage.durability, len(state.sessions), queued, len(state.retained),
                 len(state.wills), time.monotonic() - started)
    broker.set_acl(security.acl)
    log.info("open-file limit: %d (one per client connection)", raise_open_file_limit())
    files = OpenFileWatch(broker.connections)
    gates = [ListenerGate(listener) for listener in config.listeners]
    links = broker.links
    if plan is not None and links is not None:
        for index, sock in plan.links.items():
            await loop.connect_accepted_socket(
                partial(LinkProtocol, links, index, loop, lambda: host.stopping), sock)
        handovers = Handovers(broker, loop, plan, gates, files)
        # Clients only once every worker's restored subscriptions are known here: a message
        # published earlier would miss the offline sessions of the other workers, and its
        # PUBACK would promise what was not done. Until then they wait in the listen backlog.
        links.announce_ready()
        waits = {asyncio.ensure_future(peers_ready.wait()), asyncio.ensure_future(peer_lost.wait())}
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in pending:
            wait.cancel()
        if not peers_ready.is_set():
            raise PeerLost("another worker stopped during start-up")
    servers: list[asyncio.Server] = []
    tls: list[tuple[Listener, ssl.SSLContext]] = []
    for number, (listener, gate) in enumerate(zip(config.listeners, gates, strict=True)):
        try:
            context = tls_context(listener)
            if context is not None:
                tls.append((listener, context))
            # A stalled handshake holds a socket and some memory: same bound as CONNECT.
            handshake_timeout = config.limits.connect_timeout if context else None
            if plan is None:
                server = await loop.create_server(
                    lambda gate=gate: MQTTProtocol(broker, loop, gate, files),
                    listener.host, listener.port, reuse_address=True, backlog=4096,
                    ssl=context, ssl_handshake_timeout=handshake_timeout)
            else:  # the supervisor's socket, shared by every worker
                server = await loop.create_server(
                    lambda gate=gate: MQTTProtocol(broker, loop, gate, files),
                    sock=plan.listening[number], ssl=context,
                    ssl_handshake_timeout=handshake_timeout)
        except OSError as exc:
            for opened in servers:
                opened.close()
            raise listen_failure(listener, exc) from None
        servers.append(server)
        log.info("listening on %s:%d%s", listener.host, listener.port,
                 " (TLS)" if context else "")

    host.start_timers()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, security.reload, broker, tls)
    # A worker process starts with them blocked (see workers.py); now they have handlers.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    await stop.wait()
    log.info("shutting down: closing %d connections", len(broker.connections))
    host.stop()
    if handovers is not None:
        handovers.close()
    for server in servers:
        server.close()
    broker.close_all()
    try:
        async with asyncio.timeout(SHUTDOWN_GRACE_SECONDS):
            for server in servers:
                await server.wait_closed()
    except TimeoutError:
        log.warning("shutdown: some connections did not close within %g s",
                    SHUTDOWN_GRACE_SECONDS)
    if storage is not None:
        # Connections that closed during the grace period may have queued a flush whose commit
        # would reach the storage after its executor shut down ("cannot schedule new futures
        # after shutdown", a traceback on SIGTERM). close() writes what is left itself; the
        # host, stopped, flushes nothing any more.
        storage.close()
    security.close()
    log.info("stopped")
