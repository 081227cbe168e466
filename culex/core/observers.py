"""Internal subscribers: the admin API watching topics with no client and no socket behind it.

An `Observer` is one more implementation of the `ClientLink` port (ports.py): a session
subscribed to a filter like a client's, whose "connection" hands each PUBLISH to a callback
instead of a socket. Routing has no special case for it; none exists until someone asks (so
nothing costs anything until then), and with worker processes its filter is announced to the
other workers like any subscription, so it sees what every worker routes. It is in no session
table, is never stored, never fills, and acknowledges QoS 1/2 deliveries as it gets them.

Two uses: `TopicRates`, the explorer's messages per topic and second while someone looks, and
`TopicTrace`, the packet trace of a topic filter.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from ..protocol.describe import describe_frame
from ..protocol.publish import body_offset, publish_fields, topic_span
from .access import ClientAccess
from .routing import Router
from .session import Session
from .sessions import SessionManager
from .states import State
from .stats import Stats
from .subscription_value import RETAIN_AS_PUBLISHED, V5_SUBSCRIBER

# An in-flight window no delivery waits for: every one is acknowledged as it arrives.
_WINDOW = 65535


class Observer:
    """A subscriber inside the broker: `seen(frame)` gets every PUBLISH routed to it, whole."""

    def __init__(self, client_id: str, seen: Callable[[bytes], None], *, v5: bool,
                 manager: SessionManager, router: Router) -> None:
        # Publisher and DeliveryTarget: never paused, never full.
        self.client_id = client_id
        self.v5 = False
        self.state = State.CONNECTED
        self.throttled_by = 0
        self.last_activity = 0.0
        self.link_sends = 0
        self.write_paused = False
        self.paused_since = 0.0
        # ClientLink: no ACL reads for it; nothing is ever written anywhere.
        self.address = "(inside the broker)"
        self.acl: ClientAccess | None = None
        self.bytes_sent = self.packets_sent = self.publishes_sent = 0
        self._seen = seen
        self._router = router
        self._session: Session = manager.new_session(client_id, persistent=False)
        self._session.max_inflight = _WINDOW
        self._session.v5 = v5  # which encoding its QoS 1/2 deliveries get
        self._session.stats = Stats()  # what it is sent is no client's traffic
        self._session.connection = self

    def subscribe(self, topic_filter: str, value: int) -> None:
        self._router.subscribe(self._session, topic_filter, value)

    def close(self, publish_will: bool = False, reason: int | None = None) -> None:
        for topic_filter in list(self._session.subscriptions):
            self._router.unsubscribe(self._session, topic_filter)
        self._session.connection = None
        self.state = State.CLOSED

    def send_publish(self, frames: list[bytes]) -> None:
        frame = b"".join(frames)
        first = frame[0]
        if first & 0x06:
            qos, _, packet_id, _ = publish_fields(first, frame, body_offset(frame))
            if qos == 2:
                self._session.release(packet_id)
            self._session.acknowledge(packet_id, qos)
        self._seen(frame)

    def send_publish_when_durable(self, frames: list[bytes]) -> None:
        self.send_publish(frames)

    def send_pubrel(self, packet_id: int) -> None:
        """Never due: a QoS 2 delivery is released and completed as it arrives."""

    def too_large(self, frames: list[bytes]) -> bool:
        return False

    def queue_drained(self) -> None:
        """Nothing is ever paused for an observer."""

    def drop_will(self) -> bool:
        return False  # an observer has no will

    def flush(self) -> None:
        """Nothing is ever written."""

    def update_reading(self) -> None:
        """Nothing is read."""

    def process_deferred(self) -> None:
        """Nothing is held back."""


class TopicRates:
    """Messages per topic: how many since it started, and per second over the last
    `SECONDS` seconds (the server calls `roll` once a second). Topic names are kept as the
    bytes they came in, decoded only when read; at most `MAX_TOPICS` of them, beyond which new
    topics are counted together (`other`): a client spraying unique topics must not grow it
    for ever."""

    SECONDS = 10
    MAX_TOPICS = 100_000

    def __init__(self, manager: SessionManager, router: Router, now: float) -> None:
        self.started = now
        self.totals: Counter[bytes] = Counter()
        self.other = 0
        self._second: Counter[bytes] = Counter()
        self._seconds: deque[Counter[bytes]] = deque(maxlen=self.SECONDS)
        # QoS 0 and no options: every delivery is a plain 3.1.1 frame, the cheapest to make.
        self.observer = Observer("$culex/topic-rates", self._seen, v5=False, manager=manager,
                                 router=router)
        self.observer.subscribe("#", 0)

    def _seen(self, frame: bytes) -> None:
        start, stop = topic_span(frame)
        topic = frame[start:stop]
        if topic in self.totals or len(self.totals) < self.MAX_TOPICS:
            self.totals[topic] += 1
            self._second[topic] += 1
        else:
            self.other += 1

    def roll(self) -> None:
        """A second has passed."""
        self._seconds.append(self._second)
        self._second = Counter()

    def rates(self) -> dict[str, tuple[int, float]]:
        """Topic -> (messages since counting started, messages per second lately)."""
        seconds = len(self._seconds)
        recent: Counter[bytes] = Counter()
        for counts in self._seconds:
            recent.update(counts)
        return {topic.decode(): (total, recent[topic] / seconds if seconds else 0.0)
                for topic, total in self.totals.items()}

    def close(self) -> None:
        self.observer.close()


class TopicTrace:
    """Every message routed to a topic filter, decoded, with its QoS and retain flag as
    published (the observer subscribes at QoS 2 with Retain As Published)."""

    _count = 0

    def __init__(self, topic_filter: str, emit: Callable[[dict[str, Any]], None], *,
                 payload_limit: int | None, wall_time: Callable[[], float],
                 manager: SessionManager, router: Router) -> None:
        self._emit = emit
        self._payload_limit = payload_limit
        self._wall_time = wall_time
        TopicTrace._count += 1
        self.observer = Observer(f"$culex/trace-{TopicTrace._count}", self._seen, v5=True,
                                 manager=manager, router=router)
        self.observer.subscribe(topic_filter, V5_SUBSCRIBER | RETAIN_AS_PUBLISHED | 2)

    def _seen(self, frame: bytes) -> None:
        event = describe_frame(frame, v5=True, from_client=False,
                               payload_limit=self._payload_limit)
        event.pop("packet_id", None)  # the observer's own, meaningless to anyone else
        event.pop("dup", None)
        self._emit({"time": self._wall_time(), "direction": "routed", **event})

    def close(self) -> None:
        self.observer.close()
