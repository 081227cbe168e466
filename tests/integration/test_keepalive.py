"""Keep-alive: PINGREQ/PINGRESP, closing silent connections after 1.5 x keep-alive, and the
connect timeout for sockets that never send CONNECT."""

from __future__ import annotations

import time

import pytest

from tests.conftest import AGAINST, BrokerFactory
from tests.integration.clients import (
    PAHO_PROTOCOLS,
    PINGREQ_BYTES,
    PINGRESP_BYTES,
    RAW_PROTOCOLS,
    Clients,
    connect_packet,
    publish_packet,
)

SLACK = 1.0  # the contract allows the close up to 1 s after 1.5 x keep-alive

# Mosquitto 2.0.11 checks keep-alive expiry only every few seconds: a connection with a
# keep-alive of 1 s is closed after ~5-6 s, not within 1.5 x keep-alive (MQTT-3.1.2-24).
MOSQUITTO_LATE_KEEPALIVE = pytest.mark.skipif(
    AGAINST == "mosquitto", reason="Mosquitto 2.0.11 enforces keep-alive late (~5 s granularity)"
)



@pytest.mark.parametrize("version", RAW_PROTOCOLS)
def test_pingreq_gets_pingresp(clients: Clients, version: str) -> None:
    client = clients.raw("pinger", protocol=RAW_PROTOCOLS[version])
    for _ in range(3):
        client.send(PINGREQ_BYTES)
        assert client.read_packet().raw == PINGRESP_BYTES
    client.assert_silent(0.2)


@MOSQUITTO_LATE_KEEPALIVE
@pytest.mark.parametrize(
    ("version", "keepalive"), [("3.1.1", 1), ("3.1", 1), ("3.1.1", 2)], ids=str
)
def test_silent_connection_closed_after_one_and_a_half_keepalive(
    clients: Clients, version: str, keepalive: int
) -> None:
    client = clients.raw("silent", protocol=RAW_PROTOCOLS[version], keepalive=keepalive)
    start = time.monotonic()
    assert client.wait_closed(1.5 * keepalive + SLACK + 0.5) == []
    elapsed = time.monotonic() - start
    assert elapsed <= 1.5 * keepalive + SLACK, f"closed after {elapsed:.2f} s"
    assert elapsed >= keepalive, f"closed after {elapsed:.2f} s, before the keep-alive period"


def test_active_connections_outlive_keepalive(clients: Clients) -> None:
    """Over a window longer than 1.5 x keep-alive + slack (keep-alive 1 s): a client that only
    pings, one that only publishes QoS 0 (any packet resets the timer), paho clients of both
    versions pinging on their own, and a keep-alive 0 client (no timeout at all) all stay."""
    pinging = clients.raw("pinging", keepalive=1)
    publishing = clients.raw("publishing", keepalive=1)
    forever = clients.raw("forever", keepalive=0)
    pahos = [
        clients.paho(f"paho-ka-{version}", protocol=protocol, keepalive=1)
        for version, protocol in PAHO_PROTOCOLS.items()
    ]
    deadline = time.monotonic() + 1.5 + SLACK + 0.3
    while time.monotonic() < deadline:
        pinging.send(PINGREQ_BYTES)
        assert pinging.read_packet(1.0).raw == PINGRESP_BYTES
        publishing.send(publish_packet("ka/t", b"tick"))
        time.sleep(0.5)
    assert pinging.is_open()
    assert publishing.is_open()
    assert forever.is_open()
    for client in pahos:
        assert not client.disconnected.is_set()
        assert client.subscribe("ka/paho", 1) == [1]


# Mosquitto 2.0.11 has no connect timeout at all: a socket that never sends CONNECT stayed open
# for more than 90 s when tried (the spec only says the server SHOULD close it, MQTT 3.1.4).
MOSQUITTO_NO_CONNECT_TIMEOUT = pytest.mark.skipif(
    AGAINST == "mosquitto", reason="Mosquitto 2.0.11 never closes a socket that sends no CONNECT"
)


@MOSQUITTO_NO_CONNECT_TIMEOUT
def test_no_connect_within_connect_timeout_closes(broker_factory: BrokerFactory) -> None:
    """Sockets that send nothing, or only part of a CONNECT, are closed after connect_timeout;
    a client that connected in time is not affected."""
    broker = broker_factory(limits={"connect_timeout": 1})
    with Clients(broker) as clients:
        connected = clients.raw("connected-in-time", keepalive=0)
        silent = clients.raw()
        partial = clients.raw()
        partial.send(connect_packet("half-sent")[:5])
        start = time.monotonic()
        for client in (silent, partial):
            assert client.wait_closed(1 + SLACK + 0.5) == []
            elapsed = time.monotonic() - start
            assert 0.8 <= elapsed <= 1 + SLACK, f"closed after {elapsed:.2f} s"
        assert connected.is_open()
