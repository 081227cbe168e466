"""FrameReader: splitting a byte stream into frames, framing errors, and linear-time buffering."""

from __future__ import annotations

import time

import pytest

from culex.protocol.codec import decode_packet
from culex.protocol.errors import MalformedPacket, MQTTError, PacketTooLarge, ProtocolError
from culex.protocol.packets import Connect, Pingreq, Puback, Publish
from culex.protocol.reader import MAX_CONNECT_SIZE, FrameReader
from tests.unit.test_codec import GOLDEN, frame_of, split_frame, varint

Frame = tuple[int, bytes, int]

CONNECT = b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02c1"
PINGREQ = b"\xc0\x00"
BIG = 268_435_460  # the largest max_size Culex accepts: a 4-byte Remaining Length plus header


def expected_frame(raw: bytes) -> Frame:
    first, offset = split_frame(raw)
    return (first, raw, offset)


def publish_raw(topic: bytes, payload: bytes, qos: int = 0, packet_id: int = 0) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += packet_id.to_bytes(2, "big")
    return frame_of(0x30 | qos << 1, body + payload)


def assert_error(reader: FrameReader, cls: type[MQTTError]) -> None:
    assert reader.error is not None, "expected a framing error"
    assert type(reader.error) is cls, f"expected {cls.__name__}, got {reader.error!r}"
    assert reader.buffered == 0


def feed_all(reader: FrameReader, chunks: list[bytes]) -> list[Frame]:
    frames: list[Frame] = []
    for chunk in chunks:
        frames.extend(reader.feed(chunk))
    return frames


# -- Remaining Length encoding ------------------------------------------------------------------


@pytest.mark.parametrize("header", [
    b"\x30\xff\xff\xff\xff\x01",  # a fifth length byte
    b"\x30\x80\x80\x80\x80\x01",
    b"\x30\xff\xff\xff\xff",  # the fourth byte already says "more follows"
    b"\x30\x80\x80\x80\x80",
])
def test_remaining_length_longer_than_four_bytes(header: bytes) -> None:
    reader = FrameReader(BIG, connect_only=False)
    assert reader.feed(header) == []
    assert_error(reader, MalformedPacket)


@pytest.mark.parametrize("header", [
    b"\x30\x80\x00", b"\x30\x80\x80\x00", b"\x30\x80\x80\x80\x00", b"\x30\xff\x00",
    b"\x30\x81\x00", b"\x30\xff\xff\x00",
])
def test_non_minimal_remaining_length(header: bytes) -> None:
    reader = FrameReader(BIG, connect_only=False)
    assert reader.feed(header + b"\x00" * 8) == []
    assert_error(reader, MalformedPacket)


@pytest.mark.parametrize("header", [
    b"\x30\x80\x00", b"\x30\x80\x80\x00", b"\x30\xff\xff\xff\xff\x01",
])
def test_bad_remaining_length_detected_bytewise(header: bytes) -> None:
    reader = FrameReader(BIG, connect_only=False)
    for index in range(len(header) - 1):
        assert reader.feed(header[index:index + 1]) == []
        if reader.error is not None:
            break
    else:
        assert reader.error is None
        assert reader.feed(header[-1:]) == []
    assert_error(reader, MalformedPacket)


@pytest.mark.parametrize("length, offset", [
    (0, 2), (127, 2), (128, 3), (16_383, 3), (16_384, 4), (2_097_151, 4), (2_097_152, 5),
])
def test_body_offset_for_each_varint_size(length: int, offset: int) -> None:
    raw = publish_raw(b"t", b"\x00" * (length - 3)) if length else b"\xe0\x00"
    assert len(raw) == offset + length
    reader = FrameReader(BIG, connect_only=False)
    frames = reader.feed(raw)
    assert frames == [(raw[0], raw, offset)]
    assert reader.buffered == 0


def test_largest_header_is_buffered_not_rejected() -> None:
    reader = FrameReader(BIG, connect_only=False)
    assert reader.feed(b"\x30\xff\xff\xff\x7f") == []
    assert reader.error is None
    assert reader.buffered == 5


# -- size limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("max_size", [1024, 16 * 1024 * 1024, BIG - 1])
def test_packet_too_large_from_the_header_alone(max_size: int) -> None:
    """A header claiming 256 MB is refused as soon as the header is complete (CVE-2017-7651)."""
    reader = FrameReader(max_size, connect_only=False)
    assert reader.feed(b"\x30\xff\xff\xff\x7f") == []
    assert_error(reader, PacketTooLarge)


def test_packet_too_large_bytewise_header() -> None:
    reader = FrameReader(1024, connect_only=False)
    for byte in b"\x30\xff\xff\xff":
        assert reader.feed(bytes((byte,))) == []
        if reader.error is not None:
            break
    else:
        assert reader.feed(b"\x7f") == []
    assert_error(reader, PacketTooLarge)


def test_connect_claiming_256_mb_is_refused_before_connect() -> None:
    """Before CONNECT the cap is MAX_CONNECT_SIZE, whatever max_size allows."""
    reader = FrameReader(BIG)
    assert reader.feed(b"\x10\xff\xff\xff\x7f") == []
    assert_error(reader, PacketTooLarge)


def test_max_size_counts_the_whole_packet() -> None:
    """max_size is the largest packet, fixed header included: exactly max_size passes."""
    at_limit = publish_raw(b"t", b"\x01" * 95)
    assert len(at_limit) == 100
    reader = FrameReader(100, connect_only=False)
    assert reader.feed(at_limit) == [expected_frame(at_limit)]
    assert reader.error is None

    over = publish_raw(b"t", b"\x01" * 96)
    assert len(over) == 101
    reader = FrameReader(100, connect_only=False)
    assert reader.feed(over[:2]) == []  # the header alone is enough to refuse
    assert_error(reader, PacketTooLarge)


def test_pre_connect_cap_then_max_size() -> None:
    def connect_header(total: int) -> bytes:
        length = total - 4  # 1 type byte + 3 length bytes for these sizes
        assert len(varint(length)) == 3
        return b"\x10" + varint(length)

    reader = FrameReader(4 * MAX_CONNECT_SIZE)
    assert reader.feed(connect_header(MAX_CONNECT_SIZE)) == []
    assert reader.error is None

    reader = FrameReader(4 * MAX_CONNECT_SIZE)
    assert reader.feed(connect_header(MAX_CONNECT_SIZE + 1)) == []
    assert_error(reader, PacketTooLarge)

    # Once the CONNECT is framed, max_size applies: 2 MiB is fine, 4 MiB + 1 is not.
    reader = FrameReader(4 * MAX_CONNECT_SIZE)
    big = publish_raw(b"t", b"\x02" * (2 * MAX_CONNECT_SIZE))
    assert reader.feed(CONNECT + big) == [expected_frame(CONNECT), expected_frame(big)]
    assert reader.error is None
    too_big = b"\x30" + varint(4 * MAX_CONNECT_SIZE - 4)  # total 4 MiB + 1
    assert reader.feed(too_big) == []
    assert_error(reader, PacketTooLarge)


# -- the first packet must be CONNECT ------------------------------------------------------------


@pytest.mark.parametrize("first", [b for b in range(256) if b >> 4 != 1])
def test_first_packet_not_connect(first: int) -> None:
    reader = FrameReader(1024)
    assert reader.feed(bytes((first,))) == []  # refused from its first byte
    assert_error(reader, ProtocolError)


@pytest.mark.parametrize("raw", [
    b"\x30\x05\x00\x03a/b", PINGREQ, b"\x82\x06\x00\x01\x00\x01a\x00", b"\xe0\x00",
])
def test_first_packet_not_connect_whole(raw: bytes) -> None:
    reader = FrameReader(1024)
    assert reader.feed(raw) == []
    assert_error(reader, ProtocolError)


@pytest.mark.parametrize("first", range(0x11, 0x20))
def test_first_packet_connect_with_bad_flags_is_refused(first: int) -> None:
    """Framer or decoder: one of them must refuse it, with an MQTTError, never frame it away."""
    reader = FrameReader(1024)
    raw = bytes((first,)) + CONNECT[1:]
    frames = reader.feed(raw)
    if reader.error is not None:
        assert isinstance(reader.error, MQTTError)
        assert frames == []
    else:
        assert frames == [expected_frame(raw)]
        with pytest.raises(MalformedPacket):
            decode_packet(*frames[0])


def test_anything_may_follow_the_first_connect() -> None:
    reader = FrameReader(1024)
    publish = publish_raw(b"a", b"x", qos=1, packet_id=5)
    assert reader.connect_only
    frames = reader.feed(CONNECT + publish + PINGREQ + CONNECT)
    assert frames == [expected_frame(CONNECT), expected_frame(publish), expected_frame(PINGREQ),
                      expected_frame(CONNECT)]
    assert not reader.connect_only
    assert reader.error is None


def test_connect_only_holds_until_the_connect_is_complete() -> None:
    reader = FrameReader(1024)
    assert feed_all(reader, [CONNECT[:1], CONNECT[1:5]]) == []
    assert reader.connect_only
    assert reader.feed(CONNECT[5:] + PINGREQ) == [expected_frame(CONNECT), expected_frame(PINGREQ)]


# -- errors: earlier frames survive, later input is ignored -------------------------------------


def test_frames_before_an_error_are_returned() -> None:
    reader = FrameReader(1024)
    frames = reader.feed(CONNECT + PINGREQ + b"\x30\x80\x00" + PINGREQ)
    assert frames == [expected_frame(CONNECT), expected_frame(PINGREQ)]
    assert_error(reader, MalformedPacket)


def test_error_after_pending_partial_clears_the_buffer() -> None:
    reader = FrameReader(1024, connect_only=False)
    raw = publish_raw(b"t", b"payload")
    assert reader.feed(raw[:4]) == []
    assert reader.buffered == 4
    assert reader.feed(raw[4:] + b"\x30\xff\xff\xff\xff") == [expected_frame(raw)]
    assert_error(reader, MalformedPacket)


@pytest.mark.parametrize("bad, cls", [
    (b"\x30\x80\x00", MalformedPacket),
    (b"\x30\xff\xff\xff\xff\x01", MalformedPacket),
    (b"\x30\xff\xff\xff\x7f", PacketTooLarge),
    (b"\x20\x02\x00\x00", ProtocolError),
])
def test_after_an_error_feed_returns_nothing_forever(bad: bytes, cls: type[MQTTError]) -> None:
    reader = FrameReader(1 << 20, connect_only=cls is ProtocolError)
    assert reader.feed(bad) == []
    assert_error(reader, cls)
    error = reader.error
    for _ in range(50):
        assert reader.feed(CONNECT + PINGREQ * 3) == []
        assert reader.feed(PINGREQ[:1]) == []
        assert reader.feed(b"") == []
        assert reader.error is error
        assert reader.buffered == 0


# -- streams ------------------------------------------------------------------------------------


def test_empty_feed_is_a_no_op() -> None:
    reader = FrameReader(1024, connect_only=False)
    assert reader.feed(b"") == []
    assert reader.feed(PINGREQ[:1]) == []
    assert reader.feed(b"") == []
    assert reader.buffered == 1
    assert reader.feed(PINGREQ[1:]) == [expected_frame(PINGREQ)]


def mixed_stream(count: int) -> tuple[list[bytes], list[object]]:
    """`count` varied packets (sizes from 2 bytes to past a 2-byte Remaining Length)."""
    raws: list[bytes] = []
    packets: list[object] = []
    for index in range(count):
        kind = index % 4
        if kind == 0:
            payload = bytes((index % 251,)) * (index % 300)
            raws.append(publish_raw(b"s/%d" % index, payload))
            packets.append(Publish(f"s/{index}", payload))
        elif kind == 1:
            packet_id = index % 65535 + 1
            raws.append(publish_raw(b"q", b"%d" % index, qos=1, packet_id=packet_id))
            packets.append(Publish("q", b"%d" % index, qos=1, packet_id=packet_id))
        elif kind == 2:
            raws.append(PINGREQ)
            packets.append(Pingreq())
        else:
            packet_id = index % 65535 + 1
            raws.append(b"\x40\x02" + packet_id.to_bytes(2, "big"))
            packets.append(Puback(packet_id))
    return raws, packets


@pytest.mark.parametrize("prefix_pending", [False, True])
def test_thousand_packets_in_one_feed_plus_half(prefix_pending: bool) -> None:
    raws, packets = mixed_stream(1000)
    tail = publish_raw(b"tail", b"\x77" * 300, qos=2, packet_id=9)
    half = len(tail) // 2
    reader = FrameReader(1 << 20)
    head: list[Frame] = []
    if prefix_pending:  # the CONNECT arrives split, so the big feed starts with pending bytes
        assert reader.feed(CONNECT[:7]) == []
        head = reader.feed(CONNECT[7:] + b"".join(raws) + tail[:half])
    else:
        head = reader.feed(CONNECT + b"".join(raws) + tail[:half])
    assert head == [expected_frame(CONNECT)] + [expected_frame(raw) for raw in raws]
    assert [decode_packet(*frame) for frame in head[1:]] == packets
    assert reader.buffered == half
    assert reader.feed(tail[half:]) == [expected_frame(tail)]
    assert reader.buffered == 0
    assert reader.error is None


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000, 4096])
def test_fixed_chunking_of_golden_stream(chunk: int) -> None:
    stream = b"".join(case.raw for case in GOLDEN if len(case.raw) < 20_000)
    expected = [expected_frame(case.raw) for case in GOLDEN if len(case.raw) < 20_000]
    reader = FrameReader(1 << 20, connect_only=False)
    frames = feed_all(reader, [stream[i:i + chunk] for i in range(0, len(stream), chunk)])
    assert frames == expected
    assert reader.buffered == 0
    assert reader.error is None


def test_caller_buffer_mutation_does_not_leak_into_frames() -> None:
    """Frames and the pending remainder are copies: the transport may reuse its buffer."""
    raw = publish_raw(b"t", b"abcdef")
    reader = FrameReader(1024, connect_only=False)
    data = bytearray(raw + raw[:5])
    frames = reader.feed(data)
    data[:] = b"\xff" * len(data)
    assert frames == [expected_frame(raw)]
    assert reader.feed(raw[5:]) == [expected_frame(raw)]


# -- linear time --------------------------------------------------------------------------------


def feed_bytewise(payload_size: int) -> float:
    raw = publish_raw(b"big/topic", bytes(range(256)) * (payload_size // 256))
    reader = FrameReader(payload_size + 64, connect_only=False)
    frames: list[Frame] = []
    feed = reader.feed
    start = time.perf_counter()
    for index in range(len(raw)):
        got = feed(raw[index:index + 1])
        if got:
            frames.extend(got)
    elapsed = time.perf_counter() - start
    assert frames == [expected_frame(raw)]
    assert reader.buffered == 0
    return elapsed


def test_bytewise_megabyte_publish_is_linear() -> None:
    """1 MiB one byte per feed completes in well under 20 s.

    Linear framing takes ~1.5 s here. A reader that rescans or copies its whole buffer on each
    feed moves ~5e11 bytes for this input and takes many minutes, so the bound separates the two
    by two orders of magnitude and does not flake on a loaded CI machine (a ratio of two timings
    did).
    """
    assert feed_bytewise(1024 * 1024) < 20.0


def test_large_connect_bytewise_then_decodes() -> None:
    """The pre-CONNECT path buffers a big CONNECT (five 64 KiB fields) incrementally too."""
    field = b"\x00\xff" + b"p" * 0xFF
    payload = b"\x00\x02c1" + b"\x00\x01t" + field + b"\x00\x01u" + field
    raw = frame_of(0x10, b"\x00\x04MQTT\x04\xe6\x00\x3c" + payload)
    reader = FrameReader(1 << 20)
    frames = feed_all(reader, [raw[i:i + 1] for i in range(len(raw))])
    assert frames == [expected_frame(raw)]
    packet = decode_packet(*frames[0])
    assert isinstance(packet, Connect)
    assert packet.username == "u"
    assert packet.password == b"p" * 0xFF
