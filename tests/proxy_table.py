"""PROXY protocol headers, good and bad: one table for the parser's unit tests, its fuzz seeds
and the bad-input tests over real sockets.

Version 1 lines are the spec's own examples (HAProxy's proxy-protocol.txt, section 2.1);
version 2 headers are built field by field as section 2.2 lays them out.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(command: int, family: int, body: bytes, length: int | None = None) -> bytes:
    """A version 2 header: signature, version/command, family/protocol, length, body."""
    return SIGNATURE + struct.pack(">BBH", command, family,
                                   len(body) if length is None else length) + body


def ipv4_block(source: str, destination: str, sport: int, dport: int) -> bytes:
    return (ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address(destination).packed
            + struct.pack(">HH", sport, dport))


def ipv6_block(source: str, destination: str, sport: int, dport: int) -> bytes:
    return (ipaddress.IPv6Address(source).packed + ipaddress.IPv6Address(destination).packed
            + struct.pack(">HH", sport, dport))


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack(">BH", kind, len(value)) + value


@dataclass(frozen=True)
class Good:
    name: str
    data: bytes
    source: tuple[str, int] | None  # None: the connection's own address stands


@dataclass(frozen=True)
class Bad:
    name: str
    data: bytes
    error: str  # in the ProxyHeaderError message and in the broker's log line


GOOD = [
    Good("v1 TCP4 (spec example)", b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
         ("192.168.0.1", 56324)),
    Good("v1 TCP4 worst case (spec)",
         b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
         ("255.255.255.255", 65535)),
    Good("v1 TCP6 worst case (spec)",
         b"PROXY TCP6 ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n".replace(
             b"ffff:f...f:ffff", b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
         ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)),
    Good("v1 TCP6 shortest", b"PROXY TCP6 ::1 ::2 1 2\r\n", ("::1", 1)),
    Good("v1 UNKNOWN (spec)", b"PROXY UNKNOWN\r\n", None),
    Good("v1 UNKNOWN worst case (spec)",
         b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
         b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n", None),
    Good("v2 PROXY TCP4", v2(0x21, 0x11, ipv4_block("203.0.113.7", "10.0.0.1", 40001, 1883)),
         ("203.0.113.7", 40001)),
    Good("v2 PROXY TCP6",
         v2(0x21, 0x21, ipv6_block("2001:db8::7", "2001:db8::1", 40002, 1883)),
         ("2001:db8::7", 40002)),
    Good("v2 PROXY TCP4 with TLVs (ALPN, authority, unique id, CRC32C, NOOP)",
         v2(0x21, 0x11, ipv4_block("198.51.100.9", "10.0.0.1", 40003, 1883)
            + tlv(0x01, b"mqtt") + tlv(0x02, b"broker.example") + tlv(0x05, b"\x01" * 32)
            + tlv(0x03, b"\x00\x00\x00\x00") + tlv(0x04, b"")),
         ("198.51.100.9", 40003)),
    Good("v2 PROXY UDP4 (its address is still the client's)",
         v2(0x21, 0x12, ipv4_block("192.0.2.1", "10.0.0.1", 5000, 1883)), ("192.0.2.1", 5000)),
    Good("v2 LOCAL (a health check: addresses ignored)",
         v2(0x20, 0x11, ipv4_block("192.0.2.1", "10.0.0.1", 5000, 1883)), None),
    Good("v2 LOCAL without addresses", v2(0x20, 0x00, b""), None),
    Good("v2 PROXY UNSPEC", v2(0x21, 0x00, b""), None),
    Good("v2 PROXY AF_UNIX", v2(0x21, 0x31, b"/tmp/client".ljust(108, b"\0") + bytes(108)),
         None),
]

BAD = [
    Bad("MQTT CONNECT instead of a header", b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00",
        "not a PROXY protocol header"),
    Bad("HTTP request instead of a header", b"GET / HTTP/1.1\r\n\r\n",
        "not a PROXY protocol header"),
    Bad("lower-case v1", b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY protocol header"),
    Bad("v1 unknown protocol", b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"),
    Bad("v1 without CRLF, 107 bytes", b"PROXY UNKNOWN " + b"x" * 93, "longer than 107"),
    Bad("v1 LF only", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "does not end with CRLF"),
    Bad("v1 missing a field", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "4 fields, not 5"),
    Bad("v1 one field too many", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "6 fields, not 5"),
    Bad("v1 IPv6 address in TCP4", b"PROXY TCP4 ::1 ::1 1 2\r\n", "not an IPv4 address"),
    Bad("v1 IPv4 address in TCP6", b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        "not an IPv6 address"),
    Bad("v1 not an address", b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n", "not an IP address"),
    Bad("v1 port above 65535", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "not a port"),
    Bad("v1 negative port", b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "not a port"),
    Bad("v1 binary garbage in a field", b"PROXY TCP4 1.2.3.4 \xff\xfe 1 2\r\n",
        "not an IP address"),
    Bad("v2 version 1", v2(0x11, 0x11, ipv4_block("1.2.3.4", "5.6.7.8", 1, 2)),
        "unsupported version 1"),
    Bad("v2 version 3", v2(0x31, 0x11, ipv4_block("1.2.3.4", "5.6.7.8", 1, 2)),
        "unsupported version 3"),
    Bad("v2 unknown command", v2(0x2F, 0x11, ipv4_block("1.2.3.4", "5.6.7.8", 1, 2)),
        "unknown command 15"),
    Bad("v2 unknown family", v2(0x21, 0x41, bytes(12)), "unknown address family"),
    Bad("v2 unknown transport", v2(0x21, 0x13, bytes(12)), "unknown address family"),
    Bad("v2 length too short for IPv4", v2(0x21, 0x11, bytes(8)), "too short for the address"),
    Bad("v2 length too short for IPv6", v2(0x21, 0x21, bytes(12)), "too short for the address"),
    Bad("v2 claims 64 KB of TLVs", v2(0x21, 0x11, b"", length=65535),
        "65535 bytes of addresses and TLVs, more than 1024"),
    Bad("v2 signature with one byte wrong", b"\r\n\r\n\x00\r\nQUIT\r" + bytes(20),
        "not a PROXY protocol header"),
]
