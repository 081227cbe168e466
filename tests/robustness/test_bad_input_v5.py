"""Hostile MQTT 5.0 input over real sockets: every row of tests/packets_table_v5.py, and the
MQTT 5 flows that need a broker setting or more than one input.

The rows go through `run_case` of test_bad_input.py: three feeding modes (whole, one byte per
send, with trailing bytes), the exact reaction, a paho watcher that must keep receiving, and
the broker's "protocol violation" log line. Culex only: the reason codes asserted here are the
MQTT 5 spec's, which the 3.1.1-only reference run against Mosquitto does not cover.
"""

from __future__ import annotations

import pytest

from tests.conftest import BrokerFactory, BrokerProcess
from tests.packets_table_v5 import (
    CASES,
    PUBACK,
    SESSION_EXPIRY_INTERVAL,
    WILL_DELAY_INTERVAL,
    Case,
    connect5,
    p_u32,
    props,
    publish5,
    reply,
    summarize,
)
from tests.robustness.test_bad_input import (
    RawClient,
    Watcher,
    assert_healthy,
    assert_logged,
    log_offset,
    run_case,
    table_params,
)


@pytest.mark.parametrize(("case", "mode"), table_params(CASES))
def test_bad_input_v5(shared_broker: BrokerProcess, case: Case, mode: str) -> None:
    run_case(shared_broker, case, mode)


# item 11 (max_packet_size, DISCONNECT 0x95) is test_packet_over_max_packet_size in
# test_bad_input.py, parametrized over both protocol versions.


# --- item 37: QoS above the advertised Maximum QoS ---


@pytest.mark.parametrize("max_qos", [0, 1])
def test_publish_above_maximum_qos_disconnects_0x9b(
    broker_factory: BrokerFactory, max_qos: int
) -> None:
    """With max_qos below 2 the CONNACK says Maximum QoS and Retain Available 1; a PUBLISH at
    that QoS with RETAIN is accepted, one above it gets DISCONNECT 0x9B "QoS not supported"
    [MQTT-3.2.2-11] (§3.2.2.3.4)."""
    broker = broker_factory(limits={"max_qos": max_qos})
    offset = log_offset(broker)
    with Watcher(broker) as watcher, RawClient(broker) as raw:
        topic = f"{watcher.base}/qos"
        connack = raw.handshake(connect5("culex-v5-max-qos"))
        assert bytes([0x24, max_qos]) in connack and b"\x25\x01" in connack, connack.hex(" ")
        raw.send(publish5(topic, b"ok", qos=max_qos, mid=1, retain=True))
        if max_qos:
            assert summarize(raw.read_packet()) == reply(PUBACK, 1, 0)
        watcher.wait_for(lambda: watcher.received(topic) == [b"ok"], "the allowed QoS")
        raw.send(publish5(topic, b"too-high", qos=max_qos + 1, mid=2))
        got = raw.read_until_closed()
        assert summarize(got) == reply(0xE0, None, 0x9B), got.hex(" ")
        peer = raw.peer
        raw.sock.close()
        with RawClient(broker) as cleanup:  # clear the retained message
            cleanup.handshake(connect5("culex-v5-max-qos-clear"))
            cleanup.send(publish5(topic, b"", retain=True) + b"\xe0\x00")
            assert cleanup.read_until_closed() == b""
        assert watcher.received(topic)[:1] == [b"ok"]
    assert_logged(broker, offset, peer, "protocol violation", "culex-v5-max-qos")
    assert_healthy(broker, offset)


# --- item 43: Will Delay Interval above Session Expiry Interval ---


def test_will_delay_over_session_expiry_sends_will_at_session_end(
    shared_broker: BrokerProcess,
) -> None:
    """Will Delay 3600 s with Session Expiry 1 s is legal: the will is published when the
    session ends, after about 1 s, not after an hour [MQTT-3.1.3-9] (CVE-2023-3592: the timers
    must go with the session)."""
    broker = shared_broker
    offset = log_offset(broker)
    with Watcher(broker) as watcher:
        will_topic = f"{watcher.base}/will"
        raw = RawClient(broker)
        raw.handshake(connect5(
            "culex-v5-will-delay", will=(will_topic.encode(), b"gone"),
            properties=props(p_u32(SESSION_EXPIRY_INTERVAL, 1)),
            will_properties=props(p_u32(WILL_DELAY_INTERVAL, 3600))))
        raw.sock.close()  # no DISCONNECT: the will is due
        watcher.wait_for(lambda: watcher.received(will_topic) == [b"gone"], "the will", 5.0)
    assert_healthy(broker, offset)
