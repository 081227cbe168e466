"""Sessions that move between cluster nodes: one owner per client id, and takeover across nodes.

Every CONNECT on a clustered node claims its client id in the cluster's directory (Redis,
through the `SessionDirectory` port) before it is accepted; the claim says who held it:

    CONNECT checked ─ claim ─┬─ nobody, this member, or a member that is down ─> accepted here
                             └─ another live member ─ TAKE ─> that member:
                                  its connection for the id closed (0x8E "Session taken over")
                                  Clean Start 1: the session ends there ─ MOVED (none) ─> on
                                  Clean Start 0: the session's state goes into MOVED and out
                                  of the session there, in one commit with the record (the
                                  outbox, storage/stream_cursors.py); the session stays there
                                  with its subscriptions, collecting what still comes
                              <─ MOVED (the session) ─ adopted here, offline, in one commit
                                  with the stream cursor; its subscriptions announced
                                  once every member routes them here ─ SETTLED ─> that member:
                                  what it collected meanwhile goes into REST, and the session
                                  ends there
                              <─ REST ─ added here, but for what came both ways (the same
                                  Message.cluster_id); accepted, Session Present 1

So nothing published during the move is lost (until SETTLED the old member still gets what
matches the subscriptions) nor delivered twice (a message that went to both members is
recognised by its id); what reached the old member only, during the move, was published
before anything that reached the new one directly, and goes ahead of it in the queue
(`in_publication_order`), so each publisher's messages stay in order.

A holder that is down (or did not answer within `answer_timeout`) has its session taken from
its store in Redis; once every member routes the session here, SETTLED goes into its stream
as after a move (it sends what it got before that point, REST, when it reads it), and what
its stream holds is read for the session (dead_streams.py). Without a store, the client is
let in with what has come, and with what the holder's stream holds of a session on its way
there; a part that comes later is added to the session it has then (session_parts.py).
Claims are numbered cluster-wide: a TAKE older than this member's own later claim is answered
with nothing; one for a session on its way here is answered once it has come, as is one read
at start-up once what the stream held then is applied. A session that comes for a claim this
member no longer holds goes on to the member that holds it.

A member that was paused or cut off past its lease, or that starts again after others claimed
its clients' ids, lets go of every session whose id another member has claimed meanwhile
(`let_go`, run by the server before it reads anything again or serves anyone), so it never
delivers for a session it no longer owns; what such a session held goes to its new owner,
and it collects for the session, as after a move, until that owner says every member routes
it there (SETTLED under claim 0).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..protocol.reasons import ReasonCode
from ..storage.base import StoredMessage, StoredSession, TakenSession
from .dead_streams import DeadStreams
from .message import Message
from .outgoing import Outgoing
from .persistence import restored_message
from .ports import Claim, SessionDirectory
from .restore import rebuild_session
from .routing import Router
from .session import Session
from .session_parts import (
    PartsLedger,
    admitted,
    in_publication_order,
    merge_part,
    store_part,
    strip_handed_on,
)
from .session_state import (
    SESSIONS,
    describe_state,
    import_session,
    read_early,
    without_inbound_state,
)
from .sessions import SessionManager
from .settle_duties import SettleDuties
from .timers import Clock, TimerHeap
from .worker_links import WorkerLinks

log = logging.getLogger("culex")


@dataclass(slots=True)
class Waiting:
    """A CONNECT held until the member that held its client id answers."""

    token: int
    holder: str
    member: int  # the holder's number
    then: Callable[[], None]


class SessionMoves:
    def __init__(self, manager: SessionManager, router: Router, links: WorkerLinks,
                 directory: SessionDirectory, clock: Clock, *, answer_timeout: float,
                 set_timer: Callable[[float], None]) -> None:
        self._manager = manager
        self._router = router
        self._links = links
        self._directory = directory
        self._clock = clock
        self._answer_timeout = answer_timeout
        # Client id -> the token of this member's latest claim of it.
        self._tokens: dict[str, int] = {}
        self._waiting: dict[str, Waiting] = {}
        # Client id -> (member, token): its session went there, and what still comes here
        # for it follows once that member routes its subscriptions (`_settled`).
        self._moving_out: dict[str, tuple[int, int]] = {}
        self._parts = PartsLedger(manager, clock)
        # Client id -> (member, token, keep): a later claim there asked for a session that is
        # still on its way here; it goes on once it has come (`_go_on`).
        self._passing_on: dict[str, tuple[int, int, bool]] = {}
        # TAKEs read before this member has applied what its stream held when it started: a
        # session sent here before it went down may come after a TAKE for it (`answer_held`).
        self._held: list[tuple[int, str, int, bool]] | None = []
        self._deadlines: TimerHeap[tuple[str, int]] = TimerHeap(set_timer)
        # Moves out, (client id, member, token), checked `answer_timeout` after they began:
        # one not settled by then is seen to (`_not_settled`).
        self._unsettled: TimerHeap[tuple[str, int, int]] = TimerHeap(set_timer)
        self._dead_streams = DeadStreams(manager, router, directory, clock)
        # Client id -> what the session's queue held when it came by a move whose REST has
        # not come (`in_publication_order`).
        self._moved_with: dict[str, list[Outgoing]] = {}
        self._duties = SettleDuties(
            manager, self._parts,
            lambda member, client_id, token: self._send(member, "settled", client_id, token),
            self._when_routed)
        links.serve(SESSIONS, self._received)
        manager.on_ended = self._ended

    # -- this member claims ---------------------------------------------------------------------

    def claim(self, client_id: str, keep: bool, then: Callable[[], None]) -> None:
        """Before a CONNECT for `client_id` is accepted: own the id, and with `keep` (Clean
        Start 0) bring its session here if another live member holds it; `then()` once it
        may be accepted."""
        self._directory.claim(client_id,
                              lambda claim: self._claimed(client_id, keep, claim, then))

    def adopt(self, client_id: str, claim: Claim) -> None:
        """A session of a member removed from the cluster, taken from its store under
        `claim`: here from now on, offline until its client connects, or it expires."""
        self._claimed(client_id, True, claim, lambda: None)

    def _claimed(self, client_id: str, keep: bool, claim: Claim,
                 then: Callable[[], None]) -> None:
        self._tokens[client_id] = claim.token
        then = partial(self._let_in, client_id, claim.token, then)
        self._moving_out.pop(client_id, None)  # back here before its move settled
        earlier = self._waiting.pop(client_id, None)
        if earlier is not None:
            earlier.then()  # a second CONNECT overtook it: taken over here, as usual
        self._pass_on(client_id)  # refused: this claim is later
        if claim.taken is not None and keep:
            self._take_over(client_id, claim.previous_name, *claim.taken)
            self._when_routed(partial(self._routed_here, claim.down, claim.previous_name,
                                      client_id, claim.token, then))
            return
        if claim.previous is None:
            then()
            if keep and claim.down is not None:
                # Its holder is down, with the session: when it is back it lets go of it,
                # here, with what reached it meanwhile, some of which comes here directly.
                self._parts.expect_part(client_id)
            return
        if not self._send(claim.previous, "take", client_id, claim.token, keep=keep):
            then()  # not linked (any more): nothing can come from it
            return
        log.info("client %s: held by %s; asking it for the %s", client_id,
                 claim.previous_name, "session" if keep else "old connection to close")
        self._waiting[client_id] = Waiting(claim.token, claim.previous_name, claim.previous,
                                           then)
        self._deadlines.push(self._clock.now + self._answer_timeout,
                             (client_id, claim.token))

    def _let_in(self, client_id: str, token: int, then: Callable[[], None]) -> None:
        """Accept the CONNECT that made claim `token`: its session's state is the client's
        from now on (`Session.admitted`, which orders the parts of a session)."""
        then()
        session = self._manager.sessions.get(client_id)
        if token and session is not None and session.connection is not None:
            admitted(session, token)

    def _take_over(self, client_id: str, holder: str, stored: StoredSession,
                   messages: dict[int, StoredMessage]) -> None:
        """Adopt what `holder`, down, had stored for the session. What reaches the session
        there meanwhile comes when `holder` is back: what it read before the SETTLED this
        member sends it (`_routed_here`), or at its `let_go`, but for what is seen here too."""
        now = self._clock.now
        restored = {message_id: restored_message(message, now)
                    for message_id, message in messages.items()}
        self._adopt(f"{holder} (down)", client_id, stored, restored)
        session = self._manager.sessions.get(client_id)
        if session is not None:
            session.remember_given({message.cluster_id for message in restored.values()}
                                   | stored.given)
            self._parts.mark_unfinished(client_id, True)  # until its REST from `holder`

    @property
    def next_deadline(self) -> float | None:
        return min((when for when in (self._deadlines.next, self._unsettled.next)
                    if when is not None), default=None)

    def on_timer(self, now: float) -> None:
        """The clients whose previous holder did not answer in time (it died after its last
        heartbeat, or stopped reading): their sessions are taken from its store, where it
        keeps them in Redis, and they are let in. And the moves out that have not settled
        in that time: who holds their ids now is asked (`_not_settled`)."""
        for _when, (client_id, token) in self._deadlines.pop_due(now):
            waiting = self._waiting.get(client_id)
            if waiting is None or waiting.token != token:
                continue
            self._directory.take(client_id, waiting.holder,
                                 partial(self._taken_late, client_id, token))
        for _when, (client_id, member, token) in self._unsettled.pop_due(now):
            if self._moving_out.get(client_id) == (member, token):
                self._directory.held_elsewhere(
                    client_id, partial(self._not_settled, client_id, member, token))

    def _not_settled(self, client_id: str, member: int, token: int,
                     holders: dict[str, int | None]) -> None:
        """A session handed to `member` is not settled after `answer_timeout`: that member
        started again since (and forgot to settle) or died. What came here meanwhile goes
        to whoever holds the id now, and the session ends here: as SETTLED when that is
        still `member` (which routes its subscriptions by now, restored or not), as
        `let_go` when another member claimed it since."""
        if self._moving_out.get(client_id) != (member, token):
            return
        holder = holders.get(client_id, member)
        log.warning("client %s: its move to member %d did not settle within %g s; what came "
                    "for it here goes to %s", client_id, member, self._answer_timeout,
                    f"member {holder}" if holder is not None else "no member (not linked)")
        if holder == member:
            self._settled(member, client_id, token)
        else:
            self.let_go({client_id: holder})

    def _taken_late(self, client_id: str, token: int,
                    taken: TakenSession | None) -> None:
        waiting = self._waiting.get(client_id)
        if waiting is None or waiting.token != token:
            return
        if taken is None:
            self._dead_streams.on_the_way(waiting.holder, client_id,
                                          partial(self._let_in_with, client_id, token))
            return
        log.warning("client %s: no answer from %s within %g s; its session is taken from its "
                    "store", client_id, waiting.holder, self._answer_timeout)
        self._take_over(client_id, waiting.holder, *taken)
        self._when_routed(partial(self._routed_here, waiting.member, waiting.holder,
                                  client_id, token,
                                  partial(self._let_in_early, client_id, token)))

    def _let_in_with(self, client_id: str, token: int, parts: list[dict[str, Any]]) -> None:
        """Let the client in with what has come, and with what the session records that
        its holder has not applied hold for it (the session was on its way there when the
        holder stopped): above all its inbound QoS 2 ids, without which what the client
        sends again under them would be routed twice. Those records still come, when the
        holder is back, and add what they held but this (`read_early`)."""
        waiting = self._waiting.get(client_id)
        if waiting is None or waiting.token != token:
            return
        for state in parts:
            stored, messages = import_session(client_id, state, self._clock.now)
            if not stored.admitted:
                stored = without_inbound_state(stored)
            self._adopt(f"the stream of {waiting.holder}", client_id,
                        read_early(stored, messages), messages, late=True)
        self._let_in_early(client_id, token)
        log.warning("client %s: its session did not come from %s within %g s; accepted "
                    "with what has come%s (what comes later is added to it)", client_id,
                    waiting.holder, self._answer_timeout,
                    f" and {len(parts)} parts read from its stream" if parts else "")

    def _routed_here(self, holder: int | None, holder_name: str, client_id: str, token: int,
                     then: Callable[[], None]) -> None:
        """Every member routes here a session taken from the store of `holder`: SETTLED goes
        into its stream (what reached it before comes here as REST when it reads that), the
        client is let in once SETTLED is there, and what the stream holds is read for the
        session (dead_streams.py): `holder` may never come back. One not linked (removed
        from the cluster) sends no REST, and nothing reaches its stream: it is read at once."""
        settled = partial(self._behind_settled, holder_name, client_id, then)
        if holder is not None and self._send(holder, "settled", client_id, token,
                                             counted=True):
            links = self._links
            if not links.when_known(settled, links.sends):
                settled()
            return
        if client_id in self._parts.unfinished:
            self._parts.mark_unfinished(client_id, False)  # no REST can come from `holder`
        settled()

    def _behind_settled(self, holder: str, client_id: str, then: Callable[[], None]) -> None:
        then()
        self._dead_streams.collect(holder, client_id)

    def _when_routed(self, action: Callable[[], None]) -> None:
        """`action()` once every member routes here the subscriptions added so far."""
        links = self._links
        if not links.when_known(action, links.route_sends):
            action()

    def _go_on(self, client_id: str, token: int) -> Waiting | None:
        """Let in the CONNECT waiting under claim `token`, if it still is; returns it."""
        waiting = self._waiting.get(client_id)
        if waiting is None or waiting.token != token:
            return None
        del self._waiting[client_id]
        waiting.then()
        self._pass_on(client_id)  # taken over there as soon as it is here
        return waiting

    def _pass_on(self, client_id: str) -> None:
        """Answer the member that asked for the session while it was on its way here."""
        passing = self._passing_on.pop(client_id, None)
        if passing is not None:
            member, token, keep = passing
            self._give(member, client_id, token, keep)

    def _let_in_early(self, client_id: str, token: int) -> None:
        """Let the client in before what its previous holder has comes (it did not answer in
        time): what the session is given meanwhile is remembered, so that what comes later
        is not delivered twice."""
        self._remember_given(client_id)
        self._go_on(client_id, token)
        self._remember_given(client_id)  # the session it attached to may be a new one

    def _remember_given(self, client_id: str) -> None:
        session = self._manager.sessions.get(client_id)
        if session is not None:
            session.remember_given()

    def recorded(self, client_id: str, token: int) -> None:
        """A claim made late (Redis was unavailable when the client connected) is `token`."""
        self._tokens[client_id] = token

    def _ended(self, client_id: str) -> None:
        self._parts.gone(client_id)
        self._moved_with.pop(client_id, None)
        token = self._tokens.pop(client_id, None)
        if token is not None:
            self._directory.release(client_id, token)

    # -- records from the other members --------------------------------------------------------

    def _received(self, member: int, body: bytes) -> None:
        try:
            request = json.loads(body)
            client_id, token, op = request["client"], request["token"], request["op"]
            log.debug("client %s: %s from member %d (claim %d): %s", client_id, op, member,
                      token, describe_state(request["session"]))
            if op == "take":
                self._asked(member, client_id, token, request["keep"])
            elif op == "moved":
                self._moved(member, client_id, token, request["session"])
            elif op == "settled":
                self._settled(member, client_id, token)
            else:
                self._rest(member, client_id, token, request["session"])
        except (ValueError, KeyError, TypeError) as exc:
            log.error("cluster: a session record from member %d is not understood (%s): %r",
                      member, exc, body[:200])

    def _send(self, member: int, op: str, client_id: str, token: int,
              state: dict[str, Any] | None = None, *, keep: bool = False,
              counted: bool = False) -> bool:
        """One record for `member`; False when it is not linked (any more). A `counted` one
        is one a barrier waits for (`WorkerLinks.when_known`)."""
        log.debug("client %s: %s to member %d (claim %d): %s", client_id, op, member, token,
                  describe_state(state))
        return self._links.send_service(SESSIONS, json.dumps({
            "op": op, "client": client_id, "token": token, "session": state,
            "keep": keep}).encode(), member, counted=counted)

    def _asked(self, member: int, client_id: str, token: int, keep: bool) -> None:
        """Member `member` claimed `client_id` under `token` and asks for its session: given
        now, or once it is here when it is on its way (this member waits for it under an
        earlier claim, or has not yet applied what was sent to it before a restart)."""
        if self._held is not None:
            self._held.append((member, client_id, token, keep))
            return
        waiting = self._waiting.get(client_id)
        if waiting is not None and waiting.token < token:
            log.info("client %s: member %d asks for its session, which is on its way here "
                     "from %s; it goes on once it is here", client_id, member, waiting.holder)
            self._passing_on[client_id] = (member, token, keep)
            return
        self._give(member, client_id, token, keep)

    def answer_held(self) -> None:
        """What this member's stream held when it started is applied: the TAKEs read meanwhile
        are answered, with the sessions that came in it."""
        held, self._held = self._held, None
        for request in held or ():
            self._asked(*request)

    def _give(self, member: int, client_id: str, token: int, keep: bool) -> None:
        """Member `member` claimed `client_id` under `token`: the session's state goes there
        (its subscriptions stay here until that member routes them, see `_settled`)."""
        state = None
        if self._tokens.get(client_id, 0) > token:
            log.info("client %s: member %d asked for its session under an older claim than "
                     "this member's; nothing handed over", client_id, member)
        else:
            self._tokens.pop(client_id, None)
            manager = self._manager
            session = manager.sessions.get(client_id)
            if session is not None and session.connection is not None:
                log.info("client %s (%s) taken over by a connection to member %d", client_id,
                         session.connection.address, member)
                session.connection.close(publish_will=True,
                                         reason=ReasonCode.SESSION_TAKEN_OVER)
                session = manager.sessions.get(client_id)  # a clean one ended with it
            if session is not None:
                if keep:
                    state = self._parts.export(session)
                    log.info("client %s: session handed to member %d (%d subscriptions, "
                             "%d messages)", client_id, member, len(session.subscriptions),
                             len(state["entries"]))
                    strip_handed_on(session)
                    self._moving_out[client_id] = (member, token)
                    self._unsettled.push(self._clock.now + self._answer_timeout,
                                         (client_id, member, token))
                else:
                    manager.discard(session)  # Clean Start 1: it ends, and a waiting will goes
        self._send(member, "moved", client_id, token, state)

    def _moved(self, member: int, client_id: str, token: int,
               state: dict[str, Any] | None) -> None:
        if state is None:
            self._go_on(client_id, token)
            return
        waiting = self._waiting.get(client_id)
        late = waiting is None or waiting.token != token
        stored, messages = import_session(client_id, state, self._clock.now)
        if (late or not token) and not stored.admitted:
            stored = without_inbound_state(stored)  # not known to be newer than any part
        session = self._adopt(f"member {member}", client_id, stored, messages, late=late)
        if session is not None and token and not late:
            self._moved_with[client_id] = list(session.queue)
        if not token and session is not None and not state.get("collecting"):
            session.forget_given()  # what the member that was down held has come
        if token:
            self._parts.mark_unfinished(client_id, True)  # until its REST
        if state.get("unfinished"):
            self._parts.expect_part(client_id, stored.given)
        if late and token and token != self._tokens.get(client_id):
            # For a claim this member no longer knows (it started again since) or has made
            # again: if another member claimed the id since, the session goes on there.
            self._directory.held_elsewhere(client_id, self.let_go)
        if token:
            self._duties.owe(client_id, member, token)
        self._duties.take_on(member, client_id, state)

    def _settled(self, member: int, client_id: str, token: int) -> None:
        """Every member routes the session's subscriptions to `member` now: what came here
        meanwhile follows it, and the session ends here. So too for a session `member` took
        from this member's store (down, or silent) under a claim later than this member's
        own; its connection, if this member was paused with one, closes without its will."""
        rest = None
        moving = self._moving_out.get(client_id)
        # (The move's token names it: the member it went to, or the one it went on to before
        # settling it, `SettleDuties.pass_on`.)
        if (moving is not None and moving[1] == token) or (
                moving is None and self._tokens.get(client_id, 0) < token):
            self._moving_out.pop(client_id, None)
            session = self._manager.sessions.get(client_id)
            if session is not None and session.connection is not None:
                session.connection.close(publish_will=False,
                                         reason=ReasonCode.SESSION_TAKEN_OVER)
                session = self._manager.sessions.get(client_id)
            if session is not None:
                rest = self._parts.export(session)
                self._duties.pass_on(client_id, rest)
                self._manager.hand_off(session)
                self._parts.gone(client_id)
                if moving is None:
                    log.info("client %s: its session was taken from this member's store by "
                             "member %d; what came for it here since (%d messages) follows "
                             "it", client_id, member, len(rest["entries"]))
        self._send(member, "rest", client_id, token, rest)

    def _rest(self, member: int, client_id: str, token: int,
              state: dict[str, Any] | None) -> None:
        if client_id in self._parts.unfinished:
            self._parts.mark_unfinished(client_id, False)
        session = self._manager.sessions.get(client_id)
        moved = self._moved_with.pop(client_id, None)
        if state is not None:
            stored, messages = import_session(client_id, state, self._clock.now)
            if session is not None:
                before = list(session.queue)
                merge_part(session, stored, messages, f"member {member}")
                if moved is not None and session.connection is None:
                    in_publication_order(session, moved, before)
                if state.get("unfinished"):
                    self._parts.expect_part(client_id, stored.given)
                self._duties.take_on(member, client_id, state)
            elif stored.entries or state.get("settle"):
                # The session went on from here before the rest came (`let_go`): the rest
                # follows it. (Ended here instead, it took the rest with it.)
                self._directory.held_elsewhere(client_id,
                                               partial(self._forward, client_id, state))
        if session is not None and token == self._tokens.get(client_id) \
                and client_id not in self._parts.expecting:
            session.forget_given()  # the move is complete
        self._go_on(client_id, token)

    def restored(self, sessions: list[StoredSession]) -> None:
        """At start-up: the sessions stored here that a part may still come for."""
        self._parts.restored(sessions)

    def _forward(self, client_id: str, state: dict[str, Any],
                 claimed: dict[str, int | None]) -> None:
        member = claimed.get(client_id)
        if member is not None and self._send(member, "moved", client_id, 0, state):
            log.info("client %s: what came for it after it went on sent on to member %d",
                     client_id, member)

    def _adopt(self, source: str, client_id: str, stored: StoredSession,
               messages: dict[int, Message], *, late: bool = False) -> Session | None:
        """Rebuild a session that `source` held, and store it; returns it (None: added to the
        session that is here already)."""
        manager = self._manager
        existing = manager.sessions.get(client_id)
        if existing is not None:
            # Its client was let in without it (no answer in time), or part of it came
            # first (from a member that let go of what it collected): what it held goes into
            # the session here, rather than lost.
            log.warning("client %s: more of its session came from %s; added to the session "
                        "here", client_id, source)
            merge_part(existing, stored, messages, source)
            return None
        session, entries = rebuild_session(manager, self._router, stored, messages)
        store_part(session, stored, entries)
        manager.sessions.put(session)
        manager.expire_later(session)  # until its client attaches (it may have gone)
        log.info("client %s: session %s %s (%d subscriptions, %d messages)", client_id,
                 "arrived late from" if late else "taken over from", source,
                 len(stored.subscriptions), len(entries))
        return session

    # -- a member that lost its lease ----------------------------------------------------------

    def let_go(self, claimed: dict[str, int | None]) -> None:
        """Other members claimed these ids (each to its member's number, None when that member
        is not linked) while this one was presumed dead (paused, cut off, or down): the
        sessions' connections close without their wills, and what each held goes to its new
        owner, which adds it to the session it has now. As after a move, the session keeps
        its subscriptions here, collecting what members that do not route it there yet still
        send here, until the new owner says they all do (SETTLED, claim 0): then that
        follows, and the session ends here."""
        manager = self._manager
        for client_id, member in claimed.items():
            self._tokens.pop(client_id, None)
            moving = self._moving_out.get(client_id)
            if moving is not None and moving[0] == member:
                continue  # handed to that member already: it ends at SETTLED, as moves do
            self._moving_out.pop(client_id, None)
            session = manager.sessions.get(client_id)
            if session is None:
                continue
            connection = session.connection
            if connection is not None:
                connection.close(publish_will=False, reason=ReasonCode.SESSION_TAKEN_OVER)
            session = manager.sessions.get(client_id)
            if session is None:
                continue
            state = self._parts.export(session)
            self._duties.pass_on(client_id, state)
            state["collecting"] = True
            sent = member is not None and self._send(member, "moved", client_id, 0, state)
            self._parts.gone(client_id)
            if sent:
                assert member is not None
                strip_handed_on(session)
                self._moving_out[client_id] = (member, 0)
                self._unsettled.push(self._clock.now + self._answer_timeout,
                                     (client_id, member, 0))
            else:
                manager.hand_off(session)
            log.warning("client %s: claimed by %s while this member was cut off or down; "
                        "its session goes there, %s", client_id,
                        f"member {member}" if member is not None else "a member not linked",
                        f"its {len(state['entries'])} messages sent there" if sent else
                        f"{len(state['entries'])} messages dropped")

