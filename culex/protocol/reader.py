"""Incremental framing: split a byte stream into whole MQTT control packets.

One `FrameReader` per connection. The Remaining Length is bounded by `max_size` as soon as the
fixed header is readable, before any body is buffered (CVE-2017-7651: a header claiming 256 MB
must cost nothing). When a read ends on a packet boundary the frames are sliced straight from
the caller's bytes and nothing is buffered; only a trailing partial packet is kept, so feeding
a large packet one byte at a time costs O(n) in total, never a rescan of the buffer.
"""

from __future__ import annotations

from .errors import MalformedPacket, PacketTooLarge, ProtocolError

Frame = tuple[int, bytes, int]
"""(first byte of the fixed header, the whole frame, offset of the body within the frame)."""

CONNECT_FIRST_BYTE = 0x10

# Cap on the first packet, before we know who is talking: a 3.1.1 CONNECT holds at most five
# 64 KiB fields (~320 KiB), so 1 MiB leaves room for MQTT 5 properties and no more.
MAX_CONNECT_SIZE = 1024 * 1024


class FrameReader:
    __slots__ = ("_pending", "connect_only", "error", "max_size")

    def __init__(self, max_size: int, connect_only: bool = True) -> None:
        self.max_size = max_size
        # Until CONNECT is accepted nothing else may arrive [MQTT-3.1.0-1]: refuse from the first
        # byte instead of buffering a stranger's packet.
        self.connect_only = connect_only
        # The first framing error, kept rather than raised so that the frames that preceded it in
        # the same read are still handled; the connection closes once they are.
        self.error: MalformedPacket | ProtocolError | None = None
        # A trailing partial packet; None (not an empty buffer) when there is none, which is
        # nearly always between reads: an idle connection holds no buffer at all.
        self._pending: bytearray | None = None

    @property
    def buffered(self) -> int:
        return len(self._pending) if self._pending is not None else 0

    def take_pending(self) -> bytes:
        """The trailing partial packet, given up (the connection moves to another worker)."""
        pending = bytes(self._pending or b"")
        self._pending = None
        return pending

    def feed(self, data: bytes) -> list[Frame]:
        """Return every complete frame in `data` (after what was pending); keep the remainder.

        After an error nothing more is framed: the stream position is lost for good.
        """
        if self.error is not None:
            return []
        pending = self._pending
        frames: list[Frame] = []
        # The bytes framed now: the read itself, or first the pending packet completed with
        # only the bytes it lacks and then the rest of the read where it lies. Appending whole
        # reads (uvloop's are up to 256 KB) copied each once more and, past malloc's mmap
        # threshold, gave the buffer fresh pages to fault in at every read: 36% of the
        # broker's CPU (py-spy) when relaying 10 KB messages.
        view: bytes | bytearray | memoryview = data
        taken = 0
        if pending is not None:
            taken = self._lacking(pending, data)
            pending += data if taken == len(data) else memoryview(data)[:taken]
            view = pending
        try:
            while True:
                pos = 0
                size = len(view)
                while pos < size:
                    first = view[pos]
                    if self.connect_only and first != CONNECT_FIRST_BYTE:
                        raise ProtocolError(f"first packet is not CONNECT (byte {first:#04x})",
                                            "MQTT-3.1.0-1")
                    index = pos + 1
                    length = 0
                    shift = 0
                    complete = False
                    while index < size:
                        byte = view[index]
                        index += 1
                        length |= (byte & 0x7F) << shift
                        if byte < 0x80:
                            if byte == 0 and shift:
                                raise MalformedPacket("remaining length is not minimally "
                                                      "encoded")
                            complete = True
                            break
                        shift += 7
                        if shift == 28:
                            raise MalformedPacket("remaining length longer than four bytes",
                                                  "MQTT-2.2.3")
                    if not complete:
                        break
                    end = index + length
                    limit = min(self.max_size, MAX_CONNECT_SIZE) if self.connect_only \
                        else self.max_size
                    if end - pos > limit:
                        raise PacketTooLarge(f"packet of {end - pos} bytes exceeds the maximum "
                                             f"of {limit}")
                    if end > size:
                        break
                    frames.append((first, bytes(view[pos:end]), index - pos))
                    self.connect_only = False
                    pos = end
                if view is not pending:
                    break
                assert pending is not None
                if taken == len(data):
                    del pending[:pos]
                    if not pending:
                        self._pending = None
                    return frames
                # The pending packet was completed with exactly the bytes it lacked: it is
                # gone whole, and the rest of the read is framed where it lies.
                assert pos == len(pending)
                pending = self._pending = None
                view = memoryview(data)[taken:]
        except (MalformedPacket, ProtocolError) as exc:
            self.error = exc
            self._pending = None
            return frames
        if pos < size:
            if pending is None:
                self._pending = bytearray(view[pos:])
            else:
                pending += view[pos:]
        return frames

    @staticmethod
    def _lacking(pending: bytearray, data: bytes) -> int:
        """How many bytes of `data` complete the `pending` packet (all of them when its fixed
        header is still unreadable or malformed: framing them then tells)."""
        head = bytes(pending[:5]) + data[:4]
        length = 0
        for index in range(1, min(len(head), 5)):
            byte = head[index]
            length |= (byte & 0x7F) << (7 * (index - 1))
            if byte < 0x80:
                return min(index + 1 + length - len(pending), len(data))
        return len(data)
