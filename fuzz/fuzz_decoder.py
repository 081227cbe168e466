"""Fuzz the MQTT framer and decoders: arbitrary bytes, arbitrarily chunked, only MQTTError out.

Run (see fuzz/README.md)::

    PYTHONPATH=. .venv/bin/python fuzz/fuzz_decoder.py fuzz/corpus/decoder -max_total_time=600

Input layout, read with a FuzzedDataProvider: integers come from the *end* of the input, bytes
from the *front*, so the MQTT stream sits at the front as it would on the wire and the fuzzer's
byte-level mutations and comparisons work on it directly::

    [stream bytes ...][chunk size n_k] ... [chunk size n_1][options]

`options` (the last byte) picks the framer's maximum packet size and the User Property cap.
Each chunk size is 1..255 bytes, or 0 for "everything that is left". `encode_input` builds such
an input from a stream and a chunking; `fuzz/corpus_seed.py` uses it for the seed corpus.

Per input, `one_input`:

1. feeds the chunks to a `FrameReader(connect_only=True)` and a `FrameReader(connect_only=False)`
   and checks the framing contract: the frames (and the kind of error) do not depend on the
   chunking; each frame is `first byte + minimal Remaining Length + body`; the frames are a
   prefix of the stream; nothing beyond one packet's worth is ever buffered (CVE-2017-7651);
   the connect-only reader's frames are a prefix of the other's;
2. decodes every frame with `decode_packet`, `decode_packet_v5` (from_client True and False) and
   `decode_connect_any`; only `MQTTError` subclasses may escape;
3. checks that every decoded packet survives encode -> decode unchanged, and that
   `decode_connect_any` behaves exactly like the decoder it delegates to.

Anything else escaping (or a failed check) is a finding: atheris stops and writes the input.
`one_input` needs neither atheris nor instrumentation: without atheris a pure-Python provider
with the same semantics (`Provider`) is used, so CI replays the corpus with `pytest`.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

try:
    import atheris
except ImportError:  # CI replays the corpus without it
    atheris = None

# Make `culex`, `fuzz` and `tests` importable when run as a script from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Coverage feedback for the code under test only: instrument culex when fuzzing, never on import
# from the test suite (instrumented modules would be shared with every other test).
with (atheris.instrument_imports(include=["culex"]) if atheris is not None
      and __name__ == "__main__" else contextlib.nullcontext()):
    from culex.protocol.codec import decode_packet, encode_packet
    from culex.protocol.errors import MQTTError
    from culex.protocol.packets import PacketType
    from culex.protocol.reader import MAX_CONNECT_SIZE, Frame, FrameReader
    from culex.protocol.v5 import decode_connect_any, decode_packet_v5, encode_packet_v5

# Framer limits the options byte chooses from (bits 0-2): the default, tiny ones that make
# PacketTooLarge reachable, one around MAX_CONNECT_SIZE and the largest Limits allows.
MAX_SIZES = (16 * 1024 * 1024, 2, 5, 64, 300, MAX_CONNECT_SIZE + 1, 268_435_460, 4096)
# User Property caps (bits 3-4): the default, and small ones whose edge the fuzzer can reach.
MAX_USER_PROPERTIES = (1024, 0, 1, 3)

_V5_CONNECT_PREFIX = b"\x00\x04MQTT\x05"


# -- the data provider ------------------------------------------------------------------------

class DataProvider(Protocol):
    """The part of atheris.FuzzedDataProvider the harnesses use."""

    def ConsumeIntInRange(self, low: int, high: int, /) -> int: ...  # noqa: N802

    def ConsumeBytes(self, count: int, /) -> bytes: ...  # noqa: N802

    def remaining_bytes(self) -> int: ...


class Provider:
    """atheris.FuzzedDataProvider's semantics for the methods in `DataProvider`, in Python.

    Integers in a range whose width fits 64 bits are read from the end of the data, one byte
    per 8 bits of the range (the first byte read is the most significant), modulo the range
    size; bytes are read from the front. tests/unit/test_fuzz_regressions.py checks this
    against atheris when it is installed.
    """

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data)

    def remaining_bytes(self) -> int:
        return self._end - self._pos

    def ConsumeBytes(self, count: int, /) -> bytes:  # noqa: N802
        count = max(0, min(count, self._end - self._pos))
        start = self._pos
        self._pos += count
        return self._data[start:self._pos]

    def ConsumeIntInRange(self, low: int, high: int, /) -> int:  # noqa: N802
        if low > high:
            raise ValueError("ConsumeIntInRange: min must be <= max")
        span = high - low
        width = span.bit_length()
        if width > 64:
            raise NotImplementedError("ranges wider than 64 bits are not used here")
        result = 0
        shift = 0
        while shift < width and self._end > self._pos:
            self._end -= 1
            result = (result << 8) | self._data[self._end]
            shift += 8
        if span != (1 << 64) - 1:
            result %= span + 1
        return low + result


def provider_for(data: bytes) -> DataProvider:
    """atheris' provider when atheris is installed, else the Python one (same results)."""
    if atheris is not None:
        provider: DataProvider = atheris.FuzzedDataProvider(data)
        return provider
    return Provider(data)


def consume_chunks(fdp: DataProvider) -> list[bytes]:
    """The rest of the input as chunks: a size from the end (0: all that is left), then bytes."""
    chunks: list[bytes] = []
    while fdp.remaining_bytes():
        size = fdp.ConsumeIntInRange(0, 255)
        chunks.append(fdp.ConsumeBytes(size or fdp.remaining_bytes()))
    return chunks


def trailer(controls: Sequence[int]) -> bytes:
    """The bytes that make a provider return `controls` (each 0..255), in that order, from
    ConsumeIntInRange(0, 255) calls: they sit at the end of the input, last one first."""
    if any(not 0 <= value <= 255 for value in controls):
        raise ValueError(f"control values must be bytes: {controls!r}")
    return bytes(reversed(controls))


def chunk_sizes(total: int, sizes: Sequence[int]) -> list[int]:
    """`sizes` repeated to cover `total` bytes, the last one cut to fit (all in 1..255)."""
    if any(not 1 <= size <= 255 for size in sizes):
        raise ValueError(f"chunk sizes must be 1..255: {sizes!r}")
    out: list[int] = []
    left = total
    index = 0
    while left > 0:
        size = min(sizes[index % len(sizes)], left)
        out.append(size)
        left -= size
        index += 1
    return out


def encode_input(stream: bytes, options: int = 0, sizes: Sequence[int] | None = None) -> bytes:
    """The harness input that feeds `stream` in chunks of `sizes` (repeated; None: whole)."""
    controls = [options]
    if sizes is None:
        controls.append(0)  # one chunk: everything
    else:
        controls += chunk_sizes(len(stream), sizes)
    return stream + trailer(controls)


# -- checks -----------------------------------------------------------------------------------

def _remaining_length(frame: bytes) -> tuple[int, int]:
    """(Remaining Length, body offset) of a frame; asserts the minimal encoding."""
    value = 0
    shift = 0
    index = 1
    while True:
        byte = frame[index]
        index += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            assert index == 2 or byte, f"non-minimal Remaining Length framed: {frame[:6]!r}"
            return value, index
        shift += 7
        assert shift < 28, f"Remaining Length over four bytes framed: {frame[:6]!r}"


def _feed(reader: FrameReader, chunks: list[bytes], limit: int) -> list[Frame]:
    frames: list[Frame] = []
    for chunk in chunks:
        frames += reader.feed(chunk)
        # A partial packet is never more than one packet's worth (or a partial fixed header).
        assert reader.buffered <= max(limit, 5), (reader.buffered, limit)
        if reader.error is not None:
            assert reader.buffered == 0, "bytes kept after a framing error"
    return frames


def check_framing(chunks: list[bytes], max_size: int, connect_only: bool) -> list[Frame]:
    """Frame `chunks` and check the framing contract; return the frames."""
    stream = b"".join(chunks)
    reader = FrameReader(max_size, connect_only)
    frames = _feed(reader, chunks, max_size)
    error = reader.error
    if error is not None:
        assert isinstance(error, MQTTError), repr(error)
        assert reader.feed(b"\x10\x00") == [], "frames after a framing error"
    whole = FrameReader(max_size, connect_only)
    assert whole.feed(stream) == frames, "frames depend on how the stream is chunked"
    assert type(whole.error) is type(error), (whole.error, error)
    pos = 0
    for first, frame, offset in frames:
        assert isinstance(frame, bytes), type(frame)
        assert frame[0] == first, (first, frame[:2])
        length, body = _remaining_length(frame)
        assert body == offset, (body, offset)
        assert len(frame) == offset + length, (len(frame), offset, length)
        assert stream.startswith(frame, pos), "a frame that is not the next stream bytes"
        pos += len(frame)
    if connect_only and frames:
        assert frames[0][0] == 0x10, "connect-only reader framed a non-CONNECT first"
    return frames


Outcome = tuple[str, Any]


def outcome(decode: Callable[[], object]) -> Outcome:
    """('ok', packet) or ('error', exception class); any non-MQTTError escapes."""
    try:
        return "ok", decode()
    except MQTTError as exc:
        str(exc)  # the message must format
        return "error", type(exc)


def check_frame(frame_tuple: Frame, max_user: int) -> None:
    """Every decoder on one frame; round trips; decode_connect_any's delegation."""
    first, frame, offset = frame_tuple
    v3 = outcome(lambda: decode_packet(first, frame, offset))
    if v3[0] == "ok":
        encoded = encode_packet(v3[1])
        first2, frame2, offset2 = _single_frame(encoded)
        assert decode_packet(first2, frame2, offset2) == v3[1], \
            f"v3 round trip changed {v3[1]!r}"
    v5: dict[bool, Outcome] = {}
    for from_client in (True, False):
        v5[from_client] = result = outcome(functools.partial(
            decode_packet_v5, first, frame, offset, from_client=from_client,
            max_user_properties=max_user))
        if result[0] == "ok":
            encoded = encode_packet_v5(result[1])
            first2, frame2, offset2 = _single_frame(encoded)
            again = decode_packet_v5(first2, frame2, offset2, from_client=from_client,
                                     max_user_properties=max_user)
            assert again == result[1], f"v5 round trip changed {result[1]!r} into {again!r}"
    any_connect = outcome(lambda: decode_connect_any(first, frame, offset,
                                                     max_user_properties=max_user))
    if first >> 4 != PacketType.CONNECT:
        assert any_connect[0] == "error", "decode_connect_any accepted a non-CONNECT"
    elif frame.startswith(_V5_CONNECT_PREFIX, offset):
        assert any_connect == v5[True], (any_connect, v5[True])
    else:
        assert any_connect == v3, (any_connect, v3)


def _single_frame(encoded: bytes) -> Frame:
    """The one frame an encoder produced (the encoder's output must frame cleanly)."""
    reader = FrameReader(268_435_460, connect_only=False)
    frames = reader.feed(encoded)
    assert reader.error is None and reader.buffered == 0 and len(frames) == 1, \
        f"encoder output does not frame as one packet: {encoded[:32]!r}"
    return frames[0]


# -- the harness ------------------------------------------------------------------------------

def one_input(data: bytes) -> None:
    """One fuzz input (see the module docstring for its layout)."""
    fdp = provider_for(data)
    options = fdp.ConsumeIntInRange(0, 255)
    max_size = MAX_SIZES[options & 0x07]
    max_user = MAX_USER_PROPERTIES[(options >> 3) & 0x03]
    chunks = consume_chunks(fdp)
    first_frames = check_framing(chunks, max_size, connect_only=True)
    frames = check_framing(chunks, max_size, connect_only=False)
    assert frames[:len(first_frames)] == first_frames, \
        "connect-only framing is not a prefix of normal framing"
    for frame in frames:
        check_frame(frame, max_user)


def main(argv: list[str] | None = None) -> None:
    if atheris is None:
        raise SystemExit("atheris is not installed: make fuzz (or pip install -e '.[fuzz]')")
    atheris.Setup(sys.argv if argv is None else argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
