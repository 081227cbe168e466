"""How long things take, as a histogram a scrape can read: the storage's commit latency (and the
server's event-loop lag, which reuses it).

Bucket counts, their sum and count, as Prometheus histograms have them; observing is a short
loop over a dozen bounds, done once per commit (never per message).
"""

from __future__ import annotations

from typing import Any

# Seconds: from a page-cache write (tens of microseconds) to a stalled disk.
BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
          2.5, 5.0)


class Durations:
    """A histogram of durations in seconds: `counts[i]` is how many were at most
    `BOUNDS[i]`, not cumulative; the last count is those above every bound."""

    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.total += seconds
        self.count += 1
        for index, bound in enumerate(BOUNDS):
            if seconds <= bound:
                self.counts[index] += 1
                return
        self.counts[-1] += 1

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: what another worker sends for the admin API to render."""
        return {"counts": list(self.counts), "total": self.total, "count": self.count}
