"""Dynamic security's answer to "may this client do that?", as Mosquitto's plugin gives it.

For one client the roles are checked in order (its own roles by priority, then each of its
groups by priority with that group's roles by priority; the anonymous group's roles for a
client without a user name), and in each role the ACLs of the type the check needs, by
priority; the first ACL that matches decides. Subscribing checks a role's subscribeLiteral
ACLs (the filter exactly as written) before its subscribePattern ones (a pattern that covers
the filter, `+` and `#` included); unsubscribing likewise. When nothing matches, the default
access decides, except on `$CONTROL` topics, which only an ACL can open. A user name that is
no client (a certificate's name, a client deleted meanwhile) is refused everything.

Publish ACLs match topic names with the `$` rule [MQTT-4.7.2-1] (`#` does not match `$SYS/x`);
subscribe patterns do not (Mosquitto's sub_acl_check: `#` covers `$SYS/#`).

Every change applies at the next check: each client's view flattens its ACLs once and keeps
them until the rules' generation moves on (a change, a reload), so a check costs a walk over
that client's ACLs of one type and nothing more.
"""

from __future__ import annotations

from ..auth.acl import Access, covers, matches
from ..core.access import CONTROL_PREFIX
from .model import (
    RECEIVE,
    SEND,
    SUBSCRIBE,
    SUBSCRIBE_LITERAL,
    SUBSCRIBE_PATTERN,
    UNSUBSCRIBE,
    UNSUBSCRIBE_LITERAL,
    UNSUBSCRIBE_PATTERN,
    DynsecState,
    Role,
)

Levels = tuple[str, ...]
# A subscribe or unsubscribe ACL: the literal filter (None for a pattern), the pattern's
# levels, allow.
FilterAcl = tuple[str | None, Levels, bool]


class DynsecRules:
    """The core's `AccessRules` over a dynamic-security state; `changed()` after every change
    (or `replace` the state) makes every client's view resolve again at its next check."""

    def __init__(self, state: DynsecState) -> None:
        self.state = state
        self.generation = 0

    def changed(self) -> None:
        self.generation += 1

    def replace(self, state: DynsecState) -> None:
        self.state = state
        self.changed()

    def for_client(self, client_id: str, username: str | None) -> ClientView:
        return ClientView(self, username)


def _filter_acls(roles: list[Role], literal: str, pattern: str) -> list[FilterAcl]:
    found: list[FilterAcl] = []
    for role in roles:
        found += [(acl.topic, (), acl.allow) for acl in role.acls[literal]]
        found += [(None, tuple(acl.topic.split("/")), acl.allow) for acl in role.acls[pattern]]
    return found


class ClientView:
    """The core's `ClientAccess` for one client."""

    __slots__ = ("_generation", "_known", "_receive", "_rules", "_send", "_subscribe",
                 "_unsubscribe", "_username")

    def __init__(self, rules: DynsecRules, username: str | None) -> None:
        self._rules = rules
        self._username = username
        self._generation = -1
        self._known = False
        self._send: list[tuple[Levels, bool]] = []
        self._receive: list[tuple[Levels, bool]] = []
        self._subscribe: list[FilterAcl] = []
        self._unsubscribe: list[FilterAcl] = []

    def _resolve(self) -> None:
        rules = self._rules
        roles = rules.state.roles_for(self._username)
        self._known = roles is not None
        roles = roles or []
        self._send = [(tuple(acl.topic.split("/")), acl.allow)
                      for role in roles for acl in role.acls[SEND]]
        self._receive = [(tuple(acl.topic.split("/")), acl.allow)
                         for role in roles for acl in role.acls[RECEIVE]]
        self._subscribe = _filter_acls(roles, SUBSCRIBE_LITERAL, SUBSCRIBE_PATTERN)
        self._unsubscribe = _filter_acls(roles, UNSUBSCRIBE_LITERAL, UNSUBSCRIBE_PATTERN)
        self._generation = rules.generation

    def _default(self, kind: str, topic: str) -> bool:
        # Nothing matched: the default access, but never for $CONTROL (Mosquitto's rule).
        return (self._known and self._rules.state.default_access[kind]
                and not topic.startswith(CONTROL_PREFIX))

    def allowed(self, topic: str, access: Access) -> bool:
        if self._generation != self._rules.generation:
            self._resolve()
        levels = topic.split("/")
        write = access is Access.WRITE
        for rule, allow in self._send if write else self._receive:
            if matches(rule, levels, dollar_rule=True):
                return allow
        return self._default(SEND if write else RECEIVE, topic)

    def allowed_filter(self, topic_filter: str) -> bool:
        if self._generation != self._rules.generation:
            self._resolve()
        return self._check_filter(self._subscribe, topic_filter, SUBSCRIBE)

    def allowed_unsubscribe(self, topic_filter: str) -> bool:
        if self._generation != self._rules.generation:
            self._resolve()
        return self._check_filter(self._unsubscribe, topic_filter, UNSUBSCRIBE)

    def _check_filter(self, acls: list[FilterAcl], topic_filter: str, kind: str) -> bool:
        levels = topic_filter.split("/")
        for literal, rule, allow in acls:
            if (topic_filter == literal if literal is not None
                    else covers(rule, levels, dollar_rule=False)):
                return allow
        return self._default(kind, topic_filter)
