"""An application message, with its wire encodings made once and shared by every recipient."""

from __future__ import annotations

from dataclasses import replace

from ..protocol.codec import publish_head
from ..protocol.properties import EMPTY_PROPERTIES, Properties, encode_properties
from ..protocol.v5 import publish_head_v5
from .subscription_value import identifiers_of

QOS0_PLAIN = 0x30  # first byte of a QoS 0 PUBLISH without DUP or RETAIN


class Message:
    """One published message. Immutable once routed: every subscriber shares the same object.

    Encodings are cached per protocol family and first byte (QoS, DUP, RETAIN), so a message
    going to a thousand subscribers is encoded once per variant. MQTT 5 subscribers get the same
    head/payload sharing with the encoded property block between them; a 3.1.1 subscriber never
    sees properties. (The commonest case, a QoS 0 PUBLISH without RETAIN forwarded within one
    protocol family, makes no Message at all: `Broker.forward` sends the frame as is.)
    """

    __slots__ = ("_frame5", "_frame_qos0", "_heads", "_heads5", "_props5", "_with_ids",
                 "cluster_id", "created", "payload", "properties", "qos", "retain", "store_id",
                 "store_refs", "topic", "topic_bytes")

    def __init__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 *, topic_bytes: bytes | None = None, properties: Properties | None = None,
                 created: float = 0.0) -> None:
        self.topic = topic
        self.topic_bytes = topic.encode() if topic_bytes is None else topic_bytes
        self.qos = qos
        self.retain = retain
        self.payload = payload
        self._frame_qos0: bytes | None = None
        self._heads: dict[int, bytes] = {}
        # MQTT 5 properties as published (None: none, e.g. from a 3.1.1 client), and when the
        # message was published, which only matters with a Message Expiry Interval.
        self.properties = properties
        self.created = created
        self._props5: bytes | None = None
        self._frame5: bytes | None = None
        self._heads5: dict[int, bytes] = {}
        # (first byte, packed identifiers) -> head and property block; made only for
        # subscribers with Subscription Identifiers, so the others never pay for it.
        self._with_ids: dict[tuple[int, int], tuple[bytes, bytes]] | None = None
        # Storage row id and how many stored queue entries / retained slots point at it.
        self.store_id = 0
        self.store_refs = 0
        # In a cluster, a QoS 1/2 or retained message's id, the same on every node (a stamp
        # of the node that published it: retained.next_stamp): a session that moves between
        # nodes gets each message once however many ways it came (session_moves.py). 0: none.
        self.cluster_id = 0

    def frame_qos0(self) -> bytes:
        """The QoS 0, non-retained PUBLISH: the hot variant, encoded at most once."""
        frame = self._frame_qos0
        if frame is None:
            frame = self._frame_qos0 = self.head(QOS0_PLAIN) + self.payload
        return frame

    def head(self, first_byte: int) -> bytes:
        """Fixed header and topic for `first_byte`; the packet id (if any) and payload follow."""
        head = self._heads.get(first_byte)
        if head is None:
            head = self._heads[first_byte] = publish_head(
                self.topic_bytes, len(self.payload), first_byte)
        return head

    def seed_head(self, first_byte: int, head: bytes) -> None:
        """Reuse a head already on hand (the publisher's own, when it is what `head` would
        encode for this first byte) instead of encoding it again."""
        self._heads[first_byte] = head

    def frames(self, qos: int, packet_id: int, *, retain: bool = False,
               dup: bool = False) -> list[bytes]:
        """The pieces of one outgoing PUBLISH, for `writelines`; only the packet id is new."""
        if not qos:
            if not retain:
                return [self.frame_qos0()]
            return [self.head(QOS0_PLAIN | 1), self.payload]
        first = QOS0_PLAIN | (qos << 1) | (0x08 if dup else 0) | (1 if retain else 0)
        return [self.head(first), packet_id.to_bytes(2, "big"), self.payload]

    # -- MQTT 5 ----------------------------------------------------------------------------

    @property
    def expiry(self) -> int | None:
        """The Message Expiry Interval it was published with, in seconds (None: never)."""
        properties = self.properties
        return None if properties is None else properties.message_expiry_interval

    def expired(self, now: float) -> bool:
        """Past its Message Expiry Interval: it must no longer be delivered [MQTT-3.3.2-5]."""
        expiry = self.expiry
        return expiry is not None and now - self.created >= expiry

    def _properties5(self, now: float) -> bytes:
        """The encoded property block; a Message Expiry Interval counts down the time the
        message waited [MQTT-3.3.2-6], so only then is it encoded per delivery."""
        props = self._props5
        if props is None:
            props = self._props5 = (EMPTY_PROPERTIES if self.properties is None
                                    else encode_properties(self.properties))
        expiry = self.expiry
        if expiry is not None and now - self.created >= 1:
            assert self.properties is not None
            left = max(1, expiry - int(now - self.created))
            if left != expiry:
                # Same 4-byte field, same length: the cached heads stay valid.
                props = encode_properties(replace(self.properties,
                                                  message_expiry_interval=left))
        return props

    def head5(self, first_byte: int, properties: bytes) -> bytes:
        head = self._heads5.get(first_byte)
        if head is None:
            head = self._heads5[first_byte] = publish_head_v5(
                self.topic_bytes, len(self.payload), first_byte, properties)
        return head

    def frame5_qos0(self) -> bytes:
        """The MQTT 5 QoS 0 non-retained PUBLISH with the properties as published."""
        frame = self._frame5
        if frame is None:
            props = self._properties5(self.created)
            frame = self._frame5 = self.head5(QOS0_PLAIN, props) + props + self.payload
        return frame

    def frames5(self, qos: int, packet_id: int, now: float, *, retain: bool = False,
                dup: bool = False) -> list[bytes]:
        """`frames` for an MQTT 5 subscriber: head, [packet id], properties, payload."""
        if not qos and not retain and (self.expiry is None or now - self.created < 1):
            return [self.frame5_qos0()]
        props = self._properties5(now)
        first = QOS0_PLAIN | (qos << 1) | (0x08 if dup else 0) | (1 if retain else 0)
        head = self.head5(first, props)
        if not qos:
            return [head, props, self.payload]
        return [head, packet_id.to_bytes(2, "big"), props, self.payload]

    def frames5_ids(self, qos: int, packet_id: int, now: float, identifiers: int, *,
                    retain: bool = False, dup: bool = False) -> list[bytes]:
        """`frames5` for a subscriber whose matching subscriptions have Subscription
        Identifiers (`identifiers`: packed, see subscription_value.py) [MQTT-3.3.4-3]. The
        property block then differs per identifier set, so head and properties are cached per
        (variant, identifiers); head and payload are still shared by every subscriber of that
        set."""
        first = QOS0_PLAIN | (qos << 1) | (0x08 if dup else 0) | (1 if retain else 0)
        cache = self._with_ids
        if cache is None:
            cache = self._with_ids = {}
        key = (first, identifiers)
        cached = cache.get(key)
        base = self.properties or Properties()
        if cached is None:
            props = encode_properties(replace(
                base, subscription_identifiers=identifiers_of(identifiers)))
            cached = cache[key] = (publish_head_v5(self.topic_bytes, len(self.payload), first,
                                                   props), props)
        head, props = cached
        expiry = self.expiry
        if expiry is not None and now - self.created >= 1:
            # The remaining Message Expiry [MQTT-3.3.2-6]: same field length, same head.
            props = encode_properties(replace(
                base, subscription_identifiers=identifiers_of(identifiers),
                message_expiry_interval=max(1, expiry - int(now - self.created))))
        if not qos:
            return [head, props, self.payload]
        return [head, packet_id.to_bytes(2, "big"), props, self.payload]

    def __repr__(self) -> str:
        return f"Message({self.topic!r}, qos={self.qos}, retain={self.retain})"
