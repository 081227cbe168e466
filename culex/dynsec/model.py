"""The dynamic-security state, as Mosquitto's plugin keeps it.

- A client is a user name with an optional password (PBKDF2-SHA512), an optional client id it
  must connect with, a disabled flag, and roles, each with a priority.
- A group has roles (with priorities) and clients (each with the priority this group has for
  that client). The anonymous group's roles apply to clients without a user name.
- A role has ACLs of six types (publishClientSend, publishClientReceive, subscribeLiteral,
  subscribePattern, unsubscribeLiteral, unsubscribePattern): a topic or filter, a priority and
  allow or deny; within a type a topic appears once.
- The default access says what happens when no ACL of a client's roles matches, for
  publishClientSend, publishClientReceive, subscribe and unsubscribe.

Order is Mosquitto's: roles and groups by priority, higher first, then by name; ACLs of a type
by priority, higher first, then in the order they were added; names compare as UTF-8 bytes
(code points), as C's strcmp does.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

SEND = "publishClientSend"
RECEIVE = "publishClientReceive"
SUBSCRIBE_LITERAL = "subscribeLiteral"
SUBSCRIBE_PATTERN = "subscribePattern"
UNSUBSCRIBE_LITERAL = "unsubscribeLiteral"
UNSUBSCRIBE_PATTERN = "unsubscribePattern"
ACL_TYPES = (SEND, RECEIVE, SUBSCRIBE_LITERAL, SUBSCRIBE_PATTERN, UNSUBSCRIBE_LITERAL,
             UNSUBSCRIBE_PATTERN)
SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"
DEFAULT_ACCESS_TYPES = (SEND, RECEIVE, SUBSCRIBE, UNSUBSCRIBE)

# A role's or group's priority when none is given (and then not written out).
NO_PRIORITY = -1

# PBKDF2-HMAC-SHA512 as Mosquitto's plugin stores it: a 64-byte hash and, for passwords Culex
# sets, a 12-byte salt (the only length Mosquitto 2.0 reads back). Mosquitto itself uses 101
# iterations; Culex uses OWASP's 2023 figure for SHA-512 (Mosquitto reads any count), and says
# at start-up which clients still have fewer.
HASH_BYTES = 64
SALT_BYTES = 12
ITERATIONS = 210_000
# A file's iteration count above this would make every CONNECT a long computation: refused.
MAX_ITERATIONS = 10_000_000


def canonical(name: str, choices: tuple[str, ...]) -> str | None:
    """`name` as spelt in `choices`, compared case-insensitively (Mosquitto's strcasecmp)."""
    folded = name.lower()
    return next((choice for choice in choices if choice.lower() == folded), None)


def by_priority(refs: dict[str, int]) -> list[tuple[str, int]]:
    """Role or group references (name -> priority) in the order they are checked."""
    return sorted(refs.items(), key=lambda item: (-item[1], item[0]))


@dataclass(frozen=True, slots=True)
class Password:
    hash: bytes
    salt: bytes
    iterations: int

    @classmethod
    def create(cls, password: str, iterations: int | None = None) -> Password:
        """A new salted hash (`iterations`: ITERATIONS unless given); slow on purpose, so
        called off the event loop."""
        salt = secrets.token_bytes(SALT_BYTES)
        count = ITERATIONS if iterations is None else iterations
        return cls(derive(password.encode(), salt, count), salt, count)

    def verify(self, password: bytes) -> bool:
        """Constant-time comparison; a password with a NUL byte never matches (Mosquitto would
        hash it only up to the NUL)."""
        return b"\0" not in password and hmac.compare_digest(
            derive(password, self.salt, self.iterations), self.hash)


def derive(password: bytes, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password, salt, iterations, HASH_BYTES)


@dataclass(slots=True)
class Acl:
    topic: str
    priority: int = 0
    allow: bool = False


@dataclass(slots=True)
class Role:
    name: str
    textname: str | None = None
    textdescription: str | None = None
    acls: dict[str, list[Acl]] = field(default_factory=lambda: {kind: [] for kind in ACL_TYPES})

    def find(self, kind: str, topic: str) -> Acl | None:
        return next((acl for acl in self.acls[kind] if acl.topic == topic), None)

    def add(self, kind: str, acl: Acl) -> None:
        """After every ACL of this type with the same priority or a higher one."""
        entries = self.acls[kind]
        position = next((index for index, entry in enumerate(entries)
                         if entry.priority < acl.priority), len(entries))
        entries.insert(position, acl)


@dataclass(slots=True)
class Client:
    username: str
    clientid: str | None = None
    textname: str | None = None
    textdescription: str | None = None
    disabled: bool = False
    password: Password | None = None
    roles: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Group:
    name: str
    textname: str | None = None
    textdescription: str | None = None
    roles: dict[str, int] = field(default_factory=dict)
    # user name -> the priority of this group for that client
    clients: dict[str, int] = field(default_factory=dict)


def closed_default() -> dict[str, bool]:
    """The default access of a file that does not say: everything denied (Mosquitto's)."""
    return dict.fromkeys(DEFAULT_ACCESS_TYPES, False)


@dataclass(slots=True)
class DynsecState:
    clients: dict[str, Client] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    default_access: dict[str, bool] = field(default_factory=closed_default)
    anonymous_group: str | None = None

    def groups_of(self, username: str) -> list[tuple[str, int]]:
        """The groups a client is in, with their priorities for it, in check order."""
        return by_priority({name: group.clients[username] for name, group in self.groups.items()
                            if username in group.clients})

    def roles_for(self, username: str | None) -> list[Role] | None:
        """The roles whose ACLs are checked for a client, in Mosquitto's order: the client's
        own roles, then each of its groups' roles, group by group; for a client without a
        user name, the anonymous group's. None for a user name that is no client: Mosquitto's
        plugin then defers, and with no other plugin every check is denied."""
        if username is None:
            group = self.groups.get(self.anonymous_group or "")
            return [] if group is None else self._roles(group.roles)
        client = self.clients.get(username)
        if client is None:
            return None
        roles = self._roles(client.roles)
        for name, _priority in self.groups_of(username):
            roles += self._roles(self.groups[name].roles)
        return roles

    def _roles(self, refs: dict[str, int]) -> list[Role]:
        return [self.roles[name] for name, _priority in by_priority(refs)]

    def delete_client(self, username: str) -> None:
        del self.clients[username]
        for group in self.groups.values():
            group.clients.pop(username, None)

    def delete_group(self, name: str) -> None:
        del self.groups[name]

    def delete_role(self, name: str) -> None:
        del self.roles[name]
        for client in self.clients.values():
            client.roles.pop(name, None)
        for group in self.groups.values():
            group.roles.pop(name, None)

    def sorted_clients(self) -> list[Client]:
        return [self.clients[name] for name in sorted(self.clients)]

    def sorted_groups(self) -> list[Group]:
        return [self.groups[name] for name in sorted(self.groups)]

    def sorted_roles(self) -> list[Role]:
        return [self.roles[name] for name in sorted(self.roles)]
