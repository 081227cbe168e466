"""A `$CONTROL/dynamic-security/v1` request, command by command, as Mosquitto's plugin takes
it: `{"commands": [{"command": "createClient", ...}, ...]}` in, `{"responses": [...]}` out,
one response per command in order. Command and ACL type names compare case-insensitively
(strcasecmp); a command that is not an object, has no name or an unknown one gets an error
response and the others go on; a `correlationData` that is not a string stops the request there,
as it stops Mosquitto's loop.

The general commands live here: setDefaultACLAccess, getDefaultACLAccess. The others are in
clients.py, groups.py, roles.py and references.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from . import clients, groups, references, roles
from .model import DEFAULT_ACCESS_TYPES, DynsecState, Password, canonical
from .request import Command, Handler, Request
from .store import JSON, field

# Commands that set a password: their passwords are hashed before the request runs.
SETS_PASSWORD = ("createClient", "setClientPassword", "modifyClient")


def set_default_acl_access(command: Command) -> None:
    """Each {"acltype", "allow": bool} of "acls"; an entry naming no default type is skipped.
    Debian's mosquitto_ctrl 2.0.11 sends {"acltype", "access": "allow"|"deny"} instead, which
    Mosquitto 2.0.11 ignored (fixed in its 2.0.12): Culex takes that form too, so the tool
    works as its help says."""
    acls = field(command.obj, "acls")
    if not isinstance(acls, list):
        command.fail("Missing/invalid actions array")
        return
    changes = []
    for item in acls:
        kind = field(item, "acltype") if isinstance(item, dict) else None
        allow = _allow(item) if isinstance(item, dict) else None
        kind = canonical(kind, DEFAULT_ACCESS_TYPES) if isinstance(kind, str) else None
        if kind is not None and allow is not None:
            command.state.default_access[kind] = allow
            changes.append(f"{kind}={'allow' if allow else 'deny'}")
    command.ok(change=" ".join(changes))


def _allow(item: JSON) -> bool | None:
    allow = field(item, "allow")
    if isinstance(allow, bool):
        return allow
    access = field(item, "access")
    if isinstance(access, str) and access.lower() in ("allow", "deny"):
        return access.lower() == "allow"
    return None


def get_default_acl_access(command: Command) -> None:
    command.ok({"acls": [{"acltype": kind, "allow": command.state.default_access[kind]}
                         for kind in DEFAULT_ACCESS_TYPES]})


HANDLERS: dict[str, Handler] = {
    "setDefaultACLAccess": set_default_acl_access,
    "getDefaultACLAccess": get_default_acl_access,
    **clients.HANDLERS,
    **groups.HANDLERS,
    **roles.HANDLERS,
    **references.HANDLERS,
}
NAMES = tuple(HANDLERS)


def parse(payload: bytes) -> Any:
    """The request's JSON tree, or None when the payload is not JSON: nested too deep for the
    parser, or with a \\u escape of half a surrogate pair (no text can hold it; cJSON refuses
    it too) counts as not JSON. A hostile payload must get an answer, not a traceback."""
    try:
        tree = json.loads(payload)
        json.dumps(tree, ensure_ascii=False).encode()
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return None
    return tree


def _commands(tree: Any) -> list[Any] | None:
    commands = field(tree, "commands") if isinstance(tree, dict) else None
    return commands if isinstance(commands, list) else None


def passwords_in(tree: Any) -> set[str]:
    """The passwords a request sets, to hash before it runs."""
    found = set()
    for item in _commands(tree) or []:
        if isinstance(item, dict) and isinstance(field(item, "command"), str) \
                and canonical(field(item, "command"), SETS_PASSWORD) is not None:
            password = field(item, "password")
            if isinstance(password, str) and password:
                found.add(password)
    return found


def process(state: DynsecState, tree: Any, hashed: Callable[[str], Password],
            requester: str) -> Request:
    """Run a request's commands against `state` (changing it); the answers and what the
    change asks for are in the returned Request."""
    request = Request(state, hashed, requester)
    commands = _commands(tree)
    if commands is None:
        error = "Payload not valid JSON" if tree is None else "Invalid/missing commands"
        request.responses.append({"command": "Unknown command", "error": error})
        return request
    for item in commands:
        if not isinstance(item, dict):
            request.responses.append({"command": "Unknown command",
                                      "error": "Command not an object"})
            continue
        name = field(item, "command")
        if not isinstance(name, str):
            request.responses.append({"command": "Unknown command", "error": "Missing command"})
            continue
        correlation = field(item, "correlationData")
        if correlation is not None and not isinstance(correlation, str):
            request.responses.append({"command": name,
                                      "error": "Invalid correlationData data type."})
            break
        known = canonical(name, NAMES)
        command = Command(request, known or name, item, correlation)
        if known is None:
            command.fail("Unknown command")
        else:
            HANDLERS[known](command)
    return request


def response_payload(request: Request) -> bytes:
    return json.dumps({"responses": request.responses}, ensure_ascii=False,
                      separators=(",", ":")).encode()
