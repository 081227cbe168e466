"""Bridges to remotes that do not work: each failure is one clear log line naming the bridge,
the address and the cause, the next attempt waits longer (exponential backoff with jitter), and
nothing local is affected. One Culex runs every bridge of a test at once.

The remotes: wrong credentials (a Mosquitto with a password file), a TLS certificate the bridge
does not trust (and, beside it, one it does), a server that closes the connection as soon as
CONNECT arrives, one that accepts and never answers, a port nobody listens on, and an address
list whose first entry is dead (failover to the second).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from culex.core.worker_links import owner_of
from tests.conftest import BrokerFactory
from tests.integration.bridge_helpers import (
    Mosquittos,
    bridge_table,
    reconnect_delays,
    subscribe_persistent,
    wait_connected,
    wait_for,
)
from tests.integration.clients import Clients
from tests.integration.test_mosquitto_compat import mosquitto_passwd

TOPICS: list[dict[str, Any]] = [{"pattern": "out/#", "qos": 1},
                                {"pattern": "in/#", "direction": "in", "qos": 1}]


class Endpoint:
    def __init__(self, port: int) -> None:
        self.host = "127.0.0.1"
        self.port = port


class FakeRemote:
    """A TCP server that takes connections and then either closes each one as soon as bytes
    arrive (`close_on_connect`) or reads and never answers."""

    def __init__(self, close_on_connect: bool) -> None:
        self.close_on_connect = close_on_connect
        self.server = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.server.getsockname()[:2]
        self.accepted = 0
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            if self.close_on_connect:
                conn.recv(1024)
                conn.close()
            else:
                self.held.append(conn)

    def close(self) -> None:
        self.server.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def fake_remotes() -> Iterator[dict[str, FakeRemote]]:
    remotes = {"closer": FakeRemote(True), "silent": FakeRemote(False)}
    yield remotes
    for remote in remotes.values():
        remote.close()


def test_bad_remotes(broker_factory: BrokerFactory, mosquittos: Mosquittos, pki: Path,
                     tmp_path: Path, fake_remotes: dict[str, FakeRemote]) -> None:
    passwords = tmp_path / "passwd"
    mosquitto_passwd(passwords, "edge", "right", [])
    guarded = mosquittos.start(f"allow_anonymous false\npassword_file {passwords}\n")
    tls = mosquittos.start(f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\n"
                           f"keyfile {pki / 'server.key'}\n")
    plain = mosquittos.start()
    (tmp_path / "wrong").write_text("wrong\n")
    (tmp_path / "right").write_text("right\n")
    # A port bound and never listened on: connecting to it is refused, and nothing else
    # (the local broker) can take it meanwhile.
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))
    dead = reserved.getsockname()[1]
    slow = {"reconnect_delay": 0.1, "reconnect_delay_max": 0.8}
    bridges = [
        bridge_table("creds", guarded, TOPICS, username="edge",
                     password_file=str(tmp_path / "wrong")),
        bridge_table("creds-ok", guarded, TOPICS, version="3.1.1", username="edge",
                     password_file=str(tmp_path / "right")),
        bridge_table("untrusted", tls, TOPICS, tls=True),
        bridge_table("trusted", tls, TOPICS, cafile=str(pki / "ca.crt")),
        bridge_table("closer", fake_remotes["closer"], TOPICS),
        bridge_table("silent", fake_remotes["silent"], TOPICS, connect_timeout=1),
        bridge_table("refused", Endpoint(dead), TOPICS, **slow),
        {**bridge_table("failover", plain, TOPICS),
         "address": [f"127.0.0.1:{dead}", f"127.0.0.1:{plain.port}"]},
    ]
    local = broker_factory(bridges=bridges)

    # What works, works: with the right password, over TLS to a trusted CA, after failover.
    for name in ("creds-ok", "trusted", "failover"):
        wait_connected(local, name)

    def failed(name: str, cause: str, times: int = 2) -> None:
        """Logged at least `times` times, each with when the next attempt comes."""
        wait_for(lambda: len([line for line in local.log_text().splitlines()
                              if f"bridge {name}: " in line and cause in line
                              and "connecting again in" in line]) >= times,
                 f"bridge {name}: {cause!r} logged {times} times")

    failed("creds", f"{guarded.host}:{guarded.port}: refused: CONNACK 0x87 (Not authorized)")
    failed("untrusted", "TLS handshake failed: the remote's certificate: self-signed "
                        "certificate in certificate chain")
    failed("closer", "the remote closed the connection before CONNACK")
    failed("silent", "no CONNACK within 1 s")
    failed("refused", f"127.0.0.1:{dead}: cannot connect: connection refused", times=5)
    assert fake_remotes["closer"].accepted >= 2 and fake_remotes["silent"].accepted >= 2
    log = local.log_text()
    assert f"bridge failover: 127.0.0.1:{dead}: cannot connect: connection refused; trying " \
           f"127.0.0.1:{plain.port}" in log

    # Backoff: each wait drawn from the upper half of 0.1 s doubled per failed round, up to
    # 0.8 s.
    delays = reconnect_delays(log, "refused")
    assert len(delays) >= 5
    for round_index, delay in enumerate(delays):
        ceiling = min(0.8, 0.1 * 2 ** round_index)
        assert ceiling / 2 - 0.05 <= delay <= ceiling + 0.05, (round_index, delays)

    # Nothing local is affected: clients come and go, messages flow (also those the
    # unreachable bridges buffer).
    with Clients(local) as clients:
        subscriber = clients.subscriber("out/#", 1)
        publisher = clients.paho()
        for index in range(20):
            publisher.publish(f"out/{index}", b"x", qos=1)
        assert len(subscriber.get_many(20)) == 20

    # The working bridges carry messages while the others keep failing.
    with Clients(plain) as there:
        remote_sub = there.subscriber("out/#", 1)
        with Clients(local) as here:
            here.paho().publish("out/late", b"late", qos=1)
        assert [m.payload for m in remote_sub.drain(1)] == [b"late"]
    reserved.close()


def test_a_full_buffer_refuses_new_messages(broker_factory: BrokerFactory,
                                            mosquittos: Mosquittos) -> None:
    """Past max_buffered_bytes the bridge's session takes no more QoS 1/2 messages, as a full
    persistent session: an MQTT 5 publisher gets PUBACK 0x97 (in the worker that runs the
    bridge), the drop is logged and counted, and what was buffered arrives once the remote is
    back: the first ten messages, no more."""
    remote = mosquittos.start("persistence true\n")
    subscribe_persistent(remote, "collector", "out/#", 1)
    remote.stop()
    local = broker_factory(bridges=[bridge_table("small", remote, TOPICS,
                                                 max_buffered_bytes=1000)])
    local.wait_for_log("bridge small: ")
    workers = local.workers
    client_id = next(f"pub-{index}" for index in range(1000)
                     if owner_of(f"pub-{index}", workers) == owner_of("$bridge/small", workers))
    with Clients(local) as clients:
        publisher = clients.paho(client_id, protocol=mqtt.MQTTv5)
        reasons = [publisher.publish(f"out/{index}", bytes(100), qos=1) for index in range(13)]
    assert reasons == [0] * 10 + [0x97] * 3
    log = local.wait_for_log("client $bridge/small: queue full (10 messages, 1000 bytes)")
    assert log.count("queue full") == 1  # once per episode
    remote.start()
    wait_connected(local, "small")
    with Clients(remote) as clients:
        collector = clients.paho("collector", clean_session=False, connect=False)
        collector.connect()
        assert sorted(m.topic for m in collector.drain(10)) == sorted(
            f"out/{index}" for index in range(10))

