"""Time in the core: the clock the transport sets, and heaps of deadlines.

The core never reads a clock. The transport passes the time with every input
(`Connection.data_received(data, now)`, `Broker.tick(now)`), and the broker keeps it in one
`Clock` its parts share. Every part that needs waking later keeps its deadlines in a
`TimerHeap`; `Broker.next_deadline()` is the earliest of them, and a heap whose earliest
deadline moves earlier says so to the server (`Host.set_timer`), which keeps one timer armed
for the core, as aioquic's `get_timer()` does: nothing polls.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from itertools import count
from typing import Generic, TypeVar

T = TypeVar("T")

_sequence = count()  # ties between equal deadlines are broken by insertion order


class Clock:
    """The time of the input or timer being handled (`loop.time()` in the server)."""

    __slots__ = ("now",)

    def __init__(self, now: float = 0.0) -> None:
        self.now = now


class TimerHeap(Generic[T]):
    """Deadlines of items, earliest first. Entries are never removed early: an item whose
    deadline changed or lapsed is checked by whoever pops it (its owner knows what is
    current), which keeps every push O(log n) and every cancellation free."""

    __slots__ = ("_heap", "_on_earlier")

    def __init__(self, on_earlier: Callable[[float], None]) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._on_earlier = on_earlier

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, when: float, item: T) -> None:
        heap = self._heap
        if not heap or when < heap[0][0]:
            self._on_earlier(when)
        heapq.heappush(heap, (when, next(_sequence), item))

    @property
    def next(self) -> float | None:
        """The earliest deadline, or None when there is none."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> Iterator[tuple[float, T]]:
        """Remove and yield (deadline, item) for every deadline at or before `now`, in order.
        An item pushed while this runs, due at once, is yielded too."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, item = heapq.heappop(heap)
            yield when, item


class Deadlines(Generic[T]):
    """One live deadline per item, its earliest: what each connection is checked for next
    (CONNECT timeout, keep-alive, the end of a publish-rate pause). The item recomputes its
    deadline when it is due, so a later deadline needs no entry until then."""

    __slots__ = ("_current", "_heap")

    def __init__(self, on_earlier: Callable[[float], None]) -> None:
        self._heap: TimerHeap[T] = TimerHeap(on_earlier)
        self._current: dict[T, float] = {}

    def schedule(self, item: T, when: float) -> None:
        current = self._current.get(item)
        if current is not None and current <= when:
            return
        self._current[item] = when
        self._heap.push(when, item)

    def forget(self, item: T) -> None:
        self._current.pop(item, None)

    @property
    def next(self) -> float | None:
        return self._heap.next

    def pop_due(self, now: float) -> Iterator[T]:
        """The items whose deadline passed, each once, forgotten until scheduled again."""
        current = self._current
        for when, item in self._heap.pop_due(now):
            if current.get(item) == when:  # else superseded, or forgotten
                del current[item]
                yield item
