"""The event loop's side of the core's `Host` port: wake-ups, timers, closes, the wall clock.

One flush per loop tick: the first `wake()` of a tick schedules `Broker.flush` with
`call_soon`, so every frame the tick queued leaves in one write per connection. One timer for
the whole core: the core says when it next needs to run (a `set_timer` call when a deadline
earlier than the armed one appears, `next_deadline()` after each run), as aioquic's shell does;
nothing polls.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

from ..core.broker import Broker
from ..core.ports import Sink
from .transport import lingering_close


class LoopHost:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._broker: Broker | None = None
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        # Timers run only once the broker serves: restore and the links between workers come
        # first, and a $SYS round before them would not reach every worker.
        self._timers_started = False
        # Shutting down: no more flushes, closes without lingering.
        self.stopping = False

    def serve(self, broker: Broker) -> None:
        """The broker this host runs (made with this host, so it comes after it): its
        wake-ups are flushed from now on."""
        self._broker = broker

    def start_timers(self) -> None:
        """The broker is ready to serve clients: its deadlines count from now on."""
        self._timers_started = True
        self._rearm()

    # -- the Host port -------------------------------------------------------------------------

    def wake(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def close_sink(self, sink: Sink) -> None:
        transport = cast(asyncio.Transport, sink)
        if self.stopping:
            transport.close()
        else:
            lingering_close(transport, self.loop)

    def set_timer(self, when: float) -> None:
        if self._timers_started and (self._armed_at is None or when < self._armed_at):
            self._arm(when)

    def wall_time(self) -> float:
        return time.time()

    # -- the loop's side -----------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self.stopping and self._broker is not None:
            self._broker.flush()

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = when
        self._timer = self.loop.call_at(when, self._fire, when)

    def _fire(self, when: float) -> None:
        self._timer = self._armed_at = None
        if self.stopping or self._broker is None:
            return
        # The loop's timers are millisecond-grained and may fire a little early: what was due
        # at `when` is due now.
        self._broker.tick(max(self.loop.time(), when))
        self._rearm()

    def _rearm(self) -> None:
        assert self._broker is not None
        when = self._broker.next_deadline()
        if when is not None:
            self.set_timer(when)

    def stop(self) -> None:
        """No more flushes or timers: what is left is written by the shutdown itself."""
        self.stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._armed_at = None
