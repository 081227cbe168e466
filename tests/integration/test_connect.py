"""CONNECT / CONNACK, client ids, takeover, and protocol violations around CONNECT.

Also home of the "protocol violation" log-line tests for all kinds of violations (they read the
broker's log, so they only apply to Culex).
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import BrokerProcess
from tests.integration.clients import (
    CONNACK,
    PAHO_PROTOCOLS,
    PINGREQ_BYTES,
    RAW_PROTOCOLS,
    V31,
    V311,
    Clients,
    RawClient,
    Will,
    connect_packet,
    mqtt_str,
    packet,
    publish_packet,
    subscribe_packet,
    unclosed_violations,
    wait_until,
)


def assert_refused_then_closed(client: RawClient, return_code: int) -> None:
    """The broker answers with exactly this CONNACK and then closes the connection."""
    received = client.wait_closed()
    assert [p.raw for p in received] == [bytes([0x20, 0x02, 0x00, return_code])], [
        str(p) for p in received
    ]


# --------------------------------------------------------------------------------------------
# Accepted connections
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", RAW_PROTOCOLS)
def test_connack_accepted_bytes(clients: Clients, version: str) -> None:
    client = clients.raw()
    ack = client.connect("accepted", protocol=RAW_PROTOCOLS[version])
    assert ack.raw == b"\x20\x02\x00\x00"
    assert client.is_open()


@pytest.mark.parametrize("version", PAHO_PROTOCOLS)
def test_paho_connect_and_clean_disconnect(clients: Clients, version: str) -> None:
    client = clients.paho("paho-connect", protocol=PAHO_PROTOCOLS[version])
    assert client.connect_result is not None
    assert client.connect_result.return_code == 0
    assert client.connect_result.session_present is False
    client.disconnect()


def test_empty_client_id_with_clean_session_gets_generated_id(clients: Clients) -> None:
    """Two clients with an empty id (3.1.1, clean session) get distinct generated ids: neither
    takes over the other and both receive messages."""
    first = clients.raw()
    assert first.connect("", clean=True).return_code == 0
    second = clients.raw()
    assert second.connect("", clean=True).return_code == 0
    assert first.subscribe([("gen/t", 1)]) == [1]
    assert second.subscribe([("gen/t", 1)]) == [1]
    publisher = clients.paho()
    publisher.publish("gen/t", b"both", qos=1)
    for client in (first, second):
        message = client.receive()
        assert (message.topic, message.payload) == ("gen/t", b"both")
    assert first.is_open()
    assert second.is_open()


@pytest.mark.parametrize("version", PAHO_PROTOCOLS)
def test_paho_empty_client_id(clients: Clients, version: str) -> None:
    """paho with an empty id (3.1.1) or its own generated id (3.1) is accepted and works."""
    client = clients.paho("", protocol=PAHO_PROTOCOLS[version])
    assert client.subscribe("gen/paho", 1) == [1]
    client.publish("gen/paho", b"x", qos=1)
    assert client.get().payload == b"x"


def test_client_id_longer_than_23_bytes_accepted_in_311(clients: Clients) -> None:
    long_id = "a-client-id-that-is-much-longer-than-twenty-three-bytes-" + "x" * 40
    client = clients.raw()
    assert client.connect(long_id, clean=False).raw == b"\x20\x02\x00\x00"
    assert client.subscribe([("long/id", 1)]) == [1]
    client.publish("long/id", b"ok", qos=1, packet_id=3)
    assert client.receive().payload == b"ok"
    # The long id names a real session: a reconnect finds it.
    client.disconnect()
    again = clients.raw()
    assert again.connect(long_id, clean=False).session_present is True


# --------------------------------------------------------------------------------------------
# Refused connections
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "level"),
    [("MQTT", 3), ("MQIsdp", 4), ("MQTT", 6), ("MQIsdp", 6)],
    ids=["MQTT-3", "MQIsdp-4", "MQTT-6", "MQIsdp-6"],
)
def test_unacceptable_protocol_level_refused_with_0x01(
    clients: Clients, name: str, level: int
) -> None:
    client = clients.raw()
    client.send(connect_packet("bad-level", protocol=(name, level)))
    assert_refused_then_closed(client, 0x01)


def test_empty_client_id_without_clean_session_refused_311(clients: Clients) -> None:
    client = clients.raw()
    client.send(connect_packet("", clean=False, protocol=V311))
    assert_refused_then_closed(client, 0x02)


@pytest.mark.parametrize("clean", [True, False], ids=["clean", "persistent"])
def test_empty_client_id_refused_31(clients: Clients, clean: bool) -> None:
    client = clients.raw()
    client.send(connect_packet("", clean=clean, protocol=V31))
    assert_refused_then_closed(client, 0x02)


def test_refused_connection_gets_no_session(clients: Clients) -> None:
    """A refused CONNECT must not have created anything: messages sent to its would-be
    subscriptions are not delivered and the broker still serves others."""
    client = clients.raw()
    client.send(connect_packet("", clean=False, protocol=V311))
    assert_refused_then_closed(client, 0x02)
    other = clients.paho("after-refusal")
    assert other.subscribe("r/t", 1) == [1]
    other.publish("r/t", b"fine", qos=1)
    assert other.get().payload == b"fine"


# --------------------------------------------------------------------------------------------
# Takeover
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", PAHO_PROTOCOLS)
def test_takeover_closes_first_connection_and_publishes_its_will(
    clients: Clients, version: str
) -> None:
    protocol = PAHO_PROTOCOLS[version]
    watcher = clients.subscriber("takeover/will", 1)
    first = clients.paho(
        "same-id", protocol=protocol, will=Will("takeover/will", b"first gone", qos=1)
    )
    second = clients.paho("same-id", protocol=protocol)
    assert first.disconnected.wait(5), "first connection was not closed by the takeover"
    will = watcher.get()
    assert (will.topic, will.payload) == ("takeover/will", b"first gone")
    # The second connection is the live one.
    assert second.subscribe("takeover/data", 1) == [1]
    second.publish("takeover/data", b"alive", qos=1)
    assert second.get().payload == b"alive"
    assert not second.disconnected.is_set()


@pytest.mark.parametrize("version", RAW_PROTOCOLS)
def test_takeover_raw_first_socket_closed(clients: Clients, version: str) -> None:
    protocol = RAW_PROTOCOLS[version]
    first = clients.raw("raw-same", protocol=protocol)
    second = clients.raw("raw-same", protocol=protocol)
    assert first.wait_closed() == []
    assert second.is_open()


# --------------------------------------------------------------------------------------------
# Protocol violations around CONNECT: the connection is closed
# --------------------------------------------------------------------------------------------

# Each case: bytes sent on a fresh socket. None of them may be answered with CONNACK 0.
PRE_CONNECT_VIOLATIONS: dict[str, bytes] = {
    "pingreq-before-connect": PINGREQ_BYTES,
    "publish-before-connect": publish_packet("a/b", b"x"),
    "subscribe-before-connect": subscribe_packet(1, [("a/b", 0)]),
    "reserved-connect-flag": connect_packet("flags", extra_flags=0x01),
    "will-qos-3": packet(
        0x10,
        mqtt_str("MQTT") + bytes([4, 0x02 | 0x04 | 0x18]) + b"\x00\x3c"
        + mqtt_str("wq3") + mqtt_str("w/t") + mqtt_str(b"p"),
    ),
    "will-qos-without-will-flag": connect_packet("wq", extra_flags=0x08),
    "will-retain-without-will-flag": connect_packet("wr", extra_flags=0x20),
    "password-without-username": connect_packet("pw", password=b"secret"),
    "client-id-not-utf8": connect_packet(b"\xff\xfe\xfd"),
    "malformed-remaining-length": b"\x10\xff\xff\xff\xff\x7f",
    "connect-truncated-variable-header": packet(0x10, mqtt_str("MQTT") + b"\x04"),
}


def test_pre_connect_violations_close_connection(clients: Clients) -> None:
    """Each case on its own socket: closed, at most after a refusing CONNACK, never accepted."""
    assert unclosed_violations(clients, PRE_CONNECT_VIOLATIONS, allow_refusal=True) == []


def test_unknown_protocol_name_closes_connection(clients: Clients) -> None:
    client = clients.raw()
    client.send(connect_packet("unknown", protocol=("HTTP", 4)))
    received = client.wait_closed()
    # The spec allows either closing at once or refusing first; never accepting.
    assert all(p.type == CONNACK and p.body[1] != 0 for p in received), [
        str(p) for p in received
    ]


@pytest.mark.parametrize("version", RAW_PROTOCOLS)
def test_second_connect_closes_connection(clients: Clients, version: str) -> None:
    protocol = RAW_PROTOCOLS[version]
    client = clients.raw("twice", protocol=protocol)
    client.send(connect_packet("twice", protocol=protocol))
    assert client.wait_closed() == []


def test_violation_does_not_affect_other_clients(clients: Clients) -> None:
    bystander = clients.subscriber("bystander/t", 1)
    for data in PRE_CONNECT_VIOLATIONS.values():
        clients.raw().send(data)
    bystander.publish("bystander/t", b"still here", qos=1)
    assert bystander.get().payload == b"still here"


# --------------------------------------------------------------------------------------------
# Protocol violation log line (Culex's log; not applicable to Mosquitto)
# --------------------------------------------------------------------------------------------

# Violations after a successful CONNECT, keyed by name: bytes sent once connected.
POST_CONNECT_VIOLATIONS: dict[str, bytes] = {
    "second-connect": connect_packet("again"),
    "publish-wildcard-topic": publish_packet("a/+/c", b"x"),
    "publish-qos-3": bytes([0x36]) + bytes([7]) + mqtt_str("a/b") + b"\x00\x01x",
    "subscribe-bad-flags": subscribe_packet(1, [("a/b", 0)], flags=0x00),
    "reserved-packet-type": b"\xf0\x00",
}


def violation_log_lines(broker: BrokerProcess, opened: dict[str, RawClient]) -> dict[str, str]:
    """Wait until each connection is closed and has its log line; exactly one per connection."""
    for client in opened.values():
        client.wait_closed()

    def lines_by_case() -> dict[str, list[str]]:
        log = [line for line in broker.log_text().splitlines() if "protocol violation" in line]
        return {
            name: [line for line in log if client.peer in line]
            for name, client in opened.items()
        }

    if not wait_until(lambda: all(lines_by_case().values())):
        missing = [name for name, lines in lines_by_case().items() if not lines]
        pytest.fail(f"no protocol violation line for {missing}:\n{broker.log_text()}")
    # Give a (wrong) second line a moment to appear before counting.
    wait_until(lambda: any(len(v) > 1 for v in lines_by_case().values()), timeout=0.3)
    found = lines_by_case()
    extra = {name: lines for name, lines in found.items() if len(lines) != 1}
    assert extra == {}, f"expected exactly one protocol violation line each: {extra}"
    return {name: lines[0] for name, lines in found.items()}


def tokens(line: str) -> list[str]:
    return [t for t in re.split(r"[\s\[\](){}<>'\",;=@|]+", line) if t]


def test_violation_before_connect_logged_with_dash_and_peer(
    broker: BrokerProcess, clients: Clients
) -> None:
    opened: dict[str, RawClient] = {}
    for name, data in PRE_CONNECT_VIOLATIONS.items():
        opened[name] = clients.raw()
        opened[name].send(data)
    for name, line in violation_log_lines(broker, opened).items():
        assert f"127.0.0.1:{opened[name].local_port}" in line, name
        assert "-" in tokens(line), f"{name}: no '-' client id in: {line}"


def test_violation_after_connect_logged_with_client_id_and_peer(
    broker: BrokerProcess, clients: Clients
) -> None:
    opened: dict[str, RawClient] = {}
    for name, data in POST_CONNECT_VIOLATIONS.items():
        opened[name] = clients.raw(f"violator-{name}")
        opened[name].send(data)
    for name, line in violation_log_lines(broker, opened).items():
        assert f"127.0.0.1:{opened[name].local_port}" in line, name
        assert f"violator-{name}" in line, name


def test_violation_log_line_names_the_cause(broker: BrokerProcess, clients: Clients) -> None:
    """Different violations give different log lines once the client id, peer and all numbers
    (timestamps, ports) are taken out: the line carries the cause."""
    opened: dict[str, RawClient] = {}
    for index, (name, data) in enumerate(POST_CONNECT_VIOLATIONS.items()):
        opened[name] = clients.raw(f"cause{index}")
        opened[name].send(data)
    normalised: dict[str, str] = {}
    for index, (name, line) in enumerate(violation_log_lines(broker, opened).items()):
        stripped = line.replace(opened[name].peer, "").replace(f"cause{index}", "")
        normalised[name] = re.sub(r"\d+", "", stripped)
    assert len(set(normalised.values())) == len(normalised), normalised
