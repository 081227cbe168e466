"""Back-pressure: a full delivery target pauses the publishers that feed it.

When a subscriber's socket buffer is over its high-water mark (`DeliveryTarget.write_paused`),
or a connected client's QoS 1/2 queue fills faster than it acknowledges, the publisher of the
message that found it so stops being read until the target drains: TCP then slows the
publisher, and nothing is dropped. What the publisher had already read waits
(`Publisher.process_deferred`) and is handled at the end of the tick in which it may go on.

A client that stays full for longer than `stalled_reader_timeout` is not reading: it is given
up on, so the publishers go on for everyone else, and its QoS 0 messages are dropped (and
counted) until it catches up. A link to another worker is never given up on: the worker behind
it is alive (a dead one's link closes), and a full link only says that its own subscribers are
full, which that worker deals with under these same rules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .limits import Limits
from .ports import ClientLink, DeliveryTarget, Publisher
from .session import GAVE_UP, PUBLISHERS_PAUSED, Session
from .states import State
from .timers import Clock, TimerHeap

log = logging.getLogger("culex")


class FlowControl:
    __slots__ = ("_clock", "_limits", "_paused", "_wake", "_watched", "resuming")

    def __init__(self, limits: Limits, clock: Clock, *, wake: Callable[[], None],
                 set_timer: Callable[[float], None]) -> None:
        self._limits = limits
        self._clock = clock
        self._wake = wake
        # Full target -> the publishers paused until it drains.
        self._paused: dict[DeliveryTarget, set[Publisher]] = {}
        # Full clients, by when they count as stalled (links are never watched).
        self._watched: TimerHeap[tuple[ClientLink, Session]] = TimerHeap(set_timer)
        # Publishers with input held back whose targets have drained (the broker's flush
        # calls `resume_waiting` when there are any).
        self.resuming: list[Publisher] = []

    # -- pausing -------------------------------------------------------------------------------

    def throttle(self, publisher: Publisher | None, session: Session,
                 subscriber: ClientLink) -> bool:
        """A QoS 0 message for a full client: pause its publisher and send it anyway, unless
        the client has been full for too long. False means: drop it."""
        if publisher is None or (publisher.last_activity - subscriber.paused_since
                                 >= self._limits.stalled_reader_timeout):
            return False
        self._pause(publisher, subscriber, session)
        return True

    def pause_for_link(self, publisher: Publisher | None, link: DeliveryTarget) -> None:
        """A message for a full link to another worker: pause its publisher; the message goes
        whatever its QoS (see the module docstring)."""
        if publisher is not None:
            self._pause(publisher, link, None)

    def queue_pressure(self, session: Session, publisher: Publisher) -> None:
        """A connected client's QoS 1/2 queue fills faster than it acknowledges: pause the
        publisher, as for a full socket, rather than drop acknowledged messages once the queue
        is full. `Session.pump` resumes it when the queue is down to a quarter; a client that
        acknowledges nothing for `stalled_reader_timeout` is given up on, and its queue
        overflows then."""
        connection = session.connection
        if connection is None or connection is publisher or session.pressure == GAVE_UP \
                or not session.filling():
            return
        if not session.pressure:
            session.pressure = PUBLISHERS_PAUSED
            if connection not in self._paused:
                connection.paused_since = self._clock.now
        self._pause(publisher, connection, session)

    def _pause(self, publisher: Publisher, target: DeliveryTarget,
               session: Session | None) -> None:
        publishers = self._paused.get(target)
        if publishers is None:
            publishers = self._paused[target] = set()
            if session is not None:
                assert session.connection is target
                self._watched.push(target.paused_since + self._limits.stalled_reader_timeout,
                                   (session.connection, session))
        if publisher not in publishers:
            publishers.add(publisher)
            publisher.throttled_by += 1
            if publisher.throttled_by == 1:
                publisher.update_reading()

    def release_publishers(self, target: DeliveryTarget) -> None:
        """`target` drained (or closed, or stalled too long): resume its publishers."""
        for publisher in self._paused.pop(target, ()):
            publisher.throttled_by -= 1
            if not publisher.throttled_by:
                publisher.update_reading()

    # -- resuming ------------------------------------------------------------------------------

    def resume_deferred(self, publisher: Publisher) -> None:
        """A publisher whose targets drained has input read but not yet handled: handle it at
        the end of this tick, not from within whatever released it."""
        self.resuming.append(publisher)
        self._wake()

    def resume_waiting(self) -> None:
        resuming, self.resuming = self.resuming, []
        now = self._clock.now
        for publisher in resuming:
            if publisher.state is State.CONNECTED and not publisher.throttled_by:
                publisher.last_activity = now  # publishing again, as after a read
                publisher.process_deferred()
                publisher.update_reading()

    # -- stalled readers -----------------------------------------------------------------------

    @property
    def next_deadline(self) -> float | None:
        return self._watched.next

    def on_timer(self, now: float) -> None:
        timeout = self._limits.stalled_reader_timeout
        for _, (connection, session) in self._watched.pop_due(now):
            if connection not in self._paused:
                continue  # drained since
            stalled_at = connection.paused_since + timeout
            if stalled_at > now:
                self._watched.push(stalled_at, (connection, session))  # full again since
                continue
            if session.pressure:
                session.pressure = GAVE_UP
                log.warning("client %s (%s) has not kept up with its QoS 1/2 messages for %g s: "
                            "no longer holding its publishers back", connection.client_id,
                            connection.address, timeout)
            else:
                log.warning("client %s (%s) has not read for %g s: dropping its QoS 0 messages "
                            "until it catches up", connection.client_id, connection.address,
                            timeout)
            self.release_publishers(connection)
