"""`$CONTROL` requests and unsubscribe rules in the core: a request reaches its API once, only
when the client's ACL lets it write there, and is never routed to a subscriber; an ACL that
refuses an UNSUBSCRIBE keeps the subscription."""

from __future__ import annotations

from culex.auth.acl import Access
from culex.core.access import ClientAccess
from culex.protocol.packets import Puback, Pubcomp, Publish, Pubrec, Will
from culex.protocol.packets5 import Puback5, Publish5, Unsuback5, Unsubscribe5
from culex.protocol.v5 import encode_publish5, encode_unsubscribe5
from tests.unit.core_helpers import FakeClient, Harness
from tests.unit.test_core_v5 import client5

REQUEST = "$CONTROL/dynamic-security/v1"


class Rules:
    """Access rules naming what each client may do: user "admin" may write `$CONTROL`,
    nobody may unsubscribe from "kept/#"."""

    def for_client(self, client_id: str, username: str | None) -> ClientAccess:
        return Client(client_id)


class Client:
    def __init__(self, client_id: str) -> None:
        self.client_id = client_id

    def allowed(self, topic: str, access: Access) -> bool:
        return not topic.startswith("$CONTROL") or self.client_id == "admin"

    def allowed_filter(self, topic_filter: str) -> bool:
        return True

    def allowed_unsubscribe(self, topic_filter: str) -> bool:
        return not topic_filter.startswith("kept/")


class Api:
    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes, str, str | None]] = []

    def serves(self, topic: str) -> bool:
        return topic == REQUEST

    def request(self, topic: str, payload: bytes, client_id: str,
                username: str | None) -> None:
        self.requests.append((topic, payload, client_id, username))


def harness(*, api: Api | None = None, rules: bool = True) -> Harness:
    built = Harness()
    built.broker.access.control = api
    if rules:
        built.broker.set_acl(Rules())
    return built


def eavesdropper(built: Harness) -> FakeClient:
    listener = built.connected("listener")
    assert listener.subscribe(("$CONTROL/#", 2)) == [2]
    return listener


def test_a_request_reaches_its_api_once_and_no_subscriber() -> None:
    api = Api()
    built = harness(api=api)
    listener = eavesdropper(built)
    admin = built.connected("admin")
    admin.publish(REQUEST, b'{"commands":[]}', qos=0)
    packet_id = admin.publish(REQUEST, b"q1", qos=1)
    assert admin.received_packets() == [Puback(packet_id)]
    packet_id = admin.publish(REQUEST, b"q2", qos=2)
    admin.publish(REQUEST, b"q2", qos=2, packet_id=packet_id, dup=True)  # retransmission
    assert admin.received_packets() == [Pubrec(packet_id), Pubrec(packet_id)]
    admin.pubrel(packet_id)
    assert admin.received_packets() == [Pubcomp(packet_id)]
    assert [payload for _, payload, _, _ in api.requests] == [b'{"commands":[]}', b"q1", b"q2"]
    assert api.requests[0][2:] == ("admin", None)
    assert listener.received_packets() == []


def test_mqtt5_requests_are_acknowledged_and_taken_off_the_shortcut() -> None:
    api = Api()
    built = harness(api=api)
    listener = eavesdropper(built)
    admin = client5(built, "admin")
    # QoS 0 with no properties: the frame the forwarding shortcut would take as it is.
    admin.send(encode_publish5(Publish5(REQUEST, b"zero")))
    admin.send(encode_publish5(Publish5(REQUEST, b"one", qos=1, packet_id=7)))
    ack = admin.first5(Puback5)
    assert isinstance(ack, Puback5) and (ack.packet_id, ack.reason_code) == (7, 0)
    assert [payload for _, payload, _, _ in api.requests] == [b"zero", b"one"]
    assert listener.received_packets() == []


def test_refused_requests_say_not_authorized() -> None:
    api = Api()
    built = harness(api=api)
    listener = eavesdropper(built)
    other = client5(built, "other")  # its ACL does not let it write $CONTROL
    other.send(encode_publish5(Publish5(REQUEST, b"x", qos=1, packet_id=1)))
    other.send(encode_publish5(Publish5("$CONTROL/other/v1", b"x", qos=1, packet_id=2)))
    admin = client5(built, "admin")
    admin.send(encode_publish5(Publish5("$CONTROL/other/v1", b"x", qos=1, packet_id=3)))
    for client, packet_id in ((other, 1), (other, 2), (admin, 3)):
        ack = client.first5(Puback5)
        assert isinstance(ack, Puback5) and (ack.packet_id, ack.reason_code) == (packet_id,
                                                                                0x87)
    assert api.requests == []
    assert listener.received_packets() == []


def test_without_an_api_or_an_acl_control_is_closed() -> None:
    for built in (harness(api=None), harness(api=Api(), rules=False)):
        listener = eavesdropper(built)
        admin = built.connected("admin")
        packet_id = admin.publish(REQUEST, b"x", qos=1)
        assert admin.received_packets() == [Puback(packet_id)]  # 3.1.1 cannot say no
        assert listener.received_packets() == []
    api = Api()
    built = harness(api=api, rules=False)
    client5(built, "admin").send(encode_publish5(Publish5(REQUEST, b"x")))
    assert api.requests == []


def test_a_will_cannot_be_a_control_request() -> None:
    built = harness(api=Api())
    connack = built.client().connect("admin", will=Will(REQUEST, b"{}", 0, False))
    assert connack.return_code == 5


def test_a_refused_unsubscribe_keeps_the_subscription() -> None:
    built = harness()
    subscriber = built.connected("subscriber")
    assert subscriber.subscribe(("kept/#", 0), ("free/#", 0)) == [0, 0]
    subscriber.unsubscribe("kept/#", "free/#")
    publisher = built.connected("publisher")
    publisher.publish("kept/a", b"still")
    publisher.publish("free/a", b"gone")
    assert subscriber.received_packets() == [Publish("kept/a", b"still", 0, False, False, 0)]
    subscriber5 = client5(built, "subscriber5")
    subscriber5.send(encode_unsubscribe5(Unsubscribe5(1, ["kept/x", "free/x"])))
    unsuback = subscriber5.first5(Unsuback5)
    assert isinstance(unsuback, Unsuback5) and unsuback.reason_codes == [0x87, 0x11]
