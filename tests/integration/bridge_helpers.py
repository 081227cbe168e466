"""What the bridge tests share: a real Mosquitto to bridge to, `[[bridges]]` tables, a
pipelined publisher for thousands of acknowledged QoS 1/2 messages, and a receiver that
collects them exactly as an MQTT client must (a QoS 2 retransmission is not a new message)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BrokerProcess
from tests.integration.clients import (
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    Broker,
    RawClient,
    puback,
    pubcomp,
    publish_packet,
    pubrec,
    pubrel,
)
from tests.integration.test_mosquitto_compat import MOSQUITTO, ConfBroker

# Quick reconnects: the tests wait for the bridge, never for a fixed time.
FAST = {"reconnect_delay": 0.1, "reconnect_delay_max": 0.4, "connect_timeout": 2}


def bridge_table(name: str, remote: Broker, topics: list[dict[str, Any]], *,
                 version: str = "5", **settings: Any) -> dict[str, Any]:
    """A `[[bridges]]` table to `remote`."""
    return {"name": name, "address": f"{remote.host}:{remote.port}", "protocol_version": version,
            "client_id": f"edge-{name}", **FAST, "topics": topics, **settings}


def wait_connected(broker: BrokerProcess, name: str, times: int = 1,
                   timeout: float = 10.0) -> None:
    """Until the bridge `name` has been accepted by its remote `times` times (its INFO "connected
    to ... as" lines; the DEBUG line before CONNECT says "reached")."""
    needle = f"bridge {name}: connected to"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker.log_text().count(needle) >= times:
            return
        time.sleep(0.05)
    pytest.fail(f"bridge {name} not connected {times} time(s) within {timeout} s:\n"
                f"{broker.log_text()}")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"not within {timeout} s: {what}")


def reconnect_delays(log: str, name: str) -> list[float]:
    """The waits the bridge announced between attempts, in order."""
    return [float(found) for found in re.findall(
        rf"bridge {re.escape(name)}: .*connecting again in ([0-9.]+) s", log)]


# -- a real Mosquitto -----------------------------------------------------------------------

class Mosquittos:
    """Debian's Mosquitto brokers a test starts (stopped or killed at its end)."""

    def __init__(self, tmp: Path) -> None:
        assert Path(MOSQUITTO).exists(), "no /usr/sbin/mosquitto: `make system-deps`"
        self.tmp = tmp
        self.started: list[ConfBroker] = []

    def start(self, extra: str = "", *, port: int | None = None) -> ConfBroker:
        """A Mosquitto on 127.0.0.1 (a free port, or `port`), anonymous clients allowed,
        `extra` appended to its mosquitto.conf."""
        work = self.tmp / f"remote{len(self.started)}"
        work.mkdir()
        # `user root`: as root Mosquitto would switch to user mosquitto, who cannot write the
        # test's directory (persistence) nor read its files.
        broker = ConfBroker(work, "listener {port} 127.0.0.1\nallow_anonymous true\n"
                            f"user root\n{extra}", "mosquitto")
        if port is not None:
            broker.port = port
        self.started.append(broker)
        return broker.start()

    def close(self) -> None:
        for broker in self.started:
            if broker.proc is not None and broker.proc.poll() is None:
                broker.stop()


# -- many acknowledged messages -------------------------------------------------------------

def publish_many(broker: Broker, client_id: str, topic: str, count: int, qos: int, *,
                 window: int = 200) -> float:
    """Publish `count` messages (payloads "0".."count-1") at `qos` from one clean-session
    3.1.1 client, `window` unacknowledged at a time, and return once every one is
    acknowledged (PUBACK, or PUBCOMP after PUBREC/PUBREL): the broker has then promised to
    keep them. Returns the seconds it took."""
    started = time.monotonic()
    client = RawClient(broker, timeout=30)
    try:
        client.connect(client_id)
        sent = done = 0
        inflight: set[int] = set()
        while done < count:
            burst = []
            while sent < count and len(inflight) < window:
                packet_id = sent % 65535 + 1
                inflight.add(packet_id)
                burst.append(publish_packet(topic, str(sent).encode(), qos=qos,
                                            packet_id=packet_id))
                sent += 1
            if burst:
                client.send(b"".join(burst))
            reply = client.read_packet(30)
            packet_id = reply.packet_id
            if reply.type == PUBREC:
                client.send(pubrel(packet_id))
            elif reply.type in (PUBACK, PUBCOMP):
                inflight.discard(packet_id)
                done += 1
            else:
                pytest.fail(f"unexpected {reply} while publishing")
        client.disconnect()
    finally:
        client.close()
    return time.monotonic() - started


def subscribe_persistent(broker: Broker, client_id: str, topic_filter: str,
                         qos: int = 2) -> None:
    """Make a persistent session (clean session 0) subscribed to `topic_filter`, and leave."""
    client = RawClient(broker)
    try:
        client.connect(client_id, clean=False)
        assert client.subscribe([(topic_filter, qos)]) == [qos]
        client.disconnect()
    finally:
        client.close()


@dataclass
class Received:
    """What a receiver got: per topic, the payloads in arrival order, QoS 2 retransmissions
    left out as the protocol says (a PUBLISH with DUP under an id awaiting PUBREL)."""

    by_topic: dict[str, list[str]]

    def check(self, topic: str, count: int, *, exactly_once: bool) -> None:
        """Every one of "0".."count-1" arrived, first arrivals in order; with `exactly_once`
        none twice."""
        got = self.by_topic.get(topic, [])
        first = list(dict.fromkeys(got))
        assert first == [str(i) for i in range(count)], (
            f"{topic}: {len(first)} distinct of {count}, first missing or out of order at "
            f"{next((i for i, p in enumerate(first) if p != str(i)), len(first))}")
        if exactly_once:
            assert len(got) == count, f"{topic}: {len(got) - count} duplicates"


def receive_all(broker: Broker, client_id: str, expected: dict[str, int],
                timeout: float = 60.0) -> Received:
    """Resume the persistent session `client_id` and take messages until every topic has
    its `expected` count of distinct payloads, acknowledging each as a client does."""
    client = RawClient(broker, timeout=timeout)
    by_topic: dict[str, list[str]] = {}
    awaiting_release: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        client.connect(client_id, clean=False)
        while any(len(set(by_topic.get(topic, ()))) < count
                  for topic, count in expected.items()):
            try:
                reply = client.read_packet(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                counts = {topic: len(set(got)) for topic, got in by_topic.items()}
                pytest.fail(f"received {counts} of {expected} within {timeout} s")
            if reply.type == PUBREL:
                awaiting_release.discard(reply.packet_id)
                client.send(pubcomp(reply.packet_id))
                continue
            assert reply.type == PUBLISH, str(reply)
            message = reply.publish()
            if message.qos == 2:
                if message.packet_id in awaiting_release:
                    assert message.dup, f"a new QoS 2 PUBLISH under an unreleased id: {reply}"
                    client.send(pubrec(message.packet_id))
                    continue
                awaiting_release.add(message.packet_id)
                client.send(pubrec(message.packet_id))
            elif message.qos == 1:
                client.send(puback(message.packet_id))
            by_topic.setdefault(message.topic, []).append(message.payload.decode())
        # Whatever else comes within a moment (duplicates) counts too.
        for reply in client.packets_until_quiet(0.3):
            if reply.type == PUBLISH:
                message = reply.publish()
                if message.qos == 2 and message.packet_id in awaiting_release:
                    continue
                by_topic.setdefault(message.topic, []).append(message.payload.decode())
        client.disconnect()
    finally:
        client.close()
    return Received(by_topic)

