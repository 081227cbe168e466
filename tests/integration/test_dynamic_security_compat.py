"""The same mosquitto_ctrl script against Culex and against Debian's Mosquitto 2.0.11 with its
real dynamic-security plugin, both started from the same mosquitto.conf (the plugin lines of
Mosquitto's documentation) on a file made by `mosquitto_ctrl dynsec init`: every command's
output is compared, then what clients may do. Where the two differ, each broker's own answer is
asserted, so the difference stays visible."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.integration.clients import Clients
from tests.integration.dynsec_tools import Ctrl, Output, dynsec_init, login, plugin
from tests.integration.test_mosquitto_compat import PROGRAMS, ConfBroker, Start, start

__all__ = ["start"]  # the fixture, used by name

V5 = mqtt.MQTTv5

# Commands whose output must be the same on both brokers, in order.
SCRIPT = [
    ("createClient", "alice", "-p", "alice-pw"),
    ("createClient", "bob", "-p", "bob-pw", "-c", "bob"),
    ("createClient", "alice", "-p", "again"),
    ("createRole", "writer"),
    ("addRoleACL", "writer", "publishClientSend", "sensors/#", "allow", "3"),
    ("addRoleACL", "writer", "publishClientSend", "sensors/#", "allow"),
    ("addRoleACL", "writer", "subscribePattern", "sensors/#", "allow"),
    ("addRoleACL", "writer", "publishClientReceive", "sensors/+", "deny", "9"),
    ("addRoleACL", "writer", "subscribeLiteral", "a/b", "allow"),
    ("addRoleACL", "writer", "unsubscribeLiteral", "a/b", "deny"),
    ("addRoleACL", "writer", "unsubscribePattern", "x/#", "allow"),
    ("addRoleACL", "writer", "publishClientSend", "a/#/b", "allow"),
    ("addRoleACL", "nobody", "publishClientSend", "a", "allow"),
    ("addClientRole", "alice", "writer", "5"),
    ("addClientRole", "alice", "nothing"),
    ("createRole", "reader"),
    ("addRoleACL", "reader", "subscribePattern", "sensors/#", "allow"),
    ("createGroup", "team"),
    ("createGroup", "team"),
    ("addGroupClient", "team", "bob", "2"),
    ("addGroupClient", "team", "nobody"),
    ("addGroupClient", "nothing", "bob"),
    ("addGroupRole", "team", "reader", "4"),
    ("addGroupRole", "team", "reader"),
    ("getClient", "alice"),
    ("getClient", "bob"),
    ("getGroup", "team"),
    ("getRole", "writer"),
    ("getRole", "reader"),
    ("listClients",),
    ("listClients", "1", "1"),
    ("listGroups",),
    ("listRoles",),
    ("listRoles", "2"),
    ("getDefaultACLAccess",),
    ("getAnonymousGroup",),
    ("setAnonymousGroup", "team"),
    ("getAnonymousGroup",),
    ("removeRoleACL", "writer", "subscribeLiteral", "a/b"),
    ("removeRoleACL", "writer", "subscribeLiteral", "a/b"),
    ("getRole", "writer"),
    ("setClientId", "bob", "bob-2"),
    ("getClient", "bob"),
    ("setClientId", "bob", "bob"),
    ("disableClient", "bob"),
    ("getClient", "bob"),
    ("enableClient", "bob"),
    ("setClientPassword", "bob", "bob-new"),
    ("setClientPassword", "nobody", "x"),
    ("getClient", "nobody"),
    ("deleteRole", "nothing"),
    ("getGroup", "nothing"),
]


def conf(path: Path) -> str:
    # `user root`: Mosquitto run as root otherwise becomes user mosquitto, who cannot write
    # the test's private directory (Culex accepts the key with a warning).
    return (f"listener {{port}} 127.0.0.1\nplugin {plugin()}\n"
            f"plugin_opt_config_file {path}\nuser root\n")


Run = Callable[[str], tuple[ConfBroker, Ctrl]]


@pytest.fixture
def run(start: Start, tmp_path: Path) -> Run:
    def launch(program: str) -> tuple[ConfBroker, Ctrl]:
        path = dynsec_init(tmp_path / f"dynamic-security-{program}.json")
        broker = start(program, conf(path))
        return broker, Ctrl(broker)
    return launch


def test_mosquitto_ctrl_prints_the_same_against_both(run: Run) -> None:
    outputs: dict[str, list[Output]] = {}
    for program in PROGRAMS:
        _broker, ctrl = run(program)
        outputs[program] = [ctrl(*command) for command in SCRIPT]
    for command, culex, mosquitto in zip(SCRIPT, outputs["culex"], outputs["mosquitto"],
                                         strict=True):
        assert culex == mosquitto, command


def test_the_same_changes_do_the_same_to_clients(run: Run) -> None:
    for program in PROGRAMS:
        broker, ctrl = run(program)
        for command in SCRIPT[:24]:
            ctrl(*command)
        with Clients(broker) as clients:
            alice = login(clients, "alice", "alice-pw", "alice", V5)
            bob = login(clients, "bob", "bob-pw", "bob", V5)
            assert alice.subscribe("sensors/#", 1) == [1], program
            assert alice.subscribe("a/b", 1) == [1], program
            assert alice.subscribe("a/c", 1) == [0x87], program
            assert bob.subscribe("sensors/#", 1) == [1], program
            assert alice.unsubscribe("a/b") == [0x87], program
            assert alice.publish("sensors/temp", b"21", qos=1) == 0, program
            assert alice.publish("other", b"x", qos=1) == 0x87, program
            assert bob.publish("sensors/temp", b"x", qos=1) == 0x87, program
            message = bob.get()
            assert (message.topic, message.payload) == ("sensors/temp", b"21"), program
            alice.assert_no_message()  # publishClientReceive sensors/+ deny, priority 9
            login(clients, "bob", "bob-pw", "not-bob", expect_rc=5)
            ctrl("disableClient", "bob")
            assert bob.disconnected.wait(5), program
            assert bob.disconnect_reason == 0x98, program
            login(clients, "bob", "bob-pw", "bob", expect_rc=5)
            # Where they differ: a wrong password (Culex: 4, bad user name or password;
            # Mosquitto: 5, not authorized, as with its password files) ...
            login(clients, "alice", "wrong", "alice",
                  expect_rc=4 if program == "culex" else 5)
            # ... and a role's new ACL: Mosquitto disconnects the role's clients (they
            # subscribe again under it), Culex applies it at the next check.
            ctrl("addRoleACL", "writer", "publishClientSend", "other", "allow")
            if program == "mosquitto":
                assert alice.disconnected.wait(5)
                alice = login(clients, "alice", "alice-pw", "alice", V5)
            else:
                alice.assert_no_message()
                assert not alice.disconnected.is_set()
            assert alice.publish("other", b"x", qos=1) == 0x10, program  # nobody subscribes


def test_where_debians_mosquitto_ctrl_and_mosquitto_disagree(run: Run, tmp_path: Path) -> None:
    """Debian's mosquitto_ctrl 2.0.11 sends setDefaultACLAccess as {"access": "allow"}, which
    the 2.0.11 plugin ignores (Mosquitto 2.0.12 fixed the tool): Culex takes it, so the
    command does what the tool's help says. Adding a role a client already has: Mosquitto
    answers "Internal error", Culex says what happened. The file each broker writes reads back
    in the other's format: Mosquitto's dump has the same clients and roles."""
    outputs = {}
    for program in PROGRAMS:
        _broker, ctrl = run(program)
        ctrl.ok("createRole", "r")
        ctrl.ok("createClient", "carol", "-p", "carol-pw")
        ctrl.ok("addClientRole", "carol", "r")
        outputs[program] = (ctrl("setDefaultACLAccess", "subscribe", "allow"),
                            ctrl.ok("getDefaultACLAccess"),
                            ctrl.error("addClientRole", "carol", "r"))
    assert outputs["culex"][0] == outputs["mosquitto"][0] == Output("", "")
    assert outputs["mosquitto"][1].splitlines()[2] == "subscribe            : deny"
    assert outputs["culex"][1].splitlines()[2] == "subscribe            : allow"
    assert outputs["mosquitto"][2] == "addClientRole: Error: Internal error"
    assert outputs["culex"][2] == "addClientRole: Error: Client is already in this role"
    saved = {program: json.loads((tmp_path / f"dynamic-security-{program}.json").read_text())
             for program in PROGRAMS}
    for program, document in saved.items():
        assert [client["username"] for client in document["clients"]] == ["admin", "carol"], \
            program
        assert [role["rolename"] for role in document["roles"]] == ["admin", "r"], program
    # Culex's file, as Mosquitto reads it: carol logs in with her password.
    culex_file = tmp_path / "dynamic-security-culex.json"
    (tmp_path / "again").mkdir()
    broker = ConfBroker(tmp_path / "again", conf(culex_file), "mosquitto").start()
    try:
        with Clients(broker) as clients:
            login(clients, "carol", "carol-pw", "carol")
            login(clients, "carol", "wrong", "carol", expect_rc=5)
    finally:
        assert broker.stop() == 0
