"""The PROXY header reader on arbitrary bytes: only ProxyHeaderError escapes, it never asks
for more than the spec's bounds, and never reads past a header it accepts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from culex.server.proxy_header import (
    MAX_V2_SIZE,
    V1_MAX,
    ProxyHeaderError,
    ProxyHeaderReader,
)
from tests.proxy_table import BAD, GOOD, SIGNATURE, ipv4_block, v2

SEEDS = [case.data for case in GOOD] + [case.data for case in BAD]


def consume(data: bytes) -> int | None:
    """Bytes consumed up to a complete header, or None where the data ran out first."""
    reader = ProxyHeaderReader()
    consumed = 0
    while True:
        wanted = reader.wanted()
        assert 0 < wanted <= 16 + MAX_V2_SIZE
        chunk = data[consumed:consumed + wanted]
        if not chunk:
            return None
        consumed += len(chunk)
        try:
            if reader.feed(chunk) is not None:
                return consumed
        except ProxyHeaderError:
            return None
        assert consumed <= max(V1_MAX, 16 + MAX_V2_SIZE)


@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data: bytes) -> None:
    consume(data)


@given(st.sampled_from(SEEDS), st.binary(max_size=64), st.integers(0, 200))
def test_mutated_headers(seed: bytes, noise: bytes, at: int) -> None:
    at = min(at, len(seed))
    consume(seed[:at] + noise + seed[at:])
    consume(seed[:at] + noise)


@given(st.ip_addresses(v=4), st.ip_addresses(v=4), st.integers(0, 65535),
       st.integers(0, 65535), st.binary(max_size=64))
def test_any_ipv4_pair_round_trips(source: object, destination: object, sport: int,
                                   dport: int, rest: bytes) -> None:
    line = f"PROXY TCP4 {source} {destination} {sport} {dport}\r\n".encode()
    assert consume(line + rest) == len(line)
    header = v2(0x21, 0x11, ipv4_block(str(source), str(destination), sport, dport))
    assert consume(header + rest) == len(header)
    assert header.startswith(SIGNATURE)
