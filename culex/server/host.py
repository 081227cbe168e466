"""The event loop's side of the core's `Host` port: wake-ups, timers, closes, the wall clock.

Writes are batched per loop tick: the first `wake()` of a tick schedules `Broker.flush` with
`call_soon`, so every frame the tick queued leaves in one write per connection. Except when a
read is alone in its tick: then waiting for the tick's end buys no batching and costs a whole
loop iteration, so the read's output is written at once, at the end of that read (`read`).
uvloop gives every callback of one poll the same `loop.time()` (libuv updates its clock once
per poll, to the millisecond), so a read whose time differs from the previous read's is the
first of its poll: that one is written at once, and the others of the same poll (or of the
same millisecond) wait for the batched flush. At 1,000 or 10,000 messages a second most
messages arrive alone, so most leave without the extra iteration (BENCHMARKS.md, "Ordinary
rates", has the CPU and round-trip figures); flat out, a poll's first read costs at most one
extra write per connection.

One timer for the whole core: the core says when it next needs to run (a `set_timer` call
when a deadline earlier than the armed one appears, `next_deadline()` after each run), as
aioquic's shell does; nothing polls.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

from ..core.broker import Broker
from ..core.connection import Connection
from ..core.ports import Sink

# How long a closed connection keeps reading (and discarding) what its client still sends.
LINGER_SECONDS = 2.0


def lingering_close(transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
    """Close after our last frames without turning the close into a reset.

    Closing a socket whose receive buffer holds unread bytes makes the kernel send RST, and a
    client that pipelined packets behind the one we refused (a burst of QoS 2 PUBLISHes past
    our Receive Maximum, say) then gets ECONNRESET on its next send, possibly before it has read
    our DISCONNECT and its reason. So: send FIN after the buffered frames, keep reading and
    discarding (the Connection is closed and ignores input) until the client closes too or
    LINGER_SECONDS pass. TLS transports cannot half-close; they close at once.
    """
    if transport.is_closing():
        return
    if not transport.can_write_eof():
        transport.close()
        return
    transport.write_eof()
    transport.resume_reading()  # it may have been paused (back-pressure, rate limit)
    loop.call_later(LINGER_SECONDS, transport.close)


class LoopHost:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._broker: Broker | None = None
        self._flush_scheduled = False
        # `loop.time()` of the last read, and whether one is being handled that will write
        # its output itself when it ends (and whether it has any).
        self._read_at = -1.0
        self._in_read = False
        self._flush_due = False
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
        if self._in_read:
            self._flush_due = True
        elif not self._flush_scheduled:
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

    def read(self, connection: Connection, data: bytes) -> None:
        """Hand a read to its connection; write what it produced at once when it is the first
        read of its poll (see the module docstring)."""
        now = self.loop.time()
        if now == self._read_at or self._flush_scheduled or self.stopping:
            connection.data_received(data, now)
            return
        self._read_at = now
        self._in_read = True
        try:
            connection.data_received(data, now)
        finally:
            self._in_read = False
        if self._flush_due:
            self._flush_due = False
            broker = self._broker
            assert broker is not None
            # Everything the tick's flush does but give readers a new fair share: that waits
            # for the tick's end, or a flooding socket would be read again within this poll.
            if broker.flush(end_of_tick=False):
                self.wake()

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
