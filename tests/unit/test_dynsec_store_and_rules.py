"""The dynamic-security file read strictly and written back, and the order in which Mosquitto's
plugin checks roles and ACLs, on states built by hand."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from culex.auth.acl import Access
from culex.dynsec.model import ITERATIONS, Acl, Client, DynsecState, Group, Password, Role
from culex.dynsec.rules import DynsecRules
from culex.dynsec.store import DynsecFileError, dumps, parse

HASH = base64.b64encode(bytes(64)).decode()
SALT = base64.b64encode(bytes(12)).decode()


def document(**parts: Any) -> bytes:
    return json.dumps(parts).encode()


@pytest.mark.parametrize(("data", "problem"), [
    (b'{"clients": [\n{"username": }]}', "f.json:2: not valid JSON"),
    (b"[]", "f.json: expected a JSON object"),
    (b"[" * 100_000, "f.json: not usable JSON: maximum recursion depth"),
    (b'{"clients": [{"username": "a", "textname": "\\ud800"}]}',
     "f.json: not usable JSON: 'utf-8' codec can't encode character '\\ud800'"),
    (b'{"x": 1' + b"0" * 5000 + b"}", "f.json: not usable JSON: Exceeds the limit"),
    (document(clients={}), "clients: expected an array of objects"),
    (document(clients=[{"username": "a"}, {"username": "a"}]), "client 'a' is there twice"),
    (document(clients=[{"username": 3}]), "clients[0]: username: expected a string"),
    (document(clients=[{"username": "a", "roles": [{"rolename": "r"}]}]),
     "clients[0] (a): roles[0]: rolename 'r' does not exist"),
    (document(clients=[{"username": "a", "password": HASH, "salt": "%%", "iterations": 5}]),
     "clients[0] (a): salt: expected base64"),
    (document(clients=[{"username": "a", "password": SALT, "salt": SALT, "iterations": 5}]),
     "expected a 64-byte PBKDF2-SHA512 hash and a salt"),
    (document(clients=[{"username": "a", "password": HASH, "salt": SALT, "iterations": 0}]),
     "iterations: expected 1 to 10000000"),
    (document(clients=[{"username": "a", "disabled": "yes"}]),
     "disabled: expected true or false"),
    (document(roles=[{"rolename": "r", "acls": [{"acltype": "publish", "topic": "a"}]}]),
     "roles[0] (r): acls[0]: acltype: not one of publishClientSend"),
    (document(roles=[{"rolename": "r", "acls": [{"acltype": "subscribePattern",
                                                 "topic": "a/#/b"}]}]),
     "roles[0] (r): acls[0]: topic 'a/#/b':"),
    (document(roles=[{"rolename": "r", "acls": [{"acltype": "publishClientSend",
                                                 "topic": "a", "priority": 1.5}]}]),
     "priority: expected a whole number"),
    (b'{"roles": [{"rolename": "r", "acls": [{"acltype": "publishClientSend", "topic": "a",'
     b' "priority": 1' + b"0" * 400 + b"}]}]}", "priority: expected a whole number"),
    (document(groups=[{"groupname": "g", "clients": [{"username": "x"}]}]),
     "groups[0]: clients[0]: username 'x' does not exist"),
    (document(anonymousGroup="g"), "anonymousGroup: 'g' is not a group"),
    (document(defaultACLAccess={"subscribe": 1}), "subscribe: expected true or false"),
])
def test_a_file_that_cannot_be_used_is_refused_naming_the_entry(data: bytes,
                                                                problem: str) -> None:
    with pytest.raises(DynsecFileError) as caught:
        parse(data, "f.json")
    assert problem in str(caught.value)


def test_files_read_back_as_written_and_keys_are_case_insensitive() -> None:
    assert parse(b" \n", "f.json") == DynsecState()
    state = parse(document(
        clients=[{"username": "a", "textName": "A", "password": HASH, "salt": SALT,
                  "iterations": 101, "roles": [{"rolename": "r", "priority": 2}],
                  "clientid": "a-1", "disabled": True}],
        groups=[{"groupname": "g", "roles": [{"rolename": "r"}],
                 "clients": [{"username": "a", "priority": 3}]}],
        roles=[{"rolename": "r", "acls": [
            {"acltype": "publishclientsend", "topic": "x/#", "allow": True},
            {"acltype": "publishClientSend", "topic": "y/#", "priority": 4}]}],
        anonymousGroup="g", defaultACLAccess={"publishClientReceive": True}), "f.json")
    client = state.clients["a"]
    assert (client.textname, client.clientid, client.disabled) == ("A", "a-1", True)
    assert [acl.topic for acl in state.roles["r"].acls["publishClientSend"]] == ["y/#", "x/#"]
    assert state.default_access == {"publishClientSend": False, "publishClientReceive": True,
                                    "subscribe": False, "unsubscribe": False}
    again = parse(dumps(state), "again.json")
    assert again == state
    assert json.loads(dumps(state))["groups"] == [
        {"groupname": "g", "roles": [{"rolename": "r"}],
         "clients": [{"username": "a", "priority": 3}]}]


def state_with(*roles: Role, client_roles: dict[str, int] | None = None,
               groups: dict[str, tuple[dict[str, int], int]] | None = None) -> DynsecState:
    """A client "c" with `client_roles`, in each group of `groups` (name -> (its roles, the
    group's priority for c)), everything denied by default."""
    state = DynsecState(roles={role.name: role for role in roles})
    state.clients["c"] = Client("c", roles=client_roles or {})
    for name, (group_roles, priority) in (groups or {}).items():
        state.groups[name] = Group(name, roles=group_roles, clients={"c": priority})
    return state


def role(name: str, *acls: tuple[str, str, bool, int]) -> Role:
    built = Role(name)
    for kind, topic, allow, priority in acls:
        built.add(kind, Acl(topic, priority, allow))
    return built


def test_roles_are_checked_by_priority_then_name_then_groups() -> None:
    send = "publishClientSend"
    rules = DynsecRules(state_with(
        role("b", (send, "t/#", True, 0)), role("a", (send, "t/#", False, 0)),
        role("z", (send, "t/x", True, 0)), role("g1", (send, "u/#", False, 0)),
        role("g2", (send, "u/#", True, 0)),
        client_roles={"a": 1, "b": 1, "z": 5}, groups={"one": ({"g1": 0}, 1),
                                                       "two": ({"g2": 0}, 2)}))
    view = rules.for_client("id", "c")
    assert view.allowed("t/x", Access.WRITE)  # z first (priority 5)
    assert not view.allowed("t/y", Access.WRITE)  # a before b: same priority, by name
    assert view.allowed("u/1", Access.WRITE)  # group "two" before "one" (priority 2 > 1)
    rules.state.groups["one"].clients["c"] = 9
    assert view.allowed("u/1", Access.WRITE)  # the view keeps its flattening...
    rules.changed()
    assert not view.allowed("u/1", Access.WRITE)  # ...until the rules change


def test_acls_by_priority_literals_before_patterns_and_the_default() -> None:
    rules = DynsecRules(state_with(
        role("r", ("subscribePattern", "a/#", False, 9), ("subscribeLiteral", "a/b", True, 0),
             ("publishClientReceive", "#", True, 0),
             ("publishClientReceive", "a/secret", False, 1)),
        client_roles={"r": 0}))
    view = rules.for_client("id", "c")
    assert view.allowed_filter("a/b")  # the literal, whatever the pattern's priority
    assert not view.allowed_filter("a/c")
    assert not view.allowed_filter("b")  # nothing matches: the default (denied)
    assert not view.allowed("a/secret", Access.READ)
    assert view.allowed("a/other", Access.READ)
    assert not view.allowed("$SYS/x", Access.READ)  # "#" does not match $ topics...
    rules.state.default_access["publishClientReceive"] = True
    rules.state.default_access["subscribe"] = True
    rules.changed()
    assert view.allowed("$SYS/x", Access.READ)  # ...the default does
    assert not view.allowed("$CONTROL/dynamic-security/v1", Access.READ)  # but never $CONTROL
    assert view.allowed_filter("b")
    assert not view.allowed_filter("$CONTROL/#")


def test_subscribe_patterns_cover_filters_as_mosquitto_matches_them() -> None:
    rules = DynsecRules(state_with(
        role("r", ("subscribePattern", "#", True, 0), ("unsubscribePattern", "a/+", True, 0)),
        client_roles={"r": 0}))
    view = rules.for_client("id", "c")
    assert view.allowed_filter("$SYS/#")  # Mosquitto's sub_acl_check has no $ rule
    assert view.allowed_unsubscribe("a/b")
    assert not view.allowed_unsubscribe("a/#")  # "+" does not cover "#"
    assert not view.allowed_unsubscribe("b/c")  # the default here: denied


def test_unknown_users_get_nothing_and_anonymous_clients_their_group() -> None:
    state = state_with(role("r", ("publishClientSend", "pub/#", True, 0)))
    state.default_access = dict.fromkeys(state.default_access, True)
    rules = DynsecRules(state)
    stranger = rules.for_client("id", "stranger")  # e.g. a certificate's name
    assert not stranger.allowed("anything", Access.WRITE)
    assert not stranger.allowed_filter("anything")
    anonymous = rules.for_client("id", None)
    assert anonymous.allowed("pub/x", Access.WRITE)  # the default, no anonymous group yet
    state.default_access["publishClientSend"] = False
    state.groups["guests"] = Group("guests", roles={"r": 0})
    state.anonymous_group = "guests"
    rules.changed()
    assert anonymous.allowed("pub/x", Access.WRITE)
    assert not anonymous.allowed("other", Access.WRITE)


def test_passwords_verify_as_mosquitto_hashes_them() -> None:
    password = Password.create("s3cret", iterations=1000)
    assert password.verify(b"s3cret") and not password.verify(b"s3cre")
    assert not password.verify(b"s3cret\0tail")  # Mosquitto would hash only up to the NUL
    assert Password.create("x").iterations == ITERATIONS
