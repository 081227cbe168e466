"""One load-generator process: its share of the clients, driven by the coordinator.

`--procs 1` runs a `Worker` inside the coordinator's event loop (`LocalHandle`); `--procs N`
starts N spawned processes, each with its own uvloop loop and `Worker`, and talks to them over a
pipe (`RemoteHandle`). Both handles offer the same five calls, so the coordinator does not know
which it has: setup (connect, subscribe), start (at an agreed monotonic instant, the same clock
in every process), snapshot (once a second, for progress and the drain check), finish (close,
return counts and histograms).

Spawned, not forked: forking a process whose event loop has live sockets and callbacks copies
them into the child, and a child must not share the parent's uvloop state.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from ..fdlimit import raise_open_file_limit
from .clients import (
    NS,
    BenchError,
    ClientProtocol,
    IdleClient,
    Subscriber,
    WorkerState,
)
from .endpoint import Endpoint, open_client
from .histogram import Histogram
from .plan import PublisherSpec, SubscriberSpec
from .procstat import run_queue_wait
from .publisher import Publisher
from .wire import PINGREQ_FRAME, PublishTemplate, connect_frame, subscribe_frames

# Connections being opened at once per process. Unbounded (or above the broker's listen
# backlog: Mosquitto's is 100) SYNs are dropped and the figures show the kernel's 1 s SYN
# retransmit timer instead of the broker.
CONNECT_CONCURRENCY = 64
CONNECT_TIMEOUT = 10.0
KEEPALIVE = 60  # seconds; a PINGREQ to every client each KEEPALIVE / 2 keeps long runs alive
# Memory a process may spend on publisher batches: many publishers get smaller batches.
BATCH_MEMORY = 8 * 1024 * 1024
BATCH_BYTES = 32 * 1024
MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """Everything one process needs; picklable, so it crosses the pipe as is."""

    worker: int
    run_id: str
    endpoint: Endpoint
    qos: int
    payload: int
    rate: float  # messages per second per publisher, 0 = as fast as flow control allows
    inflight: int
    warmup_ns: int
    duration_ns: int
    total_publishers: int
    publishers: tuple[PublisherSpec, ...] = ()
    subscribers: tuple[SubscriberSpec, ...] = ()
    idle_clients: int = 0
    idle_offset: int = 0
    username: str | None = None
    password: str | None = None
    persistent: bool = False
    mqtt5: bool = False
    # Where the subscribers connect (`endpoint`, or another node of a cluster).
    subscriber_endpoint: Endpoint | None = None


@dataclass(slots=True)
class Snapshot:
    """Counters so far: the progress line and the drain check read these."""

    sent: int = 0
    warmup_sent: int = 0
    expected: int = 0
    delivered: int = 0
    received: int = 0
    connection_errors: int = 0
    protocol_errors: int = 0
    open_clients: int = 0
    connected: int = 0
    failed: int = 0
    last_connect_ns: int = 0
    first_error: str = ""
    recent: dict[int, int] = field(default_factory=dict)  # last full second's latencies


@dataclass(slots=True)
class WorkerResult:
    """Final figures of one process; the coordinator adds these up."""

    counts: Snapshot
    window_received: int
    duplicates: int
    out_of_order: int
    unacknowledged: int
    foreign: int
    bins: list[dict[int, int]]
    max_latency: int
    sent_bins: list[int]
    cpu_seconds: float
    wait_seconds: float  # runnable but not running: another process had our CPU
    error_messages: list[str]
    connect_latency: dict[int, int]
    connect_max: int
    last_connect_ns: int


async def all_or_nothing(calls: Sequence[Awaitable[None]]) -> None:
    """Await the calls together; the first failure cancels the others and is raised.

    Plain `gather` would leave the other processes' setups running after one failed.
    """
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def bounded(factories: list[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run the coroutines at most `limit` at a time; the first failure cancels the rest."""
    semaphore = asyncio.Semaphore(limit)

    async def one(factory: Callable[[], Awaitable[None]]) -> None:
        async with semaphore:
            await factory()

    await all_or_nothing([one(factory) for factory in factories])


class Worker:
    def __init__(self, plan: WorkerPlan) -> None:
        self.plan = plan
        self.state = WorkerState()
        self.publishers: list[Publisher] = []
        self.subscribers: list[Subscriber] = []
        self.idle: list[IdleClient] = []
        self.timers: list[asyncio.TimerHandle] = []
        self.idle_task: asyncio.Task[None] | None = None
        self.connect_latency = Histogram()
        self.connected = 0
        self.failed = 0
        self.last_connect_ns = 0

    def connect(self, client_id: str, clean_session: bool = True) -> bytes:
        return connect_frame(client_id, KEEPALIVE, self.plan.username, self.plan.password,
                             clean_session, mqtt5=self.plan.mqtt5)

    async def setup(self) -> None:
        """Connect and subscribe every subscriber, then connect every publisher.

        Subscriptions are acknowledged (SUBACK) before this returns, and the coordinator starts
        publishing only when every process has returned, so no message is published before
        all of its subscribers exist.
        """
        raise_open_file_limit()
        plan = self.plan
        await bounded([self._subscriber_factory(spec) for spec in plan.subscribers],
                      CONNECT_CONCURRENCY)
        publisher_count = max(1, len(plan.publishers))
        batch_bytes = max(1, min(BATCH_BYTES, BATCH_MEMORY // publisher_count))
        await bounded([self._publisher_factory(spec, batch_bytes) for spec in plan.publishers],
                      CONNECT_CONCURRENCY)

    def _subscriber_factory(self, spec: SubscriberSpec) -> Callable[[], Awaitable[None]]:
        plan = self.plan

        async def connect_and_subscribe() -> None:
            client_id = f"cb{plan.run_id}s{spec.index}"
            client = Subscriber(self.state, client_id, spec, plan.total_publishers, plan.qos,
                                payload=plan.payload, mqtt5=plan.mqtt5)
            self.subscribers.append(client)
            endpoint = plan.subscriber_endpoint or plan.endpoint
            await open_client(client, endpoint,
                              self.connect(client_id, clean_session=not plan.persistent),
                              CONNECT_TIMEOUT)
            frames = subscribe_frames(list(spec.filters), plan.qos, mqtt5=plan.mqtt5)
            done = client.expect_subacks(len(frames))
            for frame in frames:
                client.send(frame)
            try:
                await asyncio.wait_for(done, CONNECT_TIMEOUT)
            except TimeoutError:
                raise BenchError(f"no SUBACK from {endpoint} within "
                                 f"{CONNECT_TIMEOUT:g} s") from None

        return connect_and_subscribe

    def _publisher_factory(self, spec: PublisherSpec,
                           batch_bytes: int) -> Callable[[], Awaitable[None]]:
        plan = self.plan

        async def connect() -> None:
            client_id = f"cb{plan.run_id}p{spec.index}"
            template = PublishTemplate(spec.topic, plan.payload, plan.qos, 1, mqtt5=plan.mqtt5)
            count = max(1, min(MAX_BATCH, batch_bytes // template.frame_size))
            if count > 1:
                template = PublishTemplate(spec.topic, plan.payload, plan.qos, count,
                                           mqtt5=plan.mqtt5)
            client = Publisher(self.state, client_id, spec, template=template, qos=plan.qos,
                               inflight=plan.inflight, rate=plan.rate, mqtt5=plan.mqtt5)
            self.publishers.append(client)
            await open_client(client, plan.endpoint, self.connect(client_id),
                              CONNECT_TIMEOUT)

        return connect

    def start(self, t0_ns: int) -> None:
        """Warm-up begins at `t0_ns`, measuring at t0 + warm-up, publishing stops after it."""
        plan = self.plan
        state = self.state
        state.measure_start = t0_ns + plan.warmup_ns
        state.measure_end = state.measure_start + plan.duration_ns
        loop = asyncio.get_running_loop()
        now = time.monotonic_ns()

        def at(instant: int, callback: Callable[[], None]) -> None:
            self.timers.append(loop.call_later(max(0.0, (instant - now) / NS), callback))

        def cpu_start() -> None:
            state.cpu_at_start = time.process_time()
            state.wait_at_start = run_queue_wait()

        def cpu_end() -> None:
            state.cpu_at_end = time.process_time()
            state.wait_at_end = run_queue_wait()
            for publisher in self.publishers:
                publisher.stop()

        if not plan.idle_clients:  # conns measures its CPU over the connecting phase instead
            at(state.measure_start, cpu_start)
            at(state.measure_end, cpu_end)
        count = len(self.publishers)
        for number, publisher in enumerate(self.publishers):
            # With --rate, spread the publishers' first sends over one interval, so N
            # publishers do not fire in lockstep bursts.
            offset = int(number / count * NS / plan.rate) if plan.rate else 0
            publisher.begin(t0_ns + offset, state.measure_end)
        self.timers.append(loop.call_later(KEEPALIVE / 2, self._ping))
        if plan.idle_clients:
            self.idle_task = asyncio.ensure_future(self._open_idle(t0_ns))

    def _ping(self) -> None:
        for client in self._clients():
            client.send(PINGREQ_FRAME)
        self.timers.append(asyncio.get_running_loop().call_later(KEEPALIVE / 2, self._ping))

    def _clients(self) -> list[ClientProtocol]:
        return [*self.subscribers, *self.publishers, *self.idle]

    async def _open_idle(self, t0_ns: int) -> None:
        plan = self.plan
        await asyncio.sleep(max(0.0, (t0_ns - time.monotonic_ns()) / NS))
        self.state.cpu_at_start = time.process_time()
        self.state.wait_at_start = run_queue_wait()

        def factory(number: int) -> Callable[[], Awaitable[None]]:
            async def connect() -> None:
                client_id = f"cb{plan.run_id}c{number}"
                client = IdleClient(self.state, client_id, mqtt5=plan.mqtt5)
                begun = time.monotonic_ns()
                try:
                    await open_client(client, plan.endpoint, self.connect(client_id),
                                      CONNECT_TIMEOUT)
                except BenchError as exc:
                    self.failed += 1
                    self.state.error("connection", str(exc))
                    return
                done = time.monotonic_ns()
                self.idle.append(client)
                self.connected += 1
                self.last_connect_ns = done
                self.connect_latency.record((done - begun) // 1000)

            return connect

        first = plan.idle_offset
        await bounded([factory(first + i) for i in range(plan.idle_clients)],
                      CONNECT_CONCURRENCY)
        self.state.cpu_at_end = time.process_time()
        self.state.wait_at_end = run_queue_wait()

    def snapshot(self) -> Snapshot:
        state = self.state
        recent: dict[int, int] = {}
        second = (time.monotonic_ns() - state.measure_start) // NS
        if 1 <= second <= len(state.bins):
            counts = state.bins[second - 1]
            recent = {index: count for index, count in enumerate(counts) if count}
        return Snapshot(
            sent=state.sent, warmup_sent=state.warmup_sent, expected=state.expected,
            delivered=state.delivered, received=state.received,
            connection_errors=state.connection_errors, protocol_errors=state.protocol_errors,
            open_clients=state.open_clients, connected=self.connected, failed=self.failed,
            last_connect_ns=self.last_connect_ns,
            first_error=state.error_messages[0] if state.error_messages else "", recent=recent)

    async def finish(self) -> WorkerResult:
        """Stop, say DISCONNECT, close every socket and hand back the figures."""
        for timer in self.timers:
            timer.cancel()
        if self.idle_task is not None:
            self.idle_task.cancel()
            await asyncio.gather(self.idle_task, return_exceptions=True)
        state = self.state
        if not state.cpu_at_end:
            state.cpu_at_end = time.process_time()
            state.wait_at_end = run_queue_wait()
        counts = self.snapshot()
        unacknowledged = sum(len(publisher.inflight) for publisher in self.publishers)
        for client in self._clients():
            client.close()
        await asyncio.sleep(0.05)  # let the transports flush DISCONNECT and close
        return WorkerResult(
            counts=counts,
            window_received=state.window_received,
            duplicates=state.duplicates,
            out_of_order=state.out_of_order,
            unacknowledged=unacknowledged,
            foreign=sum(subscriber.foreign for subscriber in self.subscribers),
            bins=[{index: count for index, count in enumerate(counts_) if count}
                  for counts_ in state.bins],
            max_latency=state.max_latency,
            sent_bins=list(state.sent_bins),
            cpu_seconds=max(0.0, state.cpu_at_end - state.cpu_at_start),
            wait_seconds=max(0.0, state.wait_at_end - state.wait_at_start),
            error_messages=list(state.error_messages),
            connect_latency=self.connect_latency.to_sparse(),
            connect_max=self.connect_latency.max_value,
            last_connect_ns=self.last_connect_ns,
        )

    def abort(self) -> None:
        """Close everything at once (interrupt or fatal error elsewhere)."""
        for timer in self.timers:
            timer.cancel()
        if self.idle_task is not None:
            self.idle_task.cancel()
        for client in self._clients():
            client.close()


# -- handles: the coordinator's view of a worker, in-process or over a pipe -------------------

class LocalHandle:
    """A worker in the coordinator's own event loop (--procs 1): no pipe, no pickling."""

    def __init__(self, plan: WorkerPlan) -> None:
        self.worker = Worker(plan)

    async def setup(self) -> None:
        await self.worker.setup()

    async def start(self, t0_ns: int) -> None:
        self.worker.start(t0_ns)

    async def snapshot(self) -> Snapshot:
        return self.worker.snapshot()

    async def finish(self) -> WorkerResult:
        return await self.worker.finish()

    def close(self) -> None:
        self.worker.abort()


async def receive(conn: Connection) -> Any:
    """Await one message on a multiprocessing pipe without blocking the event loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    fd = conn.fileno()

    def ready() -> None:
        loop.remove_reader(fd)
        if future.done():
            return
        # The loop made the descriptor non-blocking; Connection.recv and send expect a
        # blocking one and fail with EAGAIN mid-message (a result is larger than a pipe).
        os.set_blocking(fd, True)
        try:
            future.set_result(conn.recv())
        except (EOFError, OSError) as exc:
            future.set_exception(EOFError(str(exc)))

    loop.add_reader(fd, ready)
    try:
        return await future
    finally:
        loop.remove_reader(fd)


class RemoteHandle:
    """A worker in a spawned process; each call is one request and one reply on the pipe."""

    def __init__(self, plan: WorkerPlan) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=process_main, args=(child,), name=f"culex-bench-{plan.worker}", daemon=True)
        self.process.start()
        child.close()
        self.plan = plan

    async def call(self, command: str, argument: object = None) -> Any:
        self.conn.send((command, argument))
        try:
            status, value = await receive(self.conn)
        except EOFError:
            raise BenchError(f"load generator process {self.plan.worker} died") from None
        if status == "error":
            raise BenchError(str(value))
        return value

    async def setup(self) -> None:
        await self.call("setup", self.plan)

    async def start(self, t0_ns: int) -> None:
        await self.call("start", t0_ns)

    async def snapshot(self) -> Snapshot:
        result: Snapshot = await self.call("snapshot")
        return result

    async def finish(self) -> WorkerResult:
        result: WorkerResult = await self.call("finish")
        self.process.join(5)
        return result

    def close(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(2)
        self.conn.close()


Handle = LocalHandle | RemoteHandle


def process_main(conn: Connection) -> None:
    """Entry point of a spawned load-generator process."""
    # Ctrl-C reaches the whole process group; the coordinator alone decides what happens.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import uvloop  # noqa: PLC0415 - a dependency, imported where the loop is made

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(_serve(conn))
    finally:
        loop.close()
        conn.close()


async def _serve(conn: Connection) -> None:
    worker: Worker | None = None
    while True:
        try:
            command, argument = await receive(conn)
        except EOFError:
            if worker is not None:
                worker.abort()
            return  # the coordinator is gone
        try:
            reply: object = None
            if command == "setup":
                worker = Worker(argument)
                await worker.setup()
            elif worker is None:
                raise BenchError(f"{command} before setup")
            elif command == "start":
                worker.start(argument)
            elif command == "snapshot":
                reply = worker.snapshot()
            elif command == "finish":
                conn.send(("ok", await worker.finish()))
                return
            conn.send(("ok", reply))
        except BenchError as exc:
            conn.send(("error", str(exc)))
        except Exception as exc:
            conn.send(("error", f"load generator process failed: {exc!r}"))
