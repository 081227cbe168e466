"""ACLs end to end (`[auth] acl_file`, Mosquitto syntax) with paho 3.1.1/3.1, raw sockets and
mosquitto_sub: denied PUBLISH, SUBSCRIBE, delivery inside a granted wildcard, retained messages,
`%c`/`%u` patterns and CVE-2017-7650, wills, and `$SYS`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from tests.conftest import BrokerFactory, BrokerProcess
from tests.integration.clients import (
    PAHO_PROTOCOLS,
    V31,
    V311,
    Clients,
    Message,
    PahoClient,
    Will,
)
from tests.integration.test_auth import (
    NOT_AUTHORIZED,
    PASSWORDS,
    auth_settings,
    login,
    make_password_file,
    raw_login,
)

DENIED = 0x80  # SUBACK failure return code

# Users whose names would widen a `%u` pattern if they were substituted as they are.
WILDCARD_USERS = {"+": "plus pw", "x/#": "hash pw"}


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice, bob, and the users "+" and "x/#", made by `culex passwd`."""
    return make_password_file(tmp_path_factory.mktemp("acl") / "passwd",
                              {**PASSWORDS, **WILDCARD_USERS})


def acl_broker(broker_factory: BrokerFactory, tmp_path: Path, users_file: Path, acl: str,
               **auth: Any) -> BrokerProcess:
    """A broker with the password file and this ACL text; anonymous clients allowed (the ACL
    decides what they may do) unless the test says otherwise."""
    path = tmp_path / "acl"
    path.write_text(acl)
    auth.setdefault("allow_anonymous", True)
    return broker_factory(auth=auth_settings(users_file, path, **auth))


def user(clients: Clients, name: str, client_id: str | None = None, *,
         protocol: MQTTProtocolVersion = mqtt.MQTTv311, will: Will | None = None,
         expect_rc: int = 0) -> PahoClient:
    """A paho client logged in as `name` with the right password."""
    password = {**PASSWORDS, **WILDCARD_USERS}[name]
    return login(clients, client_id or f"{name}-{protocol}", name, password,
                 protocol=protocol, will=will, expect_rc=expect_rc)


def topics(messages: list[Message]) -> list[str]:
    return [message.topic for message in messages]


def log_lines(broker: BrokerProcess, *needles: str) -> list[str]:
    return [line for line in broker.log_text().splitlines()
            if all(needle in line for needle in needles)]


# --------------------------------------------------------------------------------------------
# PUBLISH (WRITE)
# --------------------------------------------------------------------------------------------

PUBLISH_ACL = """\
user alice
topic write allowed/#
topic read alice/#
user bob
topic read #
"""


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_denied_publish_is_acknowledged_but_not_delivered(
        broker_factory: BrokerFactory, tmp_path: Path, users_file: Path, qos: int) -> None:
    broker = acl_broker(broker_factory, tmp_path, users_file, PUBLISH_ACL)
    with Clients(broker) as clients:
        watcher = user(clients, "bob")
        assert watcher.subscribe("#", 2) == [2]
        alice = raw_login(clients, "alice-raw", "alice", PASSWORDS["alice"])
        # RawClient.publish asserts the exact PUBACK, or PUBREC then PUBCOMP: the broker
        # acknowledges the denied message like any other (3.1.1 has no way to say no).
        alice.publish("denied/x", b"denied", qos=qos, packet_id=7)
        # Read access is not write access: alice may read alice/#, not write it.
        alice.publish("alice/own", b"own", qos=qos, packet_id=8)
        alice.publish("allowed/x", b"allowed", qos=qos, packet_id=9)
        got = watcher.get()
        assert (got.topic, got.payload) == ("allowed/x", b"allowed")
        watcher.assert_no_message()
        assert alice.is_open()
    assert log_lines(broker, "client alice-raw ", "'denied/x'", "denied by the ACL")
    assert log_lines(broker, "client alice-raw ", "'alice/own'", "denied by the ACL")


@pytest.mark.parametrize("protocol", PAHO_PROTOCOLS.values(), ids=PAHO_PROTOCOLS)
def test_denied_retained_publish_is_not_stored(broker_factory: BrokerFactory, tmp_path: Path,
                                              users_file: Path,
                                              protocol: MQTTProtocolVersion) -> None:
    broker = acl_broker(broker_factory, tmp_path, users_file, PUBLISH_ACL)
    with Clients(broker) as clients:
        alice = user(clients, "alice", protocol=protocol)
        alice.publish("denied/r", b"denied", qos=1, retain=True)  # waits for the PUBACK
        alice.publish("allowed/r", b"allowed", qos=1, retain=True)
        late = user(clients, "bob", protocol=protocol)
        assert late.subscribe("#", 1) == [1]
        got = late.get()
        assert (got.topic, got.payload, got.retain) == ("allowed/r", b"allowed", True)
        late.assert_no_message()


# --------------------------------------------------------------------------------------------
# SUBSCRIBE (READ)
# --------------------------------------------------------------------------------------------

SUBSCRIBE_ACL = """\
# Anonymous clients (before any `user` line).
topic read public/#

user alice
topic read sensors/#
topic alice/#

user bob
topic write #
"""


@pytest.mark.parametrize("protocol", PAHO_PROTOCOLS.values(), ids=PAHO_PROTOCOLS)
def test_denied_subscribe_gets_0x80_next_to_granted_filters(
        broker_factory: BrokerFactory, tmp_path: Path, users_file: Path,
        protocol: MQTTProtocolVersion) -> None:
    broker = acl_broker(broker_factory, tmp_path, users_file, SUBSCRIBE_ACL)
    with Clients(broker) as clients:
        alice = user(clients, "alice", protocol=protocol)
        codes = alice.subscribe([("sensors/#", 1), ("secrets/#", 2), ("sensors/+/temp", 2),
                                 ("#", 0), ("alice/inbox", 1), ("public/#", 1)])
        assert codes == [1, DENIED, 2, DENIED, 1, DENIED]
        bob = user(clients, "bob", protocol=protocol)
        for topic in ("secrets/x", "public/x", "sensors/kitchen/temp", "alice/inbox"):
            bob.publish(topic, topic.encode(), qos=2)
        got = alice.get_many(2)
        # Overlapping sensors/# (QoS 1) and sensors/+/temp (QoS 2): once, at QoS 2. (Different
        # topics and QoS: no order between the two is required [MQTT-4.6.0-5].)
        assert sorted((m.topic, m.qos) for m in got) == [("alice/inbox", 1),
                                                         ("sensors/kitchen/temp", 2)]
        alice.assert_no_message()
        # bob may write everywhere but read nothing: no section grants him READ.
        assert bob.subscribe([("alice/inbox", 0), ("sensors/#", 0)]) == [DENIED, DENIED]
        # The anonymous section is for anonymous clients only.
        anonymous = login(clients, f"anon-{protocol}", protocol=protocol)
        assert anonymous.subscribe([("public/#", 1), ("sensors/#", 1)]) == [1, DENIED]
    assert log_lines(broker, f"client alice-{protocol} ", "'secrets/#'", "denied by the ACL")


def test_denied_subscribe_raw_suback_bytes(broker_factory: BrokerFactory, tmp_path: Path,
                                          users_file: Path) -> None:
    broker = acl_broker(broker_factory, tmp_path, users_file, SUBSCRIBE_ACL)
    with Clients(broker) as clients:
        for protocol in (V311, V31):
            alice = raw_login(clients, f"alice-raw-{protocol[1]}", "alice", PASSWORDS["alice"],
                              protocol=protocol)
            assert alice.subscribe([("secrets/a", 0), ("sensors/a", 2), ("sensors", 1)],
                                   packet_id=0x1234) == [DENIED, 2, 1]


# --------------------------------------------------------------------------------------------
# Delivery (READ) inside a granted wildcard, retained messages
# --------------------------------------------------------------------------------------------

DENY_INSIDE_GRANT = {
    "deny-last": "user alice\ntopic read a/#\ntopic deny a/secret\nuser bob\ntopic write a/#\n",
    # A deny wins wherever it is in the file.
    "deny-first": "user alice\ntopic deny a/secret\ntopic read a/#\nuser bob\ntopic write a/#\n",
}


@pytest.mark.parametrize("acl", DENY_INSIDE_GRANT.values(), ids=DENY_INSIDE_GRANT)
def test_read_deny_inside_a_granted_wildcard(broker_factory: BrokerFactory, tmp_path: Path,
                                            users_file: Path, acl: str) -> None:
    broker = acl_broker(broker_factory, tmp_path, users_file, acl)
    with Clients(broker) as clients:
        alice = user(clients, "alice")
        alice31 = user(clients, "alice", protocol=mqtt.MQTTv31)
        assert alice.subscribe("a/#", 2) == [2]
        assert alice31.subscribe("a/+", 0) == [0]
        cli = clients.mosquitto_sub("-t", "a/#", "-q", "1", "-u", "alice",
                                    "-P", PASSWORDS["alice"], "-i", "alice-cli")
        cli.wait_subscribed()
        # Subscribing to the denied topic itself is refused outright; a/secret/# is granted,
        # but it matches a/secret too (MQTT-4.7.1-2), where the deny still applies.
        assert alice.subscribe([("a/secret", 1), ("a/secret/#", 1)]) == [DENIED, 1]
        bob = user(clients, "bob")
        # QoS 0 takes the broker's forwarding fast path, QoS 1 the queueing one.
        for qos in (0, 1):
            bob.publish("a/secret", b"secret", qos=qos)
        for qos in (0, 1):
            bob.publish("a/public", f"public {qos}".encode(), qos=qos)
        # (Sorted: messages of different QoS need not keep their order [MQTT-4.6.0-5].)
        expected = [("a/public", b"public 0"), ("a/public", b"public 1")]
        for subscriber in (alice, alice31):
            assert sorted((m.topic, m.payload) for m in subscriber.get_many(2)) == expected
            subscriber.assert_no_message()
        got = [cli.next_message(), cli.next_message()]
        assert sorted((m.topic, m.payload) for m in got) == expected
        cli.assert_no_message()


def test_retained_messages_on_denied_topics_are_not_replayed(
        broker_factory: BrokerFactory, tmp_path: Path, users_file: Path) -> None:
    broker = acl_broker(broker_factory, tmp_path, users_file,
                        DENY_INSIDE_GRANT["deny-last"] + "topic read a/#\n")
    with Clients(broker) as clients:
        bob = user(clients, "bob")
        for topic in ("a/secret", "a/public", "a/secret/sub"):
            bob.publish(topic, topic.encode(), qos=1, retain=True)
        # The retained messages are there: bob (who may read a/#) gets all three.
        assert bob.subscribe("a/#", 1) == [1]
        assert sorted(topics(bob.get_many(3))) == ["a/public", "a/secret", "a/secret/sub"]
        for protocol in PAHO_PROTOCOLS.values():
            alice = user(clients, "alice", protocol=protocol)
            assert alice.subscribe("a/#", 1) == [1]
            got = alice.get_many(2)
            assert sorted(topics(got)) == ["a/public", "a/secret/sub"]
            assert all(message.retain for message in got)
            alice.assert_no_message()
            # Another matching subscription sends retained messages again: still not a/secret.
            assert alice.subscribe("a/+", 1) == [1]
            assert topics([alice.get()]) == ["a/public"]
            alice.assert_no_message()


# --------------------------------------------------------------------------------------------
# Patterns and CVE-2017-7650
# --------------------------------------------------------------------------------------------

PATTERN_ACL = """\
pattern readwrite devices/%c/#
pattern readwrite users/%u/#
user bob
topic readwrite devices/#
topic readwrite users/#
"""


def test_client_id_pattern(broker_factory: BrokerFactory, tmp_path: Path,
                           users_file: Path) -> None:
    broker = acl_broker(broker_factory, tmp_path, users_file, PATTERN_ACL)
    with Clients(broker) as clients:
        bob = user(clients, "bob")
        assert bob.subscribe("devices/#", 1) == [1]
        for protocol in PAHO_PROTOCOLS.values():
            dev1 = login(clients, "dev1", protocol=protocol)  # anonymous; takes over the last
            assert dev1.subscribe([("devices/dev1/#", 1), ("devices/dev2/#", 1),
                                   ("devices/+/cmd", 1), ("devices/#", 1)]) \
                == [1, DENIED, DENIED, DENIED]
            dev1.publish("devices/dev2/x", b"forged", qos=1)
            dev1.publish("devices/dev1x/x", b"forged", qos=1)
            dev1.publish("devices/dev1/x", b"mine", qos=1)
            got = bob.get()
            assert (got.topic, got.payload) == ("devices/dev1/x", b"mine")
            bob.assert_no_message()
            bob.publish("devices/dev1/cmd", b"cmd", qos=1)
            # Its own message comes back (it may read devices/dev1/#), then bob's.
            assert topics(dev1.get_many(2)) == ["devices/dev1/x", "devices/dev1/cmd"]
            dev1.assert_no_message()
            assert bob.get().topic == "devices/dev1/cmd"
            dev1.disconnect()


@pytest.mark.parametrize("client_id", ["+", "#", "a/#", "dev1/+", "+/+", "dev1/x"])
def test_wildcard_client_id_gains_nothing(broker_factory: BrokerFactory, tmp_path: Path,
                                          users_file: Path, client_id: str) -> None:
    """CVE-2017-7650: a client id with + # or / must not turn devices/%c/# into a wider
    filter (devices/+/#, devices/#/#, devices/a/#/#, devices/dev1/x/#)."""
    broker = acl_broker(broker_factory, tmp_path, users_file, PATTERN_ACL)
    with Clients(broker) as clients:
        bob = user(clients, "bob")
        assert bob.subscribe("devices/#", 1) == [1]
        intruder = login(clients, client_id)
        assert intruder.subscribe([("devices/#", 1), ("devices/+/#", 1), ("devices/dev1/#", 1),
                                   ("devices/a/#", 1), ("devices/dev1/x/#", 1),
                                   ("devices/+/+/#", 1)]) == [DENIED] * 6
        for topic in ("devices/dev1/x", "devices/a/x", "devices/dev1/x/y"):
            intruder.publish(topic, b"forged", qos=1)
        bob.publish("devices/dev1/x/y", b"for dev1", qos=1)
        assert topics([bob.get()]) == ["devices/dev1/x/y"]  # bob's own message, nothing forged
        bob.assert_no_message()
        intruder.assert_no_message()


@pytest.mark.parametrize("name", WILDCARD_USERS)
def test_wildcard_user_name_gains_nothing(broker_factory: BrokerFactory, tmp_path: Path,
                                          users_file: Path, name: str) -> None:
    broker = acl_broker(broker_factory, tmp_path, users_file, PATTERN_ACL)
    with Clients(broker) as clients:
        bob = user(clients, "bob")
        assert bob.subscribe("users/#", 1) == [1]
        alice = user(clients, "alice")
        assert alice.subscribe([("users/alice/#", 1), ("users/bob/#", 1)]) == [1, DENIED]
        intruder = user(clients, name, "intruder")
        assert intruder.subscribe([("users/#", 1), ("users/+/#", 1), ("users/alice/#", 1),
                                   ("users/x/#", 1)]) == [DENIED] * 4
        intruder.publish("users/alice/inbox", b"forged", qos=1)
        intruder.publish("users/x/y", b"forged", qos=1)
        alice.publish("users/alice/inbox", b"real", qos=1)
        got = bob.get()
        assert (got.topic, got.payload) == ("users/alice/inbox", b"real")
        bob.assert_no_message()
        assert alice.get().payload == b"real"
        alice.assert_no_message()
        # Anonymous clients have no user name: %u patterns do not apply to them at all.
        anonymous = login(clients, "anon")
        assert anonymous.subscribe([("users/#", 1), ("users/+/#", 1)]) == [DENIED, DENIED]


# --------------------------------------------------------------------------------------------
# Wills
# --------------------------------------------------------------------------------------------


def test_will_to_a_denied_topic_is_refused_with_0x05(broker_factory: BrokerFactory,
                                                    tmp_path: Path, users_file: Path) -> None:
    broker = acl_broker(broker_factory, tmp_path, users_file, PATTERN_ACL)
    with Clients(broker) as clients:
        bob = user(clients, "bob")
        assert bob.subscribe("devices/#", 1) == [1]
        for protocol in PAHO_PROTOCOLS.values():
            login(clients, "dev1", protocol=protocol, will=Will("devices/dev2/status", b"x", 1),
                  expect_rc=NOT_AUTHORIZED)
        raw_login(clients, "dev1", will=Will("devices/dev2/status", b"x", 1, retain=True),
                  expect_rc=NOT_AUTHORIZED)
        raw_login(clients, "dev1", protocol=V31, will=Will("$SYS/broker/version", b"x"),
                  expect_rc=NOT_AUTHORIZED)
        bob.assert_no_message()  # no will went out for the refused connections

        # A will on its own topic is fine, and is published when the client vanishes.
        dev1 = raw_login(clients, "dev1", will=Will("devices/dev1/status", b"gone", 1))
        dev1.drop()
        got = bob.get()
        assert (got.topic, got.payload) == ("devices/dev1/status", b"gone")
    assert log_lines(broker, "client dev1 ", "0x05", "'devices/dev2/status'", "denied by the ACL")


# --------------------------------------------------------------------------------------------
# $SYS
# --------------------------------------------------------------------------------------------

SYS_ACL = """\
topic readwrite #
pattern readwrite %c/#
user alice
topic readwrite #
topic readwrite +/#
topic readwrite $SYS/fake/#
user bob
topic read $SYS/broker/version
topic read $SYS/broker/clients/#
"""


def test_sys_is_not_readable_without_an_explicit_grant(broker_factory: BrokerFactory,
                                                       tmp_path: Path, users_file: Path) -> None:
    broker = acl_broker(broker_factory, tmp_path, users_file, SYS_ACL)
    with Clients(broker) as clients:
        # readwrite # and +/# are grants, but a leading wildcard does not reach $SYS.
        alice = user(clients, "alice")
        assert alice.subscribe([("$SYS/#", 0), ("$SYS/broker/version", 0),
                                ("$SYS/broker/+", 0)]) == [DENIED] * 3
        assert alice.subscribe([("#", 0), ("+/broker/version", 0)]) == [0, 0]
        anonymous = login(clients, "anon")
        assert anonymous.subscribe("$SYS/#", 0) == [DENIED]
        # A client id "$SYS" must not reach $SYS through the pattern %c/#.
        dollar = login(clients, "$SYS")
        assert dollar.subscribe([("$SYS/#", 0), ("$SYS/broker/version", 0)]) == [DENIED] * 2

        # An explicit grant does.
        bob = user(clients, "bob")
        assert bob.subscribe([("$SYS/broker/version", 0), ("$SYS/broker/uptime", 0),
                              ("$SYS/#", 0)]) == [0, DENIED, DENIED]
        got = bob.get()
        assert got.topic == "$SYS/broker/version" and got.retain
        assert bob.subscribe("$SYS/broker/clients/#", 0) == [0]
        assert all(m.topic.startswith("$SYS/broker/clients/") for m in bob.get_many(3))

        # $SYS is never writable by clients, not even with an explicit readwrite grant.
        assert alice.subscribe("$SYS/fake/#", 1) == [1]
        alice.publish("$SYS/fake/x", b"forged", qos=1)
        alice.publish("$SYS/broker/version", b"forged", qos=1)
        # Over more than one sys_interval (1 s): alice, subscribed to # and +/broker/version,
        # gets nothing at all; bob gets $SYS updates, but not the forgery.
        alice.assert_no_message(1.2)
        assert all(m.payload != b"forged" for m in drain(bob))


def drain(client: PahoClient) -> list[Message]:
    messages = []
    while not client.messages.empty():
        messages.append(client.messages.get())
    return messages


# --------------------------------------------------------------------------------------------
# Persistent sessions and identity
# --------------------------------------------------------------------------------------------


def test_queued_messages_are_not_delivered_to_a_user_who_may_not_read_them(
        broker_factory: BrokerFactory, tmp_path: Path, users_file: Path) -> None:
    """bob (read #) leaves a persistent session with messages queued; alice (who may read only
    alice/#) resumes it with the same client id: she must not receive what only bob may read."""
    broker = acl_broker(broker_factory, tmp_path, users_file,
                        "user alice\ntopic readwrite alice/#\nuser bob\ntopic readwrite #\n")
    with Clients(broker) as clients:
        owner = clients.paho("shared-id", clean_session=False, connect=False)
        owner.client.username_pw_set("bob", PASSWORDS["bob"])
        owner.connect()
        assert owner.subscribe("#", 1) == [1]
        owner.disconnect()
        publisher = user(clients, "bob", "bob-pub")
        publisher.publish("bob/private", b"for bob only", qos=1)
        publisher.publish("alice/inbox", b"for alice", qos=1)

        other = clients.paho("shared-id", clean_session=False, connect=False)
        other.client.username_pw_set("alice", PASSWORDS["alice"])
        assert other.connect().session_present
        got = other.get()
        assert (got.topic, got.payload) == ("alice/inbox", b"for alice"), got
        other.assert_no_message()


def test_in_flight_messages_are_not_resent_to_a_user_who_may_not_read_them(
        broker_factory: BrokerFactory, tmp_path: Path, users_file: Path) -> None:
    """Like the above, for messages already sent to bob and not acknowledged when he vanished:
    on resumption they are re-sent (DUP) only if the new owner may read them."""
    broker = acl_broker(broker_factory, tmp_path, users_file,
                        "user alice\ntopic readwrite alice/#\nuser bob\ntopic readwrite #\n")
    with Clients(broker) as clients:
        owner = raw_login(clients, "shared-id", "bob", PASSWORDS["bob"], clean=False)
        assert owner.subscribe([("#", 1)]) == [1]
        publisher = user(clients, "bob", "bob-pub")
        publisher.publish("bob/private", b"for bob only", qos=1)
        publisher.publish("alice/inbox", b"for alice", qos=1)
        # bob receives both and acknowledges neither, then his connection drops.
        assert sorted(owner.expect_publish().topic for _ in range(2)) == ["alice/inbox",
                                                                          "bob/private"]
        owner.drop()

        other = raw_login(clients, "shared-id", "alice", PASSWORDS["alice"], clean=False,
                          session_present=True)
        got = other.expect_publish()
        assert (got.topic, got.payload, got.dup) == ("alice/inbox", b"for alice", True), got
        other.assert_silent()


def test_restored_session_is_checked_against_its_owners_acl_before_it_reconnects(
        broker_factory: BrokerFactory, tmp_path: Path, users_file: Path) -> None:
    """The session's user name is stored with it, so after a restart the ACL already filters
    what is routed to it while it is offline: messages its owner may not read must not take
    the room (max_queued_messages 3) of the one it may read."""
    broker = acl_broker(broker_factory, tmp_path, users_file,
                        "user alice\ntopic readwrite #\n"
                        "user bob\ntopic read shared/#\ntopic deny shared/secret\n")
    with Clients(broker) as clients:
        owner = raw_login(clients, "bob-session", "bob", PASSWORDS["bob"], clean=False)
        assert owner.subscribe([("shared/#", 1)]) == [1]
        owner.disconnect()
    assert broker.stop() == 0
    broker.settings["limits"] = {"max_queued_messages": 3}
    broker.start()
    with Clients(broker) as clients:
        publisher = user(clients, "alice", "alice-pub")
        for index in range(5):
            publisher.publish("shared/secret", b"not for bob %d" % index, qos=1)
        publisher.publish("shared/open", b"for bob", qos=1)
        owner = raw_login(clients, "bob-session", "bob", PASSWORDS["bob"], clean=False,
                          session_present=True)
        got = owner.receive()
        assert (got.topic, got.payload) == ("shared/open", b"for bob"), got
        owner.assert_silent()
    assert "queue full" not in broker.log_text()
