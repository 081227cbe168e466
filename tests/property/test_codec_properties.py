"""Property tests for the codec and the framer (hypothesis).

* every packet the spec allows survives encode -> frame -> decode unchanged, however the byte
  stream is chunked;
* the framer, given any bytes in any chunks, never raises: errors land in `reader.error`, are
  `MQTTError`s, and do not depend on the chunking;
* the decoder, given any (first byte, body), raises nothing but `MQTTError` subclasses, and what
  it accepts re-encodes to the very same bytes (the encoding is canonical).
"""

from __future__ import annotations

from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from culex.protocol.codec import decode_packet, encode_packet
from culex.protocol.errors import MQTTError
from culex.protocol.packets import (
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
)
from culex.protocol.reader import FrameReader
from tests.unit.test_codec import frame_of, split_frame

Frame = tuple[int, bytes, int]

SETTINGS = settings(max_examples=300, deadline=1000,
                    suppress_health_check=[HealthCheck.too_slow])


def is_noncharacter(char: str) -> bool:
    code = ord(char)
    return 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE


# Strings the codec accepts: well-formed UTF-8 (no surrogates), no U+0000 or other control
# characters, no noncharacters. Multi-byte characters of every length are included.
MQTT_CHARS = st.characters(exclude_categories=("Cs", "Cc")).filter(
    lambda char: not is_noncharacter(char))
texts = st.text(MQTT_CHARS, max_size=24)
binaries = st.binary(max_size=64)
packet_ids = st.integers(1, 65535)
qoses = st.integers(0, 2)


@st.composite
def wills(draw: st.DrawFn) -> Will:
    return Will(draw(texts), draw(binaries), draw(qoses), draw(st.booleans()))


@st.composite
def connects(draw: st.DrawFn) -> Connect:
    name, level = draw(st.sampled_from([("MQTT", 4), ("MQIsdp", 3)]))
    username = draw(st.none() | texts)
    password = draw(st.none() | binaries) if username is not None else None
    return Connect(draw(texts), name, level, draw(st.booleans()), draw(st.integers(0, 65535)),
                   draw(st.none() | wills()), username, password)


@st.composite
def publishes(draw: st.DrawFn) -> Publish:
    qos = draw(qoses)
    payload = draw(st.binary(max_size=300) | st.binary(min_size=16_000, max_size=17_000))
    return Publish(draw(texts), payload, qos, draw(st.booleans()),
                   draw(st.booleans()) if qos else False, draw(packet_ids) if qos else 0)


packets: st.SearchStrategy[Packet] = st.one_of(
    connects(),
    st.builds(Connack, st.booleans(), st.integers(0, 5)),
    publishes(),
    st.builds(Puback, packet_ids),
    st.builds(Pubrec, packet_ids),
    st.builds(Pubrel, packet_ids),
    st.builds(Pubcomp, packet_ids),
    st.builds(Subscribe, packet_ids, st.lists(st.tuples(texts, qoses), min_size=1, max_size=6)),
    st.builds(Suback, packet_ids,
              st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=8)),
    st.builds(Unsubscribe, packet_ids, st.lists(texts, min_size=1, max_size=6)),
    st.builds(Unsuback, packet_ids),
    st.just(Pingreq()),
    st.just(Pingresp()),
    st.just(Disconnect()),
)


def chunk(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[start:stop] for start, stop in pairwise(points)]


def feed_chunks(reader: FrameReader, chunks: list[bytes]) -> list[Frame]:
    frames: list[Frame] = []
    for part in chunks:
        frames.extend(reader.feed(part))
    return frames


# -- round trip --------------------------------------------------------------------------------


@SETTINGS
@given(packets)
def test_round_trip(packet: Packet) -> None:
    raw = encode_packet(packet)
    first, offset = split_frame(raw)  # checks the Remaining Length against the real body
    decoded = decode_packet(first, raw, offset)
    assert type(decoded) is type(packet)
    assert decoded == packet
    reader = FrameReader(1 << 20, connect_only=isinstance(packet, Connect))
    assert reader.feed(raw) == [(first, raw, offset)]
    assert reader.buffered == 0


@SETTINGS
@given(connects(), st.lists(packets, max_size=8), st.lists(st.integers(0, 1 << 20), max_size=12))
def test_round_trip_stream_any_chunking(connect: Connect, rest: list[Packet],
                                        cuts: list[int]) -> None:
    stream_packets: list[Packet] = [connect, *rest]
    raws = [encode_packet(packet) for packet in stream_packets]
    stream = b"".join(raws)
    reader = FrameReader(1 << 20)
    frames = feed_chunks(reader, chunk(stream, cuts))
    assert reader.error is None
    assert reader.buffered == 0
    assert [frame[1] for frame in frames] == raws
    assert [decode_packet(*frame) for frame in frames] == stream_packets


# -- the framer never raises -----------------------------------------------------------------


@st.composite
def hostile_streams(draw: st.DrawFn) -> bytes:
    """Random bytes, valid packets, and valid packets with a byte changed, run together."""
    parts = draw(st.lists(
        st.one_of(
            st.binary(max_size=40),
            packets.map(encode_packet),
            st.tuples(packets.map(encode_packet), st.integers(0, 1 << 16),
                      st.integers(0, 255)).map(
                lambda item: item[0][:item[1] % len(item[0])] + bytes((item[2],))
                + item[0][item[1] % len(item[0]) + 1:]),
        ),
        max_size=6))
    return b"".join(parts)


@SETTINGS
@given(st.one_of(st.binary(max_size=600), hostile_streams()),
       st.lists(st.integers(0, 1 << 20), max_size=16),
       st.sampled_from([2, 5, 64, 300, 1 << 20]),
       st.booleans())
def test_reader_never_raises(data: bytes, cuts: list[int], max_size: int,
                             connect_only: bool) -> None:
    whole = FrameReader(max_size, connect_only)
    whole_frames = whole.feed(data)
    reader = FrameReader(max_size, connect_only)
    frames = feed_chunks(reader, chunk(data, cuts))

    # Chunking changes nothing: same frames, same kind of error, same leftover.
    assert frames == whole_frames
    assert type(reader.error) is type(whole.error)
    assert reader.buffered == whole.buffered

    consumed = sum(len(frame[1]) for frame in frames)
    assert b"".join(frame[1] for frame in frames) == data[:consumed]
    for first, raw, offset in frames:
        assert type(raw) is bytes
        assert first == raw[0]
        assert 2 <= offset <= 5
        assert len(raw) <= max_size
        assert split_frame(raw) == (first, offset)
    if reader.error is None:
        assert consumed + reader.buffered == len(data)
    else:
        assert isinstance(reader.error, MQTTError)
        assert reader.buffered == 0
        assert reader.feed(data) == []


# -- the decoder raises only MQTTError, and what it accepts is canonical ------------------------


def check_decode(first_byte: int, body: bytes) -> None:
    raw = frame_of(first_byte, body)
    _, offset = split_frame(raw)
    try:
        packet = decode_packet(first_byte, raw, offset)
    except MQTTError:
        return
    assert encode_packet(packet) == raw


@SETTINGS
@given(st.integers(0, 255), st.binary(max_size=300))
def test_decode_arbitrary_bytes(first_byte: int, body: bytes) -> None:
    check_decode(first_byte, body)


@SETTINGS
@given(st.sampled_from([0x10, 0x20, 0x30, 0x32, 0x34, 0x3B, 0x40, 0x50, 0x62, 0x70, 0x82,
                        0x90, 0xA2, 0xB0, 0xC0, 0xD0, 0xE0]),
       st.lists(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x04, 0x80, 0xC0, 0xFF, 0x4D, 0x51,
                                 0x54, 0x2F, 0x23, 0x2B, 0xE2, 0x82, 0xAC]), max_size=40))
def test_decode_plausible_bytes(first_byte: int, body: list[int]) -> None:
    """Bodies drawn from bytes that matter to the decoder (lengths, flags, 'MQTT', '/', '#')."""
    check_decode(first_byte, bytes(body))


@SETTINGS
@given(packets, st.data())
def test_decode_mutated_packets(packet: Packet, data: st.DataObject) -> None:
    raw = encode_packet(packet)
    first, offset = split_frame(raw)
    body = bytearray(raw[offset:])
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        index = data.draw(st.integers(0, len(body)))
        if action == "insert":
            body.insert(index, data.draw(st.integers(0, 255)))
        elif action == "cut":
            del body[index:]
        elif index < len(body):
            if action == "flip":
                body[index] ^= 1 << data.draw(st.integers(0, 7))
            elif action == "set":
                body[index] = data.draw(st.integers(0, 255))
            else:
                del body[index]
    first = data.draw(st.sampled_from([first, first ^ 1 << data.draw(st.integers(0, 7))]))
    check_decode(first, bytes(body))
