"""The dynamic-security commands and service on the core driven by hand: Mosquitto's request
rules, all-or-nothing modify commands, a change that cannot be saved is undone, identity
changes disconnect (0x98), requests run in order while passwords are hashed, and the
authenticator judges by the state when the password check ends."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from culex.core.access import AuthRequest
from culex.dynsec import model, service
from culex.dynsec.service import RESPONSE_TOPIC, DynamicSecurity
from culex.dynsec.store import dumps, parse
from culex.protocol.packets import Publish
from culex.protocol.packets5 import Disconnect5
from tests.unit.core_helpers import FakeClient, Harness

ADMIN_FILE = {
    "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": True,
                         "subscribe": False, "unsubscribe": True},
    "clients": [{"username": "admin", "roles": [{"rolename": "admin"}]}],
    "roles": [{"rolename": "admin", "acls": [
        {"acltype": acltype, "topic": "$CONTROL/dynamic-security/#", "allow": True}
        for acltype in ("publishClientSend", "publishClientReceive", "subscribePattern")]}],
}


class Pool:
    """`Submit` that holds the work until `run_all`, as a thread pool would."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Callable[[], Any], Callable[[Any], None]]] = []

    def __call__(self, work: Callable[[], Any], done: Callable[[Any], None]) -> None:
        self.waiting.append((work, done))

    def run(self, index: int = 0) -> None:
        work, done = self.waiting.pop(index)
        done(work())

    def run_all(self) -> None:
        while self.waiting:
            self.run()


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "dynsec.json"
        data = json.dumps(ADMIN_FILE).encode()
        self.path.write_bytes(data)
        self.pool = Pool()
        self.dynsec = DynamicSecurity(str(self.path), data, parse(data, "dynsec.json"),
                                      allow_anonymous=False, submit=self.pool)
        self.harness = Harness()
        broker = self.harness.broker
        broker.access.control = self.dynsec
        broker.set_acl(self.dynsec.rules)
        self.dynsec.attach(broker)
        # Logged in as admin (the harness checks no password; a certificate's name is the
        # user name): the ACL is the admin role's.
        self.admin = self.harness.client()
        self.admin.connection.certificate_username = "admin"
        assert self.admin.connect("admin").return_code == 0
        assert self.admin.subscribe((RESPONSE_TOPIC, 0)) == [0]

    def send(self, *commands: dict[str, Any]) -> list[dict[str, Any]]:
        """Publish a request, run the pool, and return the answers."""
        self.admin.publish("$CONTROL/dynamic-security/v1",
                           json.dumps({"commands": list(commands)}).encode())
        self.pool.run_all()
        return self.answers()

    def answers(self) -> list[dict[str, Any]]:
        found = []
        for packet in self.admin.received_packets():
            assert isinstance(packet, Publish) and packet.topic == RESPONSE_TOPIC, packet
            found += json.loads(packet.payload)["responses"]
        return found


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    # What is tested here is when hashes are made and checked, not how costly they are.
    monkeypatch.setattr(model, "ITERATIONS", 1000)
    return Setup(tmp_path)


def user5(setup: Setup, client_id: str, username: str) -> FakeClient:
    """An MQTT 5 client logged in as `username` (by a certificate's name, unchecked here)."""
    client = setup.harness.client()
    client.connection.certificate_username = username
    assert client.connect5(client_id).reason_code == 0
    return client


def test_requests_are_read_as_mosquitto_reads_them(setup: Setup) -> None:
    assert setup.send(
        {"command": "CREATEROLE", "rolename": "r", "correlationData": "1"},
        "not an object", {"rolename": "r"}, {"command": "fly"},
        {"command": "getRole", "rolename": "r", "correlationData": 7},
        {"command": "getRole", "rolename": "r"},
    ) == [
        {"command": "createRole", "correlationData": "1"},
        {"command": "Unknown command", "error": "Command not an object"},
        {"command": "Unknown command", "error": "Missing command"},
        {"command": "fly", "error": "Unknown command"},
        {"command": "getRole", "error": "Invalid correlationData data type."},
        # ... which stops the request there, as it stops Mosquitto's loop
    ]


def test_lists_page_as_mosquitto_pages_them(setup: Setup) -> None:
    setup.send(*({"command": "createGroup", "groupname": name} for name in "cab"))
    answers = setup.send({"command": "listGroups"}, {"command": "listGroups", "count": 0},
                         {"command": "listGroups", "count": 2, "offset": 1},
                         {"command": "listGroups", "verbose": True, "offset": 2})
    assert [answer["data"]["groups"] for answer in answers] == [
        ["a", "b", "c"], ["a"], ["b", "c"],
        [{"groupname": "c", "clients": [], "roles": []}]]
    assert {answer["data"]["totalCount"] for answer in answers} == {3}


def test_numbers_are_read_as_cjson_reads_them(setup: Setup) -> None:
    """Truncated and held to a C int, so that the file always reads back."""
    setup.send({"command": "createRole", "rolename": "r"},
               {"command": "createGroup", "groupname": "g"},
               {"command": "addGroupRole", "groupname": "g", "rolename": "r",
                "priority": 1e300},
               {"command": "addRoleACL", "rolename": "r", "acltype": "publishClientSend",
                "topic": "a", "priority": -2.7, "allow": "yes"})
    state = parse(setup.path.read_bytes(), "saved")
    assert state.groups["g"].roles == {"r": 2**31 - 1}
    acl = state.roles["r"].acls["publishClientSend"][0]
    assert (acl.priority, acl.allow) == (-2, False)


def test_modify_commands_change_everything_or_nothing(setup: Setup) -> None:
    setup.send({"command": "createClient", "username": "u", "password": "pw"},
               {"command": "createGroup", "groupname": "g"})
    assert setup.send({"command": "modifyClient", "username": "u", "textname": "new",
                       "groups": [{"groupname": "g"}, {"groupname": "missing"}]}) == [
        {"command": "modifyClient",
         "error": "'groups' contains an object with a 'groupname' that does not exist"}]
    client = setup.dynsec.state.clients["u"]
    assert client.textname is None and "u" not in setup.dynsec.state.groups["g"].clients
    assert setup.send({"command": "modifyGroup", "groupname": "g",
                       "clients": [{"username": 5}]}) == [
        {"command": "modifyGroup",
         "error": "'clients' contains an object with an invalid 'username'"}]
    assert setup.send({"command": "modifyClient", "username": "u", "textname": "new",
                       "groups": [{"groupname": "g", "priority": 3}]}) == [
        {"command": "modifyClient"}]
    assert (client.textname, setup.dynsec.state.groups["g"].clients) == ("new", {"u": 3})


def test_a_change_that_cannot_be_saved_is_undone(setup: Setup,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    victim = user5(setup, "victim-id", "admin")
    before = setup.path.read_bytes()

    def full(path: str, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(service, "write_atomically", full)
    assert setup.send({"command": "createRole", "rolename": "r"},
                      {"command": "listRoles"},
                      {"command": "disableClient", "username": "admin"}) == [
        {"command": "createRole", "error": "Internal error: the change could not be saved "
                                           "(No space left on device)"},
        {"command": "listRoles", "data": {"totalCount": 2, "roles": ["admin", "r"]}},
        {"command": "disableClient", "error": "Internal error: the change could not be saved "
                                              "(No space left on device)"}]
    assert "r" not in setup.dynsec.state.roles
    assert not setup.dynsec.state.clients["admin"].disabled
    assert setup.path.read_bytes() == before
    assert victim.received_packets5() == []  # nobody disconnected


def test_identity_changes_disconnect_and_requests_wait_their_turn(setup: Setup) -> None:
    setup.send({"command": "createClient", "username": "u", "password": "pw"})
    user = user5(setup, "u-id", "u")
    bystander = user5(setup, "b-id", "admin")
    publish = setup.admin.publish
    publish("$CONTROL/dynamic-security/v1", json.dumps({"commands": [
        {"command": "setClientPassword", "username": "u", "password": "pw2"}]}).encode())
    publish("$CONTROL/dynamic-security/v1", json.dumps({"commands": [
        {"command": "getClient", "username": "u"}]}).encode())
    assert setup.answers() == []  # the first waits for its hash, the second for the first
    setup.pool.run_all()
    assert [answer["command"] for answer in setup.answers()] == ["setClientPassword",
                                                                  "getClient"]
    packets = user.received_packets5()
    assert isinstance(packets[0], Disconnect5) and packets[0].reason_code == 0x98
    assert bystander.received_packets5() == []
    saved = parse(setup.path.read_bytes(), "saved")
    assert saved.clients["u"].password is not None
    assert saved.clients["u"].password.verify(b"pw2")
    assert dumps(saved) == dumps(setup.dynsec.state)


def test_the_password_check_ends_against_the_state_of_that_moment(setup: Setup) -> None:
    setup.send({"command": "createClient", "username": "u", "password": "pw",
                "clientid": "u-id"})
    answers: list[int] = []

    def check(password: bytes, client_id: str = "u-id") -> None:
        setup.dynsec.authenticate(AuthRequest(client_id, "u", password, None, "peer"),
                                  answers.append)

    check(b"pw")
    check(b"pw", "other-id")
    check(b"nope")
    setup.dynsec.authenticate(AuthRequest("x", "nobody", b"pw", None, "peer"), answers.append)
    setup.pool.run_all()
    assert answers == [0, 5, 4, 4]
    check(b"pw")  # disabled while its password is being checked
    setup.send({"command": "disableClient", "username": "u"})
    check(b"pw")  # after: disabled
    setup.pool.run_all()
    assert answers[4:] == [5, 5]
    setup.send({"command": "enableClient", "username": "u"})
    check(b"pw")  # its password changes meanwhile: the old one no longer counts
    setup.admin.publish("$CONTROL/dynamic-security/v1", json.dumps({"commands": [
        {"command": "setClientPassword", "username": "u", "password": "pw2"}]}).encode())
    setup.pool.run(1)  # the new password's hash, then the command
    assert setup.answers() == [{"command": "setClientPassword"}]
    setup.pool.run_all()
    assert answers[6:] == [4]


def test_the_response_goes_to_readers_of_the_response_topic_only(setup: Setup) -> None:
    other: FakeClient = setup.harness.connected("other")
    assert other.subscribe((RESPONSE_TOPIC, 0)) == [0x80]  # default access: subscribe denied
    setup.send({"command": "getDefaultACLAccess"})
    assert other.received_packets() == []
