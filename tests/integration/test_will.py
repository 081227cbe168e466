"""Will messages: published on abnormal close (socket closed, keep-alive expiry, protocol
error, takeover is in test_connect.py), not after DISCONNECT; QoS and retain honoured."""

from __future__ import annotations

import time

import pytest

from tests.conftest import AGAINST
from tests.integration.clients import (
    PAHO_PROTOCOLS,
    RAW_PROTOCOLS,
    Clients,
    Will,
    connect_packet,
    publish_packet,
)


@pytest.mark.parametrize("version", PAHO_PROTOCOLS)
def test_will_on_socket_close_paho(clients: Clients, version: str) -> None:
    protocol = PAHO_PROTOCOLS[version]
    watcher = clients.subscriber("will/#", 2, protocol=protocol)
    client = clients.paho(
        "will-paho", protocol=protocol, will=Will("will/paho", b"paho died", qos=1)
    )
    client.drop()
    message = watcher.get()
    assert (message.topic, message.payload, message.qos, message.retain) == (
        "will/paho", b"paho died", 1, False
    )


@pytest.mark.parametrize("version", RAW_PROTOCOLS)
def test_will_on_socket_close_raw(clients: Clients, version: str) -> None:
    watcher = clients.subscriber("will/raw", 2)
    client = clients.raw(
        "will-raw", protocol=RAW_PROTOCOLS[version], will=Will("will/raw", b"gone", qos=2)
    )
    client.close()
    message = watcher.get()
    assert (message.payload, message.qos) == (b"gone", 2)


@pytest.mark.parametrize("version", PAHO_PROTOCOLS)
def test_no_will_after_disconnect_paho(clients: Clients, version: str) -> None:
    protocol = PAHO_PROTOCOLS[version]
    watcher = clients.subscriber("will/#", 2, protocol=protocol)
    client = clients.paho("polite", protocol=protocol, will=Will("will/polite", b"x", qos=1))
    client.disconnect()
    watcher.assert_no_message()


@pytest.mark.parametrize("version", RAW_PROTOCOLS)
def test_no_will_after_disconnect_raw(clients: Clients, version: str) -> None:
    watcher = clients.subscriber("will/#", 2)
    client = clients.raw(
        "polite-raw", protocol=RAW_PROTOCOLS[version], will=Will("will/polite", b"x", qos=1)
    )
    client.disconnect()
    watcher.assert_no_message()
    # The will was discarded, not postponed: a later takeover/close does not send it either.
    clients.raw("polite-raw", protocol=RAW_PROTOCOLS[version]).close()
    watcher.assert_no_message()


PROTOCOL_ERRORS = [
    pytest.param(b"\xf0\x00", id="reserved-packet-type"),
    pytest.param(publish_packet("a/#", b"x"), id="publish-wildcard"),
    # Mosquitto 2.0.11 closes the connection on a second CONNECT but drops the will instead of
    # publishing it, although MQTT 3.1.1 section 3.1.2.5 lists closing "because of a protocol
    # error" among the cases where the will must be published.
    pytest.param(
        connect_packet("will-violator"),
        id="second-connect",
        marks=pytest.mark.skipif(
            AGAINST == "mosquitto", reason="Mosquitto 2.0.11 drops the will on a second CONNECT"
        ),
    ),
]


@pytest.mark.parametrize("data", PROTOCOL_ERRORS)
@pytest.mark.parametrize("version", RAW_PROTOCOLS)
def test_will_on_protocol_error(clients: Clients, version: str, data: bytes) -> None:
    watcher = clients.subscriber("will/#", 1)
    client = clients.raw(
        "will-violator", protocol=RAW_PROTOCOLS[version], will=Will("will/err", b"bad", qos=1)
    )
    client.send(data)
    client.wait_closed()
    message = watcher.get()
    assert (message.topic, message.payload) == ("will/err", b"bad")


# Mosquitto 2.0.11 enforces keep-alive late (a keep-alive of 1 s is closed after ~5-6 s, well
# past the 1.5 x keep-alive that MQTT-3.1.2-24 requires), so the will comes too late.
@pytest.mark.skipif(AGAINST == "mosquitto", reason="Mosquitto 2.0.11 enforces keep-alive late")
def test_will_on_keepalive_expiry(clients: Clients) -> None:
    watcher = clients.subscriber("will/#", 1)
    client = clients.raw("sleeper", keepalive=1, will=Will("will/ka", b"timed out", qos=1))
    start = time.monotonic()
    message = watcher.get(timeout=1.5 + 1.0 + 0.5)
    elapsed = time.monotonic() - start
    assert (message.topic, message.payload) == ("will/ka", b"timed out")
    assert elapsed >= 1.0, f"will published after {elapsed:.2f} s, before keep-alive expired"
    client.wait_closed(1.0)


@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_will_qos_honoured(clients: Clients, will_qos: int) -> None:
    watcher = clients.raw("will-watcher")
    assert watcher.subscribe([("will/q", 2)]) == [2]
    client = clients.raw("will-q", will=Will("will/q", b"q", qos=will_qos))
    client.close()
    message = watcher.receive()
    assert (message.payload, message.qos, message.retain) == (b"q", will_qos, False)


@pytest.mark.parametrize("version", PAHO_PROTOCOLS)
def test_will_retain_honoured(clients: Clients, version: str) -> None:
    protocol = PAHO_PROTOCOLS[version]
    live = clients.subscriber("will/#", 1, protocol=protocol)
    retained = clients.paho(
        "will-ret", protocol=protocol, will=Will("will/retained", b"kept", qos=1, retain=True)
    )
    plain = clients.paho(
        "will-plain", protocol=protocol, will=Will("will/plain", b"not kept", qos=1)
    )
    retained.drop()
    plain.drop()
    live_topics = {m.topic: m.retain for m in live.get_many(2)}
    # Live forwarding clears the retain flag, as for any retained message.
    assert live_topics == {"will/retained": False, "will/plain": False}
    late = clients.paho(protocol=protocol)
    assert late.subscribe("will/#", 1) == [1]
    message = late.get()
    assert (message.topic, message.payload, message.retain) == ("will/retained", b"kept", True)
    late.assert_no_message()


def test_empty_will_payload(clients: Clients) -> None:
    watcher = clients.subscriber("will/empty", 1)
    clients.raw("will-empty", will=Will("will/empty", b"", qos=1)).close()
    message = watcher.get()
    assert (message.topic, message.payload) == ("will/empty", b"")


def test_will_of_persistent_session_published(clients: Clients) -> None:
    watcher = clients.subscriber("will/persistent", 1)
    client = clients.raw("will-persistent", clean=False, will=Will("will/persistent", b"p", 1))
    client.close()
    assert watcher.get().payload == b"p"
