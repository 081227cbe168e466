"""Access control lists: who may publish (WRITE) and subscribe/receive (READ) which topics.

The file format is the Mosquitto `acl_file` subset::

    # Lines before any `user` line apply to anonymous clients (no user name in CONNECT).
    topic read public/#
    user alice
    topic readwrite alice/#
    topic deny alice/secret
    # Patterns apply to every client, whatever section they appear in.
    pattern write devices/%c/status
    pattern read users/%u/#

`topic [read|write|readwrite|deny] <filter>`: the access word may be omitted (readwrite, as in
Mosquitto); a filter that contains spaces must then state it, so that a misspelt access word
(`topic reed a/b`) is an error rather than a rule for the topic "reed a/b".

Evaluation, for one client (its user's `topic` rules, or the anonymous ones, plus every pattern):

- a `deny` rule that matches wins over any grant, wherever it is in the file;
- otherwise access is granted only by a rule that grants it; nothing matching means denied;
- grants follow MQTT-4.7.2-1: a filter starting with `+` or `#` does not match topics starting
  with `$`, so `$SYS/...` is readable only by a rule that names `$SYS` explicitly. Deny rules match
  without that exception (a `deny #` denies `$SYS` too): the safe direction;
- `$SYS` is never writable by clients, whatever the rules say: only the broker publishes there.

Pattern substitution and CVE-2017-7650: `%c` and `%u` are replaced by the client id and the user
name in a single pass (a client id of `%u` is not substituted again). A value containing `+`, `#`
or `/`, or an empty value, would let a client widen a pattern into other clients' topics (user
`+` turning `users/%u/#` into `users/+/#`), so for such a client a granting pattern does not apply,
and a deny pattern denies everything under its literal prefix (`a/%c/b` denies `a/#`): it fails
closed instead of being escapable. Likewise a granting pattern whose substitution makes the filter
start with `$` (client id `$SYS` in `%c/#`) does not apply unless the pattern itself starts with a
literal `$`. Patterns naming `%u` do not apply at all to anonymous clients, which have no user name.

Matching walks the levels once, iteratively: no regular expression is ever built from a filter
or a topic (amqtt's regex-from-topic matcher was a ReDoS), and the cost is linear in the number of
levels, which the codec bounds.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..protocol.topics import filter_problem
from .files import FileProblem, read_file

READ = "read"
WRITE = "write"
READWRITE = "readwrite"
DENY = "deny"
ACCESS_WORDS = (READ, WRITE, READWRITE, DENY)

_PLACEHOLDERS = ("%c", "%u")
# Characters that must not come from a client into a pattern: the CVE-2017-7650 set.
_UNSAFE = ("+", "#", "/")


class Access(enum.Enum):
    """What a client wants to do with a topic."""

    READ = "read"    # subscribe to it / have a message on it delivered
    WRITE = "write"  # publish to it (including a will message)


class AclError(FileProblem):
    """An ACL file cannot be used; the message names the file and the line."""


Levels = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Pattern:
    access: str
    # Each level split into literal parts and the placeholders "%c" / "%u", so substitution is
    # one pass over pre-split parts and a value is never re-scanned for placeholders.
    levels: tuple[tuple[str, ...], ...]
    line: int

    def substitute(self, client_id: str, username: str | None) -> Levels | None:
        """The filter for this client; None when the pattern must not apply to it at all."""
        result: list[str] = []
        values = {"%c": client_id, "%u": username}
        for parts in self.levels:
            text: list[str] = []
            for part in parts:
                if part not in values:
                    text.append(part)
                    continue
                value = values[part]
                if value is None:
                    return None  # %u for an anonymous client: not this client's rule.
                if not value or any(char in value for char in _UNSAFE):
                    if self.access != DENY:
                        return None
                    # Fail closed: deny everything any value could have reached.
                    return (*result, "#")
                text.append(value)
            result.append("".join(text))
        if (self.access != DENY and result[0].startswith("$")
                and not (self.levels[0] and self.levels[0][0].startswith("$"))):
            return None  # A client id like "$SYS" must not reach $-topics through "%c/#".
        return tuple(result)


def _split_placeholders(level: str) -> tuple[str, ...]:
    parts: list[str] = []
    start = index = 0
    while index < len(level) - 1:
        if level[index] == "%" and level[index + 1] in "cu":
            if index > start:
                parts.append(level[start:index])
            parts.append(level[index:index + 2])
            index += 2
            start = index
        else:
            index += 1
    if start < len(level) or not parts:
        parts.append(level[start:])
    return tuple(parts)


@dataclass(slots=True)
class _Section:
    """The `topic` rules of one user (or of anonymous clients)."""

    rules: list[tuple[str, Levels]] = field(default_factory=list)


class AclRules:
    """A parsed ACL file. Immutable once parsed: reload by parsing again and swapping.

    For the hot path build a `ClientAcl` once per connection with `for_client` and keep it: it
    has the patterns substituted and the rules split by access. `allowed` and `allowed_filter`
    here are conveniences that build one per call.
    """

    def __init__(self) -> None:
        self._anonymous = _Section()
        self._users: dict[str, _Section] = {}
        self._patterns: list[_Pattern] = []

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AclRules:
        """Read an ACL file; AclError names the file and the line of any problem."""
        name, data = read_file(path, AclError)
        return cls.parse(data, name)

    @classmethod
    def parse(cls, data: bytes | str, source: str = "<acl>") -> AclRules:
        """Parse the file's contents; `source` is used in error messages."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        rules = cls()
        section = rules._anonymous
        # Split on b"\n" only: str.splitlines() also splits on \x1c, \u2028 and others, which
        # may appear in user names.
        for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
            try:
                line = line_bytes.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise AclError(source, number, "not valid UTF-8") from None
            if not line or line.startswith("#"):
                continue
            words = line.split(None, 1)
            keyword, rest = words[0], words[1] if len(words) > 1 else ""
            try:
                if keyword == "user":
                    if not rest:
                        raise ValueError("'user' needs a user name")
                    section = rules._users.setdefault(rest, _Section())
                elif keyword == "topic":
                    access, topic_filter = _parse_rule(rest)
                    problem = filter_problem(topic_filter)
                    if problem:
                        raise ValueError(f"topic filter {topic_filter!r}: {problem}")
                    section.rules.append((access, tuple(topic_filter.split("/"))))
                elif keyword == "pattern":
                    access, topic_filter = _parse_rule(rest)
                    levels = tuple(_split_placeholders(level)
                                   for level in topic_filter.split("/"))
                    # Validate the shape with a harmless value in place of each placeholder.
                    sample = "/".join("".join("x" if part in _PLACEHOLDERS else part
                                              for part in parts) for parts in levels)
                    problem = filter_problem(sample)
                    if problem:
                        raise ValueError(f"pattern {topic_filter!r}: {problem}")
                    rules._patterns.append(_Pattern(access, levels, number))
                else:
                    raise ValueError(f"unknown keyword {keyword!r} "
                                     "(expected user, topic or pattern)")
            except ValueError as exc:
                raise AclError(source, number, str(exc)) from None
        return rules

    def for_client(self, client_id: str, username: str | None) -> ClientAcl:
        """The rules that apply to one client, resolved once (call at CONNECT and keep)."""
        section = self._anonymous if username is None else self._users.get(username)
        rules = list(section.rules) if section else []
        for pattern in self._patterns:
            levels = pattern.substitute(client_id, username)
            if levels is not None:
                rules.append((pattern.access, levels))
        return ClientAcl(rules)

    def allowed(self, client_id: str, username: str | None, topic: str,
                access: Access) -> bool:
        """Whether this client may publish to (WRITE) or receive from (READ) a topic name."""
        return self.for_client(client_id, username).allowed(topic, access)

    def allowed_filter(self, client_id: str, username: str | None, topic_filter: str) -> bool:
        """Whether this client may subscribe to a topic filter (see ClientAcl.allowed_filter)."""
        return self.for_client(client_id, username).allowed_filter(topic_filter)


def _parse_rule(rest: str) -> tuple[str, str]:
    words = rest.split(None, 1)
    if not words:
        raise ValueError("missing topic filter")
    if words[0] in ACCESS_WORDS:
        if len(words) == 1:
            raise ValueError(f"missing topic filter after {words[0]!r}")
        return words[0], words[1]
    if len(words) > 1:
        raise ValueError(f"unknown access {words[0]!r} (expected read, write, readwrite or "
                         "deny; a filter containing spaces must state its access)")
    return READWRITE, rest


class ClientAcl:
    """The ACL as it applies to one connected client: patterns substituted, rules by access.

    Checks cost O(rules x levels) with no allocation beyond splitting the topic once.
    """

    __slots__ = ("_deny", "_read", "_write")

    def __init__(self, rules: Sequence[tuple[str, Levels]]) -> None:
        self._read: list[Levels] = []
        self._write: list[Levels] = []
        self._deny: list[Levels] = []
        for access, levels in rules:
            if access == DENY:
                self._deny.append(levels)
            if access in (READ, READWRITE):
                self._read.append(levels)
            if access in (WRITE, READWRITE):
                self._write.append(levels)

    def allowed(self, topic: str, access: Access) -> bool:
        """Whether the client may publish to (WRITE) or receive (READ) this topic name.

        The broker checks READ for every message it would deliver (retained ones included),
        because a deny rule inside a granted subscription is enforced only here.
        """
        levels = topic.split("/")
        if access is Access.WRITE and levels[0] == "$SYS":
            return False
        for rule in self._deny:
            if matches(rule, levels, dollar_rule=False):
                return False
        grants = self._read if access is Access.READ else self._write
        return any(matches(rule, levels, dollar_rule=True) for rule in grants)

    def allowed_filter(self, topic_filter: str) -> bool:
        """Whether the client may subscribe to a (valid) topic filter.

        Granted only when one read rule covers the whole filter (everything `a/#` can match, as
        `a/#` or `#` do, not `a/b`), and refused when a deny rule covers it. A deny covering only
        part of the filter does not refuse the subscription (as in Mosquitto): those messages are
        filtered at delivery by `allowed(topic, Access.READ)`.
        """
        levels = topic_filter.split("/")
        for rule in self._deny:
            if covers(rule, levels, dollar_rule=False):
                return False
        return any(covers(rule, levels, dollar_rule=True) for rule in self._read)

    def allowed_unsubscribe(self, topic_filter: str) -> bool:
        """Always: an ACL file has no rule for unsubscribing (nor has Mosquitto's)."""
        return True

    def needs_delivery_check(self, topic_filter: str) -> bool:
        """False when `allowed(topic, READ)` is True for every topic the filter can match.

        That holds when a read rule covers the filter and no deny rule overlaps it; the broker may
        then skip the per-message READ check for this subscription (the fan-out hot path) until
        the ACL or the client's identity changes.
        """
        levels = topic_filter.split("/")
        if any(_intersects(rule, levels) for rule in self._deny):
            return True
        return not any(covers(rule, levels, dollar_rule=True) for rule in self._read)


def matches(rule: Levels, topic: list[str], *, dollar_rule: bool) -> bool:
    """Whether filter `rule` matches a topic name (split into levels); `dollar_rule` applies
    MQTT-4.7.2-1: a filter starting with a wildcard does not match a `$` topic."""
    if dollar_rule and topic[0].startswith("$") and rule[0] in ("+", "#"):
        return False
    count = len(topic)
    for index, level in enumerate(rule):
        if level == "#":
            return True  # Also matches the parent level: "a/#" matches "a" (MQTT-4.7.1-2).
        if index >= count:
            return False
        if level != "+" and level != topic[index]:
            return False
    return len(rule) == count


def covers(rule: Levels, wanted: list[str], *, dollar_rule: bool) -> bool:
    """Whether every topic matched by filter `wanted` is matched by filter `rule`."""
    if dollar_rule and wanted[0].startswith("$") and rule[0] in ("+", "#"):
        return False
    count = len(wanted)
    for index, level in enumerate(rule):
        if level == "#":
            return True
        if index >= count:
            return False
        requested = wanted[index]
        if requested == "#":
            return False  # Any depth requested, and this rule is bounded here.
        if level not in ("+", requested):
            return False  # Includes requested "+" against a literal level.
    return len(rule) == count


def _intersects(first: Levels, second: list[str]) -> bool:
    """Whether some topic is matched by both filters (ignoring MQTT-4.7.2-1: over-approximate)."""
    count_first, count_second = len(first), len(second)
    index = 0
    while True:
        if (index < count_first and first[index] == "#") or (
                index < count_second and second[index] == "#"):
            return True
        if index >= count_first or index >= count_second:
            return count_first == count_second
        a, b = first[index], second[index]
        if a not in (b, "+") and b != "+":
            return False
        index += 1
