"""Event-loop lag: how late a timer fires. A loop busy with one long callback (a huge fan-out,
a blocking call) delays everything else by as much, and this is how much.

A timer every `INTERVAL` seconds, only while the admin listener is on: two callbacks a second,
nothing per message.
"""

from __future__ import annotations

import asyncio

from ...storage.timing import Durations

INTERVAL = 0.5


class LoopLag:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.lag = Durations()
        self.last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        due = self._loop.time() + INTERVAL
        self._timer = self._loop.call_at(due, self._fired, due)

    def _fired(self, due: float) -> None:
        self.last = max(0.0, self._loop.time() - due)
        self.lag.observe(self.last)
        self._arm()
