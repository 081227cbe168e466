"""Worker processes: the supervisor that forks them, and the links and hand-overs between them.

The supervisor opens the listening sockets and, for every pair of workers, two socket pairs: a
stream for routing records (culex/core/cluster.py) and a SOCK_SEQPACKET pair that carries a
client's socket (SCM_RIGHTS) with the bytes already read from it to the worker that owns its
client id. Then it forks the workers, which all accept on the same listening sockets, and waits:
signals are passed on, and if one worker dies the others are stopped too (a half broker would
route to a dead peer), so a service manager restarts the whole. Each worker dies with the
supervisor (PR_SET_PDEATHSIG), so `kill -9` of the supervisor stops everything at once, like
the single process it replaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
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
from ..core.cluster import Cluster, owner_of
from ..logs import setup_logging
from ..storage.sqlite import SqliteStorage
from .listeners import ListeningSockets
from .transport import ListenerGate, Moved, MQTTProtocol, Relay

log = logging.getLogger("culex")

# A hand-over is one SEQPACKET message: its size is bounded by the socket's send buffer. A
# CONNECT with a large will (and what followed it) goes through a relay instead.
MAX_HANDOVER = 128 * 1024
HANDOVER_LENGTH = struct.Struct(">I")
PR_SET_PDEATHSIG = 1
# Passed on to every worker (SIGHUP: reload the password and ACL files).
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
# After a worker died: how long the others get to stop on SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 10.0
# A peer link may buffer this much before its publishers are paused (see cluster.Peer): as
# much as a client connection (limits.max_write_buffer's default). A flood waits in it, so it
# is latency: 4 MB gave QoS 1 floods across workers a p99 of 200-390 ms, 256 KB 40-50 ms, at
# no cost to fan-out throughput.
LINK_HIGH_WATER = 256 * 1024


class PeerLost(Exception):
    """Another worker stopped before this one could serve: it exits too (the supervisor is
    stopping the broker)."""


@dataclass
class WorkerPlan:
    """What one worker is given at fork: its index, the shared listening sockets, and its
    ends of the links to every other worker."""

    index: int
    size: int
    listening: list[socket.socket]
    links: dict[int, socket.socket] = field(default_factory=dict)
    handovers: dict[int, socket.socket] = field(default_factory=dict)


def run_supervisor(config: Config, serve_worker: Callable[[Config, WorkerPlan], int]) -> int:
    """Fork `config.worker_count()` workers running `serve_worker` and wait for them."""
    size = config.worker_count()
    if config.storage.durability != "none":
        # Before any worker opens the file: migrations, and the clean-up that only a process
        # seeing every session may do.
        storage = SqliteStorage(Path(config.storage.path),
                                durable=config.storage.durability == "sync",
                                call_soon_threadsafe=lambda *args: None)
        storage.prepare(lambda key: owner_of(key, size))
        storage.close()
    listening = ListeningSockets(config.listeners)
    plans = [WorkerPlan(index, size, listening.sockets) for index in range(size)]
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
    # Until a worker's event loop handles them (`serve` unblocks them), stop signals wait: a
    # SIGTERM during start-up then stops it cleanly instead of killing it. The supervisor
    # unblocks them once its own handlers are in place, so none is lost either.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    for plan in plans:
        pid = os.fork()
        if pid == 0:
            os._exit(_child(plan, plans, supervisor, config, serve_worker))
        children[pid] = plan.index
    for plan in plans:
        for sock in (*plan.links.values(), *plan.handovers.values()):
            sock.close()
    listening.close()
    log.info("supervisor %d: %d workers started (pids %s)", supervisor, size,
             ", ".join(str(pid) for pid in children))
    try:
        return _wait(children)
    finally:
        listening.remove_files()


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
        setup_logging(config.logging.level, config.logging.format, plan.index)
        return serve_worker(config, plan)
    except BaseException:
        log.exception("worker %d failed", plan.index)
        return 1
    finally:
        sys.stderr.flush()


def _wait(children: dict[int, int]) -> int:
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    status = 0
    kill_at: float | None = None
    while children:
        # Blocked in wait() while the workers serve; polled only once a grace period runs.
        pid, code = os.wait() if kill_at is None else os.waitpid(-1, os.WNOHANG)
        if not pid:
            if kill_at is not None and time.monotonic() >= kill_at:
                # A worker stopped by its peer's death may be waiting, signals blocked, for
                # that peer to announce itself at start-up: it would never exit by itself.
                for other in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(other, signal.SIGKILL)
                kill_at = None
            time.sleep(0.05)
            continue
        index = children.pop(pid, None)
        if index is None:
            continue
        exit_code = os.waitstatus_to_exitcode(code)
        if not stopping:
            log.error("worker %d (pid %d) exited with %d: stopping the others", index, pid,
                      exit_code)
            stopping = True
            status = 1
            kill_at = time.monotonic() + STOP_GRACE_SECONDS
            for other in children:
                os.kill(other, signal.SIGTERM)
        elif exit_code:
            status = 1
    return status


class PeerLink(asyncio.Protocol):
    """The stream to one peer worker: bytes in and out of `Cluster`, flow control too."""

    def __init__(self, cluster: Cluster, index: int, loop: asyncio.AbstractEventLoop,
                 stopping: Callable[[], bool]) -> None:
        self.cluster = cluster
        self.index = index
        self.loop = loop
        self.stopping = stopping

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=LINK_HIGH_WATER, low=LINK_HIGH_WATER // 4)
        self.cluster.attach(self.index, transport, self.loop.time())

    def data_received(self, data: bytes) -> None:
        self.cluster.data_received(self.index, data, self.loop.time())

    def connection_lost(self, exc: Exception | None) -> None:
        # A worker that stops (first, at shutdown) or dies closes its links; the supervisor
        # stops the others then, and says why.
        self.cluster.detach(self.index)
        if not self.stopping():
            log.info("link to worker %d closed", self.index)

    def pause_writing(self) -> None:
        self.cluster.pause_writing(self.index, self.loop.time())

    def resume_writing(self) -> None:
        self.cluster.resume_writing(self.index)


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
