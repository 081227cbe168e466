"""Worker processes: the supervisor that forks them, and the links and hand-overs between them.

The supervisor is given the bound listening sockets and the state lock (`startup.py`), and
opens, for every pair of workers, two socket pairs: a stream for routing records
(culex/core/worker_links.py) and a SOCK_SEQPACKET pair that carries a client's socket
(SCM_RIGHTS) with the bytes already read from it to the worker that owns its client id. Then
it forks the workers, which all accept on the same listening sockets, and supervises them
(`Supervisor`):
signals are passed on, readiness and the watchdog are reported to the service manager, and if
one worker dies the others are stopped too (a half broker would route to a dead peer), so a
service manager restarts the whole. Each worker dies with the supervisor (PR_SET_PDEATHSIG), so
`kill -9` of the supervisor stops everything at once, like the single process it replaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from ..config import Config
from ..core.broker import Broker
from ..core.worker_links import WorkerLinks, owner_of
from ..logs import log_file_of, reopen_log_files, setup_logging
from ..storage.sqlite import SqliteStorage
from .service import Notifier
from .startup import BoundListener, Started, status, summary
from .transport import ListenerGate, Moved, MQTTProtocol, Relay

log = logging.getLogger("culex")

# A hand-over is one SEQPACKET message: its size is bounded by the socket's send buffer. A
# CONNECT with a large will (and what followed it) goes through a relay instead.
MAX_HANDOVER = 128 * 1024
HANDOVER_LENGTH = struct.Struct(">I")
PR_SET_PDEATHSIG = 1
# Passed on to every worker (SIGHUP: reload the password and ACL files; SIGUSR1: reopen the
# log file). Blocked from the start until an event loop (or the supervisor's loop) handles
# them: SIGUSR1's default action would kill the process.
FORWARDED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1}
# After a worker died: how long the others get to stop on SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 10.0
# A link may buffer this much before its publishers are paused (see core/flow.py): as
# much as a client connection (limits.max_write_buffer's default). A flood waits in it, so it
# is latency: 4 MB gave QoS 1 floods across workers a p99 of 200-390 ms, 256 KB 40-50 ms, at
# no cost to fan-out throughput.
LINK_HIGH_WATER = 256 * 1024


class PeerLost(Exception):
    """Another worker stopped before this one could serve: it exits too (the supervisor is
    stopping the broker)."""


@dataclass
class WorkerPlan:
    """What one worker is given at fork: its index, the shared listening sockets, its ends of
    the links to every other worker, and the pipe on which it tells the supervisor that it
    serves and, for the watchdog, that its event loop still runs."""

    index: int
    size: int
    listening: list[BoundListener]
    status: int
    watchdog_interval: float | None
    links: dict[int, socket.socket] = field(default_factory=dict)
    handovers: dict[int, socket.socket] = field(default_factory=dict)
    # The admin API's socket (startup.bind_admin): worker 0 serves it, the others close it.
    admin: socket.socket | None = None


# A worker's message to the supervisor: a kind and the worker's index. Three bytes, written in
# one write(), which a pipe keeps whole (PIPE_BUF).
STATUS_MESSAGE = struct.Struct(">cH")
STATUS_READY = b"R"
STATUS_ALIVE = b"W"


class SupervisorChannel:
    """The worker's side of the status pipe: `Readiness` for a worker (the supervisor alone
    speaks to systemd, once every worker has spoken to it)."""

    def __init__(self, plan: WorkerPlan) -> None:
        self._fd = plan.status
        self._index = plan.index
        # The supervisor pings the service manager every interval, if every worker pinged it
        # since: a worker pings twice per interval so that one always falls in between.
        self.watchdog_interval = (plan.watchdog_interval / 2 if plan.watchdog_interval
                                  else None)
        os.set_blocking(self._fd, False)  # a stuck supervisor must not stall a worker

    def _send(self, kind: bytes) -> None:
        with contextlib.suppress(OSError):  # full (the supervisor is stuck) or gone: it knows
            os.write(self._fd, STATUS_MESSAGE.pack(kind, self._index))

    def ready(self) -> None:
        self._send(STATUS_READY)

    def alive(self) -> None:
        self._send(STATUS_ALIVE)

    def stopping(self) -> None:
        """The supervisor tells the service manager itself."""


def run_supervisor(config: Config, started: Started, notifier: Notifier,
                   serve_worker: Callable[[Config, WorkerPlan], int]) -> int:
    """Fork `config.worker_count()` workers running `serve_worker` and supervise them.

    The caller has bound the listeners and locked the state (`startup.start`); the workers
    inherit both, so the lock is held until the last of them has gone."""
    size = config.worker_count()
    if config.storage.durability != "none" and not config.state_in_redis():
        # Before any worker opens the file: migrations, and the clean-up that only a process
        # seeing every session may do.
        storage = SqliteStorage(Path(config.storage.path),
                                durable=config.storage.durability == "sync",
                                call_soon_threadsafe=lambda *args: None)
        storage.prepare(lambda key: owner_of(key, size))
        storage.close()
    status_read, status_write = os.pipe()
    plans = [WorkerPlan(index, size, started.listening, status_write,
                        notifier.watchdog_interval, admin=started.admin)
             for index in range(size)]
    for first in range(size):
        for second in range(first + 1, size):
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            plans[first].links[second], plans[second].links[first] = a, b
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            for end in (a, b):
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_HANDOVER * 2)
            plans[first].handovers[second], plans[second].handovers[first] = a, b
    supervisor = os.getpid()
    children: dict[int, int] = {}
    # Until a worker's event loop handles them (`serve` unblocks them), the forwarded signals
    # wait: a SIGTERM during start-up then stops it cleanly instead of killing it. The
    # supervisor unblocks them once its own handlers are in place, so none is lost either.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    for plan in plans:
        pid = os.fork()
        if pid == 0:
            os.close(status_read)
            os._exit(_child(plan, plans, supervisor, config, serve_worker))
        children[pid] = plan.index
    for plan in plans:
        for sock in (*plan.links.values(), *plan.handovers.values()):
            sock.close()
    os.close(status_write)
    for bound in started.listening:
        bound.sock.close()  # the workers' now: the port is free once they have all gone
    if started.admin is not None:
        started.admin.close()
    log.info("supervisor %d: %d workers started (pids %s)", supervisor, size,
             ", ".join(str(pid) for pid in children))
    try:
        return Supervisor(children, status_read, notifier, summary(config, started),
                          status(config, started)).run()
    finally:
        os.close(status_read)


def _child(plan: WorkerPlan, plans: list[WorkerPlan], supervisor: int, config: Config,
           serve_worker: Callable[[Config, WorkerPlan], int]) -> int:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != supervisor:
            return 1  # the supervisor died before the line above took effect
        for other in plans:
            if other is not plan:
                for sock in (*other.links.values(), *other.handovers.values()):
                    sock.close()
        setup_logging(config.logging.level, config.logging.format, plan.index,
                      log_file_of(config))
        return serve_worker(config, plan)
    except BaseException:
        log.exception("worker %d failed", plan.index)
        return 1
    finally:
        sys.stderr.flush()


class Supervisor:
    """The supervisor's life after the fork, in one loop over a selector: signals (through
    `signal.set_wakeup_fd`, so no work runs inside a signal handler), the workers' status
    messages, and timers. Blocked in `select` while the workers serve.

    Signals are passed on to every worker (SIGUSR1 also reopens the supervisor's own log
    file). When every worker serves, the service manager is told READY=1, and with a watchdog
    WATCHDOG=1 every interval in which every worker's event loop has pinged. If a worker dies,
    the others are stopped (a half broker would route to a dead peer) and the supervisor exits
    1 so that a service manager restarts the whole."""

    def __init__(self, children: dict[int, int], status_read: int, notifier: Notifier,
                 summary: str, status: str) -> None:
        self.children = children
        self.size = len(children)
        self.status_read = status_read
        self.notifier = notifier
        self.summary = summary  # logged, and `status` told the service manager, when ready
        self.status = status
        self.code = 0
        self.stopping = False
        self.ready: set[int] = set()
        self.alive: set[int] = set()
        self.unanswered_warned = False
        self._pending = b""
        self.kill_at: float | None = None
        self.ping_at: float | None = None

    def run(self) -> int:
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        for signum in (*FORWARDED_SIGNALS, signal.SIGCHLD):
            signal.signal(signum, _wake_only)
        previous = signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
        selector = selectors.DefaultSelector()
        selector.register(wake_read, selectors.EVENT_READ)
        selector.register(self.status_read, selectors.EVENT_READ)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {*FORWARDED_SIGNALS, signal.SIGCHLD})
        try:
            self._reap()
            while self.children:
                for key, _events in selector.select(self._timeout()):
                    if key.fileobj is wake_read:
                        for number in wake_read.recv(256):
                            self._signal(number)
                    elif not self._read_status():
                        selector.unregister(self.status_read)  # every worker has gone
                self._reap()
                self._timers()
        finally:
            signal.set_wakeup_fd(previous)
            selector.close()
            wake_read.close()
            wake_write.close()
        return self.code

    def _timeout(self) -> float | None:
        deadlines = [at for at in (self.kill_at, self.ping_at) if at is not None]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return  # reaped after every wake-up
        if signum in (signal.SIGINT, signal.SIGTERM) and not self.stopping:
            self.stopping = True
            self.ping_at = None
            self.notifier.stopping("stopping")
        elif signum == signal.SIGUSR1:
            reopen_log_files()
        self._send_all(signum)

    def _send_all(self, signum: int) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _read_status(self) -> bool:
        try:
            data = os.read(self.status_read, 4096)
        except BlockingIOError:
            return True
        if not data:
            return False
        data = self._pending + data
        whole = len(data) - len(data) % STATUS_MESSAGE.size
        self._pending = data[whole:]
        for kind, index in STATUS_MESSAGE.iter_unpack(data[:whole]):
            if kind == STATUS_READY:
                self.ready.add(index)
                if len(self.ready) == self.size and not self.stopping:
                    log.info("%s", self.summary)
                    self.notifier.ready(self.status)
                    if self.notifier.watchdog_interval:
                        self.ping_at = time.monotonic() + self.notifier.watchdog_interval
            elif kind == STATUS_ALIVE:
                self.alive.add(index)
        return True

    def _reap(self) -> None:
        while self.children:
            try:
                pid, code = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            index = self.children.pop(pid, None)
            if index is None:
                continue
            exit_code = os.waitstatus_to_exitcode(code)
            if not self.stopping:
                log.error("worker %d (pid %d) exited with %d: stopping the others", index, pid,
                          exit_code)
                self.stopping = True
                self.ping_at = None
                self.notifier.stopping(f"worker {index} exited with {exit_code}")
                self.code = 1
                self.kill_at = time.monotonic() + STOP_GRACE_SECONDS
                self._send_all(signal.SIGTERM)
            elif exit_code:
                self.code = 1

    def _timers(self) -> None:
        now = time.monotonic()
        if self.kill_at is not None and now >= self.kill_at:
            # A worker stopped by its peer's death may be waiting, signals blocked, for that
            # peer to announce itself at start-up: it would never exit by itself.
            self.kill_at = None
            self._send_all(signal.SIGKILL)
        interval = self.notifier.watchdog_interval
        if self.ping_at is not None and interval and now >= self.ping_at:
            self.ping_at = now + interval
            silent = sorted(set(self.children.values()) - self.alive)
            self.alive.clear()
            if not silent:
                self.notifier.alive()
                self.unanswered_warned = False
            elif not self.unanswered_warned:
                self.unanswered_warned = True
                log.warning("watchdog: worker(s) %s did not answer within %g s; the service "
                            "manager is not told that the broker is alive",
                            ", ".join(map(str, silent)), interval)


def _wake_only(_signum: int, _frame: object) -> None:
    """A Python-level handler must exist for a signal to reach the wake-up fd instead of its
    default action; the work is done in the supervisor's loop."""


class LinkProtocol(asyncio.Protocol):
    """The stream to one other worker: bytes in and out of `WorkerLinks`, flow control too."""

    def __init__(self, links: WorkerLinks, index: int, loop: asyncio.AbstractEventLoop,
                 stopping: Callable[[], bool]) -> None:
        self.links = links
        self.index = index
        self.loop = loop
        self.stopping = stopping

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=LINK_HIGH_WATER, low=LINK_HIGH_WATER // 4)
        self.links.attach(self.index, transport, self.loop.time())

    def data_received(self, data: bytes) -> None:
        self.links.data_received(self.index, data, self.loop.time())

    def connection_lost(self, exc: Exception | None) -> None:
        # A worker that stops (first, at shutdown) or dies closes its links; the supervisor
        # stops the others then, and says why.
        self.links.detach(self.index)
        if not self.stopping():
            log.info("link to worker %d closed", self.index)

    def pause_writing(self) -> None:
        self.links.pause_writing(self.index, self.loop.time())

    def resume_writing(self) -> None:
        self.links.resume_writing(self.index)


class Handovers:
    """Connections moving between workers: sent with their socket, or relayed when they
    cannot move (TLS state, or more bytes read than one hand-over message holds)."""

    def __init__(self, broker: Broker, loop: asyncio.AbstractEventLoop, plan: WorkerPlan,
                 gates: list[ListenerGate]) -> None:
        self.broker = broker
        self.loop = loop
        self.plan = plan
        self.gates = gates
        # Sockets being wrapped in transports: held here (the loop keeps only weak references
        # to tasks), and their failures logged.
        self._starting: set[asyncio.Task[object]] = set()
        # Per worker: hand-overs (message, descriptor, peer) its socket had no room for yet.
        self._waiting: dict[int, deque[tuple[bytes, int, str]]] = {}
        for index, sock in plan.handovers.items():
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self.receive, index)

    def close(self) -> None:
        for worker, sock in self.plan.handovers.items():
            self.loop.remove_reader(sock.fileno())
            self.loop.remove_writer(sock.fileno())
            for _message, fd, _peer in self._waiting.pop(worker, ()):
                os.close(fd)

    def send(self, worker: int, sink: object, data: bytes, peer: str,
             certificate_username: str | None) -> None:
        transport = cast(asyncio.Transport, sink)
        protocol = cast(MQTTProtocol, transport.get_protocol())
        header = json.dumps({"peer": peer, "user": certificate_username,
                             "listener": self.gates.index(protocol.gate)}).encode()
        message = HANDOVER_LENGTH.pack(len(header)) + header + data
        # TLS and WebSocket state lives in this process: such a connection is relayed.
        relayed = transport.get_extra_info("sslcontext") is not None \
            or transport.get_extra_info("websocket") is not None or len(message) > MAX_HANDOVER
        if not relayed:
            # Our transport goes now; a duplicate descriptor keeps the socket open until
            # the message carrying it is sent.
            self._queue(worker, message, os.dup(transport.get_extra_info("socket").fileno()),
                        peer)
            transport.abort()
            return
        # The bytes read so far go first on the relay, not in the message.
        local, remote = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._queue(worker, HANDOVER_LENGTH.pack(len(header)) + header, remote.detach(), peer)
        relay = protocol.relay = Relay(transport)
        relay.write(data)
        self._start(self.loop.connect_accepted_socket(lambda: relay, local), peer)

    def _queue(self, worker: int, message: bytes, fd: int, peer: str) -> None:
        """Send hand-overs in order; when the owner's socket is full (a connection storm),
        they wait for it to drain instead of failing."""
        waiting = self._waiting.setdefault(worker, deque())
        waiting.append((message, fd, peer))
        if len(waiting) == 1:
            self._send_waiting(worker)

    def _send_waiting(self, worker: int) -> None:
        waiting = self._waiting[worker]
        sock = self.plan.handovers[worker]
        while waiting:
            message, fd, peer = waiting[0]
            try:
                socket.send_fds(sock, [message], [fd])
            except BlockingIOError:
                self.loop.add_writer(sock.fileno(), self._send_waiting, worker)
                return
            except OSError as exc:
                log.error("client %s: cannot hand the connection to worker %d (%s); closing it",
                          peer, worker, exc)
            os.close(fd)
            waiting.popleft()
        self.loop.remove_writer(sock.fileno())

    def receive(self, index: int) -> None:
        sock = self.plan.handovers[index]
        try:
            message, fds, _flags, _address = socket.recv_fds(sock, MAX_HANDOVER, 1)
        except BlockingIOError:
            return
        if not message:
            self.loop.remove_reader(sock.fileno())
            return
        if not fds:
            log.error("hand-over from worker %d without a socket; ignored", index)
            return
        length = HANDOVER_LENGTH.unpack_from(message)[0]
        header = json.loads(message[4:4 + length])
        moved = Moved(header["peer"], header["user"], message[4 + length:])
        client = socket.socket(fileno=fds[0])
        gate = self.gates[header["listener"]]
        self._start(self.loop.connect_accepted_socket(
            lambda: MQTTProtocol(self.broker, self.loop, gate, moved), client), moved.peer)

    def _start(self, opening: Coroutine[object, object, object], peer: str) -> None:
        task: asyncio.Task[object] = self.loop.create_task(opening)
        self._starting.add(task)

        def started(task: asyncio.Task[object]) -> None:
            self._starting.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("client %s: its connection could not be taken over: %s", peer,
                          task.exception())

        task.add_done_callback(started)
