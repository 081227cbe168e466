"""MQTT 5 enhanced authentication in the broker core (§4.12), fake clock and fake sinks: the
SCRAM-SHA-256 exchange at CONNECT and in re-authentication, every Protocol Error the state
machine must detect, the connect timeout during an exchange, and answers that arrive late."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from culex.auth.acl import AclRules
from culex.auth.passwords import ScramCredential
from culex.auth.scram import FakeCredentials, ScramServer
from culex.core.access import AuthExchange, AuthRequest, AuthStep, StepDone
from culex.core.limits import Limits
from culex.core.states import State
from culex.protocol.codec import PINGREQ, encode_connect
from culex.protocol.packets import Connect, Pingresp
from culex.protocol.packets5 import (
    Auth,
    Connack5,
    Connect5,
    Disconnect5,
    Packet5,
    Puback5,
    Publish5,
    Subscribe5,
    Subscription,
    Will5,
)
from culex.protocol.properties import Properties
from culex.protocol.v5 import (
    encode_auth,
    encode_connect5,
    encode_disconnect5,
    encode_publish5,
    encode_subscribe5,
)
from culex.server.security import ScramExchange
from tests.scram_client import ScramClient
from tests.unit.core_helpers import FakeClient, Harness

SCRAM = "SCRAM-SHA-256"
USERS = {name: ScramCredential.create(password, 4096)
         for name, password in (("alice", b"alice pw"), ("bob", b"bob pw"))}
PASSWORDS = {"alice": b"alice pw", "bob": b"bob pw"}


class Pool:
    """Stands in for the auth thread pool: answers at once, or holds steps until `run()`."""

    def __init__(self) -> None:
        self.hold = False
        self.pending: list[tuple[Callable[[], AuthStep], StepDone]] = []

    def submit(self, work: Callable[[], AuthStep], done: StepDone) -> None:
        if self.hold:
            self.pending.append((work, done))
        else:
            done(work())

    def run(self) -> None:
        pending, self.pending = self.pending, []
        for work, done in pending:
            done(work())


class Enhanced:
    """The broker's EnhancedAuthenticator with SCRAM over a fixed user table."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.fake = FakeCredentials(4096)
        self.requests: list[AuthRequest] = []

    def begin(self, method: str, request: AuthRequest) -> AuthExchange | None:
        self.requests.append(request)
        if method != SCRAM:
            return None
        return ScramExchange(ScramServer(USERS.get, self.fake), self.pool.submit)


@pytest.fixture
def pool() -> Pool:
    return Pool()


@pytest.fixture
def harness(pool: Pool) -> Harness:
    harness = Harness(Limits(connect_timeout=10))
    harness.broker.access.enhanced = Enhanced(pool)
    return harness


def method_props(data: bytes | None, method: str = SCRAM, **more: object) -> Properties:
    return Properties(authentication_method=method, authentication_data=data, **more)


def send_auth(client: FakeClient, reason: int, data: bytes | None, method: str = SCRAM) -> None:
    client.send(encode_auth(reason, method_props(data, method)))


def expect_auth(client: FakeClient, reason: int) -> bytes:
    """The server's next packet is AUTH `reason` with our method; returns its data."""
    auth = client.first5(Auth)
    assert isinstance(auth, Auth)
    assert auth.reason_code == reason, auth
    props = auth.properties
    assert props.authentication_method == SCRAM  # [MQTT-4.12.0-5]
    assert props.reason_string is None and not props.user_properties  # [MQTT-3.1.2-29]
    assert props.authentication_data is not None
    return props.authentication_data


def expect_connack(client: FakeClient) -> Connack5:
    connack = client.first5(Connack5)
    assert isinstance(connack, Connack5)
    return connack


def start(client: FakeClient, scram: ScramClient, client_id: str = "c1",
          **fields: object) -> None:
    """CONNECT with SCRAM's client-first message."""
    client.send(encode_connect5(Connect5(client_id, properties=method_props(
        scram.first(), request_problem_information=0), **fields)))  # type: ignore[arg-type]


def scram_login(harness: Harness, user: str = "alice", password: bytes | None = None,
                client_id: str = "c1", **fields: object) -> tuple[FakeClient, Connack5]:
    client = harness.client()
    scram = ScramClient(user, PASSWORDS.get(user, b"x"))
    start(client, scram, client_id, **fields)
    server_first = expect_auth(client, 0x18)
    send_auth(client, 0x18, scram.final(server_first, password=password))
    connack = expect_connack(client)
    if connack.reason_code == 0:
        assert connack.properties.authentication_data is not None
        scram.verify(connack.properties.authentication_data)
    return client, connack


def connected(harness: Harness, user: str = "alice") -> FakeClient:
    client, connack = scram_login(harness, user)
    assert connack.reason_code == 0, connack
    return client


def closed_with(client: FakeClient, kind: type[Packet5]) -> Packet5:
    """The connection was closed, and the last thing sent was a `kind`."""
    packets = client.received_packets5()
    assert client.closed, packets
    assert packets and isinstance(packets[-1], kind), packets
    return packets[-1]


def connack_code(client: FakeClient) -> int:
    connack = closed_with(client, Connack5)
    assert isinstance(connack, Connack5)
    return connack.reason_code


def disconnect_code(client: FakeClient) -> int:
    disconnect = closed_with(client, Disconnect5)
    assert isinstance(disconnect, Disconnect5)
    return disconnect.reason_code


# -- the exchange at CONNECT ------------------------------------------------------------------

def test_scram_exchange_connects_and_echoes_the_method(harness: Harness) -> None:
    client, connack = scram_login(harness)
    assert connack.reason_code == 0
    assert connack.properties.authentication_method == SCRAM  # [MQTT-4.12.0-5]
    assert client.connection.state is State.CONNECTED
    assert client.connection.username == "alice"
    assert client.connection.session is not None
    assert client.connection.session.username == "alice"


def test_steps_run_off_the_loop_with_reading_paused(harness: Harness, pool: Pool) -> None:
    pool.hold = True
    client = harness.client()
    scram = ScramClient("alice", PASSWORDS["alice"])
    start(client, scram)
    # The step waits in the pool: nothing sent yet, and the socket is not read meanwhile.
    assert client.received_packets5() == []
    assert client.sink.reading_paused and client.connection.state is State.AUTHENTICATING
    pool.run()
    server_first = expect_auth(client, 0x18)
    assert not client.sink.reading_paused and client.connection.state is State.EXCHANGING
    send_auth(client, 0x18, scram.final(server_first))
    assert client.sink.reading_paused
    pool.run()
    connack = expect_connack(client)
    assert connack.reason_code == 0 and not client.sink.reading_paused
    assert connack.properties.authentication_data is not None
    scram.verify(connack.properties.authentication_data)


def test_wrong_password_is_0x86(harness: Harness) -> None:
    client, connack = scram_login(harness, password=b"guess")
    assert connack.reason_code == 0x86
    assert connack.properties.authentication_method is None
    assert client.closed


def test_unknown_user_is_0x86_after_a_full_exchange(harness: Harness) -> None:
    client, connack = scram_login(harness, "mallory")
    assert connack.reason_code == 0x86
    assert client.closed


def test_malformed_scram_message_is_0x87(harness: Harness) -> None:
    client = harness.client()
    client.send(encode_connect5(Connect5("c1", properties=method_props(b"p=tls-unique,,n=a,r=x"))))
    assert connack_code(client) == 0x87


@pytest.mark.parametrize("configured", [True, False])
def test_unsupported_method_is_0x8c(harness: Harness, configured: bool) -> None:
    if not configured:
        harness.broker.access.enhanced = None
    client = harness.client()
    client.send(encode_connect5(Connect5("c1", properties=method_props(b"x", "PLAIN"))))
    assert connack_code(client) == 0x8C  # [MQTT-4.12.0-1]


def test_acl_applies_to_the_scram_user(harness: Harness) -> None:
    harness.broker.set_acl(AclRules.parse("user alice\ntopic readwrite alice/#\n"))
    client = connected(harness)
    client.send(encode_publish5(Publish5("alice/x", b"ok", qos=1, packet_id=1)))
    client.send(encode_publish5(Publish5("bob/x", b"no", qos=1, packet_id=2)))
    acks = [p for p in client.received_packets5() if isinstance(p, Puback5)]
    assert [(a.packet_id, a.reason_code >= 0x80) for a in acks] == [(1, False), (2, True)]
    assert acks[1].reason_code == 0x87


def test_will_topic_is_checked_against_the_scram_users_acl(harness: Harness) -> None:
    harness.broker.set_acl(AclRules.parse("user alice\ntopic readwrite alice/#\n"))
    _client, connack = scram_login(harness, will=Will5("bob/will", b"x"))
    assert connack.reason_code == 0x87


def test_user_name_in_connect_must_be_the_authenticated_one(harness: Harness) -> None:
    _client, connack = scram_login(harness, username="bob")
    assert connack.reason_code == 0x87
    _client, connack = scram_login(harness, username="alice", client_id="c2")
    assert connack.reason_code == 0


def test_client_may_give_up_with_disconnect(harness: Harness) -> None:
    client = harness.client()
    start(client, ScramClient("alice", PASSWORDS["alice"]))
    expect_auth(client, 0x18)
    client.send(encode_disconnect5())
    assert client.closed
    assert client.received_packets5() == []
    assert harness.broker.sessions.get("c1") is None


AFTER_SERVER_FIRST = {
    "publish": encode_publish5(Publish5("t", b"x")),
    "subscribe": encode_subscribe5(Subscribe5(1, [Subscription("t", 0)])),
    "pingreq": PINGREQ,
    "connect": encode_connect5(Connect5("again")),
    "auth-other-method": encode_auth(0x18, method_props(b"x", "SCRAM-SHA-1")),
    "auth-re-authenticate": encode_auth(0x19, method_props(b"x")),
}


@pytest.mark.parametrize("data", AFTER_SERVER_FIRST.values(), ids=AFTER_SERVER_FIRST.keys())
def test_protocol_errors_during_the_exchange_get_connack_0x82(harness: Harness,
                                                              data: bytes) -> None:
    client = harness.client()
    start(client, ScramClient("alice", PASSWORDS["alice"]))
    expect_auth(client, 0x18)
    client.send(data)
    # [MQTT-3.1.2-30, MQTT-4.12.0-5]; no DISCONNECT before a CONNACK [MQTT-3.14.0-1].
    assert connack_code(client) == 0x82


def test_packets_pipelined_behind_connect_wait_for_the_step(harness: Harness,
                                                            pool: Pool) -> None:
    pool.hold = True
    client = harness.client()
    # One read holding both (the transport reads no more while the step runs).
    client.send(encode_connect5(Connect5("c1", properties=method_props(
        ScramClient("alice", PASSWORDS["alice"]).first())))
        + encode_publish5(Publish5("t", b"too early")))
    assert client.received_packets5() == [] and not client.closed
    pool.run()  # AUTH 0x18 goes out, then the deferred PUBLISH is a Protocol Error
    packets = client.received_packets5()
    assert [type(p) for p in packets] == [Auth, Connack5], packets
    assert isinstance(packets[1], Connack5) and packets[1].reason_code == 0x82
    assert client.closed


# -- connect timeout ---------------------------------------------------------------------------

def test_connect_timeout_covers_the_exchange(harness: Harness) -> None:
    client = harness.client()
    start(client, ScramClient("alice", PASSWORDS["alice"]))
    expect_auth(client, 0x18)
    harness.tick(9.9)
    assert not client.closed
    harness.tick(10.0)
    assert client.closed
    assert client.received_packets5() == []


def test_connect_timeout_while_a_step_runs_and_its_late_answer(harness: Harness,
                                                              pool: Pool) -> None:
    client = harness.client()
    scram = ScramClient("alice", PASSWORDS["alice"])
    start(client, scram)
    server_first = expect_auth(client, 0x18)
    pool.hold = True
    send_auth(client, 0x18, scram.final(server_first))
    harness.tick(10.0)
    assert client.closed
    pool.run()  # the answer arrives after the close: FakeSink fails on any write
    harness.broker.flush()
    assert client.received_packets5() == []
    assert harness.broker.sessions.get("c1") is None


# -- AUTH after CONNACK ------------------------------------------------------------------------

def test_auth_without_a_method_in_connect_is_a_protocol_error(harness: Harness) -> None:
    client = harness.client()
    assert client.connect5("plain").reason_code == 0
    send_auth(client, 0x19, b"n,,n=alice,r=abc")
    assert disconnect_code(client) == 0x82  # [MQTT-4.12.0-7]


def test_auth_from_a_311_client_is_a_protocol_error(harness: Harness) -> None:
    client = harness.client()
    client.send(encode_connect(Connect("old", "MQTT", 4)))
    client.received_packets()
    send_auth(client, 0x19, b"x")
    assert client.closed


@pytest.mark.parametrize(("reason", "method"), [
    (0x19, "SCRAM-SHA-1"),   # re-authentication with another method [MQTT-4.12.1-1]
    (0x18, SCRAM),           # Continue that answers no AUTH of ours [MQTT-4.12.0-3]
])
def test_unexpected_auth_when_connected(harness: Harness, reason: int, method: str) -> None:
    client = connected(harness)
    send_auth(client, reason, b"n,,n=alice,r=abc", method)
    assert disconnect_code(client) == 0x82


def test_reauthentication_success_while_traffic_continues(harness: Harness) -> None:
    client = connected(harness)
    scram = ScramClient("alice", PASSWORDS["alice"])
    send_auth(client, 0x19, scram.first())
    server_first = expect_auth(client, 0x18)
    # Other packets go on during re-authentication (§4.12.1).
    client.send(PINGREQ)
    client.send(encode_publish5(Publish5("alice/t", b"x", qos=1, packet_id=7)))
    packets = client.received_packets5()
    assert [type(p) for p in packets] == [Pingresp, Puback5], packets
    send_auth(client, 0x18, scram.final(server_first))
    scram.verify(expect_auth(client, 0x00))
    assert not client.closed and client.connection.username == "alice"
    # And again: a completed re-authentication leaves nothing in progress.
    again = ScramClient("alice", PASSWORDS["alice"])
    send_auth(client, 0x19, again.first())
    send_auth(client, 0x18, again.final(expect_auth(client, 0x18)))
    again.verify(expect_auth(client, 0x00))


def test_reauthentication_with_a_wrong_password_disconnects_0x87(harness: Harness) -> None:
    client = connected(harness)
    scram = ScramClient("alice", PASSWORDS["alice"])
    send_auth(client, 0x19, scram.first())
    send_auth(client, 0x18, scram.final(expect_auth(client, 0x18), password=b"guess"))
    # 0x86 is CONNACK-only; DISCONNECT says Not authorized [MQTT-4.12.1-2].
    assert disconnect_code(client) == 0x87


def test_reauthentication_as_another_user_disconnects_0x87(harness: Harness) -> None:
    client = connected(harness)
    scram = ScramClient("bob", PASSWORDS["bob"])
    send_auth(client, 0x19, scram.first())
    send_auth(client, 0x18, scram.final(expect_auth(client, 0x18)))
    assert disconnect_code(client) == 0x87


def test_reauthentication_failure_publishes_the_will(harness: Harness) -> None:
    watcher = harness.connected("watcher")
    watcher.subscribe(("will/#", 0))
    client, connack = scram_login(harness, will=Will5("will/alice", b"gone"))
    assert connack.reason_code == 0
    send_auth(client, 0x19, b"garbage")
    assert disconnect_code(client) == 0x87
    assert [p.payload for p in watcher.publishes()] == [b"gone"]


def test_second_re_authenticate_while_one_runs(harness: Harness, pool: Pool) -> None:
    client = connected(harness)
    scram = ScramClient("alice", PASSWORDS["alice"])
    send_auth(client, 0x19, scram.first())
    send_auth(client, 0x19, scram.first())
    assert disconnect_code(client) == 0x82


def test_continue_before_the_servers_answer(harness: Harness, pool: Pool) -> None:
    client = connected(harness)
    pool.hold = True
    scram = ScramClient("alice", PASSWORDS["alice"])
    send_auth(client, 0x19, scram.first())
    send_auth(client, 0x18, b"c=biws,r=x,p=AAAA")  # our AUTH 0x18 is still in the pool
    assert disconnect_code(client) == 0x82
    pool.run()  # the late answer is dropped: nothing is written after the close
    harness.broker.flush()


def test_reauthentication_step_answer_after_a_takeover_is_dropped(harness: Harness,
                                                                 pool: Pool) -> None:
    client = connected(harness)
    pool.hold = True
    send_auth(client, 0x19, ScramClient("alice", PASSWORDS["alice"]).first())
    newcomer = harness.client()
    assert newcomer.connect5("c1").reason_code == 0
    assert disconnect_code(client) == 0x8E
    pool.run()
    harness.broker.flush()
    assert newcomer.received_packets5() == []
