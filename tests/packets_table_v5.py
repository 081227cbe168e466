"""Golden table of hostile MQTT 5.0 inputs and the exact reaction each one must get.

The MQTT 5 companion of tests/packets_table.py (same `Case`, same three feeding modes, driven by
tests/robustness/test_bad_input_v5.py through `run_case`). Rows come from
/work/shared/BAD_INPUTS.md (`Case.item`) and name the spec rule they enforce. The encoders are
the 3.1.1 table's (with MQTT 5 property blocks) plus the small property encoders below, written
by hand on purpose: the table must not share code with the broker's codec.

Reactions:

- `disconnect(reason)`: after an accepted CONNECT, a Malformed Packet or Protocol Error gets a
  DISCONNECT with that reason code, then a close (§4.13.1: "SHOULD send a DISCONNECT packet
  containing the Reason Code"). A DISCONNECT may carry a Reason String, so the packet is
  parsed and only its type and reason byte are compared. The broker logs a protocol violation.
- `connack(reason)`: a CONNACK with that reason code (properties free), then a close.
- `CLOSE`: closed with nothing sent. Before a CONNECT is accepted the server cannot send
  DISCONNECT [MQTT-4.13.1-1 / §4.13.1 "in the case of an error in a CONNECT packet it MAY send
  a CONNACK"].
- `replies(...)`: packets with reason codes (PUBACK 0x10, SUBACK 0x8F, PUBCOMP 0x92...), each
  compared by type, packet id and reason code(s); the connection stays open (then PINGREQ must
  get exactly PINGRESP). With `closes=True` the same list ends in a close (e.g. 20 PUBRECs, then
  DISCONNECT 0x93).

Policies where the spec leaves a choice (marked "policy" at the rows):

- A malformed or protocol-error MQTT 5 CONNECT is closed without a CONNACK. §4.13.1 and
  [MQTT-3.1.4-1] make the CONNACK 0x81 / 0x82 a MAY; Culex treats every CONNECT error alike
  (as in 3.1.1, whose table has the same rows as CLOSE), since for errors before the level byte
  it cannot know the client reads MQTT 5 CONNACKs.
- Unknown protocol levels (6, 255) are answered in the 3.1.1 form, CONNACK 0x01: a server cannot
  know what a future level reads, and [MQTT-3.1.2-2] makes 0x84 a MAY. Those rows are in the
  3.1.1 table. A CONNECT that says level 5 with the wrong protocol name ("MQIsdp") is an MQTT 5
  client: CONNACK 0x84 in the MQTT 5 form.
- The reserved packet type 0 is malformed (0x81); a server-only type sent by a client is a
  Protocol Error (0x82) whatever its flags, since the type is checked before the flags.
- A topic name the server refuses after parsing it (wildcards [MQTT-3.3.2-2]) gets 0x90 "Topic
  Name invalid" (BAD_INPUTS #23).
- A wildcard in a Response Topic is a Protocol Error (0x82) [MQTT-3.3.2-14].
- More than 1024 User Properties in one property block (CVE-2021-41039) get DISCONNECT 0x83
  (Implementation specific error): the decoder stops at the 1025th instead of building the list.
- An invalid or empty filter in UNSUBSCRIBE gets 0x11 "No subscription existed" in its UNSUBACK
  slot, like any filter that is not subscribed: it can never have been stored, and §3.11.3 makes
  no code mandatory (0x8F would also do). Nothing is stored or removed either way.
- A QoS 2 PUBLISH re-sent before PUBREL gets PUBREC 0x00: it is not routed again, so "No matching
  subscribers" (0x10, sent for the first copy) would not be what happened to this one.
- A will whose Payload Format Indicator says UTF-8 is not checked against its payload at CONNECT
  (§3.1.3.2.3: the server MAY answer CONNACK 0x99); `check_payload_format` covers PUBLISH only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.packets_table import (
    CLIENT_ID,
    CONNECT_311,
    PINGREQ,
    Case,
    Reaction,
    ack,
    connect,
    fixed_header,
    packet,
    publish,
    split_packets,
    string,
    subscribe,
    unsubscribe,
    varint,
)

# --- MQTT 5 property encoders (§2.2.2, Table 2-4) ---

PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
AUTHENTICATION_METHOD = 0x15
REQUEST_PROBLEM_INFORMATION = 0x17
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFORMATION = 0x19
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27


def p_byte(ident: int, value: int) -> bytes:
    return bytes([ident, value])


def p_u16(ident: int, value: int) -> bytes:
    return bytes([ident]) + value.to_bytes(2, "big")


def p_u32(ident: int, value: int) -> bytes:
    return bytes([ident]) + value.to_bytes(4, "big")


def p_varint(ident: int, value: int) -> bytes:
    return bytes([ident]) + varint(value)


def p_str(ident: int, value: bytes | str) -> bytes:
    return bytes([ident]) + string(value)


def p_user(name: bytes | str, value: bytes | str) -> bytes:
    return bytes([USER_PROPERTY]) + string(name) + string(value)


def props(*items: bytes) -> bytes:
    """A property block: Property Length (a Variable Byte Integer), then the properties."""
    body = b"".join(items)
    return varint(len(body)) + body


NO_PROPS = b"\x00"


# --- MQTT 5 packets ---


def connect5(client_id: bytes | str = CLIENT_ID, *, properties: bytes = NO_PROPS,
             will_properties: bytes = NO_PROPS, **kwargs: Any) -> bytes:
    """An MQTT 5 CONNECT ("MQTT", level 5); keyword arguments as `packets_table.connect`."""
    kwargs.setdefault("level", 5)
    return connect(client_id, properties=properties, will_properties=will_properties, **kwargs)


def publish5(topic: bytes | str, payload: bytes = b"", *, properties: bytes = NO_PROPS,
             **kwargs: Any) -> bytes:
    return publish(topic, payload, properties=properties, **kwargs)


def subscribe5(mid: int, filters: list[tuple[bytes | str, int]], *,
               properties: bytes = NO_PROPS, first_byte: int = 0x82) -> bytes:
    """SUBSCRIBE; each filter's int is its Subscription Options byte (§3.8.3.1)."""
    return subscribe(mid, filters, first_byte, properties)


def unsubscribe5(mid: int, filters: list[bytes | str], *, properties: bytes = NO_PROPS) -> bytes:
    return unsubscribe(mid, filters, properties=properties)


def ack5(first_byte: int, mid: int, reason: int, properties: bytes | None = None) -> bytes:
    """PUBACK / PUBREC / PUBREL / PUBCOMP with a reason code (and a property block if given)."""
    return packet(first_byte, mid.to_bytes(2, "big") + bytes([reason]) + (properties or b""))


def disconnect5(reason: int, properties: bytes | None = None) -> bytes:
    return packet(0xE0, bytes([reason]) + (properties or b""))


# --- reading the broker's answers ---

Summary = tuple[int, int | None, tuple[int, ...]]
"""(first byte, packet id or None, reason codes) of one packet from the broker."""

_ACKS = {0x40, 0x50, 0x62, 0x70}


def _skip_properties(body: bytes, pos: int) -> int:
    """The position after the property block at body[pos] (its length is a varint)."""
    length, shift = 0, 0
    while pos < len(body):
        byte = body[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return pos + length
    return pos


def summarize(frame: bytes) -> Summary:
    """What a reason reaction compares: the type, the packet id and the reason code(s), leaving
    out properties (a Reason String, the CONNACK's limits) the spec lets the server choose."""
    header = fixed_header(frame)
    if header is None:
        return (frame[0] if frame else -1, None, tuple(frame[1:]))
    body = frame[header[0]:]
    first = frame[0]
    if first == 0x20:  # CONNACK: flags, reason, properties
        return first, None, tuple(body[1:2])
    if first == 0xE0:  # DISCONNECT: no body means 0x00 (§3.14.2.1)
        return first, None, tuple(body[:1]) or (0,)
    if first in _ACKS:  # Remaining Length 2 means reason 0x00 (§3.4.2.1)
        return first, int.from_bytes(body[:2], "big"), tuple(body[2:3]) or (0,)
    if first in (0x90, 0xB0):  # SUBACK, UNSUBACK: packet id, properties, one code per filter
        return first, int.from_bytes(body[:2], "big"), tuple(body[_skip_properties(body, 2):])
    return first, None, tuple(body)


@dataclass(frozen=True)
class ReasonReaction(Reaction):
    """Packets compared by `summarize` instead of byte for byte."""

    expected: tuple[Summary, ...] = ()

    @property
    def packet_count(self) -> int:
        return len(self.expected)

    def matches(self, got: bytes) -> bool:
        return [summarize(frame) for frame in split_packets(got)] == list(self.expected)

    def describe(self) -> str:
        shown = ", ".join(f"{f:02x} id={m} reasons={[hex(r) for r in rs]}"
                          for f, m, rs in self.expected)
        return f"{shown or 'nothing'}, {'then close' if self.closes else 'stays open'}"


def disconnect(reason: int) -> ReasonReaction:
    """DISCONNECT with `reason`, then close; logged as a protocol violation."""
    return ReasonReaction(b"", closes=True, violation=True, expected=((0xE0, None, (reason,)),))


def connack(reason: int) -> ReasonReaction:
    """An MQTT 5 CONNACK with `reason`: a refusal closes, 0x00 keeps the connection."""
    return ReasonReaction(b"", closes=bool(reason), violation=False,
                          expected=((0x20, None, (reason,)),))


def reply(first_byte: int, mid: int | None, *reasons: int) -> Summary:
    """One expected packet for `replies`."""
    return first_byte, mid, reasons


def replies(*expected: Summary, closes: bool = False) -> ReasonReaction:
    """These packets; a close after them (then it is a logged protocol violation) if `closes`."""
    return ReasonReaction(b"", closes=closes, violation=closes, expected=expected)


CLOSE = Reaction(b"", closes=True, violation=True)
# A client's DISCONNECT: closed with nothing sent, and no protocol violation.
CLOSE_NORMAL = Reaction(b"", closes=True, violation=False)

# --- the table ---

CONNECT_V5 = connect5()


@dataclass(frozen=True)
class Case5(Case):
    """A row after an MQTT 5 CONNECT unless `connect` says otherwise."""

    connect: bytes | None = CONNECT_V5


# Reason codes (§2.4, Table 2-6).
MALFORMED = 0x81
PROTOCOL_ERROR = 0x82
IMPLEMENTATION_ERROR = 0x83
UNSUPPORTED_VERSION = 0x84
NOT_AUTHORIZED = 0x87
TOPIC_FILTER_INVALID = 0x8F
TOPIC_NAME_INVALID = 0x90
TOPIC_ALIAS_INVALID = 0x94
ID_NOT_FOUND = 0x92
RECEIVE_MAXIMUM_EXCEEDED = 0x93
PACKET_TOO_LARGE = 0x95
PAYLOAD_FORMAT_INVALID = 0x99
NO_SUBSCRIBERS = 0x10
NO_SUBSCRIPTION_EXISTED = 0x11

PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK = 0x40, 0x50, 0x62, 0x70, 0x90, 0xB0

BAD_UTF8 = {
    "overlong": b"a\xc0\xafb",
    "surrogate": b"a\xed\xa0\x80b",
    "lone-ff": b"a\xffb",
    "truncated": b"a\xe2\x82",
    "nul": b"a\x00b",  # U+0000 [MQTT-1.5.4-2]
}

# The broker's Receive Maximum: max_inflight_messages, 20 by default (§3.2.2.3.3).
RECEIVE_MAXIMUM_DEFAULT = 20
# CVE-2021-41039: 100,000 User Properties (700 kB, under the shared broker's 2 MB limit).
MANY_USER_PROPERTIES = props(*[p_user("k", "v")] * 100_000)


def _string_rows(kind: str, item: str, bad: bytes) -> list[Case]:
    """`bad` in every MQTT 5 place a client sends a UTF-8 string [MQTT-1.5.4-1]."""
    mal = disconnect(MALFORMED)
    return [
        Case5(f"v5-publish-topic-{kind}", item, publish5(bad, b"x"), mal),
        Case5(f"v5-subscribe-filter-{kind}", item, subscribe5(1, [(bad, 0)]), mal),
        Case5(f"v5-unsubscribe-filter-{kind}", item, unsubscribe5(1, [bad]), mal),
        Case5(f"v5-publish-user-property-{kind}", item,
              publish5("a/b", b"x", properties=props(p_user("k", bad))), mal),
        Case5(f"v5-publish-content-type-{kind}", item,
              publish5("a/b", b"x", properties=props(p_str(CONTENT_TYPE, bad))), mal),
        Case5(f"v5-subscribe-user-property-{kind}", item,
              subscribe5(1, [("a/b", 0)], properties=props(p_user(bad, "v"))), mal),
        Case5(f"v5-disconnect-reason-string-{kind}", item,
              disconnect5(0, props(p_str(0x1F, bad))), mal),
        # policy: CONNECT errors close without a CONNACK.
        Case5(f"v5-connect-client-id-{kind}", item, connect5(bad), connect=None),
        Case5(f"v5-connect-user-property-{kind}", item,
              connect5(properties=props(p_user("k", bad))), connect=None),
        Case5(f"v5-connect-will-topic-{kind}", item, connect5(will=(bad, b"x")), connect=None),
    ]


def _cases() -> list[Case]:
    mal, perr = disconnect(MALFORMED), disconnect(PROTOCOL_ERROR)
    rows: list[Case] = [
        # 1. Remaining Length with a 5th byte: Malformed [MQTT-1.5.5-1], DISCONNECT 0x81.
        Case5("v5-rl-5-bytes-publish", "1", b"\x30\xff\xff\xff\xff\x01", mal),
        Case5("v5-rl-5-bytes-pingreq", "1", b"\xc0\x80\x80\x80\x80\x01", mal),
        # 2. A 256 MB claim: over the Maximum Packet Size of the CONNACK, 0x95 (§3.2.2.3.6).
        Case5("v5-rl-256mb-publish", "2", b"\x30\xff\xff\xff\x7f\x00\x03a/b",
              disconnect(PACKET_TOO_LARGE)),
        # 3. Non-minimal Variable Byte Integers are malformed [MQTT-1.5.5-1]; property lengths
        # and Subscription Identifiers are Variable Byte Integers too.
        Case5("v5-rl-non-minimal-pingreq", "3", b"\xc0\x80\x00", mal),
        Case5("v5-property-length-non-minimal", "3",
              packet(0x30, string("a/b") + b"\x80\x00" + b"x"), mal),
        Case5("v5-subscription-identifier-non-minimal", "3",
              subscribe5(1, [("a/b", 0)], properties=b"\x03\x0b\x81\x00"), mal),
        # 4. policy: reserved type 0 is malformed.
        Case5("v5-type-0", "4", b"\x00\x00", mal),
        # 5. Server-only packet types from a client: Protocol Error.
        Case5("v5-client-sends-connack", "5", b"\x20\x03\x00\x00\x00", perr),
        Case5("v5-client-sends-suback", "5", packet(0x90, b"\x00\x01\x00\x00"), perr),
        Case5("v5-client-sends-unsuback", "5", packet(0xB0, b"\x00\x01\x00\x00"), perr),
        Case5("v5-client-sends-pingresp", "5", b"\xd0\x00", perr),
        # CVE-2021-28166, the literal bytes of mosquitto issue #2163: an MQTT 5 CONNECT with an
        # empty id (accepted, an id assigned) then a CONNACK type with flags 9.
        Case5("v5-cve-2021-28166", "5",
              bytes.fromhex("10 10 00 04 4d 51 54 54 05 02 00 3c 03 21 00 14 00 00"
                            "29 02 00 01 e0 00"),
              replies(reply(0x20, None, 0), reply(0xE0, None, PROTOCOL_ERROR), closes=True),
              connect=None),
        # 6. Wrong fixed-header flags: malformed [MQTT-2.1.3-1].
        Case5("v5-subscribe-header-flags-0000", "6",
              subscribe5(1, [("a/b", 0)], first_byte=0x80), mal),
        Case5("v5-unsubscribe-header-flags-0000", "6",
              packet(0xA0, b"\x00\x01\x00" + string("a/b")), mal),
        Case5("v5-pubrel-header-flags-0000", "6", ack(0x60, 1), mal),
        Case5("v5-publish-qos-3", "6", packet(0x36, string("a/b") + b"\x00\x01\x00x"), mal),
        Case5("v5-publish-dup-qos-0", "6", publish5("a/b", b"x", dup=True), mal),
        Case5("v5-pingreq-header-flags", "6", b"\xc1\x00", mal),
        Case5("v5-disconnect-header-flags", "6", b"\xe2\x00", mal),
        Case5("v5-puback-header-flags", "6", ack(0x41, 1), mal),
        Case5("v5-connect-header-flags-1", "6", b"\x11" + CONNECT_V5[2:], connect=None),
        # 7. Sizes: PINGREQ must be empty; an ack needs its packet id. (An MQTT 5 DISCONNECT of
        # one byte, or a PUBACK of three, is legal: reason code without properties.)
        Case5("v5-pingreq-rl-1", "7", b"\xc0\x01\x00", mal),
        Case5("v5-puback-rl-1", "7", b"\x40\x01\x00", mal),
        Case5("v5-puback-rl-0", "7", b"\x40\x00", mal),
        Case5("v5-pubrel-rl-1", "7", b"\x62\x01\x00", mal),
        Case5("v5-puback-rl-3-unknown-id", "7", ack5(0x40, 7, 0x00), replies()),
        Case5("v5-disconnect-rl-1-normal", "7", b"\xe0\x01\x00", CLOSE_NORMAL),
        # A reason code the packet may not carry: Protocol Error [MQTT-3.4.2-1].
        Case5("v5-puback-reason-0x92", "7", ack5(0x40, 7, ID_NOT_FOUND), perr),
        Case5("v5-disconnect-reason-0x05", "7", disconnect5(0x05), perr),
        # 8. Bytes left over inside the Remaining Length: malformed.
        Case5("v5-subscribe-trailing-byte", "8",
              packet(0x82, b"\x00\x01\x00" + string("a/b") + b"\x00\x00"), mal),
        Case5("v5-unsubscribe-trailing-byte", "8",
              packet(0xA2, b"\x00\x01\x00" + string("a/b") + b"\x00"), mal),
        Case5("v5-puback-trailing-byte", "8", ack5(0x40, 7, 0x00, b"\x00\x00"), mal),
        Case5("v5-disconnect-trailing-byte", "8", disconnect5(0x00, b"\x00\x00"), mal),
        Case5("v5-connect-trailing-byte", "8", connect5(extra=b"\x00"), connect=None),
        # 9. Truncation at every field boundary (mosquitto 13-malformed-*).
        Case5("v5-publish-rl-only", "9", b"\x30\x00", mal),
        Case5("v5-publish-topic-no-property-length", "9", packet(0x30, string("a/b")), mal),
        Case5("v5-publish-qos1-topic-no-mid", "9", packet(0x32, string("a/b")), mal),
        Case5("v5-publish-qos1-mid-no-properties", "9",
              packet(0x32, string("a/b") + b"\x00\x01"), mal),
        Case5("v5-subscribe-mid-no-properties", "9", b"\x82\x02\x00\x01", mal),
        Case5("v5-subscribe-filter-no-options", "9",
              packet(0x82, b"\x00\x01\x00" + string("a/b")), mal),
        Case5("v5-subscribe-second-filter-no-options", "9",
              packet(0x82, b"\x00\x01\x00" + string("a/b") + b"\x00" + string("c/d")), mal),
        Case5("v5-unsubscribe-mid-no-properties", "9", b"\xa2\x02\x00\x01", mal),
        Case5("v5-puback-reason-then-half-properties", "9",
              packet(0x40, b"\x00\x07\x00\x05\x1f"), mal),
        Case5("v5-connect-no-property-length", "9",
              packet(0x10, string("MQTT") + b"\x05\x02\x00\x3c"), connect=None),
        Case5("v5-connect-will-no-will-properties", "9",
              packet(0x10, string("MQTT") + b"\x05\x06\x00\x3c\x00" + string("id")),
              connect=None),
        # 10. A length past what is left of the packet.
        Case5("v5-publish-topic-length-overrun", "10", packet(0x30, b"\x00\x09a/b"), mal),
        Case5("v5-user-property-length-overrun", "10",
              publish5("a/b", properties=b"\x06\x26\x00\x01k\x00\x40"), mal),
        Case5("v5-connect-client-id-length-overrun", "10",
              packet(0x10, string("MQTT") + b"\x05\x02\x00\x3c\x00\x00\x20abc"), connect=None),
        # 13. A second CONNECT [MQTT-3.1.0-2]: Protocol Error.
        Case5("v5-second-connect", "13", CONNECT_V5, perr),
        Case5("v5-second-connect-311", "13", CONNECT_311, perr),
        # 14. A level-5 CONNECT with the 3.1 protocol name: Unsupported Protocol Version
        # [MQTT-3.1.2-2] (policy: unknown levels are in the 3.1.1 table, CONNACK 0x01).
        Case5("v5-connect-mqisdp-level-5", "14", connect5(name=b"MQIsdp"),
              connack(UNSUPPORTED_VERSION), connect=None),
        # 15.-17. CONNECT flag errors: malformed [MQTT-3.1.2-3, -11, -13, §3.1.2.6]; policy:
        # closed without a CONNACK.
        Case5("v5-connect-reserved-flag", "15", connect5(flags=0x03), connect=None),
        Case5("v5-connect-will-qos-without-will", "16", connect5(flags=0x0A), connect=None),
        Case5("v5-connect-will-retain-without-will", "16", connect5(flags=0x22), connect=None),
        Case5("v5-connect-will-qos-3", "16", connect5(will=(b"w/t", b"x"), will_qos=3),
              connect=None),
        Case5("v5-connect-username-flag-no-username", "17", connect5(flags=0x82),
              connect=None),
        # In MQTT 5 a password without a user name is legal (§3.1.2.9).
        Case5("v5-connect-password-without-username", "17", connect5(password=b"p"),
              connack(0x00), connect=None),
    ]
    # 21. Ill-formed UTF-8 [MQTT-1.5.4-1]; 22. U+0000 [MQTT-1.5.4-2]: malformed.
    for kind, bad in BAD_UTF8.items():
        rows += _string_rows(kind, "22" if kind == "nul" else "21", bad)
    tn_invalid = disconnect(TOPIC_NAME_INVALID)
    rows += [
        # 23. Wildcards in a Topic Name [MQTT-3.3.2-2]: 0x90 Topic Name invalid.
        Case5("v5-publish-topic-plus", "23", publish5("a/+", b"x"), tn_invalid),
        Case5("v5-publish-topic-hash", "23", publish5("#", b"x"), tn_invalid),
        Case5("v5-publish-qos1-topic-plus-inside-level", "23", publish5("a+b", b"x", qos=1),
              tn_invalid),
        Case5("v5-publish-qos2-topic-hash", "23", publish5("a/#", b"x", qos=2), tn_invalid),
        # policy: a Response Topic is a future Topic Name [MQTT-3.3.2-14]: Protocol Error.
        Case5("v5-publish-response-topic-wildcard", "23",
              publish5("a/b", b"x", properties=props(p_str(RESPONSE_TOPIC, "r/#"))), perr),
        # 24. A zero-length topic without a Topic Alias is a Protocol Error (§3.3.2.1).
        Case5("v5-publish-empty-topic", "24", publish5("", b"x"), perr),
        Case5("v5-publish-qos1-empty-topic", "24", publish5("", b"x", qos=1), perr),
        # 25. Topic Alias 0 or above the Topic Alias Maximum we announced (10): 0x94
        # [MQTT-3.3.2-8, -9]; an empty topic with an alias never set: Protocol Error
        # [MQTT-3.3.2-12]. A set alias then used is answered as usual (the control row).
        Case5("v5-publish-topic-alias-0", "25",
              publish5("a/b", b"x", properties=props(p_u16(TOPIC_ALIAS, 0))),
              disconnect(TOPIC_ALIAS_INVALID)),
        Case5("v5-publish-topic-alias-above-maximum", "25",
              publish5("a/b", b"x", qos=1, properties=props(p_u16(TOPIC_ALIAS, 11))),
              disconnect(TOPIC_ALIAS_INVALID)),
        Case5("v5-publish-empty-topic-unknown-alias", "25",
              publish5("", b"x", properties=props(p_u16(TOPIC_ALIAS, 3))), perr),
        Case5("v5-publish-alias-set-elsewhere-then-unknown", "25",
              publish5("a/b", b"x", properties=props(p_u16(TOPIC_ALIAS, 1)))
              + publish5("", b"x", properties=props(p_u16(TOPIC_ALIAS, 2))), perr),
        Case5("v5-publish-alias-set-then-used", "25",
              publish5("a/b", b"x", qos=1, mid=1, properties=props(p_u16(TOPIC_ALIAS, 1)))
              + publish5("", b"y", qos=1, mid=2, properties=props(p_u16(TOPIC_ALIAS, 1))),
              replies(reply(PUBACK, 1, NO_SUBSCRIBERS), reply(PUBACK, 2, NO_SUBSCRIBERS))),
        # 26. Misplaced wildcards: SUBACK 0x8F for that filter (§3.9.3), others granted.
        Case5("v5-subscribe-filter-a-hash-b", "26", subscribe5(1, [("a/#/b", 0)]),
              replies(reply(SUBACK, 1, TOPIC_FILTER_INVALID))),
        Case5("v5-subscribe-filter-mixed", "26",
              subscribe5(6, [("a/b", 1), ("a#", 0), ("+/c", 2), ("+a", 1), ("x/#", 0)]),
              replies(reply(SUBACK, 6, 1, TOPIC_FILTER_INVALID, 2, TOPIC_FILTER_INVALID, 0))),
        # policy: UNSUBACK 0x11 for an invalid filter, as for any that is not subscribed.
        Case5("v5-unsubscribe-filter-invalid", "26", unsubscribe5(2, ["a/#/b", "x/y"]),
              replies(reply(UNSUBACK, 2, NO_SUBSCRIPTION_EXISTED, NO_SUBSCRIPTION_EXISTED))),
        # 27. An empty filter (0x8F), and no filters at all [MQTT-3.8.3-2, MQTT-3.10.3-2].
        Case5("v5-subscribe-filter-empty", "27", subscribe5(7, [("", 0)]),
              replies(reply(SUBACK, 7, TOPIC_FILTER_INVALID))),
        Case5("v5-subscribe-no-filters", "27", b"\x82\x03\x00\x01\x00", perr),
        Case5("v5-unsubscribe-no-filters", "27", b"\xa2\x03\x00\x01\x00", perr),
        Case5("v5-unsubscribe-filter-empty", "27", unsubscribe5(3, [""]),
              replies(reply(UNSUBACK, 3, NO_SUBSCRIPTION_EXISTED))),
        # 29. Deeper than max_topic_levels (1024): SUBACK 0x8F, and 0x90 for a Topic Name.
        Case5("v5-subscribe-filter-1100-levels", "29", subscribe5(8, [("a/" * 1100, 0)]),
              replies(reply(SUBACK, 8, TOPIC_FILTER_INVALID))),
        Case5("v5-publish-topic-1100-levels", "29", publish5("a/" * 1100 + "b", b"x"),
              tn_invalid),
        # 30. "$" topics: $SYS is read-only, "Not authorized" in the ack (§3.4.2.1); "$foo" is
        # an ordinary topic with no subscriber (0x10).
        Case5("v5-publish-qos1-dollar-sys", "30", publish5("$SYS/culex/x", b"x", qos=1, mid=10),
              replies(reply(PUBACK, 10, NOT_AUTHORIZED))),
        Case5("v5-publish-qos2-dollar-sys", "30", publish5("$SYS/culex/x", b"x", qos=2, mid=11),
              replies(reply(PUBREC, 11, NOT_AUTHORIZED))),
        Case5("v5-publish-qos0-dollar-sys", "30", publish5("$SYS/culex/x", b"x"), replies()),
        Case5("v5-publish-qos1-dollar-foo", "30", publish5("$foo", b"x", qos=1, mid=9),
              replies(reply(PUBACK, 9, NO_SUBSCRIBERS))),
        # 32. Packet id 0 [MQTT-2.2.1-3]: Protocol Error.
        Case5("v5-publish-qos1-mid-0", "32", publish5("a/b", b"x", qos=1, mid=0), perr),
        Case5("v5-publish-qos2-mid-0", "32", publish5("a/b", b"x", qos=2, mid=0), perr),
        Case5("v5-subscribe-mid-0", "32", subscribe5(0, [("a/b", 0)]), perr),
        Case5("v5-unsubscribe-mid-0", "32", unsubscribe5(0, ["a/b"]), perr),
        Case5("v5-pubrel-mid-0", "32", ack(0x62, 0), perr),
        Case5("v5-puback-mid-0", "32", ack5(0x40, 0, 0x00), perr),
        # 33. A QoS 2 PUBLISH re-sent before PUBREL: PUBREC each time (policy: 0x00 for the
        # copy, which is not routed again), one PUBCOMP [MQTT-4.3.3-9].
        Case5("v5-publish-qos2-same-mid-twice", "33",
              publish5("culex/q2", b"x", qos=2, mid=5)
              + publish5("culex/q2", b"x", qos=2, mid=5, dup=True) + ack(0x62, 5),
              replies(reply(PUBREC, 5, NO_SUBSCRIBERS), reply(PUBREC, 5, 0),
                      reply(PUBCOMP, 5, 0))),
        # 34. The id reused with other content before PUBREL.
        Case5("v5-publish-qos2-reuse-mid-new-content", "34",
              publish5("culex/q2", b"one", qos=2, mid=6)
              + publish5("culex/q2", b"two", qos=2, mid=6) + ack(0x62, 6),
              replies(reply(PUBREC, 6, NO_SUBSCRIBERS), reply(PUBREC, 6, 0),
                      reply(PUBCOMP, 6, 0))),
        # 35. PUBREL for an unknown id: PUBCOMP 0x92 (§3.7.2.1); PUBACK/PUBCOMP ignored.
        Case5("v5-pubrel-unknown-mid", "35", ack(0x62, 7),
              replies(reply(PUBCOMP, 7, ID_NOT_FOUND))),
        Case5("v5-pubrel-unknown-mid-with-reason", "35", ack5(0x62, 7, 0x00, NO_PROPS),
              replies(reply(PUBCOMP, 7, ID_NOT_FOUND))),
        Case5("v5-pubcomp-unknown-mid", "35", ack5(0x70, 7, 0x00), replies()),
        Case5("v5-puback-for-qos2-flow", "35",
              publish5("culex/q2", b"x", qos=2, mid=8) + ack(0x40, 8) + ack(0x62, 8),
              replies(reply(PUBREC, 8, NO_SUBSCRIBERS), reply(PUBCOMP, 8, 0))),
        # 36. More unreleased QoS 2 PUBLISHes than our Receive Maximum [MQTT-3.3.4-7]: the
        # first 20 get PUBREC, the 21st DISCONNECT 0x93.
        Case5("v5-receive-maximum-exceeded", "36",
              b"".join(publish5("culex/rm", b"x", qos=2, mid=m)
                       for m in range(1, RECEIVE_MAXIMUM_DEFAULT + 2)),
              replies(*[reply(PUBREC, m, NO_SUBSCRIBERS)
                        for m in range(1, RECEIVE_MAXIMUM_DEFAULT + 1)],
                      reply(0xE0, None, RECEIVE_MAXIMUM_EXCEEDED), closes=True)),
        # 38. Property length past the packet, unknown ids, ids not valid in the packet:
        # malformed (§2.2.2.1, §2.2.2.2); a client's Subscription Identifier in PUBLISH is a
        # Protocol Error [MQTT-3.3.4-6].
        Case5("v5-publish-property-length-overrun", "38",
              packet(0x30, string("a/b") + b"\x20\x01\x01"), mal),
        Case5("v5-publish-property-length-huge", "38",
              packet(0x30, string("a/b") + b"\xff\xff\x7f" + b"x"), mal),
        Case5("v5-publish-property-id-0x00", "38", publish5("a/b", properties=b"\x02\x00\x00"),
              mal),
        Case5("v5-publish-property-id-0x7f", "38", publish5("a/b", properties=b"\x02\x7f\x00"),
              mal),
        Case5("v5-publish-session-expiry", "38",
              publish5("a/b", properties=props(p_u32(SESSION_EXPIRY_INTERVAL, 10))), mal),
        Case5("v5-subscribe-message-expiry", "38",
              subscribe5(1, [("a/b", 0)], properties=props(p_u32(MESSAGE_EXPIRY_INTERVAL, 1))),
              mal),
        Case5("v5-publish-subscription-identifier", "38",
              publish5("a/b", properties=props(p_varint(SUBSCRIPTION_IDENTIFIER, 1))), perr),
        Case5("v5-connect-property-id-0x7f", "38", connect5(properties=b"\x02\x7f\x00"),
              connect=None),
        Case5("v5-connect-topic-alias", "38", connect5(properties=props(p_u16(TOPIC_ALIAS, 1))),
              connect=None),
        # 39. A single-instance property twice: Protocol Error (§2.2.2.2); User Property may
        # repeat.
        Case5("v5-publish-message-expiry-twice", "39",
              publish5("a/b", properties=props(p_u32(MESSAGE_EXPIRY_INTERVAL, 1),
                                               p_u32(MESSAGE_EXPIRY_INTERVAL, 2))), perr),
        Case5("v5-publish-content-type-twice", "39",
              publish5("a/b", properties=props(p_str(CONTENT_TYPE, "a"),
                                               p_str(CONTENT_TYPE, "b"))), perr),
        Case5("v5-publish-payload-format-twice", "39",
              publish5("a/b", properties=props(p_byte(PAYLOAD_FORMAT_INDICATOR, 0),
                                               p_byte(PAYLOAD_FORMAT_INDICATOR, 0))), perr),
        Case5("v5-subscribe-subscription-identifier-twice", "39",
              subscribe5(1, [("a/b", 0)], properties=props(p_varint(SUBSCRIPTION_IDENTIFIER, 1),
                                                           p_varint(SUBSCRIPTION_IDENTIFIER, 2))),
              perr),
        Case5("v5-publish-user-property-twice", "39",
              publish5("a/b", b"x", qos=1, mid=4,
                       properties=props(p_user("k", "v"), p_user("k", "v"))),
              replies(reply(PUBACK, 4, NO_SUBSCRIBERS))),
        Case5("v5-connect-receive-maximum-twice", "39",
              connect5(properties=props(p_u16(RECEIVE_MAXIMUM, 5), p_u16(RECEIVE_MAXIMUM, 5))),
              connect=None),
        Case5("v5-connect-will-delay-twice", "39",
              connect5(will=(b"w/t", b"x"), will_properties=props(
                  p_u32(WILL_DELAY_INTERVAL, 1), p_u32(WILL_DELAY_INTERVAL, 1))), connect=None),
        # 40. Values that must not be 0 or are out of range: Protocol Error (§3.1.2.11.3-7,
        # §3.3.2.3.2, §3.8.2.1.2); in CONNECT, closed (policy).
        Case5("v5-connect-receive-maximum-0", "40",
              connect5(properties=props(p_u16(RECEIVE_MAXIMUM, 0))), connect=None),
        Case5("v5-connect-maximum-packet-size-0", "40",
              connect5(properties=props(p_u32(MAXIMUM_PACKET_SIZE, 0))), connect=None),
        Case5("v5-connect-request-problem-information-2", "40",
              connect5(properties=props(p_byte(REQUEST_PROBLEM_INFORMATION, 2))), connect=None),
        Case5("v5-connect-request-response-information-2", "40",
              connect5(properties=props(p_byte(REQUEST_RESPONSE_INFORMATION, 2))),
              connect=None),
        # Topic Alias Maximum 0 is legal: the client accepts no aliases (§3.1.2.11.5).
        Case5("v5-connect-topic-alias-maximum-0", "40",
              connect5(properties=props(p_u16(TOPIC_ALIAS_MAXIMUM, 0))), connack(0x00),
              connect=None),
        Case5("v5-subscribe-subscription-identifier-0", "40",
              subscribe5(1, [("a/b", 0)], properties=props(p_varint(SUBSCRIPTION_IDENTIFIER, 0))),
              perr),
        Case5("v5-publish-payload-format-2", "40",
              publish5("a/b", b"x", properties=props(p_byte(PAYLOAD_FORMAT_INDICATOR, 2))), perr),
        # 41. Payload Format Indicator 1 with a payload that is not UTF-8 (§3.3.2.3.2): QoS 0
        # has no ack to say it in, so DISCONNECT 0x99; QoS 1 / 2 get it in the ack. policy: a
        # will is not checked (§3.1.3.2.3 makes CONNACK 0x99 a MAY).
        Case5("v5-publish-qos0-payload-not-utf8", "41",
              publish5("a/b", b"\xff\xfe", properties=props(p_byte(PAYLOAD_FORMAT_INDICATOR, 1))),
              disconnect(PAYLOAD_FORMAT_INVALID)),
        Case5("v5-publish-qos1-payload-not-utf8", "41",
              publish5("a/b", b"a\xc0\xaf", qos=1, mid=12,
                       properties=props(p_byte(PAYLOAD_FORMAT_INDICATOR, 1))),
              replies(reply(PUBACK, 12, PAYLOAD_FORMAT_INVALID))),
        Case5("v5-publish-qos2-payload-not-utf8", "41",
              publish5("a/b", b"\xed\xa0\x80", qos=2, mid=13,
                       properties=props(p_byte(PAYLOAD_FORMAT_INDICATOR, 1))) + ack(0x62, 13),
              replies(reply(PUBREC, 13, PAYLOAD_FORMAT_INVALID), reply(PUBCOMP, 13, ID_NOT_FOUND))),
        Case5("v5-publish-qos1-payload-utf8", "41",
              publish5("a/b", "é".encode(), qos=1, mid=14,
                       properties=props(p_byte(PAYLOAD_FORMAT_INDICATOR, 1))),
              replies(reply(PUBACK, 14, NO_SUBSCRIBERS))),
        Case5("v5-connect-will-payload-not-utf8", "41",
              connect5(will=(b"w/t", b"\xff"),
                       will_properties=props(p_byte(PAYLOAD_FORMAT_INDICATOR, 1))),
              connack(0x00), connect=None),
        # 42. CVE-2021-41039: 100,000 User Properties (policy: 0x83 past 1024), and a
        # 65,535-byte property, which is within limits and accepted.
        Case5("v5-publish-100000-user-properties", "42",
              publish5("a/b", b"x", qos=1, properties=MANY_USER_PROPERTIES),
              disconnect(IMPLEMENTATION_ERROR)),
        Case5("v5-connect-100000-user-properties", "42",
              connect5(properties=MANY_USER_PROPERTIES), connect=None),
        Case5("v5-publish-64kb-content-type", "42",
              publish5("a/b", b"x", qos=1, mid=15,
                       properties=props(p_str(CONTENT_TYPE, "c" * 65535))),
              replies(reply(PUBACK, 15, NO_SUBSCRIBERS))),
        Case5("v5-publish-3mb-of-user-properties", "42",
              publish5("a/b", b"x", properties=props(*[p_user("k" * 1000, "v" * 1000)] * 1500)),
              disconnect(PACKET_TOO_LARGE)),
        # 43. Will Properties of the wrong kind (§3.1.3.2): malformed, closed (policy); Will
        # Delay above Session Expiry is legal (the will goes when the session ends).
        Case5("v5-connect-will-session-expiry", "43",
              connect5(will=(b"w/t", b"x"),
                       will_properties=props(p_u32(SESSION_EXPIRY_INTERVAL, 10))), connect=None),
        Case5("v5-connect-will-topic-alias", "43",
              connect5(will=(b"w/t", b"x"), will_properties=props(p_u16(TOPIC_ALIAS, 1))),
              connect=None),
        Case5("v5-connect-will-payload-format-2", "43",
              connect5(will=(b"w/t", b"x"),
                       will_properties=props(p_byte(PAYLOAD_FORMAT_INDICATOR, 2))), connect=None),
        Case5("v5-connect-will-delay-over-session-expiry", "43",
              connect5(will=(b"w/t", b"x"), properties=props(p_u32(SESSION_EXPIRY_INTERVAL, 1)),
                       will_properties=props(p_u32(WILL_DELAY_INTERVAL, 3600))),
              connack(0x00), connect=None),
        # 44. DISCONNECT setting a Session Expiry after CONNECT had 0 [MQTT-3.14.2-2]; AUTH
        # without an Authentication Method in CONNECT [MQTT-4.12.0-6]: Protocol Error.
        Case5("v5-disconnect-session-expiry-after-0", "44",
              disconnect5(0x00, props(p_u32(SESSION_EXPIRY_INTERVAL, 10))), perr),
        Case5("v5-auth-without-method-in-connect", "44",
              packet(0xF0, b"\x19" + props(p_str(AUTHENTICATION_METHOD, "SCRAM-SHA-1"))), perr),
        # 45. Subscription Options: reserved bits are malformed [MQTT-3.8.3-5]; Retain Handling
        # 3 and QoS 3 are Protocol Errors (§3.8.3.1).
        Case5("v5-subscribe-options-reserved-0xc0", "45", subscribe5(1, [("a/b", 0xC0)]), mal),
        Case5("v5-subscribe-options-reserved-0x40", "45", subscribe5(1, [("a/b", 0x41)]), mal),
        Case5("v5-subscribe-retain-handling-3", "45", subscribe5(1, [("a/b", 0x30)]), perr),
        Case5("v5-subscribe-qos-3", "45", subscribe5(1, [("a/b", 0x03)]), perr),
        # 48. Pipelined valid MQTT 5 packets, then a bad one: all answered in order, then 0x81.
        Case5("v5-pipelined-then-malformed", "48",
              publish5("culex/p", b"1", qos=1, mid=1) + PINGREQ
              + subscribe5(2, [("culex/p", 0x2E)]) + unsubscribe5(3, ["culex/p"])
              + publish5("culex/p", b"2", qos=2, mid=4) + ack(0x62, 4) + b"\x30\x00",
              replies(reply(PUBACK, 1, NO_SUBSCRIBERS), reply(0xD0, None),
                      reply(SUBACK, 2, 2), reply(UNSUBACK, 3, 0),
                      reply(PUBREC, 4, NO_SUBSCRIBERS), reply(PUBCOMP, 4, 0),
                      reply(0xE0, None, MALFORMED), closes=True)),
    ]
    return rows


CASES: list[Case] = _cases()

_names = [case.name for case in CASES]
assert len(_names) == len(set(_names)), "duplicate case names"
