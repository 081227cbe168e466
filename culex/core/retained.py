"""Retained messages: the store, its limit, its rows in storage, and ordering across workers.

With worker processes every worker keeps every retained message (a SUBSCRIBE is then answered
locally), but each stored row is held (written, and deleted when replaced) by exactly one
worker: the one whose client published it, or after a restart the topic's owner. Two workers
may publish to one topic at once, so every retained message carries a stamp (wall-clock
microseconds, the worker index in the low bits) and the newest wins, in memory and in storage,
whatever order their records arrive in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .limits import Limits
from .message import Message
from .persistence import Persistence
from .retained_store import RetainedStore
from .stats import Stats

log = logging.getLogger("culex")

# Low bits of a retained stamp: the worker index, so two stamps are never equal.
STAMP_WORKER_BITS = 10
MAX_WORKERS = 1 << STAMP_WORKER_BITS


def next_stamp(last: int, wall_now: float, worker: int) -> int:
    """A retained stamp after `last`: wall-clock microseconds, the worker index in the low
    bits, and never below `last` (clocks step back; storage must still take the new one)."""
    candidate = int(wall_now * 1_000_000) << STAMP_WORKER_BITS | worker
    if candidate <= last:
        candidate = ((last >> STAMP_WORKER_BITS) + 1) << STAMP_WORKER_BITS | worker
    return candidate


class RetainedMessages:
    __slots__ = ("_limits", "_persistence", "_stats", "_unheld", "_wall_time", "_worker",
                 "last_stamp", "stamps", "store")

    def __init__(self, limits: Limits, stats: Stats, persistence: Persistence | None, *,
                 wall_time: Callable[[], float], worker: int | None = None) -> None:
        self._limits = limits
        self._stats = stats
        self._persistence = persistence
        self._wall_time = wall_time
        self._worker = worker or 0
        self.store = RetainedStore()
        # Topic -> the stamp of its current message; kept only with workers (one process
        # needs no ordering beyond its own).
        self.stamps: dict[str, int] | None = None if worker is None else {}
        # The newest stamp made or seen: later local stamps stay above it.
        self.last_stamp = 0
        # Topics whose stored row another worker holds.
        self._unheld: set[str] = set()

    @property
    def count(self) -> int:
        return self.store.count

    def get(self, topic: str) -> Message | None:
        return self.store.get(topic)

    def stamp(self, topic: str) -> int:
        """A new stamp for a message published here to `topic`, recorded as its current one."""
        self.last_stamp = stamp = next_stamp(self.last_stamp, self._wall_time(), self._worker)
        if self.stamps is not None:
            self.stamps[topic] = stamp
        return stamp

    def fresh_id(self) -> int:
        """A new stamp that no retained topic records: a cluster-wide message id."""
        self.last_stamp = stamp = next_stamp(self.last_stamp, self._wall_time(), self._worker)
        return stamp

    def newer(self, topic: str, stamp: int) -> bool:
        """Whether another worker's retained message is newer than ours; if so its stamp
        becomes the topic's."""
        assert self.stamps is not None
        if stamp < self.stamps.get(topic, 0):
            return False
        self.stamps[topic] = stamp
        self.last_stamp = max(self.last_stamp, stamp)
        return True

    def retain(self, message: Message, stamp: int, hold: bool) -> None:
        """Store a retained message (an empty payload clears the topic). `hold` is False for
        a message another worker published: its row stays that worker's."""
        if message.payload and self.store.count >= self._limits.max_retained_messages \
                and self.store.get(message.topic) is None:
            stats = self._stats
            stats.retained_dropped += 1
            if stats.retained_dropped == 1 or not stats.retained_dropped % 10_000:
                log.warning("retained store full (max_retained_messages %d): %d new retained "
                            "topics not stored so far", self._limits.max_retained_messages,
                            stats.retained_dropped)
            return
        previous = self.store.set(message)
        persistence = self._persistence
        topic = message.topic
        if persistence is None or topic.startswith("$SYS/"):
            return  # $SYS values are made afresh at start-up, never stored
        unheld = self._unheld
        if previous is not None and topic not in unheld:
            persistence.unref(previous)
        if not hold:
            unheld.add(topic)
            return
        unheld.discard(topic)
        if message.payload:
            persistence.retained_set(message, stamp)
        elif previous is not None:
            persistence.retained_cleared(topic, stamp)

    def restored(self, message: Message, stamp: int, held: bool) -> None:
        """A retained message loaded from storage; `held` when this worker holds its row."""
        self.store.set(message)
        if held:
            message.store_refs += 1
        else:
            self._unheld.add(message.topic)
        if self.stamps is not None:
            self.stamps[message.topic] = stamp
