"""Sessions: the session present flag, persistent (clean session 0) subscriptions, offline
queueing with its limit, in-flight messages resumed after reconnect (DUP, same packet id,
PUBREL), and clean session 1 discarding all of it."""

from __future__ import annotations

import pytest

from tests.conftest import BrokerFactory
from tests.integration.clients import (
    PAHO_PROTOCOLS,
    PUBCOMP,
    PUBREC,
    PUBREL,
    RAW_PROTOCOLS,
    V31,
    V311,
    Clients,
    PahoClient,
    puback,
    pubcomp,
    publish_packet,
    pubrec,
    pubrel,
)

# --------------------------------------------------------------------------------------------
# Session present flag (exact CONNACK bytes)
# --------------------------------------------------------------------------------------------

SP0 = b"\x20\x02\x00\x00"
SP1 = b"\x20\x02\x01\x00"


def test_session_present_0_on_first_persistent_connect(clients: Clients) -> None:
    client = clients.raw()
    assert client.connect("sp-first", clean=False).raw == SP0


@pytest.mark.parametrize("how", ["disconnect", "socket-close"])
def test_session_present_1_on_persistent_reconnect(clients: Clients, how: str) -> None:
    client = clients.raw()
    client.connect("sp-again", clean=False)
    if how == "disconnect":
        client.disconnect()
    else:
        client.close()
    again = clients.raw()
    assert again.connect("sp-again", clean=False).raw == SP1


@pytest.mark.parametrize("how", ["disconnect", "socket-close", "takeover"])
def test_mqtt31_resumed_session_connack_is_20_02_00_00(clients: Clients, how: str) -> None:
    """MQTT 3.1 has no Session Present flag: the byte is reserved, so a 3.1 client resuming
    its kept session gets exactly 20 02 00 00 (Mosquitto's broker suite found 20 02 01 00)."""
    client = clients.raw()
    assert client.connect("sp-31", clean=False, protocol=V31).raw == SP0
    if how == "disconnect":
        client.disconnect()
    elif how == "socket-close":
        client.close()
    again = clients.raw()
    assert again.connect("sp-31", clean=False, protocol=V31).raw == SP0
    if how == "takeover":
        client.wait_closed()
    # The session was kept (3.1.1 on the same id says so), only the 3.1 flag byte is 0.
    again.disconnect()
    check = clients.raw()
    assert check.connect("sp-31", clean=False).raw == SP1


def test_session_present_1_on_takeover_of_persistent_session(clients: Clients) -> None:
    first = clients.raw()
    first.connect("sp-takeover", clean=False)
    second = clients.raw()
    assert second.connect("sp-takeover", clean=False).raw == SP1
    first.wait_closed()


def test_session_present_always_0_with_clean_session(clients: Clients) -> None:
    client = clients.raw()
    client.connect("sp-clean", clean=False)
    client.disconnect()
    # A persistent session exists, but clean session 1 discards it: flag 0...
    clean = clients.raw()
    assert clean.connect("sp-clean", clean=True).raw == SP0
    clean.disconnect()
    # ... and it is gone afterwards: a persistent reconnect starts a new one.
    again = clients.raw()
    assert again.connect("sp-clean", clean=False).raw == SP0
    again.disconnect()
    twice = clients.raw()
    assert twice.connect("sp-clean-2", clean=True).raw == SP0
    twice.disconnect()
    thrice = clients.raw()
    assert thrice.connect("sp-clean-2", clean=True).raw == SP0


def test_session_present_with_paho(clients: Clients) -> None:
    first = clients.paho("sp-paho", clean_session=False)
    assert first.connect_result is not None
    assert first.connect_result.session_present is False
    first.disconnect()
    second = clients.paho("sp-paho", clean_session=False)
    assert second.connect_result is not None
    assert second.connect_result.session_present is True


# --------------------------------------------------------------------------------------------
# Persistent subscriptions and offline queueing
# --------------------------------------------------------------------------------------------


def persistent(clients: Clients, client_id: str, version: str) -> PahoClient:
    return clients.paho(client_id, protocol=PAHO_PROTOCOLS[version], clean_session=False)


@pytest.mark.parametrize("version", PAHO_PROTOCOLS)
def test_subscriptions_survive_reconnect(clients: Clients, version: str) -> None:
    first = persistent(clients, "keeps-subs", version)
    assert first.subscribe("keep/#", 1) == [1]
    first.disconnect()
    second = persistent(clients, "keeps-subs", version)  # no SUBSCRIBE this time
    clients.paho().publish("keep/x", b"still subscribed", qos=1)
    message = second.get()
    assert (message.topic, message.payload, message.qos) == ("keep/x", b"still subscribed", 1)


@pytest.mark.parametrize("version", PAHO_PROTOCOLS)
def test_offline_qos1_qos2_queued_qos0_not(clients: Clients, version: str) -> None:
    first = persistent(clients, "offline", version)
    assert first.subscribe("off/#", 2) == [2]
    first.disconnect()
    publisher = clients.paho()
    publisher.publish("off/a", b"zero", qos=0)
    publisher.publish("off/b", b"one", qos=1)
    publisher.publish("off/c", b"two", qos=2)
    publisher.publish("off/d", b"one again", qos=1)
    second = persistent(clients, "offline", version)
    # paho hands a QoS 2 message to the application only at PUBREL, so the order in which the
    # callbacks run is not the wire order (that is checked with raw sockets elsewhere).
    received = sorted((m.payload, m.qos) for m in second.get_many(3))
    assert received == [(b"one", 1), (b"one again", 1), (b"two", 2)]


def test_offline_messages_downgraded_to_qos0_not_queued(clients: Clients) -> None:
    first = clients.raw()
    first.connect("offline-q0", clean=False)
    assert first.subscribe([("offq0/t", 0)]) == [0]
    first.disconnect()
    clients.paho().publish("offq0/t", b"downgraded", qos=2)
    second = clients.raw()
    assert second.connect("offline-q0", clean=False).session_present
    second.assert_silent()


def test_offline_queue_in_order_with_live_messages_after(clients: Clients) -> None:
    first = clients.raw()
    first.connect("ordered", clean=False)
    assert first.subscribe([("ord/t", 1)]) == [1]
    first.disconnect()
    publisher = clients.raw("ord-pub")
    for i in range(10):
        publisher.publish("ord/t", f"{i}".encode(), qos=1, packet_id=i + 1)
    second = clients.raw()
    second.connect("ordered", clean=False)
    publisher.publish("ord/t", b"live", qos=1, packet_id=50)
    payloads = [second.receive().payload for _ in range(11)]
    assert payloads == [f"{i}".encode() for i in range(10)] + [b"live"]


def sys_value(clients: Clients, topic: str, wanted: str) -> None:
    """Wait until the retained/periodic $SYS topic shows `wanted`."""
    watcher = clients.paho()
    assert watcher.subscribe(topic, 0) == [0]
    seen: list[bytes] = []
    while True:
        message = watcher.get(timeout=3.5)
        seen.append(message.payload)
        if message.payload == wanted.encode():
            return
        assert len(seen) < 10, f"{topic} never became {wanted}: {seen}"


def test_offline_queue_limit_drops_overflow_and_counts_it(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(sys_interval=1, limits={"max_queued_messages": 5})
    with Clients(broker) as clients:
        first = clients.raw()
        first.connect("limited", clean=False)
        assert first.subscribe([("lim/t", 1)]) == [1]
        first.disconnect()
        publisher = clients.raw("lim-pub")
        for i in range(8):
            publisher.publish("lim/t", f"m{i}".encode(), qos=1, packet_id=i + 1)
        second = clients.raw()
        second.connect("limited", clean=False)
        payloads = [second.receive().payload for _ in range(5)]
        assert payloads == [b"m0", b"m1", b"m2", b"m3", b"m4"]
        second.assert_silent()
        sys_value(clients, "$SYS/broker/publish/messages/dropped", "3")


# --------------------------------------------------------------------------------------------
# In-flight messages resume after reconnect (exact bytes)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", RAW_PROTOCOLS)
@pytest.mark.parametrize("qos", [1, 2])
def test_unacked_publish_resent_with_dup_and_same_packet_id(
    clients: Clients, version: str, qos: int
) -> None:
    protocol = RAW_PROTOCOLS[version]
    first = clients.raw()
    first.connect("resend", clean=False, protocol=protocol)
    assert first.subscribe([("re/t", qos)]) == [qos]
    clients.paho().publish("re/t", b"unacked", qos=qos)
    original = first.expect_publish()
    assert (original.payload, original.qos, original.dup) == (b"unacked", qos, False)
    first.close()  # never acknowledged

    second = clients.raw()
    ack = second.connect("resend", clean=False, protocol=protocol)
    if protocol == V311:
        assert ack.session_present
    got = second.read_packet()
    assert got.raw == publish_packet(
        "re/t", b"unacked", qos=qos, dup=True, packet_id=original.packet_id
    )
    if qos == 1:
        second.send(puback(original.packet_id))
    else:
        second.send(pubrec(original.packet_id))
        assert second.expect(PUBREL).raw == pubrel(original.packet_id)
        second.send(pubcomp(original.packet_id))
    assert second.is_open()


@pytest.mark.parametrize("version", RAW_PROTOCOLS)
def test_pubrel_resent_for_pubreced_qos2(clients: Clients, version: str) -> None:
    protocol = RAW_PROTOCOLS[version]
    first = clients.raw()
    first.connect("rel-resend", clean=False, protocol=protocol)
    assert first.subscribe([("rel/t", 2)]) == [2]
    clients.paho().publish("rel/t", b"half", qos=2)
    message = first.expect_publish()
    first.send(pubrec(message.packet_id))
    assert first.expect(PUBREL).raw == pubrel(message.packet_id)
    first.close()  # PUBCOMP never sent

    second = clients.raw()
    second.connect("rel-resend", clean=False, protocol=protocol)
    # The PUBREL is re-sent; the PUBLISH is not (the client already has the message).
    assert second.read_packet().raw == pubrel(message.packet_id)
    second.send(pubcomp(message.packet_id))
    second.assert_silent()


def test_several_inflight_resent_in_order_before_queued(clients: Clients) -> None:
    first = clients.raw()
    first.connect("multi-resend", clean=False)
    assert first.subscribe([("mr/t", 1)]) == [1]
    publisher = clients.raw("mr-pub")
    for i in range(3):
        publisher.publish("mr/t", f"inflight{i}".encode(), qos=1, packet_id=i + 1)
    originals = [first.expect_publish() for _ in range(3)]
    first.drop()  # wait until the broker noticed: the next two are queued, never sent yet
    for i in range(2):
        publisher.publish("mr/t", f"queued{i}".encode(), qos=1, packet_id=10 + i)

    second = clients.raw()
    second.connect("multi-resend", clean=False)
    resent = [second.expect_publish() for _ in range(3)]
    assert [(m.payload, m.packet_id, m.dup) for m in resent] == [
        (o.payload, o.packet_id, True) for o in originals
    ]
    for message in resent:
        second.send(puback(message.packet_id))
    queued = [second.receive() for _ in range(2)]
    assert [(m.payload, m.dup) for m in queued] == [(b"queued0", False), (b"queued1", False)]


def test_inbound_qos2_state_survives_reconnect(clients: Clients) -> None:
    """A publisher that got PUBREC, lost its connection and resumes with PUBREL gets PUBCOMP,
    and the message is delivered exactly once."""
    subscriber = clients.subscriber("inq2/t", 2)
    first = clients.raw()
    first.connect("inbound-q2", clean=False)
    first.send(publish_packet("inq2/t", b"exactly once", qos=2, packet_id=10))
    assert first.expect(PUBREC).raw == pubrec(10)
    first.close()

    second = clients.raw()
    assert second.connect("inbound-q2", clean=False).session_present
    second.send(publish_packet("inq2/t", b"exactly once", qos=2, packet_id=10, dup=True))
    assert second.expect(PUBREC).raw == pubrec(10)
    second.send(pubrel(10))
    assert second.expect(PUBCOMP).raw == pubcomp(10)
    assert subscriber.get().payload == b"exactly once"
    subscriber.assert_no_message()


# --------------------------------------------------------------------------------------------
# Clean session 1 discards everything
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", PAHO_PROTOCOLS)
def test_clean_session_discards_previous_persistent_session(
    clients: Clients, version: str
) -> None:
    protocol = PAHO_PROTOCOLS[version]
    first = clients.paho("discard", protocol=protocol, clean_session=False)
    assert first.subscribe("disc/#", 1) == [1]
    first.disconnect()
    publisher = clients.paho()
    publisher.publish("disc/x", b"queued while offline", qos=1)

    clean = clients.paho("discard", protocol=protocol, clean_session=True)
    assert clean.connect_result is not None
    assert clean.connect_result.session_present is False
    clean.assert_no_message()  # queued messages discarded
    publisher.publish("disc/x", b"after clean connect", qos=1)
    clean.assert_no_message()  # subscription discarded
    clean.disconnect()

    again = clients.paho("discard", protocol=protocol, clean_session=False)
    assert again.connect_result is not None
    assert again.connect_result.session_present is False
    publisher.publish("disc/x", b"nobody", qos=1)
    again.assert_no_message()


def test_clean_session_state_ends_with_connection(clients: Clients) -> None:
    first = clients.raw()
    first.connect("ephemeral", clean=True)
    assert first.subscribe([("eph/t", 1)]) == [1]
    clients.paho().publish("eph/t", b"unacked", qos=1)
    first.expect_publish()  # in flight, never acknowledged
    first.close()
    clients.paho().publish("eph/t", b"while gone", qos=1)
    second = clients.raw()
    assert second.connect("ephemeral", clean=True).raw == SP0
    second.assert_silent()
    clients.paho().publish("eph/t", b"not subscribed", qos=1)
    second.assert_silent()


def test_persistent_session_survives_takeover(clients: Clients) -> None:
    first = clients.paho("takeover-session", clean_session=False)
    assert first.subscribe("tos/t", 1) == [1]
    second = clients.paho("takeover-session", clean_session=False)
    assert first.disconnected.wait(5)
    assert second.connect_result is not None
    assert second.connect_result.session_present is True
    clients.paho().publish("tos/t", b"to the new connection", qos=1)
    assert second.get().payload == b"to the new connection"
