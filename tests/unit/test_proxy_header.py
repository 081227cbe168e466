"""The PROXY protocol header reader (culex/server/proxy_header.py), from the table in
tests/proxy_table.py: every header fed whole, one byte at a time, and followed by the bytes of
the next layer, which it must never read (TLS starts on the socket right after the header)."""

from __future__ import annotations

import pytest

from culex.server.proxy_header import ProxyHeader, ProxyHeaderError, ProxyHeaderReader
from tests.proxy_table import BAD, GOOD, Bad, Good

TRAILING = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # a TLS ClientHello's first bytes


def read(data: bytes, step: int | None = None) -> tuple[ProxyHeader, int]:
    """Feed `data` as a socket would with `wanted()`-sized reads (at most `step` at a time);
    the header and how many bytes were consumed."""
    reader = ProxyHeaderReader()
    consumed = 0
    while True:
        wanted = reader.wanted()
        assert wanted > 0, "the reader wants nothing but has no header"
        chunk = data[consumed:consumed + min(wanted, step or wanted)]
        assert chunk, f"the reader wants {wanted} more bytes past the end of {data!r}"
        consumed += len(chunk)
        header = reader.feed(chunk)
        if header is not None:
            assert reader.wanted() == 0
            return header, consumed


@pytest.mark.parametrize("case", GOOD, ids=lambda case: case.name)
@pytest.mark.parametrize("step", [None, 1], ids=["whole", "byte-by-byte"])
def test_good_headers(case: Good, step: int | None) -> None:
    header, consumed = read(case.data + TRAILING, step)
    assert consumed == len(case.data), "read past the header"
    assert header.source == case.source
    assert header.version == (2 if case.data.startswith(b"\r\n") else 1)


@pytest.mark.parametrize("case", BAD, ids=lambda case: case.name)
@pytest.mark.parametrize("step", [None, 1], ids=["whole", "byte-by-byte"])
def test_bad_headers(case: Bad, step: int | None) -> None:
    with pytest.raises(ProxyHeaderError, match=case.error):
        read(case.data + TRAILING, step)


def test_refused_before_the_claimed_length_is_read() -> None:
    """A v2 header claiming 64 KB fails on its 16 fixed bytes, before any of it is buffered."""
    reader = ProxyHeaderReader()
    reader.feed(BAD[-2].data[:12])
    assert reader.wanted() == 4
    with pytest.raises(ProxyHeaderError, match="more than 1024"):
        reader.feed(BAD[-2].data[12:16])


def test_not_a_header_is_refused_on_the_first_byte() -> None:
    with pytest.raises(ProxyHeaderError, match="not a PROXY protocol header"):
        ProxyHeaderReader().feed(b"\x10")


def test_v1_reads_in_few_steps() -> None:
    """The shortest possible rest of a v1 line bounds each read: a typical TCP4 header takes a
    handful of reads, not one per byte."""
    reader = ProxyHeaderReader()
    data = GOOD[0].data
    reads = 0
    while reader.header is None:
        chunk = data[:reader.wanted()]
        data = data[len(chunk):]
        reader.feed(chunk)
        reads += 1
    assert reads <= 8


def test_feeding_more_than_wanted_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="more than wanted"):
        ProxyHeaderReader().feed(bytes(13))
