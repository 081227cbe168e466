"""Run the broker: event loop, listeners, the per-tick flush, the timer tick and signals."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import ssl
import time
from functools import partial
from pathlib import Path
from typing import cast

from ..config import Config, Listener, anonymous_allowed
from ..core.broker import Broker
from ..core.cluster import Cluster
from ..fdlimit import raise_open_file_limit
from ..storage.sqlite import SqliteStorage, StorageError
from .listeners import ListeningSockets, describe, protocol_factory, start_serving
from .security import Security, SecurityError
from .transport import ListenerGate, ListenError, lingering_close, listen_failure
from .workers import STOP_SIGNALS, Handovers, PeerLink, PeerLost, WorkerPlan, run_supervisor

log = logging.getLogger("culex")

# How often deadlines (keep-alive, CONNECT timeout) and $SYS are checked. Four times a second
# bounds the lateness of a keep-alive close to 0.25 s at negligible cost.
TICK_SECONDS = 0.25
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
        raise ListenError(f"listener {listener.address}: cannot load TLS "
                          f"certificates: {exc}") from None
    return context


def open_storage(config: Config, loop: asyncio.AbstractEventLoop) -> SqliteStorage | None:
    settings = config.storage
    if settings.durability == "none":
        log.info("storage: durability none, state is kept in memory only")
        return None
    return SqliteStorage(Path(settings.path), durable=settings.durability == "sync",
                         call_soon_threadsafe=loop.call_soon_threadsafe)


class OpenFileWatch:
    """Warn before the process runs out of file descriptors.

    At the limit the kernel's accept fails with EMFILE; libuv then accepts and closes the
    waiting connections itself (its reserve-descriptor trick), so the broker keeps serving but
    nothing would say why clients are refused. This says it, once per episode. The count is
    estimated (descriptors open at start-up plus one per connection) because listing
    /proc/self/fd four times a second would cost O(connections).
    """

    WARN_AT = 0.95
    CLEAR_AT = 0.90

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.baseline = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") \
            else 16
        self.warned = False

    def check(self) -> None:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if limit == resource.RLIM_INFINITY:
            return
        used = self.baseline + len(self.broker.connections)
        if not self.warned and used >= limit * self.WARN_AT:
            self.warned = True
            log.warning("open files: about %d of the limit %d in use; beyond it new connections "
                        "are closed on accept (raise the limit: ulimit -n / LimitNOFILE)",
                        used, limit)
        elif self.warned and used < limit * self.CLEAR_AT:
            self.warned = False
            log.info("open files: about %d of the limit %d in use again", used, limit)


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
    """Serve in this process: a worker, given the supervisor's sockets, or the only process,
    which binds its own (and removes its Unix socket files when it stops)."""
    loop = new_event_loop()
    listening = None
    try:
        if plan is None:
            # Bound, the port accepts connections before `serve` has its signal handlers:
            # a SIGTERM meanwhile waits for them, as in a worker (see workers.py).
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            listening = ListeningSockets(config.listeners)
            sockets = listening.sockets
        else:
            sockets = plan.listening
        loop.run_until_complete(serve(config, sockets, plan))
    except (ListenError, StorageError, SecurityError, PeerLost) as exc:
        log.error("%s", exc)
        return 1
    finally:
        loop.close()
        if listening is not None:
            listening.close()
            listening.remove_files()
    return 0


async def serve(config: Config, sockets: list[socket.socket],
                plan: WorkerPlan | None = None) -> None:
    loop = asyncio.get_running_loop()
    storage = open_storage(config, loop)
    broker = Broker(config.limits, sys_interval=config.sys_interval, storage=storage,
                    now=loop.time(), mqtt5=config.mqtt5)
    broker.wall_clock = time.time
    cluster = None
    if plan is not None:
        cluster = broker.cluster = Cluster(broker, plan.index, plan.size)
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
    security = Security(config.auth, anonymous_allowed(config), loop)
    security.install(broker)
    log.info("open-file limit: %d (one per client connection)", raise_open_file_limit())
    flush_scheduled = False

    stopping = False

    def flush() -> None:
        nonlocal flush_scheduled
        flush_scheduled = False
        if not stopping:
            broker.flush()

    def wake() -> None:
        nonlocal flush_scheduled
        if not flush_scheduled:
            flush_scheduled = True
            loop.call_soon(flush)

    broker.wake = wake
    broker.close_sink = lambda sink: lingering_close(cast(asyncio.Transport, sink), loop)

    gates = [ListenerGate(listener) for listener in config.listeners]
    handovers = None
    if plan is not None and cluster is not None:
        peers_ready = asyncio.Event()
        publish_restored_wills = cluster.on_ready

        def all_peers_ready() -> None:
            publish_restored_wills()
            peers_ready.set()

        cluster.on_ready = all_peers_ready
        for index, sock in plan.links.items():
            await loop.connect_accepted_socket(
                partial(PeerLink, cluster, index, loop, lambda: stopping), sock)
        handovers = Handovers(broker, loop, plan, gates)
        cluster.move = handovers.send
        # Clients only once every worker's restored subscriptions are known here: a message
        # published earlier would miss the offline sessions of the other workers, and its
        # PUBACK would promise what was not done. Until then they wait in the listen backlog.
        peer_lost = asyncio.Event()
        cluster.on_detach = lambda index: peer_lost.set()
        cluster.announce_ready()
        waits = {asyncio.ensure_future(peers_ready.wait()), asyncio.ensure_future(peer_lost.wait())}
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in pending:
            wait.cancel()
        if not peers_ready.is_set():
            raise PeerLost("another worker stopped during start-up")
    servers: list[asyncio.Server] = []
    tls: list[tuple[Listener, ssl.SSLContext]] = []
    for listener, gate, sock in zip(config.listeners, gates, sockets, strict=True):
        try:
            context = tls_context(listener)
            if context is not None:
                tls.append((listener, context))
            server = await start_serving(loop, listener, sock,
                                         protocol_factory(broker, loop, gate, context),
                                         context=context,
                                         handshake_timeout=config.limits.connect_timeout)
        except OSError as exc:
            for opened in servers:
                opened.close()
            raise listen_failure(listener, exc) from None
        servers.append(server)
        log.info("listening on %s", describe(listener, sock))

    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, security.reload, broker, tls)
    # The process starts serving with them blocked (see run_worker); now they have handlers.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    files = OpenFileWatch(broker)

    def tick() -> None:
        broker.tick(loop.time())
        files.check()
        timers[0] = loop.call_later(TICK_SECONDS, tick)

    def batch_commit() -> None:
        broker.commit()
        timers[1] = loop.call_later(config.storage.batch_interval, batch_commit)

    timers = [loop.call_soon(tick)]
    if storage is not None and not storage.durable:
        timers.append(loop.call_later(config.storage.batch_interval, batch_commit))
    await stop.wait()
    log.info("shutting down: closing %d connections", len(broker.connections))
    stopping = True
    if handovers is not None:
        handovers.close()
    for timer in timers:
        timer.cancel()
    for server in servers:
        server.close()
    broker.close_sink = lambda sink: sink.close()  # shutting down: no lingering
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
        # after shutdown", a traceback on SIGTERM). close() writes what is left itself, so any
        # later flush or wake-up is made a no-op.
        broker.wake = lambda: None
        storage.close()
    security.close()
    log.info("stopped")
