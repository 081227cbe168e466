"""`$SYS/broker/...`: the broker's counters as retained messages, under Mosquitto's names, so
existing dashboards work. Published every `sys_interval` seconds, each value only when it
changed; with worker processes worker 0 publishes the sums of every worker's counters (each
keeps the whole retained store, so the retained count is not summed). The state of each bridge
(`$SYS/broker/bridges/<name>/...`) is published by the worker that runs it.

In a cluster `$SYS/broker/...` is each member's own, and every member also publishes the
cluster's totals under `$SYS/cluster/...` (the same names, plus `members`: how many were
counted), from the counters each member sends the others every interval; a member not heard
from for three intervals is left out."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from .. import __version__
from .bridges import BridgeStatus
from .message import Message
from .node_links import NodeLinks
from .ports import ClientLink
from .routing import Router
from .session import SessionTable
from .stats import Stats
from .worker_links import WorkerLinks


class SysTopics:
    __slots__ = ("_bridges", "_connections", "_interval", "_last", "_links", "_next",
                 "_nodes", "_router", "_sessions", "_started_at", "_stats")

    def __init__(self, interval: float, now: float, *, stats: Stats, router: Router,
                 sessions: SessionTable, connections: Collection[ClientLink],
                 links: WorkerLinks | None, bridges: Mapping[str, BridgeStatus],
                 nodes: NodeLinks | None = None) -> None:
        self._interval = interval
        self._started_at = now
        self._next = now
        self._stats = stats
        self._router = router
        self._sessions = sessions
        self._connections = connections
        self._links = links
        self._nodes = nodes
        self._bridges = bridges
        self._last: dict[str, str] = {}

    @property
    def next_deadline(self) -> float | None:
        return self._next if self._interval > 0 else None

    def on_timer(self, now: float) -> None:
        if self._interval <= 0 or now < self._next:
            return
        self._next = now + self._interval
        if self._links is not None and self._links.index:
            self._links.send_counts(self.counts())  # worker 0 publishes the sums
            self._publish_changed(self.bridge_values())
        else:
            if self._nodes is not None:
                self._nodes.send_counts(self.counts())
            self.publish(now)

    def counts(self) -> dict[str, int]:
        """This process's counters (a worker's share of the broker's)."""
        stats = self._stats
        sessions = len(self._sessions)
        live = self._connections
        return {
            "clients/connected": stats.clients_connected,
            "clients/disconnected": sessions - stats.clients_connected,
            "clients/total": sessions,
            "clients/maximum": stats.clients_maximum,
            "messages/received": stats.packets_received,
            "messages/sent": stats.closed_packets_sent + sum(c.packets_sent for c in live),
            "bytes/received": stats.bytes_received,
            "bytes/sent": stats.closed_bytes_sent + sum(c.bytes_sent for c in live),
            "publish/messages/received": stats.publishes_received,
            "publish/messages/sent": (stats.closed_publishes_sent
                                      + sum(c.publishes_sent for c in live)),
            "publish/messages/dropped": stats.publishes_dropped,
            "subscriptions/count": (self._router.subscriptions.count
                                    + self._router.shared.count),
            "retained messages/count": self._router.retained.count,
        }

    def values(self, now: float) -> dict[str, str]:
        """The $SYS/broker tree; with workers, the sums of their counters."""
        counts = self.counts()
        if self._links is not None:
            counts = summed(counts, self._links.other_counts())
        values = {"version": f"culex version {__version__}",
                  "uptime": f"{int(now - self._started_at)} seconds", **counts}
        published = {f"$SYS/broker/{name}": str(value) for name, value in values.items()}
        if self._nodes is not None:
            others = self._nodes.recent_counts(now - 3 * self._interval)
            totals = {**summed(counts, others), "members": 1 + len(others)}
            published.update({f"$SYS/cluster/{name}": str(value)
                              for name, value in totals.items()})
        return {**published, **self.bridge_values()}

    def bridge_values(self) -> dict[str, str]:
        """The bridges this process runs, each under $SYS/broker/bridges/<name>/."""
        return {f"$SYS/broker/bridges/{name}/{key}": value
                for name, status in self._bridges.items()
                for key, value in status.values().items()}

    def publish(self, now: float) -> None:
        """Publish, retained, the values that changed since the last interval."""
        self._publish_changed(self.values(now))

    def _publish_changed(self, values: dict[str, str]) -> None:
        for topic, value in values.items():
            if self._last.get(topic) != value:
                self._last[topic] = value
                self._router.publish(Message(topic, value.encode(), 0, True))


def summed(counts: dict[str, int], others: list[dict[str, int]]) -> dict[str, int]:
    """`counts` plus every one of `others`, except the retained count: each process keeps the
    whole retained store."""
    total = dict(counts)
    for other in others:
        for name, value in other.items():
            if name != "retained messages/count":
                total[name] = total.get(name, 0) + value
    return total
