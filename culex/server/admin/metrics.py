"""`GET /metrics`: the broker's counters in Prometheus's text format, read at scrape time.

A custom prometheus-client `Collector` renders the counters every worker reported just now
(`AdminPeer.metrics`, asked over the links): nothing is kept in prometheus-client's own
metric objects, so the broker counts nothing twice and nothing per message for Prometheus's
sake. Every series carries a `worker` label ("0" without worker processes); sum them for the
broker. The same counters feed `$SYS` (core/sys_topics.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from ... import __version__
from ...core.stats import EXPIRED, NO_MEMBER, NOT_AUTHORIZED, QUEUE_FULL, STALLED_READER, TOO_LARGE
from ...storage.timing import BOUNDS

DROP_REASONS = (QUEUE_FULL, EXPIRED, TOO_LARGE, NOT_AUTHORIZED, STALLED_READER, NO_MEMBER)

JSON = dict[str, Any]

# name, help, the snapshot key (a [QoS 0, 1, 2] list)
_BY_QOS = (
    ("culex_messages_received", "PUBLISH packets received from clients, by QoS",
     "messages_received"),
    ("culex_messages_sent", "PUBLISH packets sent to clients (deliveries), by QoS",
     "messages_sent"),
)
_COUNTERS = (
    ("culex_packets_received", "MQTT packets received", "packets_received"),
    ("culex_packets_sent", "MQTT packets sent", "packets_sent"),
    ("culex_bytes_received", "bytes received from clients (every packet)", "bytes_received"),
    ("culex_bytes_sent", "bytes sent to clients (every packet)", "bytes_sent"),
    ("culex_retained_dropped", "new retained topics not stored (max_retained_messages)",
     "retained_dropped"),
    ("culex_process_cpu_seconds", "CPU time of the worker process", "cpu_seconds"),
)
_GAUGES = (
    ("culex_retained_messages", "retained messages (each worker keeps them all)", "retained"),
    ("culex_subscriptions", "subscriptions, shared ones included", "subscriptions"),
    ("culex_inflight_messages", "QoS 1/2 messages sent and not yet acknowledged", "inflight"),
    ("culex_queued_messages", "QoS 1/2 messages queued for sessions", "queued"),
    ("culex_queued_bytes", "payload bytes of the queued messages", "queued_bytes"),
    ("culex_clients_maximum", "most clients connected at once", "clients_maximum"),
    ("culex_process_resident_memory_bytes", "resident memory of the worker process",
     "resident_bytes"),
)


class BrokerCollector(Collector):
    """The metric families of one scrape, from the workers' snapshots."""

    def __init__(self, snapshots: list[JSON]) -> None:
        self._snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("culex_info", "the broker's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        snapshots = self._snapshots
        for name, documentation, key in _BY_QOS:
            family = CounterMetricFamily(name, documentation, labels=["worker", "qos"])
            for snapshot in snapshots:
                for qos, value in enumerate(snapshot[key]):
                    family.add_metric([str(snapshot["worker"]), str(qos)], value)
            yield family
        dropped = CounterMetricFamily(
            "culex_messages_dropped", "messages not delivered to a subscriber, by reason",
            labels=["worker", "reason"])
        for snapshot in snapshots:
            for reason in sorted(set(DROP_REASONS) | set(snapshot["dropped"])):
                dropped.add_metric([str(snapshot["worker"]), reason],
                                   snapshot["dropped"].get(reason, 0))
        yield dropped
        for family_type, table in ((CounterMetricFamily, _COUNTERS), (GaugeMetricFamily,
                                                                      _GAUGES)):
            for name, documentation, key in table:
                metric: CounterMetricFamily | GaugeMetricFamily = family_type(
                    name, documentation, labels=["worker"])
                for snapshot in snapshots:
                    metric.add_metric([str(snapshot["worker"])], snapshot[key])
                yield metric
        yield from self._connections()
        yield from self._histograms()

    def _connections(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "culex_connections", "connected clients, by listener and protocol version",
            labels=["worker", "listener", "protocol"])
        sockets = GaugeMetricFamily(
            "culex_listener_sockets", "open sockets per listener, logged in or not",
            labels=["worker", "listener"])
        sessions = GaugeMetricFamily("culex_sessions", "sessions, connected or offline",
                                     labels=["worker", "state"])
        for snapshot in self._snapshots:
            worker = str(snapshot["worker"])
            for listener, protocol, count in snapshot["connections"]:
                connections.add_metric([worker, listener, protocol], count)
            for listener, count in snapshot["listener_sockets"]:
                sockets.add_metric([worker, listener], count)
            sessions.add_metric([worker, "connected"], snapshot["sessions_connected"])
            sessions.add_metric([worker, "offline"], snapshot["sessions_offline"])
        yield from (connections, sockets, sessions)

    def _histograms(self) -> Iterator[Metric]:
        for name, documentation, key in (
                ("culex_event_loop_lag_seconds", "how late a 0.5 s timer of the event loop "
                 "fires", "loop_lag"),
                ("culex_storage_commit_seconds", "storage commits, from the end of the tick "
                 "that made one to its fsync", "commit_seconds")):
            family = HistogramMetricFamily(name, documentation, labels=["worker"])
            for snapshot in self._snapshots:
                durations = snapshot[key]
                if durations is None:
                    continue  # durability "none": no storage
                cumulative = 0
                buckets = []
                for bound, count in zip((*map(repr, BOUNDS), "+Inf"), durations["counts"],
                                        strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                family.add_metric([str(snapshot["worker"])], buckets, durations["total"])
            yield family


def exposition(snapshots: list[JSON]) -> bytes:
    """Prometheus's text format for one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(snapshots))
    return generate_latest(registry)


def totals(snapshots: list[JSON]) -> JSON:
    """The whole broker's figures (the workers' summed; retained messages, which every
    worker keeps, counted once): what `GET /api/v1/stats` and the explorer's charts show."""
    summed: JSON = {"workers": len(snapshots)}
    for key in ("packets_received", "packets_sent", "bytes_received", "bytes_sent",
                "sessions_connected", "sessions_offline", "inflight", "queued",
                "subscriptions"):
        summed[key] = sum(snapshot[key] for snapshot in snapshots)
    for key in ("messages_received", "messages_sent"):
        summed[key] = sum(sum(snapshot[key]) for snapshot in snapshots)
    dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
    for snapshot in snapshots:
        for reason, count in snapshot["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + count
    summed["dropped"] = dropped
    summed["retained"] = snapshots[0]["retained"]
    summed["loop_lag_seconds"] = max(snapshot["loop_lag_last"] for snapshot in snapshots)
    return summed
