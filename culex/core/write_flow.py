"""What a delivery target does when its transport's buffer fills and drains.

A client's `Connection` and a bridge's `BridgeLink` are both `DeliveryTarget`s whose sink
reports its high-water mark; the rules for their publishers are the same, so they live here
once (flow.py pauses the publishers; this says when they may go on).
"""

from __future__ import annotations

from .context import CoreServices


class WriteFlow:
    """Mixed into a delivery target that has `core`; it holds the two fields it keeps."""

    __slots__ = ("paused_since", "write_paused")

    core: CoreServices

    def pause_writing(self, now: float) -> None:
        """The transport's buffer is over its high-water mark."""
        self.write_paused = True
        self.paused_since = now

    def resume_writing(self) -> None:
        self.write_paused = False
        self.core.flow.release_publishers(self)

    def queue_drained(self) -> None:
        """The session's queue fell below its low-water mark: resume what it paused, unless
        the transport is still full."""
        if not self.write_paused:
            self.core.flow.release_publishers(self)
