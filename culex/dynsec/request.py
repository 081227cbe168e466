"""One `$CONTROL/dynamic-security/v1` request as the commands see it: the state they change,
what they answer, and what the change asks of the broker afterwards (save the file, disconnect
clients).

Every command gets one response, `{"command": ..., "data": ...}` or `{"command": ...,
"error": ...}` (with its `correlationData` when it sent one), with Mosquitto's error texts, so
that `mosquitto_ctrl` prints what it prints against Mosquitto.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .model import NO_PRIORITY, Client, DynsecState, Group, Password, Role
from .store import JSON, field, integer, is_text

log = logging.getLogger("culex")

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")
# A name a command gives, and where it must be found: its key ("username"), its label in
# "... not valid UTF-8" ("Username"), the table, and the error when it is not there.
Ref = tuple[str, str, dict[str, T], str]


class Request:
    def __init__(self, state: DynsecState, hashed: Callable[[str], Password],
                 requester: str) -> None:
        self.state = state
        # The hash of a password the request sets: computed before, off the event loop.
        self.hashed = hashed
        # "client id (user name)" of the client that sent it, for the log.
        self.requester = requester
        self.responses: list[JSON] = []
        # The answers of the commands that changed the state (`changed`).
        self.changes: list[JSON] = []
        self.changed = False
        # User names whose connections must close (their identity changed or went).
        self.kick: set[str] = set()

    def undo(self, error: str) -> None:
        """The change could not be kept (the file could not be written): every command that
        changed something answers `error` instead, and nobody is disconnected."""
        for answer in self.changes:
            answer.pop("data", None)
            answer["error"] = error
        self.changed = False
        self.kick.clear()


class Command:
    """One command of a request, and the helpers that read its arguments Mosquitto's way:
    each failure answers the command with Mosquitto's error text and returns None."""

    def __init__(self, request: Request, name: str, obj: JSON, correlation: str | None) -> None:
        self.request = request
        self.name = name
        self.obj = obj
        self.correlation = correlation

    @property
    def state(self) -> DynsecState:
        return self.request.state

    def _answer(self, answer: JSON) -> JSON:
        if self.correlation is not None:
            answer["correlationData"] = self.correlation
        self.request.responses.append(answer)
        return answer

    def fail(self, error: str) -> None:
        self._answer({"command": self.name, "error": error})

    def ok(self, data: JSON | None = None, *, change: str | None = None) -> None:
        """Answer success. `change` says what changed, for the log; it also marks the state
        changed, so that it is saved and the other workers follow."""
        answer = self._answer({"command": self.name} if data is None
                              else {"command": self.name, "data": data})
        if change is not None:
            self.request.changed = True
            self.request.changes.append(answer)
            log.info("dynamic security: %s %s by %s", self.name, change,
                     self.request.requester)
        else:
            log.debug("dynamic security: %s by %s", self.name, self.request.requester)

    def kick(self, username: str) -> None:
        self.request.kick.add(username)

    def name_arg(self, key: str, label: str) -> str | None:
        """A required name ("username", ...): "Invalid/missing username" when absent or not a
        string, "Username not valid UTF-8" when not a valid MQTT string."""
        value = field(self.obj, key)
        if not isinstance(value, str):
            self.fail(f"Invalid/missing {key}")
            return None
        if not is_text(value):
            self.fail(f"{label} not valid UTF-8")
            return None
        return value

    def clients(self) -> Ref[Client]:
        return "username", "Username", self.state.clients, "Client not found"

    def groups(self) -> Ref[Group]:
        return "groupname", "Group name", self.state.groups, "Group not found"

    def roles(self, missing: str = "Role not found") -> Ref[Role]:
        return "rolename", "Role name", self.state.roles, missing

    def one(self, ref: Ref[T]) -> T | None:
        """What the command names, or None after answering why not."""
        key, label, table, missing = ref
        name = self.name_arg(key, label)
        if name is None:
            return None
        found = table.get(name)
        if found is None:
            self.fail(missing)
        return found

    def two(self, first: Ref[A], second: Ref[B]) -> tuple[A, B, str] | None:
        """The two things a command names, and "key=name key=name" for the log; both names
        are read before either is looked up, so that the errors come in Mosquitto's
        order."""
        names = []
        for key, label, _table, _missing in (first, second):
            name = self.name_arg(key, label)
            if name is None:
                return None
            names.append(name)
        if names[0] not in first[2]:
            self.fail(first[3])
        elif names[1] not in second[2]:
            self.fail(second[3])
        else:
            return (first[2][names[0]], second[2][names[1]],
                    f"{first[0]}={names[0]} {second[0]}={names[1]}")
        return None

    def new(self, ref: Ref[T], exists: str) -> tuple[str, str | None, str | None] | None:
        """createGroup, createRole: a name not taken yet, and the optional texts."""
        key, label, table, _missing = ref
        name = self.name_arg(key, label)
        texts = self.texts() if name is not None else None
        if name is None or texts is None:
            return None
        if name in table:
            self.fail(exists)
            return None
        return name, *texts

    def text_arg(self, key: str, label: str | None = None) -> tuple[bool, str | None]:
        """An optional string: (present, value). A value that is not a string answers
        "Invalid/missing <label or key>" and gives (True, None)."""
        value = field(self.obj, key)
        if value is None:
            return False, None
        if not isinstance(value, str):
            self.fail(f"Invalid/missing {label or key}")
            return True, None
        return True, value

    def texts(self) -> tuple[str | None, str | None] | None:
        """The optional "textname" and "textdescription" of a create command; None after
        answering an error."""
        found = []
        for key in ("textname", "textdescription"):
            present, value = self.text_arg(key)
            if present and value is None:
                return None
            found.append(value)
        return found[0], found[1]

    def roles_arg(self) -> tuple[bool, dict[str, int] | None]:
        """The "roles" of a create or modify command: (checked, rolename -> priority, or None
        when not given), every role existing; `checked` is False after answering why not."""
        value = field(self.obj, "roles")
        if value is None:
            return True, None
        refs: dict[str, int] = {}
        for item in value if isinstance(value, list) else [None]:
            name = field(item, "rolename") if isinstance(item, dict) else None
            if not isinstance(name, str):
                self.fail("'roles' not an array or missing/invalid rolename")
                return False, None
            if name not in self.state.roles:
                self.fail("Role not found")
                return False, None
            refs[name] = self.priority(item)
        return True, refs

    def members_arg(self, key: str, name_key: str,
                    known: dict[str, Any]) -> tuple[bool, dict[str, int] | None]:
        """modifyClient's "groups" and modifyGroup's "clients": (checked, the new list or None
        when not given). Every named one must exist before anything changes (Mosquitto
        2.0.15 and later); `checked` is False after answering why not."""
        value = field(self.obj, key)
        if not isinstance(value, list):
            return True, None
        refs: dict[str, int] = {}
        for item in value:
            if not isinstance(item, dict):
                continue  # skipped, as Mosquitto skips it
            name = field(item, name_key)
            if not isinstance(name, str):
                self.fail(f"'{key}' contains an object with an invalid '{name_key}'")
                return False, None
            if name not in known:
                self.fail(f"'{key}' contains an object with a '{name_key}' that does not "
                          "exist")
                return False, None
            refs[name] = self.priority(item)
        return True, refs

    def modification(self, ref: Ref[T], key: str, name_key: str, known: dict[str, Any]
                     ) -> tuple[T, dict[str, int] | None, dict[str, int] | None] | None:
        """modifyClient's and modifyGroup's target, its new "roles" and new members (`key`:
        "groups", "clients"), None where not given; everything is checked before anything
        changes (Mosquitto 2.0.15 and later). None after answering why not."""
        target = self.one(ref)
        if target is None:
            return None
        checked, roles = self.roles_arg()
        if not checked:
            return None
        checked, members = self.members_arg(key, name_key, known)
        return (target, roles, members) if checked else None

    def modify(self, target: Client | Group, roles: dict[str, int] | None) -> None:
        """The rest of modifyClient and modifyGroup: the texts, and the roles when given."""
        self.modify_texts(target)
        if roles is not None:
            target.roles = roles

    def modify_texts(self, target: Client | Group | Role) -> None:
        """A "textname" or "textdescription" that is a string replaces the old one (anything
        else is ignored, as in Mosquitto)."""
        for key in ("textname", "textdescription"):
            value = field(self.obj, key)
            if isinstance(value, str):
                setattr(target, key, value)

    def priority(self, obj: JSON | None = None) -> int:
        """A "priority": -1 when absent or not a number, as Mosquitto's json_get_int leaves it."""
        number = integer(field(self.obj if obj is None else obj, "priority"))
        return NO_PRIORITY if number is None else number

    def int_arg(self, key: str, default: int) -> int:
        number = integer(field(self.obj, key))
        return default if number is None else number

    def flag_arg(self, key: str, default: bool) -> bool:
        value: Any = field(self.obj, key)
        return value if isinstance(value, bool) else default


    def listing(self, key: str, items: Sequence[T], show: Callable[[T, bool], Any]) -> None:
        """listClients, listGroups, listRoles: "count" items (-1: all) from "offset", each as
        `show(item, verbose)` shows it; Mosquitto's loop, so a count of 0 shows one."""
        verbose = self.flag_arg("verbose", False)
        count = self.int_arg("count", -1)
        shown = []
        for item in items[max(self.int_arg("offset", 0), 0):]:
            shown.append(show(item, verbose))
            if count >= 0:
                count -= 1
                if count <= 0:
                    break
        self.ok({"totalCount": len(items), key: shown})


Handler = Callable[[Command], None]
