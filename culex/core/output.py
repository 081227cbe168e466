"""One write per connection per loop tick.

A connection that queues its first frame of a tick marks itself ready here; the first mark of a
tick asks the host to wake the broker once later in the same tick (`Host.wake`), and the
broker's flush hands every ready connection's frames to its sink in one `writelines`. So a
tick's output leaves in one syscall per connection, however many messages it holds.

Reading is scheduled here too: a connection that has used its fair share of a tick stops
reading until that flush, so one flooding client cannot starve the others of the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Writer(Protocol):
    def flush(self) -> None:
        """Hand what was queued this tick to the sink in one call."""
        ...


class FairReader(Protocol):
    def renew_fair_share(self) -> None:
        """A new tick: read again, up to a fair share."""
        ...


class OutputScheduler:
    """The writers and readers waiting for the end of this tick. The broker's flush takes
    `ready` and `fair_paused` as they are (two attribute reads when there is nothing to do,
    which is the common case of `fair_paused`)."""

    __slots__ = ("_wake", "fair_paused", "ready")

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self.ready: list[Writer] = []
        self.fair_paused: list[FairReader] = []

    def mark_ready(self, writer: Writer) -> None:
        """`writer` has frames for this tick's flush (called once per tick per writer)."""
        ready = self.ready
        ready.append(writer)
        if len(ready) == 1:
            self._wake()

    def read_next_tick(self, reader: FairReader) -> None:
        """`reader` used its fair share of this tick: read it again after the flush."""
        self.fair_paused.append(reader)
        self._wake()
