"""The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2), sans I/O.

A load balancer that forwards a TCP connection writes one header first, naming the client it
came from. `ProxyHeaderReader` takes the first bytes of a connection and says how many more it
may read (`wanted`) without ever reaching past the header: what follows it belongs to the next
layer, and for TLS that next layer is the kernel socket itself (asyncio's `start_tls` cannot be
handed bytes already read). Every failure is a `ProxyHeaderError` naming the cause; what a
header may claim is bounded before anything is buffered (version 1: 107 bytes, the spec's
maximum; version 2: `MAX_V2_SIZE` bytes, its TLVs skipped unread).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest line the spec allows, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = struct.Struct(">12sBBH")  # signature, version and command, family, length
# Addresses (216 bytes for the largest, AF_UNIX) and TLVs. HAProxy, nginx and the cloud load
# balancers send a few dozen bytes of TLVs; a header claiming more is refused before any of it
# is buffered.
MAX_V2_SIZE = 1024

_V2_LOCAL = 0x20
_V2_PROXY = 0x21
# Address family and transport (the 14th byte) -> the size of the address block, and whether
# it is an IP address pair this reader reports. AF_UNIX blocks are skipped: such a client has
# no address worth more than the socket's own.
_V2_FAMILIES = {
    0x00: (0, None),  # UNSPEC
    0x11: (12, 4), 0x12: (12, 4),  # TCP and UDP over IPv4
    0x21: (36, 6), 0x22: (36, 6),  # TCP and UDP over IPv6
    0x31: (216, None), 0x32: (216, None),  # AF_UNIX stream and datagram
}
# The shortest text of each field after "PROXY TCP4 " / "PROXY TCP6 ": source, destination,
# source port, destination port ("1.1.1.1", "::", "0").
_V1_SHORTEST = {b"TCP4": (7, 7, 1, 1), b"TCP6": (2, 2, 1, 1)}
_V1_SHORTEST_LINE = len(b"PROXY UNKNOWN\r\n")
_V1_PROTOCOLS = (*_V1_SHORTEST, b"UNKNOWN")


class ProxyHeaderError(Exception):
    """The bytes are not a valid PROXY protocol header; the message says why."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete header. `source` is the client's (address, port), or None when the header
    says to use the connection's own endpoints (v1 UNKNOWN, v2 LOCAL, UNSPEC or AF_UNIX)."""

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None = None


class ProxyHeaderReader:
    """Feed it what `wanted` allows until `feed` returns a header."""

    __slots__ = ("buffer", "header")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.header: ProxyHeader | None = None

    def wanted(self) -> int:
        """How many bytes may be read next without reading past the header (0: complete)."""
        if self.header is not None:
            return 0
        buffer = self.buffer
        if len(buffer) < len(V2_SIGNATURE):  # 12: shorter than any header of either version
            return len(V2_SIGNATURE) - len(buffer)
        if buffer.startswith(V2_SIGNATURE):
            if len(buffer) < V2_FIXED.size:
                return V2_FIXED.size - len(buffer)
            return V2_FIXED.size + int(V2_FIXED.unpack_from(buffer)[3]) - len(buffer)
        return max(1, min(_v1_shortest(buffer), V1_MAX) - len(buffer))

    def feed(self, data: bytes) -> ProxyHeader | None:
        """Take `data` (at most `wanted()` bytes); the header once it is complete."""
        if self.header is not None or len(data) > self.wanted():
            raise ValueError("fed more than wanted()")
        buffer = self.buffer
        start = len(buffer)
        buffer += data
        if start < len(V2_SIGNATURE):
            seen = bytes(buffer[:len(V2_SIGNATURE)])
            if not (V1_PREFIX.startswith(seen[:6]) or V2_SIGNATURE.startswith(seen)):
                raise ProxyHeaderError(f"not a PROXY protocol header (starts with {seen[:8]!r})")
        if buffer.startswith(V2_SIGNATURE):
            if len(buffer) >= V2_FIXED.size:
                if start < V2_FIXED.size:
                    _v2_check(buffer)  # before `wanted` asks for the length it claims
                if not self.wanted():
                    self.header = _v2(bytes(buffer))
        elif buffer.startswith(V1_PREFIX):
            protocol, space, _rest = bytes(buffer[len(V1_PREFIX):]).partition(b" ")
            if space and protocol not in _V1_PROTOCOLS:
                raise ProxyHeaderError(f"version 1: unknown protocol {protocol[:16]!r}")
            end = buffer.find(b"\n", max(start - 1, 0))
            if end >= 0:
                self.header = _v1(bytes(buffer[:end + 1]))
            elif len(buffer) >= V1_MAX:
                raise ProxyHeaderError(f"version 1 line longer than {V1_MAX} bytes")
        return self.header


def _v1_shortest(buffer: bytearray) -> int:
    """The shortest total length a version 1 line starting with `buffer` can have: reading
    up to it never reads past the line."""
    if buffer.endswith(b"\r"):
        return len(buffer) + 1  # the LF, if it is well formed
    fields = bytes(buffer[len(V1_PREFIX):]).split(b" ")
    if len(fields) == 1:
        return _V1_SHORTEST_LINE
    protocol = fields[0]
    if protocol == b"UNKNOWN":
        return len(buffer) + 1  # anything may follow, up to CRLF
    shortest = _V1_SHORTEST.get(protocol)
    if shortest is None:
        return len(buffer) + 1  # `feed` refuses it
    given = fields[1:]
    if len(given) > len(shortest):
        return len(buffer) + 1  # too many fields: the CRLF check refuses it
    current = max(shortest[len(given) - 1] - len(given[-1]), 0)
    rest = sum(1 + size for size in shortest[len(given):])
    return len(buffer) + current + rest + 2


def _v1(line: bytes) -> ProxyHeader:
    if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
        raise ProxyHeaderError("version 1: the line does not end with CRLF")
    fields = line[len(V1_PREFIX):-2].split(b" ")
    if fields[0] == b"UNKNOWN":  # the rest is to be ignored, as the spec says
        return ProxyHeader(1, None)
    if len(fields) != 5:
        raise ProxyHeaderError(f"version 1: {len(fields)} fields, not 5 (protocol, source, "
                               "destination, source port, destination port)")
    protocol, source, destination, source_port, destination_port = fields
    version = 4 if protocol == b"TCP4" else 6
    return ProxyHeader(1, (_address(source, version), _port(source_port)),
                       (_address(destination, version), _port(destination_port)))


def _address(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError(f"version 1: {text[:40]!r} is not an IP address") from None
    if address.version != version:
        raise ProxyHeaderError(f"version 1: {text[:40]!r} is not an IPv{version} address")
    return str(address)


def _port(text: bytes) -> int:
    if not (text.isdigit() and len(text) <= 5 and int(text) <= 65535):
        raise ProxyHeaderError(f"version 1: {text[:8]!r} is not a port")
    return int(text)


def _v2_check(header: bytearray) -> None:
    _signature, command, family, length = V2_FIXED.unpack_from(header)
    if length > MAX_V2_SIZE:
        raise ProxyHeaderError(f"version 2: {length} bytes of addresses and TLVs, more than "
                               f"{MAX_V2_SIZE}")
    if command >> 4 != 2:
        raise ProxyHeaderError(f"version 2: unsupported version {command >> 4}")
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError(f"version 2: unknown command {command & 0xF}")
    if family not in _V2_FAMILIES:
        raise ProxyHeaderError(f"version 2: unknown address family and protocol {family:#04x}")
    size = _V2_FAMILIES[family][0]
    if length < size:
        raise ProxyHeaderError(f"version 2: {length} bytes, too short for the addresses of "
                               f"family {family:#04x} ({size})")


def _v2(header: bytes) -> ProxyHeader:
    """A complete version 2 header that passed `_v2_check`; TLVs after the addresses are
    skipped without being parsed (none of them changes who the client is)."""
    _signature, command, family, _length = V2_FIXED.unpack_from(header)
    ip_version = _V2_FAMILIES[family][1]
    if command == _V2_LOCAL or ip_version is None:
        # LOCAL: a health check from the proxy itself; the connection's own endpoints stand.
        return ProxyHeader(2, None)
    body = header[V2_FIXED.size:]
    width = 4 if ip_version == 4 else 16
    source = ipaddress.ip_address(body[:width])
    destination = ipaddress.ip_address(body[width:2 * width])
    source_port, destination_port = struct.unpack_from(">HH", body, 2 * width)
    return ProxyHeader(2, (str(source), source_port), (str(destination), destination_port))
