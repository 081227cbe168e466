"""The commit gate: what may leave only once the state it promises is on disk.

A PUBACK or PUBREC says "stored"; a QoS 2 delivery to a persistent session may be seen only
once the record that it was sent is committed (or a restart would send it again as new); a
SUBACK or ack that another worker's state must back waits for that worker's commit. All of
them go through `when_durable`: run now if nothing they may cover is waiting for a commit,
else after the next commit, in the order asked. With `durability = "sync"` the broker
commits at the end of every loop tick that changed something (group commit: one transaction
for everything the tick did); with "batch" every `batch_interval` seconds, and nothing waits;
without storage nothing waits either.

A failed commit (disk full, I/O error) keeps everything held and is retried a few times a
second (`next_deadline`), so nothing is acknowledged that is not stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from .persistence import Persistence
from .timers import Clock

log = logging.getLogger("culex")

A = TypeVar("A")

# How soon a failed commit is tried again.
RETRY_SECONDS = 0.25


class CommitGate:
    __slots__ = ("_batch_at", "_batch_interval", "_clock", "_failing", "_held", "_in_flight",
                 "_retry_at", "_set_timer", "_storage", "_wake", "durable")

    def __init__(self, persistence: Persistence | None, *, clock: Clock,
                 wake: Callable[[], None], set_timer: Callable[[float], None],
                 batch_interval: float = 0.05) -> None:
        self._storage = None if persistence is None else persistence.storage
        # Whether anything waits for commits at all: "sync" durability.
        self.durable = persistence is not None and persistence.durable
        self._clock = clock
        self._wake = wake
        self._set_timer = set_timer
        self._batch_interval = batch_interval
        # (action, its argument), in the order they were asked for.
        self._held: list[tuple[Callable[[Any], object], Any]] = []
        self._in_flight = False
        self._failing = False
        self._retry_at: float | None = None
        self._batch_at: float | None = None

    def when_durable(self, action: Callable[[A], object], argument: A) -> None:
        """Run `action(argument)` once what has changed so far is committed: at once when
        nothing is waiting (no pending change, no commit in flight, nothing held before it:
        order is kept)."""
        storage = self._storage
        if self.durable and storage is not None and (self._held or self._in_flight
                                                     or storage.pending):
            self._held.append((action, argument))
            self._wake()  # the end-of-tick flush starts the commit that releases it
        else:
            action(argument)

    @property
    def holding(self) -> bool:
        """Whether anything waits for a commit (held, or being committed)."""
        return bool(self._held) or self._in_flight

    def batch_due(self) -> None:
        """With "batch" durability, the tick's changes are all made: make sure a commit is due
        within `batch_interval`. (With "sync" the broker commits at the end of every tick.)"""
        if self._batch_at is None and self._storage is not None and self._storage.pending:
            self._batch_at = when = self._clock.now + self._batch_interval
            self._set_timer(when)

    @property
    def next_deadline(self) -> float | None:
        if self._retry_at is None:
            return self._batch_at
        if self._batch_at is None:
            return self._retry_at
        return min(self._retry_at, self._batch_at)

    def on_timer(self, now: float) -> None:
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self.commit(retry=True)
        if self._batch_at is not None and now >= self._batch_at:
            self._batch_at = None
            self.commit()

    def commit(self, retry: bool = False) -> None:
        """Start one commit of everything changed so far, unless one is already running.
        After a failure only `retry` (from the timer) tries again."""
        storage = self._storage
        if storage is None or self._in_flight or (self._failing and not retry):
            return
        if not storage.pending and not self._held:
            return
        held, self._held = self._held, []
        self._in_flight = True
        storage.commit(lambda ok: self._committed(ok, held))

    def _committed(self, ok: bool, held: list[tuple[Callable[[Any], object], Any]]) -> None:
        self._in_flight = False
        if not ok:
            self._held[:0] = held
            self._failing = True  # until a retry succeeds nothing is acknowledged
            self._retry_at = when = self._clock.now + RETRY_SECONDS
            self._set_timer(when)
            return
        if self._failing:
            log.warning("storage: commits succeed again; releasing held acknowledgements")
            self._failing = False
        for action, argument in held:
            action(argument)
        if self._held or (self._storage is not None and self._storage.pending):
            self._wake()  # the flush that follows commits what arrived meanwhile
