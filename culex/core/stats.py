"""The broker's counters: what `$SYS` publishes, and what metrics and the admin API read.

One plain object with integer attributes, incremented in place where things happen: an
attribute increment is the cheapest thing the hot path can do, and observers add nothing to
the per-message path when nobody looks. Bytes and packets sent are counted per connection
(a local increment) and folded in here when a connection closes.
"""

from __future__ import annotations

from collections import Counter

# Why a message was not delivered to a subscriber (`Stats.dropped`), for metrics and logs.
QUEUE_FULL = "queue_full"
STALLED_READER = "stalled_reader"
TOO_LARGE = "too_large"
EXPIRED = "expired"
NO_MEMBER = "no_member"  # a shared group's message found no member to take it
NOT_AUTHORIZED = "not_authorized"  # the ACL (or $SYS's being read-only) refused it


class Stats:
    __slots__ = (
        "bytes_received",
        "clients_connected",
        "clients_maximum",
        "closed_bytes_sent",
        "closed_packets_sent",
        "closed_publishes_sent",
        "dropped",
        "packets_received",
        "publishes_dropped",
        "publishes_received",
        "received_by_qos",
        "retained_dropped",
        "sent_by_qos",
    )

    def __init__(self) -> None:
        self.bytes_received = 0
        self.packets_received = 0
        self.publishes_received = 0
        # PUBLISHes received and sent at QoS 1 and 2 (indexed by QoS). QoS 0 is the rest of the
        # totals, worked out when read: the QoS 0 path pays for no counter of its own.
        self.received_by_qos = [0, 0, 0]
        self.sent_by_qos = [0, 0, 0]
        # Messages not delivered to a subscriber, in total ($SYS) and by reason (`drop`).
        self.publishes_dropped = 0
        self.dropped: Counter[str] = Counter()
        # New retained topics not stored because max_retained_messages was reached.
        self.retained_dropped = 0
        self.closed_bytes_sent = 0
        self.closed_packets_sent = 0
        self.closed_publishes_sent = 0
        self.clients_connected = 0
        self.clients_maximum = 0

    def drop(self, reason: str) -> None:
        """One message not delivered to one subscriber, for `reason`."""
        self.publishes_dropped += 1
        self.dropped[reason] += 1

    def client_connected(self) -> None:
        self.clients_connected += 1
        self.clients_maximum = max(self.clients_maximum, self.clients_connected)
