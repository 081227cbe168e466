"""Run the broker: start-up (see startup.py), the event loop, listeners and signals. The loop's
side of the core (one flush per tick, one timer) is `LoopHost` (host.py)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ..bridge.bridge import install_bridges
from ..cluster.settings import ClusterError
from ..config import Config, ConfigError, Listener, anonymous_allowed
from ..core.broker import Broker, WorkerSetup
from ..fdlimit import OpenFileWatch, raise_open_file_limit
from ..logs import fatal, reopen_log_files
from ..storage.base import ClusterStorage
from ..storage.sqlite import SqliteStorage, StorageError
from ..storage.stream_cursors import ClusterSqliteStorage
from .admin.setup import Admin
from .admin.token import read_token
from .bridges import BridgeRunner, BridgeTLSError, bridge_tls_context
from .host import LoopHost
from .listeners import bound_address, describe, protocol_factory, start_serving
from .security import AuthFiles, Security, SecurityError, load_files
from .service import LockError, Notifier, PidFileError, Readiness
from .startup import BoundListener, start, status, summary
from .transport import ListenerGate, ListenError, listen_failure
from .workers import (
    FORWARDED_SIGNALS,
    Handovers,
    LinkProtocol,
    PeerLost,
    SupervisorChannel,
    WorkerPlan,
    run_supervisor,
)

if TYPE_CHECKING:
    from .cluster_io import ClusterNode

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
        raise ListenError(f"listener {listener.address}: cannot load TLS "
                          f"certificates: {exc}") from None
    return context


def open_storage(config: Config, loop: asyncio.AbstractEventLoop, member: str | None
                 ) -> tuple[SqliteStorage | ClusterStorage | None, ClusterStorage | None]:
    """The state's backend, and (when clustered, `member`: this process's name in the
    cluster) the same object as the cluster node uses it."""
    settings = config.storage
    if settings.durability == "none":
        log.info("storage: durability none, state is kept in memory only")
        return None, None
    durable = settings.durability == "sync"
    if member is None:
        return SqliteStorage(Path(settings.path), durable=durable,
                             call_soon_threadsafe=loop.call_soon_threadsafe), None
    clustered: ClusterStorage
    if config.state_in_redis():
        assert config.cluster is not None
        from ..storage.redis_store import RedisStorage  # noqa: PLC0415 - redis-py: clustered only
        clustered = RedisStorage(member, loop, durable=durable, replicas=config.cluster.replicas)
    else:
        # A cluster node also commits how far it applied the other nodes' records.
        clustered = ClusterSqliteStorage(Path(settings.path), durable=durable,
                                         call_soon_threadsafe=loop.call_soon_threadsafe)
    return clustered, clustered


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # noqa: PLC0415 - optional at import time, preferred at run time
    except ImportError:
        log.warning("uvloop is not installed; falling back to the slower asyncio event loop")
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@dataclass(frozen=True, slots=True)
class CheckedFiles:
    """The files the configuration names, loaded once before anything is bound."""

    contexts: list[ssl.SSLContext | None]  # per listener
    auth: AuthFiles
    admin_token: str | None = None


def check_files(config: Config) -> CheckedFiles:
    """Start-up step 1 (see startup.py), after the configuration itself: every TLS
    certificate (the bridges' too), the password file and the ACL. A problem is a
    `ConfigError`."""
    try:
        for bridge in config.bridges:
            bridge_tls_context(bridge)
        return CheckedFiles([tls_context(listener) for listener in config.listeners],
                            load_files(config.auth), read_token(config.admin))
    except (ListenError, SecurityError, BridgeTLSError) as exc:
        raise ConfigError(str(exc)) from None


class Standalone:
    """`Readiness` of a broker without workers: it speaks to the service manager itself."""

    def __init__(self, notifier: Notifier, summary: str, status: str) -> None:
        self.notifier = notifier
        self.summary = summary
        self.status = status
        self.watchdog_interval = notifier.watchdog_interval

    def ready(self) -> None:
        log.info("%s", self.summary)
        self.notifier.ready(self.status)

    def alive(self) -> None:
        self.notifier.alive()

    def stopping(self) -> None:
        self.notifier.stopping("stopping")


def run(config: Config, checked: CheckedFiles, pid_file: Path | None = None) -> int:
    """Start (see startup.py), then serve until SIGTERM/SIGINT: in this process, or in
    `workers` forked ones. 0 after a clean stop; 1 when the start or a worker failed."""
    # Handled by the event loop (or the supervisor's loop) once it runs; until then they wait,
    # so a SIGTERM during start-up stops the broker cleanly and a SIGUSR1 does not kill it.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    notifier = Notifier.from_environment()
    try:
        started = start(config, checked.contexts, pid_file, raise_open_file_limit())
    except (ListenError, LockError, PidFileError) as exc:
        fatal(str(exc))
        return 1
    if started.lock is not None:  # `systemctl status` during a long restore
        notifier.status(f"restoring the state from {config.storage.path}")
    try:
        if config.worker_count() > 1:
            return run_supervisor(config, started, notifier,
                                  partial(run_worker, checked=checked))
        readiness = Standalone(notifier, summary(config, started), status(config, started))
        return run_loop(config, started.listening, None, readiness, checked,
                        admin=started.admin)
    except StorageError as exc:  # the supervisor's preparation of the database
        fatal(str(exc))
        return 1
    finally:
        started.close()
        notifier.close()


def run_worker(config: Config, plan: WorkerPlan, *, checked: CheckedFiles) -> int:
    admin = plan.admin
    if admin is not None and plan.index:
        admin.close()  # worker 0's to serve
        admin = None
    return run_loop(config, plan.listening, plan, SupervisorChannel(plan), checked, admin=admin)


def run_loop(config: Config, listening: list[BoundListener], plan: WorkerPlan | None,
             readiness: Readiness, checked: CheckedFiles, *,
             admin: socket.socket | None = None) -> int:
    loop = new_event_loop()
    try:
        loop.run_until_complete(serve(config, listening, plan, readiness, checked,
                                      admin_sock=admin))
    except (StorageError, PeerLost, ClusterError) as exc:
        fatal(str(exc))
        return 1
    finally:
        loop.close()
    return 0


def reload(security: Security, broker: Broker, tls: list[tuple[Listener, ssl.SSLContext]],
           admin: Admin | None) -> None:
    """SIGHUP: the password file, the ACL, dynamic security, certificates and the admin
    API's token are read again; each bad file keeps what was in force."""
    security.reload(broker, tls)
    if admin is not None:
        admin.token.reload()


def cluster_node(config: Config, loop: asyncio.AbstractEventLoop,
                 plan: WorkerPlan | None) -> ClusterNode | None:
    """This process's membership of its cluster, if `[cluster]` is configured. redis-py (and
    the dozen standard modules it loads, some 8 MB of RSS) is imported only then."""
    if config.cluster is None:
        return None
    from .cluster_io import ClusterNode  # noqa: PLC0415
    return ClusterNode(config.cluster, loop,
                       *((0, 1) if plan is None else (plan.index, plan.size)))


async def serve(config: Config, listening: list[BoundListener], plan: WorkerPlan | None,
                readiness: Readiness, checked: CheckedFiles, *,
                admin_sock: socket.socket | None = None) -> None:
    """Start-up step 5 (see startup.py): open and restore the state, then serve the bound
    sockets (and the admin API's, `admin_sock`, in the process that serves it) until a stop
    signal."""
    loop = asyncio.get_running_loop()
    # A clustered node takes its lease (and member number) before anything is built on it.
    # (With workers, each is a member of its own, and client ids still go to their worker.)
    cluster = cluster_node(config, loop, plan)
    storage, cluster_storage = open_storage(config, loop,
                                            None if cluster is None else cluster.name)
    security = Security(config.auth, anonymous_allowed(config), loop, checked.auth,
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
                    access=security.access_policy(), workers=workers,
                    cluster=None if cluster is None else await cluster.join(
                        None if plan is None else hand_over, cluster_storage))
    host.serve(broker)
    security.attach(broker)
    if storage is not None:
        started = time.monotonic()
        if isinstance(storage, SqliteStorage) and plan is None:
            storage.prepare(lambda key: 0)  # with workers, the supervisor has done it
        state = broker.restore()
        queued = sum(len(session.entries) for session in state.sessions)
        log.info("storage: %s (durability %s): loaded %d sessions, %d queued or in-flight "
                 "messages, %d retained, %d wills in %.3f s", storage.path,
                 config.storage.durability, len(state.sessions), queued, len(state.retained),
                 len(state.wills), time.monotonic() - started)
    broker.set_acl(security.rules())
    files = OpenFileWatch(broker.connections)
    gates = [ListenerGate(bound.listener, files, bound_address(bound.listener, bound.sock))
             for bound in listening]
    admin = None if not config.admin.enabled else Admin(
        config, broker, loop, index=0 if plan is None else plan.index, storage=storage,
        gates=gates, sock=admin_sock, token=checked.admin_token)
    links = broker.links
    # Before any client (or other worker) can publish: their sessions queue from the start.
    bridges = [BridgeRunner(bridge, loop) for bridge in install_bridges(
        broker, config.bridges, (lambda _: True) if links is None else links.owns)]
    if plan is not None and links is not None and cluster is None:
        for index, sock in plan.links.items():
            await loop.connect_accepted_socket(
                partial(LinkProtocol, links, index, loop, lambda: host.stopping), sock)
        handovers = Handovers(broker, loop, plan, gates)
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
    if cluster is not None:
        # As with workers: clients only once the other nodes' subscriptions are known here.
        cluster.start(broker, cluster_storage)
        await cluster.wait_ready()
        broker.publish_restored_wills()
        if plan is not None:
            # The workers of a clustered node route to each other through Redis, as members;
            # what stays between them is handing connections to the owner of their client
            # id, taken from a sibling only from now on (those sent earlier wait).
            handovers = Handovers(broker, loop, plan, gates)
    servers: list[asyncio.Server] = []
    for bound, gate in zip(listening, gates, strict=True):
        listener = bound.listener
        try:
            server = await start_serving(loop, listener, bound.sock,
                                         protocol_factory(broker, loop, gate, bound.tls),
                                         context=bound.tls,
                                         handshake_timeout=config.limits.connect_timeout)
        except OSError as exc:
            for opened in servers:
                opened.close()
            raise listen_failure(listener, exc) from None
        servers.append(server)
        log.info("listening on %s", describe(listener, bound.sock))
    if admin is not None:
        await admin.serve()

    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    tls = [(bound.listener, bound.tls) for bound in listening if bound.tls is not None]
    loop.add_signal_handler(signal.SIGHUP, reload, security, broker, tls, admin)
    loop.add_signal_handler(signal.SIGUSR1, reopen_log_files)
    # Blocked since the process started (see run); now they have handlers.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)

    host.start_timers()
    for runner in bridges:
        runner.start()
    watchdog: list[asyncio.TimerHandle] = []
    interval = readiness.watchdog_interval
    if interval:
        # From the event loop itself: a loop that stops turning stops the pings.
        def ping() -> None:
            readiness.alive()
            watchdog[0] = loop.call_later(interval, ping)

        watchdog.append(loop.call_later(interval, ping))
    readiness.ready()
    await stop.wait()
    readiness.stopping()
    log.info("shutting down: closing %d connections", len(broker.connections))
    if admin is not None:
        await admin.stop()
    host.stop()
    if handovers is not None:
        handovers.close()
    for timer in watchdog:
        timer.cancel()
    for runner in bridges:
        runner.stop()
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
    if cluster is not None:
        await cluster.leave()
    if storage is not None:
        # Connections that closed during the grace period may have queued a flush whose commit
        # would reach the storage after its executor shut down ("cannot schedule new futures
        # after shutdown", a traceback on SIGTERM). close() writes what is left itself; the
        # host, stopped, flushes nothing any more.
        storage.close()
    security.close()
    log.info("stopped")
