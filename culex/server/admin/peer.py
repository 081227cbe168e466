"""One worker's part of the admin API: what it answers about its own share of the broker, to
its own HTTP server (worker 0, or the single process) and to worker 0's questions over the
links (the `answers` table). Every worker has one while the admin listener is on; none imports
aiohttp.

Arguments come as JSON-ready dicts, checked by the HTTP layer before they are asked here or
sent to another worker; answers are JSON-ready too, a page of a list at a time.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from typing import Any

from ...core.broker import Broker
from ...core.inspect import Inspector
from ...core.steer import disconnect
from ...core.tracing import ClientTraces, PacketTrace
from ...core.worker_queries import Answer, WorkerQueries
from ...storage.base import ClusterStorage
from ...storage.sqlite import SqliteStorage
from ..transport import ListenerGate
from .looplag import LoopLag

# A trace another worker asked for ends by itself this long after its end was due, should
# the end never be asked for (worker 0 stops it; this is the backstop).
TRACE_GRACE_SECONDS = 10.0
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class AdminPeer:
    def __init__(self, broker: Broker, loop: asyncio.AbstractEventLoop, *, index: int,
                 storage: SqliteStorage | ClusterStorage | None, gates: list[ListenerGate]) -> None:
        self.broker = broker
        self.loop = loop
        self.index = index
        self.inspector = Inspector(broker)
        self.lag = LoopLag(loop)
        self.traces = ClientTraces(broker.manager, time.time)
        self._storage = storage
        self._gates = gates
        # Set with workers: how this worker sends what it traces to worker 0.
        self.queries: WorkerQueries | None = None
        # Traces worker 0 asked this worker for, by its id for them.
        self._remote_traces: dict[int, tuple[PacketTrace, asyncio.TimerHandle]] = {}

    def start(self) -> None:
        self.lag.start()

    def stop(self) -> None:
        self.lag.stop()
        for trace, timer in self._remote_traces.values():
            timer.cancel()
            self.traces.stop(trace)
        self._remote_traces.clear()

    @property
    def answers(self) -> dict[str, Answer]:
        return {"metrics": self.metrics, "clients": self.clients, "client": self.client,
                "disconnect": self.disconnect, "sessions": self.sessions,
                "subscriptions": self.subscriptions, "trace_start": self.trace_start,
                "trace_stop": self.trace_stop}

    def _times(self) -> dict[str, float]:
        return {"now": self.loop.time(), "wall": time.time()}

    # -- what the API asks -------------------------------------------------------------------

    def metrics(self, args: dict[str, Any] | None = None) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with open("/proc/self/statm") as statm:
            resident = int(statm.read().split()[1]) * PAGE_SIZE
        storage = self._storage
        return {
            "worker": self.index,
            **self.inspector.counters(),
            "listener_sockets": [[gate.name, gate.open] for gate in self._gates],
            "loop_lag": self.lag.lag.snapshot(),
            "loop_lag_last": self.lag.last,
            "commit_seconds": None if storage is None else storage.commit_seconds.snapshot(),
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "resident_bytes": resident,
        }

    def clients(self, args: dict[str, Any]) -> dict[str, Any]:
        entries, more = self.inspector.clients(args["cursor"], args["limit"],
                                               prefix=args["prefix"], user=args["user"],
                                               **self._times())
        return {"entries": entries, "more": more}

    def client(self, args: dict[str, Any]) -> dict[str, Any] | None:
        return self.inspector.client(args["client_id"], **self._times())

    def disconnect(self, args: dict[str, Any]) -> bool:
        return disconnect(self.broker, args["client_id"])

    def sessions(self, args: dict[str, Any]) -> dict[str, Any]:
        entries, more = self.inspector.sessions(args["cursor"], args["limit"],
                                                prefix=args["prefix"],
                                                connected=args["connected"],
                                                now=self.loop.time())
        return {"entries": entries, "more": more}

    def subscriptions(self, args: dict[str, Any]) -> dict[str, Any]:
        entries, more = self.inspector.subscriptions(tuple(args["cursor"]), args["limit"],
                                                     client_prefix=args["client_prefix"],
                                                     topic=args["topic"])
        return {"entries": entries, "more": more}

    # -- traces worker 0 asks this worker to run ---------------------------------------------

    def trace_start(self, args: dict[str, Any]) -> bool:
        trace_id = args["id"]
        queries = self.queries
        assert queries is not None

        def emit(event: dict[str, Any]) -> None:
            queries.notify(0, "trace", {"id": trace_id, "event": event})

        trace = self.traces.start(args["client_id"], emit, args["payload_limit"])
        timer = self.loop.call_later(args["seconds"] + TRACE_GRACE_SECONDS, self.trace_stop,
                                     {"id": trace_id})
        self._remote_traces[trace_id] = (trace, timer)
        return True

    def trace_stop(self, args: dict[str, Any]) -> bool:
        running = self._remote_traces.pop(args["id"], None)
        if running is None:
            return False
        trace, timer = running
        timer.cancel()
        self.traces.stop(trace)
        return True
