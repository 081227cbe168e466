"""The SETTLEDs a cluster member owes for the sessions that came to it (session_moves.py).

A member that takes a session by a move owes the member it came from a SETTLED once every
member routes the session's subscriptions here: until then that member keeps collecting for
it. The duty goes with the session when it leaves before it is done (from here, a SETTLED
would end the copy collecting there while some members still route the session here), and
the member the session goes to takes it on.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from .session_parts import PartsLedger
from .sessions import SessionManager

# How a duty is sent: (member, client id, token) -> SETTLED to that member.
SendSettled = Callable[[int, str, int], object]
# `when_routed(action)`: `action()` once every member routes here what is subscribed so far.
WhenRouted = Callable[[Callable[[], None]], None]


class SettleDuties:
    def __init__(self, manager: SessionManager, parts: PartsLedger,
                 send_settled: SendSettled, when_routed: WhenRouted) -> None:
        self._manager = manager
        self._parts = parts
        self._send_settled = send_settled
        self._when_routed = when_routed
        # Client id -> (member, token) of each move here whose SETTLED this member owes.
        self._owed: dict[str, list[tuple[int, int]]] = {}

    def owe(self, client_id: str, member: int, token: int) -> None:
        """As a SUBACK: once every member routes the session's subscriptions here, `member`,
        which held it, may stop collecting for it (messages that went to both come once)."""
        self._owed.setdefault(client_id, []).append((member, token))
        self._when_routed(partial(self._settle, member, client_id, token))

    def _settle(self, member: int, client_id: str, token: int) -> None:
        owed = self._owed.get(client_id, [])
        if (member, token) in owed:  # (not passed on meanwhile)
            owed.remove((member, token))
            if not owed:
                del self._owed[client_id]
            self._send_settled(member, client_id, token)

    def pass_on(self, client_id: str, state: dict[str, Any]) -> None:
        """The session leaves, with no copy collecting for it here, before this member settled
        the move that brought it: the member it goes to sends that SETTLED once routed there
        (from here, it would end the copy collecting there while some route it here)."""
        owed = self._owed.pop(client_id, None)
        if owed:
            state["settle"] = [list(duty) for duty in owed]

    def take_on(self, member: int, client_id: str, state: dict[str, Any]) -> None:
        """The SETTLED a session that comes here owes: passed on (`pass_on`), or, for one
        that `member` let go of and still collects for (`let_go`), to `member` (claim 0)."""
        owed = [tuple(duty) for duty in state.get("settle") or ()]
        if state.get("collecting"):
            owed.append((member, 0))
        if owed and self._manager.sessions.get(client_id) is not None:
            self._parts.mark_unfinished(client_id, True)  # until that REST
            self._parts.expect_part(client_id)
            for owed_to, token in owed:
                self.owe(client_id, owed_to, token)
