"""`max_publish_rate` and `max_publish_bytes_rate`: a token bucket per connection.

Made only for connections of a broker that sets one of the limits: everyone else pays one
`is None` per read. Burst: one second's worth of each. Over either, the connection stops
reading until both buckets have refilled (TCP back-pressure), instead of being disconnected.
"""

from __future__ import annotations

from .limits import Limits


class PublishRate:
    __slots__ = ("byte_tokens", "paused_until", "tokens", "tokens_at")

    def __init__(self, limits: Limits, now: float) -> None:
        self.tokens = limits.max_publish_rate
        self.byte_tokens = limits.max_publish_bytes_rate
        self.tokens_at = now
        # While over the rate: when reading resumes (0.0: not paused).
        self.paused_until = 0.0

    def charge(self, limits: Limits, publishes: int, size: int, now: float) -> float:
        """Take `publishes` PUBLISH packets of `size` bytes in all from the buckets; returns how
        long reading must wait for them to refill (0: not at all)."""
        elapsed = now - self.tokens_at
        self.tokens_at = now
        wait = 0.0
        rate = limits.max_publish_rate
        if rate:
            self.tokens = tokens = min(rate, self.tokens + elapsed * rate) - publishes
            wait = -tokens / rate
        byte_rate = limits.max_publish_bytes_rate
        if byte_rate:
            self.byte_tokens = tokens = (min(byte_rate, self.byte_tokens + elapsed * byte_rate)
                                         - size)
            wait = max(wait, -tokens / byte_rate)
        return wait
