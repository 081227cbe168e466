"""The dynamic-security file: Mosquitto's JSON format, read and written.

Reading is stricter than Mosquitto's plugin, which skips an entry it cannot use (a client
without a user name, a salt of the wrong length, a role that does not exist) and starts
without it: here such a file is refused at start-up with the entry and the problem named, so
nobody finds out later that a client lost its password or a role its ACLs. Keys are matched
case-insensitively, as cJSON's lookups do (`mosquitto_ctrl dynsec init` writes "textName");
keys the format does not have are ignored, as Mosquitto ignores them.

Written (by the service, atomically: `write_atomically`, mode 0600 since it holds password
hashes) in the layout Mosquitto writes, so the file stays usable by Mosquitto.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from typing import Any

from ..auth.files import FileProblem, read_file
from ..protocol.codec import decode_utf8
from ..protocol.errors import MalformedPacket
from ..protocol.topics import filter_problem
from .model import (
    ACL_TYPES,
    DEFAULT_ACCESS_TYPES,
    HASH_BYTES,
    MAX_ITERATIONS,
    NO_PRIORITY,
    Acl,
    Client,
    DynsecState,
    Group,
    Password,
    Role,
    by_priority,
    canonical,
)

JSON = dict[str, Any]


class DynsecFileError(FileProblem):
    """The dynamic-security file cannot be used; the message names the file and the entry."""


def field(obj: JSON, key: str) -> Any:
    """A member of a JSON object, its name compared case-insensitively (cJSON's lookup); the
    first one when several match; None when absent."""
    folded = key.lower()
    return next((value for name, value in obj.items() if name.lower() == folded), None)


def is_text(value: object) -> bool:
    """A JSON string that is a valid MQTT string: encodable (no lone surrogate from a \\u
    escape), without U+0000, control characters or noncharacters (mosquitto_validate_utf8)."""
    if not isinstance(value, str):
        return False
    try:
        decode_utf8(value.encode(), "name")
    except (UnicodeEncodeError, MalformedPacket):
        return False
    return True


INT_MIN, INT_MAX = -2**31, 2**31 - 1


def integer(value: object) -> int | None:
    """A JSON number in a command, as cJSON's valueint reads it: truncated, and held to a C
    int; None for anything else (true is no number here, though Python's bool is an int)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return max(INT_MIN, min(INT_MAX, int(value) if abs(value) < 2**63 else
                            (INT_MAX if value > 0 else INT_MIN)))


class _Reader:
    """Reads one file's tree; every problem names the entry it is in."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> DynsecFileError:
        return DynsecFileError(self.source, 0, f"{where}: {problem}")

    def objects(self, tree: JSON, key: str) -> list[JSON]:
        value = field(tree, key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.fail(key, "expected an array of objects")
        return value

    def name(self, obj: JSON, key: str, where: str) -> str:
        value = field(obj, key)
        if not is_text(value):
            raise self.fail(where, f"{key}: expected a string of valid UTF-8")
        return str(value)

    def text(self, obj: JSON, key: str, where: str) -> str | None:
        value = field(obj, key)
        if value is not None and not isinstance(value, str):
            raise self.fail(where, f"{key}: expected a string")
        return value

    def number(self, obj: JSON, key: str, where: str, default: int) -> int:
        value = field(obj, key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not INT_MIN <= value <= INT_MAX or not float(value).is_integer():
            raise self.fail(where, f"{key}: expected a whole number, got {value!r}")
        return int(value)

    def flag(self, obj: JSON, key: str, where: str) -> bool:
        value = field(obj, key)
        if value is not None and not isinstance(value, bool):
            raise self.fail(where, f"{key}: expected true or false, got {value!r}")
        return bool(value)

    def refs(self, obj: JSON, key: str, name_key: str, known: dict[str, Any],
             where: str) -> dict[str, int]:
        refs: dict[str, int] = {}
        for index, item in enumerate(self.objects(obj, key)):
            at = f"{where}: {key}[{index}]"
            name = self.name(item, name_key, at)
            if name not in known:
                raise self.fail(at, f"{name_key} {name!r} does not exist")
            refs[name] = self.number(item, "priority", at, NO_PRIORITY)
        return refs

    def binary(self, value: object, key: str, where: str) -> bytes:
        try:
            if isinstance(value, str):
                return base64.b64decode(value, validate=True)
        except binascii.Error:
            pass
        raise self.fail(where, f"{key}: expected base64")


def parse(data: bytes, source: str) -> DynsecState:
    """The state a file's bytes describe; DynsecFileError names what is wrong."""
    if not data.strip():
        return DynsecState()  # Mosquitto starts an empty file with nothing in it
    try:
        tree = json.loads(data)
        json.dumps(tree, ensure_ascii=False).encode()  # no half surrogate pair, as \ud800
    except UnicodeDecodeError:
        raise DynsecFileError(source, 0, "not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise DynsecFileError(source, exc.lineno, f"not valid JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # a number of 4300+ digits, deep nesting
        raise DynsecFileError(source, 0, f"not usable JSON: {exc}") from None
    if not isinstance(tree, dict):
        raise DynsecFileError(source, 0, "expected a JSON object")
    reader = _Reader(source)
    state = DynsecState()
    access = field(tree, "defaultACLAccess")
    if access is not None:
        if not isinstance(access, dict):
            raise reader.fail("defaultACLAccess", "expected an object")
        state.default_access = {kind: reader.flag(access, kind, "defaultACLAccess")
                                for kind in DEFAULT_ACCESS_TYPES}
    for index, obj in enumerate(reader.objects(tree, "roles")):
        role = _role(reader, obj, f"roles[{index}]")
        if role.name in state.roles:
            raise reader.fail(f"roles[{index}]", f"role {role.name!r} is there twice")
        state.roles[role.name] = role
    for index, obj in enumerate(reader.objects(tree, "clients")):
        client = _client(reader, obj, f"clients[{index}]", state)
        if client.username in state.clients:
            raise reader.fail(f"clients[{index}]", f"client {client.username!r} is there twice")
        state.clients[client.username] = client
    for index, obj in enumerate(reader.objects(tree, "groups")):
        where = f"groups[{index}]"
        group = Group(reader.name(obj, "groupname", where), reader.text(obj, "textname", where),
                      reader.text(obj, "textdescription", where))
        if group.name in state.groups:
            raise reader.fail(where, f"group {group.name!r} is there twice")
        group.roles = reader.refs(obj, "roles", "rolename", state.roles, where)
        group.clients = reader.refs(obj, "clients", "username", state.clients, where)
        state.groups[group.name] = group
    anonymous = field(tree, "anonymousGroup")
    if anonymous is not None:
        if not isinstance(anonymous, str) or anonymous not in state.groups:
            raise reader.fail("anonymousGroup", f"{anonymous!r} is not a group")
        state.anonymous_group = anonymous
    return state


def _role(reader: _Reader, obj: JSON, where: str) -> Role:
    role = Role(reader.name(obj, "rolename", where), reader.text(obj, "textname", where),
                reader.text(obj, "textdescription", where))
    for index, item in enumerate(reader.objects(obj, "acls")):
        at = f"{where} ({role.name}): acls[{index}]"
        kind = canonical(reader.name(item, "acltype", at), ACL_TYPES)
        if kind is None:
            raise reader.fail(at, f"acltype: not one of {', '.join(ACL_TYPES)}")
        topic = reader.name(item, "topic", at)
        problem = filter_problem(topic)
        if problem is not None:
            raise reader.fail(at, f"topic {topic!r}: {problem}")
        if role.find(kind, topic) is not None:
            raise reader.fail(at, f"a {kind} ACL for {topic!r} is there twice")
        role.add(kind, Acl(topic, reader.number(item, "priority", at, 0),
                           reader.flag(item, "allow", at)))
    return role


def _client(reader: _Reader, obj: JSON, where: str, state: DynsecState) -> Client:
    client = Client(reader.name(obj, "username", where))
    where = f"{where} ({client.username})"
    client.clientid = reader.text(obj, "clientid", where)
    client.textname = reader.text(obj, "textname", where)
    client.textdescription = reader.text(obj, "textdescription", where)
    client.disabled = reader.flag(obj, "disabled", where)
    hashed = [field(obj, key) for key in ("password", "salt", "iterations")]
    if any(value is not None for value in hashed):
        digest = reader.binary(hashed[0], "password", where)
        salt = reader.binary(hashed[1], "salt", where)
        iterations = reader.number(obj, "iterations", where, 0)
        if len(digest) != HASH_BYTES or not salt:
            raise reader.fail(where, f"password and salt: expected a {HASH_BYTES}-byte "
                              "PBKDF2-SHA512 hash and a salt (base64)")
        if not 1 <= iterations <= MAX_ITERATIONS:
            raise reader.fail(where, f"iterations: expected 1 to {MAX_ITERATIONS}")
        client.password = Password(digest, salt, iterations)
    client.roles = reader.refs(obj, "roles", "rolename", state.roles, where)
    return client


def read(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes; DynsecFileError when it cannot be read."""
    return read_file(path, DynsecFileError)[1]


# -- writing, and the JSON shapes the commands answer with ------------------------------------


def refs_document(refs: dict[str, int], key: str) -> list[JSON]:
    """Roles or group members as Mosquitto lists them: the priority only when one was given."""
    return [{key: name, **({} if priority == NO_PRIORITY else {"priority": priority})}
            for name, priority in by_priority(refs)]


def _texts(textname: str | None, textdescription: str | None) -> JSON:
    return {**({} if textname is None else {"textname": textname}),
            **({} if textdescription is None else {"textdescription": textdescription})}


def client_document(state: DynsecState, client: Client, *, stored: bool) -> JSON:
    """A client as the file stores it (`stored`), or as getClient and listClients show it."""
    document: JSON = {"username": client.username}
    if client.clientid is not None:
        document["clientid"] = client.clientid
    document.update(_texts(client.textname, client.textdescription))
    if client.disabled:
        document["disabled"] = True
    document["roles"] = refs_document(client.roles, "rolename")
    if not stored:
        document["groups"] = refs_document(dict(state.groups_of(client.username)),
                                           "groupname")
    elif client.password is not None:
        document["password"] = base64.b64encode(client.password.hash).decode()
        document["salt"] = base64.b64encode(client.password.salt).decode()
        document["iterations"] = client.password.iterations
    return document


def group_document(group: Group, *, stored: bool) -> JSON:
    """A group as the file stores it, or as getGroup and listGroups show it (members without
    their priorities, as Mosquitto shows them)."""
    document: JSON = {"groupname": group.name, **_texts(group.textname, group.textdescription)}
    if stored:
        document["roles"] = refs_document(group.roles, "rolename")
        document["clients"] = refs_document(group.clients, "username")
    else:
        document["clients"] = [{"username": name} for name in sorted(group.clients)]
        document["roles"] = refs_document(group.roles, "rolename")
    return document


def role_document(role: Role) -> JSON:
    return {"rolename": role.name, **_texts(role.textname, role.textdescription),
            "acls": [{"acltype": kind, "topic": acl.topic, "priority": acl.priority,
                      "allow": acl.allow}
                     for kind in ACL_TYPES for acl in role.acls[kind]]}


def dumps(state: DynsecState) -> bytes:
    """The file's text, laid out as Mosquitto writes it."""
    tree: JSON = {
        "defaultACLAccess": dict(state.default_access),
        "clients": [client_document(state, client, stored=True)
                    for client in state.sorted_clients()],
        "groups": [group_document(group, stored=True) for group in state.sorted_groups()],
    }
    if state.anonymous_group is not None:
        tree["anonymousGroup"] = state.anonymous_group
    tree["roles"] = [role_document(role) for role in state.sorted_roles()]
    return json.dumps(tree, indent="\t", ensure_ascii=False).encode() + b"\n"
