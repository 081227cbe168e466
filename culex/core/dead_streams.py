"""What a member that is down had not yet applied from its stream, for the sessions taken
from its store (session_moves.py).

While a member is down, the others go on writing what matches its subscriptions into its
stream; a session taken from its store by another member has, from the moment every member
routes it there, what is published for it directly. What reached the dead member's stream
before that point is read here, once the taker's SETTLED is in that stream behind it, and
delivered to the session at once: the dead member may never come back. When it does, it
sends the same messages (its REST), and the session, which remembers what it is given while
that part may still come (`Session.seen`), drops them then. The stream also holds, after
SETTLED, what members routed both there and here: whichever copy comes second is dropped the
same way (here, or by `Router._deliver_matches`), so the whole stream is read.

Sessions taken from one member at about the same time share a read: while one is under way,
the sessions that come next wait for the next.

A session can also be on its way to a member when that member stops: sent to it, not yet
applied, so in no store. The member that its client connects to next reads that session from
the stream (`on_the_way`) when its holder does not answer in time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from .ports import SessionDirectory
from .publish_records import PublishRecord, decode_publish
from .routing import Router
from .session_state import SESSIONS
from .sessions import SessionManager
from .timers import Clock
from .worker_links import PUBLISH, SERVICE, split_records

log = logging.getLogger("culex")


class DeadStreams:
    def __init__(self, manager: SessionManager, router: Router, directory: SessionDirectory,
                 clock: Clock) -> None:
        self._manager = manager
        self._router = router
        self._directory = directory
        self._clock = clock
        # Member name -> the client ids whose read of its stream has yet to start.
        self._waiting: dict[str, set[str]] = {}
        # Members whose stream is being read.
        self._reading: set[str] = set()

    def collect(self, holder: str, client_id: str) -> None:
        """`client_id`'s session was taken from the store of `holder`, which is down, and
        every member routes it here now: what `holder`'s stream holds for it comes."""
        self._waiting.setdefault(holder, set()).add(client_id)
        if holder not in self._reading:
            self._read(holder)

    def _read(self, holder: str) -> None:
        client_ids = self._waiting.pop(holder)
        self._reading.add(holder)
        counts = dict.fromkeys(sorted(client_ids), 0)
        self._directory.unapplied(holder, partial(self._chunk, holder, counts))

    def _chunk(self, holder: str, counts: dict[str, int], entries: list[bytes],
               last: bool) -> None:
        """A chunk of what the stream of `holder` held (read in chunks: it may be large)."""
        if entries:
            found: list[tuple[int, bytes]] = []
            for records in entries:
                split_records(records, found)
            published = [decode_publish(body, self._clock.now) for kind, body in found
                         if kind == PUBLISH]
            for client_id in counts:
                counts[client_id] += self._deliver(client_id, published)
        if not last:
            return
        self._reading.discard(holder)
        for client_id, delivered in counts.items():
            if delivered:
                log.info("client %s: %d messages from the stream of %s, which is down",
                         client_id, delivered, holder)
        if holder in self._waiting:
            self._read(holder)

    def _deliver(self, client_id: str, published: list[PublishRecord]) -> int:
        """What `published` holds for the session, but what it was given already; how many."""
        session = self._manager.sessions.get(client_id)
        if session is None:
            return 0
        delivered = 0
        for record in published:
            message = record.message
            seen = session.seen
            if seen is None:  # not sure what it was given: the dead member's REST sees to it
                return delivered
            if record.group is None and message.qos and message.cluster_id not in seen:
                self._router.deliver_to(session, message)
                delivered += message.cluster_id in seen
        return delivered

    def on_the_way(self, holder: str, client_id: str,
                   done: Callable[[list[dict[str, Any]]], None]) -> None:
        """`done(states)`: the session states for `client_id` in the records of `holder`'s
        stream that it has not applied (sessions sent to it, in the order sent)."""
        states: list[dict[str, Any]] = []
        key = json.dumps(client_id).encode()

        def chunk(entries: list[bytes], last: bool) -> None:
            found: list[tuple[int, bytes]] = []
            for records in entries:
                split_records(records, found)
            for kind, body in found:
                if kind != SERVICE or body[0] != SESSIONS or key not in body:
                    continue
                try:
                    request = json.loads(body[1:])
                    if request["client"] == client_id and request["session"] is not None:
                        states.append(request["session"])
                except (ValueError, KeyError, TypeError):
                    continue  # logged when `holder` applies it
            if last:
                done(states)

        self._directory.unapplied(holder, chunk)
