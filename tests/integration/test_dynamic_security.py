"""Dynamic security driven by Debian's `mosquitto_ctrl`, with real clients (paho 3.1.1 and 5,
raw sockets) checking what each change does, against one and two worker processes. With two,
`mosquitto_ctrl` connects as "admin-1", which worker 1 owns: its requests are handed to worker
0; alice lives on worker 1 and bob on worker 0, so changes and disconnections cross workers.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import paho.mqtt.client as mqtt

from culex.dynsec.model import ITERATIONS, SALT_BYTES
from tests.conftest import BrokerFactory, BrokerProcess, free_port
from tests.integration.clients import PUBACK, Clients, RawClient, mqtt_str, packet
from tests.integration.dynsec_tools import (
    ADMIN,
    ADMIN_PASSWORD,
    REQUEST_TOPIC,
    RESPONSE_TOPIC,
    Ctrl,
    dynsec_init,
    login,
)

V5 = mqtt.MQTTv5
ADMINISTRATIVE_ACTION = 0x98


def start(broker_factory: BrokerFactory, tmp_path: Path, **auth: object) -> BrokerProcess:
    path = dynsec_init(tmp_path / "dynamic-security.json")
    return broker_factory(auth={"dynamic_security": str(path), **auth})


def kicked(client: object) -> int | None:
    """Wait until the broker closes a paho client; its MQTT 5 DISCONNECT reason."""
    assert client.disconnected.wait(5), "not disconnected"  # type: ignore[attr-defined]
    return client.disconnect_reason  # type: ignore[attr-defined, no-any-return]


def test_mosquitto_ctrl_decides_who_may_do_what(broker_factory: BrokerFactory,
                                                tmp_path: Path) -> None:
    broker = start(broker_factory, tmp_path)
    ctrl = Ctrl(broker, "admin-1")
    ctrl.ok("createClient", "alice", "-p", "alice-pw")
    ctrl.ok("createClient", "bob", "-p", "bob-pw", "-c", "bob")
    ctrl.ok("createRole", "writer")
    ctrl.ok("addRoleACL", "writer", "publishClientSend", "sensors/#", "allow")
    ctrl.ok("addClientRole", "alice", "writer", "3")
    ctrl.ok("createRole", "reader")
    ctrl.ok("addRoleACL", "reader", "subscribePattern", "sensors/#", "allow")
    ctrl.ok("addRoleACL", "reader", "publishClientReceive", "sensors/secret", "deny", "5")
    ctrl.ok("createGroup", "readers")
    ctrl.ok("addGroupRole", "readers", "reader")
    ctrl.ok("addGroupClient", "readers", "bob", "2")
    assert ctrl.ok("listClients") == "admin\nalice\nbob\n"
    assert ctrl.ok("listRoles") == "admin\nreader\nwriter\n"
    assert ctrl.ok("getClient", "bob") == (
        "Username: bob\nClientid: bob\nGroups:   readers (priority: 2)\n")
    assert ctrl.ok("getClient", "alice") == (
        "Username: alice\nClientid:\nRoles:    writer (priority: 3)\n")
    assert ctrl.ok("getRole", "reader") == (
        "Rolename: reader\n"
        "ACLs:     publishClientReceive : deny  : sensors/secret (priority: 5)\n"
        "          subscribePattern     : allow : sensors/# (priority: 0)\n")
    assert ctrl.ok("getGroup", "readers") == (
        "Groupname: readers\nRoles:     reader (priority: -1)\nClients:   bob\n")
    assert ctrl.error("getClient", "nobody") == "getClient: Error: Client not found"
    assert ctrl.error("addGroupClient", "readers", "bob") == (
        "addGroupClient: Error: Client is already in this group")
    with Clients(broker) as clients:
        login(clients, None, None, expect_rc=5)  # allow_anonymous is unset: refused
        login(clients, "alice", "wrong", "alice", expect_rc=4)
        login(clients, "nobody", "alice-pw", "alice", expect_rc=4)
        login(clients, "bob", "bob-pw", "not-bob", expect_rc=5)  # bob's client id is "bob"
        alice = login(clients, "alice", "alice-pw", "alice", V5)
        bob = login(clients, "bob", "bob-pw", "bob", V5)
        assert bob.subscribe("sensors/#", 1) == [1]
        assert bob.subscribe("other/#", 1) == [0x87]  # the default: subscribe denied
        assert alice.publish("sensors/temp", b"21", qos=1) == 0
        assert alice.publish("sensors/secret", b"s", qos=1) == 0  # bob may not receive it
        assert alice.publish("other/x", b"x", qos=1) == 0x87  # the default: send denied
        message = bob.get()
        assert (message.topic, message.payload) == ("sensors/temp", b"21")
        bob.assert_no_message()
        # The default access and role changes apply at the next check, nobody reconnects.
        ctrl.ok("setDefaultACLAccess", "subscribe", "allow")
        assert ctrl.ok("getDefaultACLAccess") == (
            "publishClientSend    : deny\npublishClientReceive : allow\n"
            "subscribe            : allow\nunsubscribe          : allow\n")
        assert bob.subscribe("other/#", 1) == [1]
        ctrl.ok("removeRoleACL", "writer", "publishClientSend", "sensors/#")
        assert alice.publish("sensors/temp", b"22", qos=1) == 0x87
        ctrl.ok("addRoleACL", "writer", "publishClientSend", "other/#", "allow")
        assert alice.publish("other/y", b"y", qos=1) == 0
        assert bob.get().topic == "other/y"
        assert not alice.disconnected.is_set() and not bob.disconnected.is_set()
        # Identity changes disconnect (MQTT 5: 0x98 Administrative action), on both workers.
        ctrl.ok("disableClient", "alice")
        assert kicked(alice) == ADMINISTRATIVE_ACTION
        login(clients, "alice", "alice-pw", "alice", expect_rc=5)
        ctrl.ok("enableClient", "alice")
        alice = login(clients, "alice", "alice-pw", "alice")
        ctrl.ok("setClientPassword", "bob", "bob-new")
        assert kicked(bob) == ADMINISTRATIVE_ACTION
        login(clients, "bob", "bob-pw", "bob", expect_rc=4)
        login(clients, "bob", "bob-new", "bob")
        ctrl.ok("deleteClient", "alice")
        kicked(alice)  # a 3.1.1 client: the socket closes
        login(clients, "alice", "alice-pw", "alice", expect_rc=4)


def test_anonymous_clients_get_the_anonymous_group(broker_factory: BrokerFactory,
                                                   tmp_path: Path) -> None:
    broker = start(broker_factory, tmp_path, allow_anonymous=True)
    ctrl = Ctrl(broker, "admin-1")
    with Clients(broker) as clients:
        anonymous = login(clients, None, None, "anon", V5)
        assert anonymous.subscribe("public/#", 1) == [0x87]
        assert ctrl.ok("getAnonymousGroup") == "\n"
        ctrl.ok("createRole", "public")
        ctrl.ok("addRoleACL", "public", "subscribePattern", "public/#", "allow")
        ctrl.ok("addRoleACL", "public", "publishClientSend", "public/#", "allow")
        ctrl.ok("createGroup", "guests")
        ctrl.ok("addGroupRole", "guests", "public")
        ctrl.ok("setAnonymousGroup", "guests")
        assert ctrl.ok("getAnonymousGroup") == "guests\n"
        assert anonymous.subscribe("public/#", 1) == [1]
        assert anonymous.publish("public/hello", b"hi", qos=1) == 0
        assert anonymous.get().payload == b"hi"
        assert anonymous.publish("private/x", b"x", qos=1) == 0x87
        assert ctrl.error("deleteGroup", "guests") == (
            "deleteGroup: Error: Deleting the anonymous group is forbidden")


def test_changes_are_written_atomically_and_survive_a_restart(broker_factory: BrokerFactory,
                                                              tmp_path: Path) -> None:
    broker = start(broker_factory, tmp_path)
    path = tmp_path / "dynamic-security.json"
    original = path.read_bytes()
    ctrl = Ctrl(broker, "admin-1")
    with path.open("rb") as before:
        ctrl.ok("createClient", "carol", "-p", "carol-pw")
        # Replaced by a rename, not written in place: the file opened before is whole and
        # no longer linked (a reader sees the old file or the new, never half of one).
        assert (before.read(), os.fstat(before.fileno()).st_nlink) == (original, 0)
    ctrl.ok("createRole", "carol-role")
    ctrl.ok("addRoleACL", "carol-role", "publishClientSend", "carol/#", "allow", "7")
    ctrl.ok("addClientRole", "carol", "carol-role")
    # Readable by its owner only (it holds password hashes), nothing left beside it.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(entry.name for entry in tmp_path.iterdir()
                  if entry.name.startswith((".dynamic", "dynamic"))) == ["dynamic-security.json"]
    saved = json.loads(path.read_text())
    carol = next(client for client in saved["clients"] if client["username"] == "carol")
    assert carol["roles"] == [{"rolename": "carol-role"}]
    assert carol["iterations"] == ITERATIONS
    assert len(carol["salt"]) == 16  # base64 of SALT_BYTES
    assert SALT_BYTES == 12
    role = next(role for role in saved["roles"] if role["rolename"] == "carol-role")
    assert role["acls"] == [{"acltype": "publishClientSend", "topic": "carol/#", "priority": 7,
                             "allow": True}]
    weak = ("1 client(s) with weak password hashes (PBKDF2-SHA512): admin (101 iterations); "
            "a password set over the API (`mosquitto_ctrl dynsec setClientPassword`) gets "
            f"{ITERATIONS} iterations")
    assert broker.log_text().count(weak) == 1  # once at start-up, whatever the workers
    assert broker.stop() == 0
    broker.port = free_port()  # not the one just freed, which a test running beside may take
    broker.start()
    assert ctrl.ok("getClient", "carol") == (
        "Username: carol\nClientid:\nRoles:    carol-role (priority: -1)\n")
    with Clients(broker) as clients:
        carol_client = login(clients, "carol", "carol-pw", "carol", V5)
        assert carol_client.publish("carol/x", b"x", qos=1) == 0x10  # no subscriber
        login(clients, ADMIN, ADMIN_PASSWORD, "admin-2")


def test_control_requests_reach_no_subscriber_and_bad_ones_get_answers(
        broker_factory: BrokerFactory, tmp_path: Path) -> None:
    """The admin role may read `$CONTROL/dynamic-security/#`: an eavesdropping admin sees the
    answers, never a request (they carry passwords). A client whose ACL does not grant the
    request topic is refused (0x87) and changes nothing; a request that is not JSON, or is
    nested deeper than the parser goes, is answered with an error."""
    broker = start(broker_factory, tmp_path)
    ctrl = Ctrl(broker, "admin-1")
    ctrl.ok("createClient", "dave", "-p", "dave-pw")
    with Clients(broker) as clients:
        watcher = login(clients, ADMIN, ADMIN_PASSWORD, "watcher", V5)
        assert watcher.subscribe("$CONTROL/#", 0) == [0]
        ctrl.ok("createClient", "erin", "-p", "erin-secret")
        answer = watcher.get()
        assert (answer.topic, json.loads(answer.payload)) == (
            RESPONSE_TOPIC, {"responses": [{"command": "createClient"}]})
        dave = login(clients, "dave", "dave-pw", "dave", V5)
        request = json.dumps({"commands": [{"command": "deleteClient",
                                            "username": "erin"}]}).encode()
        assert dave.publish(REQUEST_TOPIC, request, qos=1) == 0x87
        assert ctrl.ok("listClients") == "admin\ndave\nerin\n"
        watcher.get()  # listClients' answer
        admin = RawClient(broker)
        admin.send(packet(0x10, mqtt_str("MQTT") + b"\x04\xc2\x00\x3c" + mqtt_str("admin-raw")
                          + mqtt_str(ADMIN) + mqtt_str(ADMIN_PASSWORD)))
        assert admin.expect(2).body == b"\x00\x00"
        for payload, error in ((b"{not json", "Payload not valid JSON"),
                               (b"[" * 100_000, "Payload not valid JSON"),
                               (b'{"commands": 3}', "Invalid/missing commands")):
            admin.send(packet(0x32, mqtt_str(REQUEST_TOPIC) + b"\x00\x01" + payload))
            assert admin.expect(PUBACK).packet_id == 1
            assert json.loads(watcher.get().payload) == {
                "responses": [{"command": "Unknown command", "error": error}]}
        watcher.assert_no_message()
    text = broker.log_text()
    assert "erin-secret" not in text
    assert "publish to '$CONTROL/dynamic-security/v1' dropped: denied by the ACL" in text


def test_requests_from_every_worker_run_in_order(broker_factory: BrokerFactory,
                                                 tmp_path: Path) -> None:
    """Admins on every worker send requests at once (each with its correlationData): every
    request is answered once, in the order they run, and the file ends with every change.
    (Answers go to everyone who reads the response topic, so concurrent mosquitto_ctrl
    processes take each other's: each takes the first answer, in Mosquitto too.)"""
    broker = start(broker_factory, tmp_path)
    with Clients(broker) as clients:
        watcher = login(clients, ADMIN, ADMIN_PASSWORD, "watcher", V5)
        assert watcher.subscribe(RESPONSE_TOPIC, 0) == [0]
        admins = [login(clients, ADMIN, ADMIN_PASSWORD, client_id, V5)
                  for client_id in ("admin-1", "admin-2", "ctrl", "ctrl-a")]
        names = [f"user{index}" for index in range(4)]
        for index, name in enumerate(names):
            admins[index % 4].client.publish(REQUEST_TOPIC, json.dumps({"commands": [
                {"command": "createClient", "username": name, "password": f"{name}-pw",
                 "correlationData": name}]}), qos=1)
        answers = [json.loads(message.payload)["responses"]
                   for message in watcher.get_many(len(names), timeout=30)]
        assert sorted(answer[0]["correlationData"] for answer in answers) == names
        assert all(answer == [{"command": "createClient", "correlationData": answer[0][
            "correlationData"]}] for answer in answers)
        watcher.assert_no_message()
    assert Ctrl(broker, "admin-1").ok("listClients") == "".join(
        f"{name}\n" for name in ["admin", *names])
    saved = json.loads((tmp_path / "dynamic-security.json").read_text())
    assert sorted(client["username"] for client in saved["clients"]) == ["admin", *names]
