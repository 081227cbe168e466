"""An application message, with its wire encodings made once and shared by every recipient."""

from __future__ import annotations

from ..protocol.codec import publish_head

QOS0_PLAIN = 0x30  # first byte of a QoS 0 PUBLISH without DUP or RETAIN


class Message:
    """One published message. Immutable once routed: every subscriber shares the same object.

    Encodings are cached per first byte (QoS, DUP, RETAIN), so a message going to a thousand
    subscribers is encoded once per variant. (The commonest case, a QoS 0 PUBLISH without RETAIN
    from a 3.1/3.1.1 client, makes no Message at all: `Broker.forward` sends the frame as is.)
    """

    __slots__ = ("_frame_qos0", "_heads", "payload", "qos", "retain", "store_id", "store_refs",
                 "topic", "topic_bytes")

    def __init__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 *, topic_bytes: bytes | None = None) -> None:
        self.topic = topic
        self.topic_bytes = topic.encode() if topic_bytes is None else topic_bytes
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self._frame_qos0: bytes | None = None
        self._heads: dict[int, bytes] = {}
        # Storage row id and how many stored queue entries / retained slots point at it.
        self.store_id = 0
        self.store_refs = 0

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

    def frames(self, qos: int, packet_id: int, *, retain: bool = False,
               dup: bool = False) -> list[bytes]:
        """The pieces of one outgoing PUBLISH, for `writelines`; only the packet id is new."""
        if not qos:
            if not retain:
                return [self.frame_qos0()]
            return [self.head(QOS0_PLAIN | 1), self.payload]
        first = QOS0_PLAIN | (qos << 1) | (0x08 if dup else 0) | (1 if retain else 0)
        return [self.head(first), packet_id.to_bytes(2, "big"), self.payload]

    def __repr__(self) -> str:
        return f"Message({self.topic!r}, qos={self.qos}, retain={self.retain})"
