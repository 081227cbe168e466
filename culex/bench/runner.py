"""The coordinator: sets the workers up, runs the clock, prints progress, drains, merges.

One run is: setup (every process connects and subscribes; the slowest decides), a common start
instant a little in the future, `--warmup` seconds whose messages are not counted, `--duration`
seconds measured, then publishing stops and the coordinator waits until every expected message
has arrived or nothing has arrived for `--drain` seconds, whichever is first. Only then is loss
counted: counting at the end of the timed phase, or after a fixed wait, would call "lost" the
messages still in flight or in socket buffers (a flood fills megabytes of them per subscriber
faster than a slow reader empties them).

All figures come from counters and histograms the workers keep; the coordinator only adds them
up, so `--procs 4` and `--procs 1` report the same kind of numbers.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .clients import NS, BenchError
from .endpoint import Endpoint
from .histogram import Histogram
from .plan import Plan, split_clients
from .procstat import ProcessSampler
from .worker import (
    Handle,
    LocalHandle,
    RemoteHandle,
    Snapshot,
    WorkerPlan,
    WorkerResult,
    all_or_nothing,
)

PERCENTILES = (50.0, 95.0, 99.0, 99.9)
PROGRESS_SECONDS = 1.0
DRAIN_POLL_SECONDS = 0.05
# However steadily messages trickle in after publishing stopped, the drain ends this long after
# it began: a run ends.
MAX_DRAIN_SECONDS = 120
# Lead time between "start" being sent and the first publish: every process must have the
# command (a pipe round trip for --procs > 1) before the instant arrives.
START_LEAD_NS = {True: 300_000_000, False: 50_000_000}


@dataclass(frozen=True, slots=True)
class Options:
    endpoint: Endpoint
    qos: int
    duration: float
    warmup: float
    rate: float
    inflight: int
    procs: int
    drain: float
    broker_pid: int | None = None
    username: str | None = None
    password: str | None = None
    persistent: bool = False
    mqtt5: bool = False
    # Where subscribers connect, when not to `endpoint` (another node of a cluster).
    subscriber_endpoint: Endpoint | None = None

    @property
    def protocol(self) -> str:
        """The MQTT version every client spoke, as the report shows it."""
        return "5" if self.mqtt5 else "3.1.1"


@dataclass(slots=True)
class BrokerFigures:
    cpu_percent: float
    cpu_wait_percent: float  # runnable but waiting for a CPU: starved by something else
    rss_mb: float
    rss_peak_mb: float


@dataclass(slots=True)
class TimelinePoint:
    """One second of the measured window (and of the drain after it), by receive time."""

    second: int
    sent: int
    delivered: int
    p50_us: int
    p99_us: int
    max_us: int
    broker_cpu_percent: float | None = None
    broker_rss_mb: float | None = None


@dataclass(slots=True)
class TrafficResult:
    label: str
    scenario: str
    qos: int
    payload: int
    publishers: int
    subscribers: int
    duration_s: float
    warmup_s: float
    rate: float
    procs: int
    sent: int
    delivered: int
    expected: int
    publish_rate: float
    delivery_rate: float
    latency: Histogram
    connection_errors: int
    protocol_errors: int
    duplicates: int | None
    out_of_order: int | None
    unacknowledged: int
    bench_cpu_percent: float
    bench_wait_percent: float
    broker: BrokerFigures | None
    timeline: list[TimelinePoint]
    protocol: str = "3.1.1"
    error_messages: list[str] = field(default_factory=list)

    @property
    def loss(self) -> int:
        return self.expected - self.delivered

    @property
    def loss_percent(self) -> float:
        return 100.0 * self.loss / self.expected if self.expected else 0.0


@dataclass(slots=True)
class ConnsResult:
    label: str
    clients: int
    connected: int
    failed: int
    seconds_to_all: float
    connect_rate: float
    connect_latency: Histogram
    held_s: float
    still_open: int
    procs: int
    connection_errors: int
    protocol_errors: int
    bench_cpu_percent: float
    bench_wait_percent: float
    broker: BrokerFigures | None
    broker_rss_before_mb: float | None
    broker_cpu_connecting: float | None
    broker_kb_per_connection: float | None
    protocol: str = "3.1.1"
    error_messages: list[str] = field(default_factory=list)


Result = TrafficResult | ConnsResult


async def sleep_until(instant_ns: int) -> None:
    await asyncio.sleep(max(0.0, (instant_ns - time.monotonic_ns()) / NS))


def mb(size: int) -> float:
    return size / (1024 * 1024)


def fmt_int(value: float) -> str:
    return f"{value:,.0f}"


class Coordinator:
    """Runs one `Plan` with `Options`; `progress` receives the once-a-second status line."""

    def __init__(self, plan: Plan, options: Options, run_id: str,
                 progress: Callable[[str], None]) -> None:
        self.plan = plan
        self.options = options
        self.run_id = run_id
        self.progress = progress
        self.sampler = ProcessSampler(options.broker_pid) if options.broker_pid else None
        self.handles: list[Handle] = []

    def worker_plans(self) -> list[WorkerPlan]:
        plan, options = self.plan, self.options
        publishers = len(plan.publishers)
        rate = options.rate / publishers if options.rate and publishers else 0.0
        plans = []
        idle_offset = 0
        for number, (pubs, subs, idle) in enumerate(split_clients(plan, options.procs)):
            plans.append(WorkerPlan(
                worker=number, run_id=self.run_id, endpoint=options.endpoint,
                qos=options.qos, payload=plan.payload, rate=rate, inflight=options.inflight,
                warmup_ns=int(options.warmup * NS), duration_ns=int(options.duration * NS),
                total_publishers=publishers, publishers=tuple(pubs), subscribers=tuple(subs),
                idle_clients=idle, idle_offset=idle_offset, username=options.username,
                password=options.password, persistent=options.persistent,
                mqtt5=options.mqtt5,
                subscriber_endpoint=options.subscriber_endpoint or options.endpoint))
            idle_offset += idle
        return plans

    async def run(self) -> Result:
        remote = self.options.procs > 1
        try:
            for worker_plan in self.worker_plans():
                handle: Handle = RemoteHandle(worker_plan) if remote else LocalHandle(worker_plan)
                self.handles.append(handle)
            await all_or_nothing([handle.setup() for handle in self.handles])
            t0 = time.monotonic_ns() + START_LEAD_NS[remote]
            if self.plan.idle_clients:
                return await self.run_conns(t0)
            return await self.run_traffic(t0)
        finally:
            for handle in self.handles:
                handle.close()

    async def snapshots(self) -> list[Snapshot]:
        return list(await asyncio.gather(*(handle.snapshot() for handle in self.handles)))

    async def sample_broker(self, start_ns: int, end_ns: int) -> None:
        """Sample the broker at the window's edges and each second between."""
        if self.sampler is None:
            return
        instant = start_ns
        while True:
            await sleep_until(instant)
            try:
                self.sampler.sample()
            except BenchError as exc:
                self.progress(f"warning: {exc}; broker figures stop here")
                return
            if instant >= end_ns:
                return
            instant = min(instant + NS, end_ns)

    def broker_line(self) -> str:
        if self.sampler is None or len(self.sampler.samples) < 2:
            return ""
        before, last = self.sampler.samples[-2], self.sampler.samples[-1]
        elapsed = (last.monotonic_ns - before.monotonic_ns) / NS
        if elapsed <= 0:
            return ""
        cpu = 100 * (last.cpu_seconds - before.cpu_seconds) / elapsed
        wait = 100 * (last.wait_seconds - before.wait_seconds) / elapsed
        return f"  broker {cpu:.0f}% cpu ({wait:.0f}% waiting) {mb(last.rss_bytes):.0f} MB"

    # -- traffic scenarios ----------------------------------------------------------------

    async def run_traffic(self, t0: int) -> TrafficResult:
        options = self.options
        await all_or_nothing([handle.start(t0) for handle in self.handles])
        start = t0 + int(options.warmup * NS)
        end = start + int(options.duration * NS)
        sampling = asyncio.ensure_future(self.sample_broker(start, end))
        try:
            await self.watch_traffic(t0, start, end)
            await sampling
        finally:
            sampling.cancel()
        results = list(await asyncio.gather(*(handle.finish() for handle in self.handles)))
        return self.merge_traffic(results, start, end)

    async def watch_traffic(self, t0: int, start: int, end: int) -> None:
        """Progress once a second until the end, then the drain: until every expected message
        arrived, or none for `--drain` seconds."""
        options = self.options
        quiet = int(options.drain * NS)
        drain_end = end + quiet
        drain_limit = end + MAX_DRAIN_SECONDS * NS
        drained = 0
        tick = t0 + int(PROGRESS_SECONDS * NS)
        last_time, last_sent, last_received = t0, 0, 0
        while True:
            now = time.monotonic_ns()
            draining = now >= end
            if draining:
                await sleep_until(min(now + int(DRAIN_POLL_SECONDS * NS), drain_end))
            else:
                await sleep_until(min(tick, end))
            now = time.monotonic_ns()
            snaps = await self.snapshots()
            total = sum_snapshots(snaps)
            if total.open_clients == 0:
                reason = total.first_error
                raise BenchError("lost every connection to the broker"
                                 + (f" ({reason})" if reason else ""))
            if draining:
                if total.delivered > drained:
                    drained = total.delivered
                    drain_end = min(now + quiet, drain_limit)
                if total.delivered >= total.expected or now >= drain_end:
                    return
            if now >= tick:
                elapsed = (now - last_time) / NS
                sent = total.sent + total.warmup_sent
                middle = (last_time + now) // 2  # the phase most of the interval was in
                phase = ("warm-up" if middle < start else "measure" if middle < end
                         else "drain")
                recent = Histogram.from_sparse(total.recent, 0)
                latency = (f"p50 {fmt_int(recent.percentile(50))} us"
                           f"  p99 {fmt_int(recent.percentile(99))} us" if recent.total
                           else "p50 - us  p99 - us")
                self.progress(
                    f"{self.plan.label}: {phase} {(now - t0) / NS:5.1f} s"
                    f"  sent {fmt_int((sent - last_sent) / elapsed)}/s"
                    f"  received {fmt_int((total.received - last_received) / elapsed)}/s"
                    f"  {latency}"
                    f"  errors {total.connection_errors + total.protocol_errors}"
                    + self.broker_line())
                last_time, last_sent, last_received = now, sent, total.received
                tick += int(PROGRESS_SECONDS * NS)

    def broker_figures(self, start: int, end: int) -> BrokerFigures | None:
        if self.sampler is None:
            return None
        cpu, wait, rss, peak = self.sampler.between(start, end)
        return BrokerFigures(cpu, wait, mb(rss), mb(peak))

    def merge_traffic(self, results: list[WorkerResult], start: int,
                      end: int) -> TrafficResult:
        plan, options = self.plan, self.options
        counts = sum_snapshots([result.counts for result in results])
        seconds = max((len(result.bins) for result in results), default=0)
        seconds = max(seconds, max((len(result.sent_bins) for result in results), default=0))
        latency = Histogram()
        timeline: list[TimelinePoint] = []
        broker_points = self.broker_per_second(start)
        for second in range(seconds):
            histogram = Histogram()
            for result in results:
                if second < len(result.bins):
                    histogram.merge(Histogram.from_sparse(result.bins[second], 0))
            latency.merge(histogram)
            sent = sum(result.sent_bins[second] for result in results
                       if second < len(result.sent_bins))
            cpu, rss = broker_points[second] if second < len(broker_points) else (None, None)
            timeline.append(TimelinePoint(
                second, sent, histogram.total, histogram.percentile(50),
                histogram.percentile(99), histogram.percentile(100), cpu, rss))
        latency.max_value = max([latency.max_value, *(r.max_latency for r in results)])
        duration = options.duration
        qos = options.qos
        return TrafficResult(
            label=plan.label, scenario=plan.scenario, protocol=options.protocol, qos=qos,
            payload=plan.payload,
            publishers=len(plan.publishers), subscribers=len(plan.subscribers),
            duration_s=duration, warmup_s=options.warmup, rate=options.rate,
            procs=len(results), sent=counts.sent, delivered=counts.delivered,
            expected=counts.expected, publish_rate=counts.sent / duration,
            delivery_rate=sum(result.window_received for result in results) / duration,
            latency=latency, connection_errors=counts.connection_errors,
            protocol_errors=counts.protocol_errors,
            duplicates=sum(r.duplicates for r in results) if qos else None,
            out_of_order=sum(r.out_of_order for r in results) if qos else None,
            unacknowledged=sum(result.unacknowledged for result in results),
            bench_cpu_percent=100.0 * sum(r.cpu_seconds for r in results) / duration,
            bench_wait_percent=100.0 * sum(r.wait_seconds for r in results) / duration,
            broker=self.broker_figures(start, end), timeline=timeline,
            error_messages=distinct_messages(results))

    def broker_per_second(self, start: int) -> list[tuple[float | None, float | None]]:
        """Broker CPU % and RSS for each second of the window, from consecutive samples."""
        if self.sampler is None:
            return []
        samples = [s for s in self.sampler.samples if s.monotonic_ns >= start]
        points: list[tuple[float | None, float | None]] = []
        for before, after in itertools.pairwise(samples):
            elapsed = (after.monotonic_ns - before.monotonic_ns) / NS
            if elapsed < 0.5:
                continue  # the short stub at the window's end
            cpu = 100 * (after.cpu_seconds - before.cpu_seconds) / elapsed
            points.append((cpu, mb(after.rss_bytes)))
        return points

    # -- conns ------------------------------------------------------------------------------

    async def run_conns(self, t0: int) -> ConnsResult:
        """Open every idle client (CONNECT_CONCURRENCY at a time per process), then hold."""
        plan, options = self.plan, self.options
        connect_start = time.monotonic_ns()
        rss_before = self.sampler.sample().rss_bytes if self.sampler else None
        await all_or_nothing([handle.start(t0) for handle in self.handles])
        tick = t0 + int(PROGRESS_SECONDS * NS)
        while True:
            total = sum_snapshots(await self.snapshots())
            now = time.monotonic_ns()
            if total.connected + total.failed >= plan.idle_clients:
                break
            if now >= tick:
                if self.sampler:
                    self.sampler.sample()
                self.progress(f"{plan.label}: connecting {(now - t0) / NS:5.1f} s"
                              f"  connected {fmt_int(total.connected)}"
                              f"/{fmt_int(plan.idle_clients)}  failed {fmt_int(total.failed)}"
                              + self.broker_line())
                tick += int(PROGRESS_SECONDS * NS)
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        if not total.connected:
            raise BenchError(total.first_error or "no connection succeeded")
        seconds_to_all = max(0.0, (total.last_connect_ns - t0) / NS)
        hold_start = time.monotonic_ns()
        connecting = None
        if self.sampler is not None:
            self.sampler.sample()
            connecting = self.sampler.between(connect_start, time.monotonic_ns())[0]
        hold_end = hold_start + int(options.duration * NS)
        sampling = asyncio.ensure_future(self.sample_broker(hold_start, hold_end))
        try:
            while time.monotonic_ns() < hold_end:
                await sleep_until(min(time.monotonic_ns() + int(PROGRESS_SECONDS * NS),
                                      hold_end))
                total = sum_snapshots(await self.snapshots())
                self.progress(f"{plan.label}: holding {fmt_int(total.open_clients)} connections"
                              f" {(time.monotonic_ns() - hold_start) / NS:5.1f} s"
                              + self.broker_line())
            await sampling
        finally:
            sampling.cancel()
        results = list(await asyncio.gather(*(handle.finish() for handle in self.handles)))
        counts = sum_snapshots([result.counts for result in results])
        connect_latency = Histogram()
        for result in results:
            connect_latency.merge(Histogram.from_sparse(result.connect_latency,
                                                        result.connect_max))
        broker = self.broker_figures(hold_start, hold_end)
        per_connection = None
        if broker is not None and rss_before is not None and counts.connected:
            per_connection = (broker.rss_mb * 1024 - rss_before / 1024) / counts.connected
        return ConnsResult(
            label=plan.label, protocol=options.protocol, clients=plan.idle_clients,
            connected=counts.connected,
            failed=counts.failed, seconds_to_all=seconds_to_all,
            connect_rate=counts.connected / seconds_to_all if seconds_to_all > 0 else 0.0,
            connect_latency=connect_latency, held_s=options.duration,
            still_open=counts.open_clients, procs=len(results),
            connection_errors=counts.connection_errors,
            protocol_errors=counts.protocol_errors,
            bench_cpu_percent=(100.0 * sum(r.cpu_seconds for r in results) / seconds_to_all
                               if seconds_to_all > 0 else 0.0),
            bench_wait_percent=(100.0 * sum(r.wait_seconds for r in results) / seconds_to_all
                                if seconds_to_all > 0 else 0.0),
            broker=broker,
            broker_rss_before_mb=mb(rss_before) if rss_before is not None else None,
            broker_cpu_connecting=connecting,
            broker_kb_per_connection=per_connection,
            error_messages=distinct_messages(results))


def distinct_messages(results: Sequence[WorkerResult], limit: int = 5) -> list[str]:
    """The first few different error messages (10,000 refused clients say the same thing)."""
    seen: list[str] = []
    for result in results:
        for message in result.error_messages:
            if message not in seen and len(seen) < limit:
                seen.append(message)
    return seen


def sum_snapshots(snaps: Sequence[Snapshot]) -> Snapshot:
    total = Snapshot()
    recent = Histogram()
    for snap in snaps:
        total.sent += snap.sent
        total.warmup_sent += snap.warmup_sent
        total.expected += snap.expected
        total.delivered += snap.delivered
        total.received += snap.received
        total.connection_errors += snap.connection_errors
        total.protocol_errors += snap.protocol_errors
        total.open_clients += snap.open_clients
        total.connected += snap.connected
        total.failed += snap.failed
        total.last_connect_ns = max(total.last_connect_ns, snap.last_connect_ns)
        total.first_error = total.first_error or snap.first_error
        recent.merge(Histogram.from_sparse(snap.recent, 0))
    total.recent = recent.to_sparse()
    return total


def run_plans(plans: Sequence[Plan], options: Options, run_id: str,
              progress: Callable[[str], None] | None = None) -> list[Result]:
    """Run each plan in turn on a fresh uvloop loop (what `culex bench` calls)."""
    import uvloop  # noqa: PLC0415 - a dependency, imported where the loop is made

    def default_progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = progress or default_progress
    results: list[Result] = []
    loop = uvloop.new_event_loop()
    try:
        for plan in plans:
            task = loop.create_task(Coordinator(plan, options, run_id, report).run())
            # Ctrl-C cancels the run, so every `finally` closes its sockets and processes
            # inside the running loop instead of in a half-torn-down one.
            loop.add_signal_handler(signal.SIGINT, task.cancel)
            try:
                results.append(loop.run_until_complete(task))
            except asyncio.CancelledError:
                raise KeyboardInterrupt from None
            finally:
                loop.remove_signal_handler(signal.SIGINT)
    finally:
        loop.close()
    return results

