"""An application message, with its wire encodings made once and shared by every recipient."""

from __future__ import annotations

from ..protocol.codec import publish_head

QOS0_PLAIN = 0x30  # first byte of a QoS 0 PUBLISH without DUP or RETAIN


class Message:
    """One published message. Immutable once routed: every subscriber shares the same object.

    Encodings are cached per first byte (QoS, DUP, RETAIN). A QoS 0 non-retained PUBLISH that
    arrived from a 3.1/3.1.1 client *is* the frame every QoS 0 subscriber needs, so it is kept and
    forwarded as is; the payload is only sliced out of it when another variant is asked for.
    """

    __slots__ = ("_frame", "_heads", "_payload", "_payload_offset", "qos", "retain",
                 "store_id", "store_refs", "topic", "topic_bytes")

    def __init__(self, topic: str, payload: bytes | None, qos: int = 0, retain: bool = False,
                 *, topic_bytes: bytes | None = None, frame: bytes | None = None,
                 payload_offset: int = 0) -> None:
        self.topic = topic
        self.topic_bytes = topic.encode() if topic_bytes is None else topic_bytes
        self.qos = qos
        self.retain = retain
        self._payload = payload
        self._frame = frame
        self._payload_offset = payload_offset
        self._heads: dict[int, bytes] = {}
        # Storage row id and how many stored queue entries / retained slots point at it.
        self.store_id = 0
        self.store_refs = 0

    @property
    def payload(self) -> bytes:
        payload = self._payload
        if payload is None:
            assert self._frame is not None
            payload = self._payload = self._frame[self._payload_offset:]
        return payload

    def frame_qos0(self) -> bytes:
        """The QoS 0, non-retained PUBLISH: the hot variant, encoded at most once."""
        frame = self._frame
        if frame is None:
            frame = self._frame = self.head(QOS0_PLAIN) + self.payload
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
