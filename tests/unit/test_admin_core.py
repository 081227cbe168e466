"""The core's side of the admin API, without sockets: the counters metrics read, pages of
clients and sessions (100,000 of them), the packet trace's class swap and its undoing,
observers, what the API changes, and questions between two linked workers."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from jsonschema import Draft202012Validator

from culex.core.connection import Connection
from culex.core.inspect import Inspector
from culex.core.limits import Limits
from culex.core.message import Message
from culex.core.observers import TopicRates, TopicTrace
from culex.core.steer import delete_retained, disconnect, publish, when_done
from culex.core.tracing import ClientTraces
from culex.core.worker_queries import Failed, WorkerQueries
from culex.protocol.codec import encode_publish
from culex.protocol.describe import describe_frame, payload_fields
from culex.protocol.packets import Publish
from culex.protocol.packets5 import Publish5
from culex.protocol.properties import Properties
from culex.protocol.v5 import encode_publish5
from culex.server.admin.api import routes
from culex.server.admin.http import OPENAPI
from tests.unit.core_helpers import Harness
from tests.unit.test_worker_links import Workers


def test_counters_split_messages_by_qos_without_counting_qos_0() -> None:
    harness = Harness()
    subscriber = harness.connected("sub")
    subscriber.subscribe(("t/#", 2))
    publisher = harness.connected("pub")
    for qos, count in ((0, 4), (1, 3), (2, 2)):
        for _ in range(count):
            publisher.publish("t/x", b"m", qos)
    publisher.publish("$SYS/x", b"no", 0)  # refused: counted as not authorized
    counters = Inspector(harness.broker).counters()
    assert counters["messages_received"] == [5, 3, 2]
    subscriber.received_packets()
    assert Inspector(harness.broker).counters()["messages_sent"] == [4, 3, 2]
    assert counters["dropped"] == {"not_authorized": 1}
    assert counters["connections"] == [["", "3.1.1", 2]]
    assert (counters["sessions_connected"], counters["sessions_offline"]) == (2, 0)


def test_drops_are_counted_per_session_too() -> None:
    harness = Harness(Limits(max_queued_messages=1))
    keeper = harness.connected("keeper", clean_session=False)
    keeper.subscribe(("q/#", 1))
    keeper.disconnect()
    publisher = harness.connected("pub")
    for _ in range(3):
        publisher.publish("q/1", b"m", 1)
    entries, more = Inspector(harness.broker).sessions("", 10, now=0.0)
    keeper_entry = next(entry for entry in entries if entry["client_id"] == "keeper")
    assert (keeper_entry["queued"], keeper_entry["dropped"], more) == (1, 2, False)
    assert harness.broker.stats.dropped["queue_full"] == 2


def test_pages_of_100_000_sessions_cost_a_page_each() -> None:
    harness = Harness()
    manager = harness.broker.manager
    ids = [f"client-{number:06d}" for number in range(100_000)]
    for client_id in reversed(ids):  # the table's order is not the pages' order
        manager.sessions.put(manager.new_session(client_id, persistent=True))
    inspector = Inspector(harness.broker)
    slowest = 0.0
    for cursor in ("", "client-000999", "client-054321", "client-098999"):
        started = time.perf_counter()
        entries, more = inspector.sessions(cursor, 1000, now=0.0)
        slowest = max(slowest, time.perf_counter() - started)
        start = ids.index(cursor) + 1 if cursor else 0
        assert [entry["client_id"] for entry in entries] == ids[start:start + 1000]
        assert more is (start + 1000 < len(ids))
    # One pass over the keys per page (~10-20 ms here): generous for a loaded machine, and
    # far below what sorting and copying every session per page would take.
    assert slowest < 0.5, slowest
    page, more = inspector.sessions("", 5, prefix="client-09999", now=0.0)
    assert [entry["client_id"] for entry in page] == [f"client-09999{d}" for d in range(5)]


def test_a_trace_swaps_the_connection_and_puts_it_back() -> None:
    harness = Harness()
    events: list[dict[str, Any]] = []
    traces = ClientTraces(harness.broker.manager, lambda: 1.0)
    watched = harness.connected("watched")
    other = harness.connected("other")
    trace = traces.start("watched", events.append, 10)
    assert type(watched.connection).__name__ == "TracedConnection"
    assert type(other.connection) is Connection  # nobody else pays anything
    watched.subscribe(("a", 1))
    watched.publish("a", b"0123456789abcdef", 1)
    traces.stop(trace)
    assert type(watched.connection) is Connection
    assert harness.broker.manager.on_attach is None
    watched.publish("a", b"after", 0)
    kinds = [(event["direction"], event["type"]) for event in events]
    assert kinds == [("event", "trace started"), ("in", "SUBSCRIBE"), ("out", "SUBACK"),
                     ("in", "PUBLISH"), ("out", "PUBLISH"), ("out", "PUBACK")]
    published = events[3]
    assert (published["payload"], published["truncated"]) == ("0123456789", True)


def test_a_trace_waits_for_its_client_and_sees_it_from_connect_to_close() -> None:
    harness = Harness()
    events: list[dict[str, Any]] = []
    traces = ClientTraces(harness.broker.manager, lambda: 1.0)
    traces.start("late", events.append, None)
    client = harness.connected("late", keepalive=30)
    client.disconnect()
    again = harness.connected("late")  # a reconnect is traced too
    again.lose()
    assert [(event["direction"], event["type"]) for event in events] == [
        ("event", "trace started"), ("in", "CONNECT"), ("out", "CONNACK"),
        ("in", "DISCONNECT"), ("event", "closed"), ("in", "CONNECT"), ("out", "CONNACK"),
        ("event", "connection lost"), ("event", "closed")]
    assert events[1]["keepalive"] == 30
    assert "password" not in events[1]


def test_observers_count_topics_and_trace_a_filter() -> None:
    harness = Harness()
    rates = TopicRates(harness.broker.manager, harness.broker.router, 0.0)
    traced: list[dict[str, Any]] = []
    trace = TopicTrace("s/+", traced.append, payload_limit=None, wall_time=lambda: 2.0,
                       manager=harness.broker.manager, router=harness.broker.router)
    publisher = harness.connected("pub")
    for _ in range(4):
        publisher.publish("s/a", b"x", 0)
    publisher.publish("s/b", b"y", 2, retain=True)
    publisher.publish("other", b"z", 1)
    rates.roll()
    assert rates.rates() == {"s/a": (4, 4.0), "s/b": (1, 1.0), "other": (1, 1.0)}
    assert [(event["topic"], event["qos"], event["retain"]) for event in traced] == \
        [("s/a", 0, False)] * 4 + [("s/b", 2, True)]
    assert Inspector(harness.broker).counters()["messages_sent"] == [0, 0, 0]
    rates.close()
    trace.close()
    assert harness.broker.router.subscriptions.count == 0


def test_steering_disconnects_publishes_and_deletes_retained() -> None:
    harness = Harness()
    watcher = harness.connected("watcher")
    watcher.subscribe(("r/#", 1))
    assert publish(harness.broker, Message("r/1", b"one", 1, True)) == 0
    assert publish(harness.broker, Message("r/2", b"two", 0, True)) == 0
    assert publish(harness.broker, Message("nobody", b"x", 1)) == 0x10
    done: list[bool] = []
    when_done(harness.broker, lambda: done.append(True))
    assert done == [True]  # no storage: nothing to wait for
    assert delete_retained(harness.broker, "r/#", 1) == (1, True)
    assert delete_retained(harness.broker, "r/#", 1) == (1, False)
    assert harness.broker.retained.count == 0
    assert disconnect(harness.broker, "watcher")
    assert watcher.closed
    assert not disconnect(harness.broker, "watcher")


def test_questions_between_workers() -> None:
    workers = Workers()
    answered: list[Any] = []
    notices: list[tuple[int, str, Any]] = []
    asking = WorkerQueries(workers.clusters[0], {}, lambda *notice: notices.append(notice))
    answering = WorkerQueries(workers.clusters[1], {
        "echo": lambda args: {"got": args["value"]},
        "broken": lambda args: 1 / 0}, lambda *notice: None)
    asking.ask([1], "echo", {"value": 7}, answered.append)
    asking.ask([1], "broken", {}, answered.append)
    asking.ask([1], "unknown", {}, answered.append)
    answering.notify(0, "trace", {"event": 1})
    workers.pump()
    assert answered[0] == {1: {"got": 7}}
    assert isinstance(answered[1][1], Failed) and "ZeroDivisionError" in answered[1][1].error
    assert isinstance(answered[2][1], Failed) and "unknown question" in answered[2][1].error
    assert notices == [(1, "trace", {"event": 1})]
    forgotten: list[Any] = []
    asking.forget(asking.ask([1], "echo", {"value": 8}, forgotten.append))
    workers.pump()
    assert forgotten == []


def test_packets_are_described_without_secrets() -> None:
    publish_frame = encode_publish(Publish("a/b", b"\xff" * 300, 1, packet_id=9))
    described = describe_frame(publish_frame, v5=False, from_client=True)
    assert (described["type"], described["packet_id"], described["payload"]) == \
        ("PUBLISH", 9, None)
    assert described["truncated"] and len(described["payload_base64"]) == 344  # 256 bytes
    v5 = describe_frame(encode_publish5(Publish5("t", b"ok", properties=Properties(
        user_properties=[("k", "v")], correlation_data=b"\x01"))), v5=True, from_client=True)
    assert v5["properties"] == {"correlation_data": "AQ==", "user_properties": [["k", "v"]]}
    assert describe_frame(b"\x30\x01\x00", v5=False, from_client=True)["error"]
    assert payload_fields("é".encode() * 3, 5)["payload"] == "éé"  # a cut character dropped


def test_the_openapi_document_covers_every_route_and_no_other() -> None:
    """The document the tests hold answers to is the API's, route for route."""
    document = json.loads(OPENAPI.read_text())
    served = {(route.method.lower(), re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.path))
              for route in routes(None)}  # type: ignore[arg-type]
    served |= {("get", "/metrics"), ("get", "/api/v1/openapi.json")}
    documented = {(method, path) for path, operations in document["paths"].items()
                  for method in operations if method != "parameters"}
    assert served == documented
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
