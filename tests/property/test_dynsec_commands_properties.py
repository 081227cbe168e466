"""Any `$CONTROL/dynamic-security/v1` request, however malformed: the commands never raise,
every command before a bad correlationData gets exactly one answer, and the state they leave
always writes a file that reads back to the same state (a change can never make the broker
unable to start again)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from culex.dynsec.commands import NAMES, process
from culex.dynsec.commands import parse as parse_request
from culex.dynsec.model import ACL_TYPES, DEFAULT_ACCESS_TYPES, Password
from culex.dynsec.store import dumps, parse

SETTINGS = settings(max_examples=60, deadline=None)

# Few names, so that commands meet the things earlier ones made; odd ones half the time.
names = st.one_of(st.sampled_from(["a", "b"]),
                  st.sampled_from(["", "A", "a/#", "$CONTROL/#", "\u00e9", "\ud800", "x\0"]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                    st.floats(allow_nan=True), names)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)), max_leaves=6)
# Commands name things most of the time, so that they act on each other; the other arguments
# are anything.
kinds = st.sampled_from([*ACL_TYPES, *DEFAULT_ACCESS_TYPES, "bogus"])
arguments = st.fixed_dictionaries(
    {"username": names, "groupname": names, "rolename": names},
    optional={key: values for key in ("password", "clientid", "textname", "textdescription",
                                      "verbose", "count", "offset")}
    | {"priority": scalars, "allow": scalars, "topic": names, "acltype": kinds})
references = st.fixed_dictionaries({}, optional={
    "rolename": names, "groupname": names, "username": names, "priority": scalars,
    "acltype": kinds, "topic": names, "allow": scalars,
    "access": st.sampled_from(["allow", "deny", "maybe"])})
commands = st.builds(
    lambda name, given, lists: {"command": name, **given, **lists},
    st.sampled_from(NAMES), arguments,
    st.dictionaries(st.sampled_from(["roles", "groups", "clients", "acls"]),
                    st.one_of(st.lists(references, max_size=3), values), max_size=2))
requests = st.lists(commands, min_size=4, max_size=20)
# Then anything: unknown commands, commands that are not objects, correlationData of any kind.
junk = st.lists(st.one_of(commands, values, st.builds(
    lambda name, correlation: {"command": name, "correlationData": correlation},
    st.one_of(st.sampled_from(NAMES), names), values)), max_size=6)

HASH = Password(bytes(64), bytes(12), 1)
# Every example starts from clients, groups and roles with ACLs, references between them and
# an anonymous group, so that the random commands change and delete things that exist.
SEED: list[Any] = [
    *({"command": "createRole", "rolename": name, "acls": [
        {"acltype": kind, "topic": "a/#", "allow": True} for kind in ACL_TYPES]}
      for name in "ab"),
    *({"command": "createGroup", "groupname": name, "roles": [{"rolename": name}]}
      for name in "ab"),
    *({"command": "createClient", "username": name, "password": "pw", "roles": [
        {"rolename": "a", "priority": 2}], "groups": [{"groupname": name}]} for name in "ab"),
    {"command": "setAnonymousGroup", "groupname": "b"},
]


@SETTINGS
@given(requests, junk)
def test_any_request_is_answered_and_leaves_a_file_that_reads_back(first: list[Any],
                                                                   second: list[Any]) -> None:
    state = parse(b"", "empty")
    assert all("error" not in answer
               for answer in process(state, {"commands": SEED}, lambda password: HASH,
                                     "seed").responses)
    for batch in (first, second):
        # As the broker reads a request: a \ud800 escape makes the payload not JSON.
        tree = parse_request(json.dumps({"commands": batch}).encode())
        request = process(state, tree, lambda password: HASH, "test")
        if tree is None:
            assert request.responses == [{"command": "Unknown command",
                                          "error": "Payload not valid JSON"}]
            continue
        stops = [index for index, command in enumerate(batch) if isinstance(command, dict)
                 and isinstance(command.get("command"), str)
                 and command.get("correlationData") is not None
                 and not isinstance(command.get("correlationData"), str)]
        assert len(request.responses) == (stops[0] + 1 if stops else len(batch))
        data = dumps(state)
        assert dumps(parse(data, "saved")) == data
