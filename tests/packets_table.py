"""Golden table of hostile MQTT 3.1 / 3.1.1 inputs and the exact reaction each one must get.

Every row comes from /work/shared/BAD_INPUTS.md (the item number is in `Case.item`) and is sent
over a real socket by tests/robustness/test_bad_input.py three ways: whole, one byte per send, and
followed by trailing bytes (the start of another packet). A row is: optionally a valid CONNECT
(`Case.connect`, whose CONNACK is read first), then `Case.data`, then `Case.expect`:

- `CLOSE`: the broker closes the connection without sending anything (a v3 protocol violation,
  MQTT 3.1.1 §4.8: "close the Network Connection"); the broker logs one "protocol violation" line.
- `connack(0x01)` / `connack(0x02)`: exactly that CONNACK, then the connection is closed
  ([MQTT-3.2.2-5]).
- `reply(b"...")`: exactly these bytes and the connection stays open (checked afterwards with a
  PINGREQ that must get exactly a PINGRESP, which also proves nothing else was sent).

Items that need a broker setting or a flow rather than one input (11 max_packet_size, 29 deep
topics, 46 slowloris, 47 large input, 48 pipelining, F9 a client vanishing mid-packet, wills on
violations) are dedicated tests in tests/robustness/test_bad_input.py.

Policies this table decides where the spec leaves a choice (marked "policy" at their rows):

- Non-minimal Remaining Length (`80 00`): malformed (MQTT 5 [MQTT-1.5.5-1] makes it a MUST; 3.1.1
  is silent, and accepting it invites two parsers to disagree about framing).
- The "SHOULD NOT" code points of MQTT 1.5.3 (U+0001-U+001F, U+007F-U+009F, noncharacters such as
  U+FFFF) are rejected like ill-formed UTF-8, as Mosquitto does (mosquitto_validate_utf8).
- An invalid or empty filter in SUBSCRIBE gets 0x80 in its SUBACK slot (the Culex contract); in
  UNSUBSCRIBE, which has no failure code in 3.1.1, it is a protocol violation and closes.
- A client id or username with `#`, `+`, `/`, `%` or 65,535 bytes long is accepted (3.1.1 allows
  ids longer than 23 bytes; they must never reach ACL substitution unescaped).
- PUBACK and PUBCOMP for an unknown packet id are ignored; PUBREL for an unknown id gets PUBCOMP
  (MQTT-4.3.3 makes PUBREL idempotent). (PUBREC for an unknown id is left open: Mosquitto answers
  it with a PUBREL, which is also defensible.)
- A protocol name other than "MQTT" / "MQIsdp" closes without a CONNACK ([MQTT-3.1.2-1] allows it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

# --- encoders (hand-written on purpose: the table must not share code with the broker's codec) ---


def varint(value: int) -> bytes:
    """MQTT Remaining Length encoding (minimal form)."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def string(data: bytes | str) -> bytes:
    """A length-prefixed MQTT string; `data` is sent as-is, so it may be invalid UTF-8."""
    raw = data.encode() if isinstance(data, str) else data
    return len(raw).to_bytes(2, "big") + raw


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + varint(len(body)) + body


def connect(
    client_id: bytes | str = b"culex-bad-connect",
    *,
    name: bytes = b"MQTT",
    level: int = 4,
    clean: bool = True,
    keepalive: int = 60,
    will: tuple[bytes, bytes] | None = None,
    will_qos: int = 0,
    will_retain: bool = False,
    username: bytes | None = None,
    password: bytes | None = None,
    flags: int | None = None,
    first_byte: int = 0x10,
    extra: bytes = b"",
    properties: bytes = b"",
    will_properties: bytes = b"",
) -> bytes:
    """A CONNECT; `flags` overrides the computed connect flags (the payload stays as given).

    `properties` and `will_properties` are MQTT 5 property blocks (Property Length included),
    placed where §3.1.2.11 and §3.1.3.2 put them; empty for 3.1 / 3.1.1, which have none.
    """
    computed = (
        (0x02 if clean else 0)
        | (0x04 if will is not None else 0)
        | (will_qos << 3)
        | (0x20 if will_retain else 0)
        | (0x40 if password is not None else 0)
        | (0x80 if username is not None else 0)
    )
    payload = properties + string(client_id)
    if will is not None:
        payload += will_properties + string(will[0]) + string(will[1])
    if username is not None:
        payload += string(username)
    if password is not None:
        payload += string(password)
    head = string(name) + bytes([level, computed if flags is None else flags])
    return packet(first_byte, head + keepalive.to_bytes(2, "big") + payload + extra)


def connect_31(client_id: bytes | str = b"culex-bad-connect", **kwargs: Any) -> bytes:
    return connect(client_id, name=b"MQIsdp", level=3, **kwargs)


def publish(
    topic: bytes | str,
    payload: bytes = b"",
    *,
    qos: int = 0,
    mid: int = 1,
    dup: bool = False,
    retain: bool = False,
    properties: bytes = b"",
) -> bytes:
    """A PUBLISH; `properties` is an MQTT 5 property block (empty for 3.1.1, which has none)."""
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = string(topic) + (mid.to_bytes(2, "big") if qos else b"") + properties + payload
    return packet(first, body)


def subscribe(
    mid: int,
    filters: list[tuple[bytes | str, int]],
    first_byte: int = 0x82,
    properties: bytes = b"",
) -> bytes:
    """A SUBSCRIBE; each filter's int is its QoS byte (3.1.1) or Subscription Options (MQTT 5),
    and `properties` an MQTT 5 property block."""
    body = mid.to_bytes(2, "big") + properties
    return packet(first_byte, body + b"".join(string(f) + bytes([q]) for f, q in filters))


def unsubscribe(
    mid: int, filters: list[bytes | str], first_byte: int = 0xA2, properties: bytes = b""
) -> bytes:
    body = mid.to_bytes(2, "big") + properties + b"".join(string(f) for f in filters)
    return packet(first_byte, body)


def suback(mid: int, codes: list[int]) -> bytes:
    return packet(0x90, mid.to_bytes(2, "big") + bytes(codes))


def ack(first_byte: int, mid: int) -> bytes:
    """PUBACK (0x40), PUBREC (0x50), PUBREL (0x62) or PUBCOMP (0x70)."""
    return packet(first_byte, mid.to_bytes(2, "big"))


PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
DISCONNECT = b"\xe0\x00"
CONNACK_ACCEPTED = b"\x20\x02\x00\x00"

# --- reactions ---


def fixed_header(buffer: bytes | bytearray) -> tuple[int, int] | None:
    """(fixed header size, remaining length) of the first packet, or None while incomplete."""
    length, shift = 0, 0
    for i in range(1, min(len(buffer), 5)):
        length |= (buffer[i] & 0x7F) << shift
        shift += 7
        if not buffer[i] & 0x80:
            return 1 + i, length
    return None


def split_packets(data: bytes) -> list[bytes]:
    """`data` cut into whole packets; a trailing partial packet is kept as the last item."""
    out = []
    while data:
        header = fixed_header(data)
        size = len(data) if header is None else header[0] + header[1]
        out.append(data[:size])
        data = data[size:]
    return out


@dataclass(frozen=True)
class Reaction:
    reply: bytes  # exactly what the broker sends back
    closes: bool  # the broker then closes the connection
    violation: bool  # the broker logs one "protocol violation" line for it

    @property
    def packet_count(self) -> int:
        """How many packets the broker sends before the close or the PINGREQ check."""
        return len(split_packets(self.reply))

    def matches(self, got: bytes) -> bool:
        return got == self.reply

    def describe(self) -> str:
        end = "then close" if self.closes else "stays open"
        return f"{self.reply.hex(' ') or 'nothing'}, {end}"


CLOSE = Reaction(b"", closes=True, violation=True)


def connack(code: int) -> Reaction:
    """CONNACK with a return code; a refusal (non-zero) is followed by a close."""
    return Reaction(bytes([0x20, 0x02, 0x00, code]), closes=code != 0, violation=False)


def reply(data: bytes) -> Reaction:
    return Reaction(data, closes=False, violation=False)


# --- the table ---

# The valid CONNECTs sent before a row's data. Clean session, so nothing outlives a case.
CLIENT_ID = "culex-bad-input"
CONNECT_311 = connect(CLIENT_ID)
CONNECT_31 = connect_31(CLIENT_ID)

# Trailing bytes for the third feeding mode. After a closing case: a complete PINGREQ (which must
# not be answered: nothing after the bad packet is processed) and the start of a PUBLISH. After a
# case that keeps the connection open: the first byte of a PINGREQ, completed later by the test,
# which proves the partial packet was kept and framed correctly.
TRAILING_AFTER_CLOSE = PINGREQ + b"\x30\x0d\x00\x0bcul"
TRAILING_OPEN = b"\xc0"
TRAILING_OPEN_REST = b"\x00"


@dataclass(frozen=True)
class Case:
    name: str
    item: str  # BAD_INPUTS.md item
    data: bytes
    expect: Reaction = CLOSE
    connect: bytes | None = CONNECT_311  # None: `data` is the first thing on the connection
    # Why Mosquitto 2.0 (CULEX_TEST_AGAINST=mosquitto) reacts differently, if it does: the test is
    # skipped there, in `mosquitto_modes` only when given (default: every feeding mode).
    mosquitto: str = ""
    mosquitto_modes: tuple[str, ...] = ()

    @property
    def log_client_id(self) -> str | None:
        """The id the "protocol violation" line must name, or None when either answer is right.

        After a valid CONNECT it is that client's id; when the first packet is not a CONNECT it is
        "-"; for a malformed CONNECT the broker may or may not have read the id yet.
        """
        if self.connect is not None:
            return CLIENT_ID
        return None if self.data[0] >> 4 == 1 else "-"


OVERLONG = b"\xc0\xaf"  # "/" encoded in two bytes
SURROGATE = b"\xed\xa0\x80"  # U+D800
LONE_FF = b"\xff"
TRUNCATED = b"\xe2\x82"  # the first two bytes of U+20AC, at the end of the string
BAD_UTF8 = {
    "overlong": b"a" + OVERLONG + b"b",
    "surrogate": b"a" + SURROGATE + b"b",
    "lone-ff": b"a" + LONE_FF + b"b",
    "truncated": b"a" + TRUNCATED,
}
# U+0000 is MUST NOT [MQTT-1.5.3-2]; the rest are SHOULD NOT and rejected by policy.
NUL = b"a\x00b"
DISCOURAGED = {
    "u0001": b"a\x01b",
    "u001f": b"a\x1fb",
    "u007f": b"a\x7fb",
    "u0085": b"a\xc2\x85b",
    "ufffe": b"a\xef\xbf\xbeb",
    "uffff": b"a\xef\xbf\xbfb",
}

CONNECT_BODY = CONNECT_311[2:]  # the valid CONNECT without its fixed header

# Where Mosquitto 2.0.11 (the reference run) reacts differently, and why.
M_NON_MINIMAL = (
    "Mosquitto accepts a non-minimal Remaining Length; 3.1.1 is silent, MQTT 5 forbids it "
    "[MQTT-1.5.5-1] and Culex rejects it in every version (BAD_INPUTS #3)"
)
M_FLAGS = "Mosquitto ignores reserved fixed-header flags of this type [MQTT-2.2.2-2]"
M_SIZE = (
    "Mosquitto ignores extra bytes in this v3 packet, whose Remaining Length 3.1.1 fixes "
    "(0 for PINGREQ, 2 for PUBACK/PUBREC/PUBREL/PUBCOMP)"
)
M_SERVER_ONLY = "Mosquitto silently ignores SUBACK, UNSUBACK and PINGRESP sent by a client"
M_SUBACK = (
    "Mosquitto closes the connection on an invalid filter (which [MQTT-4.8.0-1] also allows); "
    "the Culex contract answers 0x80 in that filter's SUBACK slot"
)


def _string_rows(kind: str, item: str, bad: bytes) -> list[Case]:
    """One row per place a client sends a UTF-8 string, each carrying `bad`."""
    return [
        Case(f"publish-topic-{kind}", item, publish(bad, b"x")),
        Case(f"publish-qos1-topic-{kind}", item, publish(bad, b"x", qos=1, mid=3)),
        Case(f"subscribe-filter-{kind}", item, subscribe(1, [(bad, 0)])),
        Case(f"unsubscribe-filter-{kind}", item, unsubscribe(1, [bad])),
        Case(f"connect-client-id-{kind}", item, connect(bad), connect=None),
        Case(f"connect-username-{kind}", item, connect(username=bad), connect=None),
        Case(f"connect-will-topic-{kind}", item, connect(will=(bad, b"x")), connect=None),
    ]


def _cases() -> list[Case]:
    rows: list[Case] = [
        # 1. Remaining Length with a 5th byte: malformed after the 4th continuation byte.
        Case("rl-5-bytes-publish", "1", b"\x30\xff\xff\xff\xff\x01"),
        Case("rl-5-bytes-pingreq", "1", b"\xc0\x80\x80\x80\x80\x01"),
        Case("rl-5-bytes-first-connect", "1", b"\x10\xff\xff\xff\xff\x01", connect=None),
        # 2. A 256 MB claim is refused from the header (max_packet_size, and the pre-CONNECT cap).
        Case("rl-256mb-publish", "2", b"\x30\xff\xff\xff\x7f\x00\x03a/b"),
        Case("rl-256mb-first-connect", "2", b"\x10\xff\xff\xff\x7f\x00\x04MQTT", connect=None),
        # 3. policy: non-minimal Remaining Length is malformed.
        Case("rl-non-minimal-pingreq", "3", b"\xc0\x80\x00", mosquitto=M_NON_MINIMAL),
        Case("rl-non-minimal-publish", "3", b"\x30\x85\x00\x00\x03a/b",
             mosquitto=M_NON_MINIMAL),
        Case("rl-non-minimal-first-connect", "3",
             b"\x10" + bytes([len(CONNECT_BODY) | 0x80, 0x00]) + CONNECT_BODY, connect=None,
             mosquitto=M_NON_MINIMAL),
        # 4. Reserved type 0, and AUTH (15) which does not exist in 3.1.1.
        Case("type-0", "4", b"\x00\x00",
             mosquitto="Mosquitto takes command byte 0x00 for 'no packet started', so a type-0 "
             "packet split after its first byte is never framed", mosquitto_modes=("bytewise",)),
        Case("type-15-auth", "4", b"\xf0\x00"),
        Case("type-15-auth-first", "4", b"\xf0\x00", connect=None),
        # 5. Server-only packet types sent by a client.
        Case("client-sends-connack", "5", b"\x20\x02\x00\x00"),
        Case("client-sends-suback", "5", suback(1, [0]), mosquitto=M_SERVER_ONLY),
        Case("client-sends-unsuback", "5", b"\xb0\x02\x00\x01", mosquitto=M_SERVER_ONLY),
        Case("client-sends-pingresp", "5", PINGRESP, mosquitto=M_SERVER_ONLY),
        # CVE-2021-28166's packet sequence, level 4 instead of 5 (the literal v5 bytes join the
        # MQTT 5 rows): a CONNECT that is accepted, then a CONNACK type with flags 9.
        Case("cve-2021-28166-v311", "5",
             connect(b"", keepalive=60) + b"\x29\x02\x00\x01\xe0\x00",
             Reaction(CONNACK_ACCEPTED, closes=True, violation=True), connect=None),
        # 6. Wrong fixed-header flags [MQTT-2.2.2-2].
        Case("connect-header-flags-1", "6", b"\x11" + CONNECT_BODY, connect=None),
        Case("connect-header-flags-f", "6", b"\x1f" + CONNECT_BODY, connect=None),
        Case("subscribe-header-flags-0000", "6", subscribe(1, [("a/b", 0)], first_byte=0x80)),
        Case("subscribe-header-flags-0011", "6", subscribe(1, [("a/b", 0)], first_byte=0x83)),
        Case("unsubscribe-header-flags-0000", "6", unsubscribe(1, ["a/b"], first_byte=0xA0)),
        Case("pubrel-header-flags-0000", "6", ack(0x60, 1)),
        Case("pubrel-header-flags-0011", "6", ack(0x63, 1)),
        Case("publish-qos-3", "6", packet(0x36, string("a/b") + b"\x00\x01x")),
        Case("publish-dup-qos-0", "6", publish("a/b", b"x", dup=True),
             mosquitto="Mosquitto 2.0.11 accepts DUP=1 on a QoS 0 PUBLISH [MQTT-3.3.1-2]"),
        Case("pingreq-header-flags", "6", b"\xc1\x00", mosquitto=M_FLAGS),
        Case("disconnect-header-flags", "6", b"\xe2\x00"),
        Case("puback-header-flags", "6", ack(0x41, 1), mosquitto=M_FLAGS),
        # 7. Fixed-size packets of the wrong size.
        Case("pingreq-rl-1", "7", b"\xc0\x01\x00", mosquitto=M_SIZE),
        Case("disconnect-rl-1", "7", b"\xe0\x01\x00"),
        Case("puback-rl-3", "7", b"\x40\x03\x00\x01\x00", mosquitto=M_SIZE),
        Case("puback-rl-1", "7", b"\x40\x01\x00"),
        Case("puback-rl-0", "7", b"\x40\x00"),
        Case("pubrec-rl-3", "7", b"\x50\x03\x00\x01\x00", mosquitto=M_SIZE),
        Case("pubrel-rl-3", "7", b"\x62\x03\x00\x01\x00", mosquitto=M_SIZE),
        Case("pubrel-rl-0", "7", b"\x62\x00"),
        Case("pubcomp-rl-3", "7", b"\x70\x03\x00\x01\x00", mosquitto=M_SIZE),
        # 8. Bytes left over inside the Remaining Length.
        Case("subscribe-trailing-byte", "8",
             packet(0x82, b"\x00\x01" + string("a/b") + b"\x00\x00")),
        Case("unsubscribe-trailing-byte", "8", packet(0xA2, b"\x00\x01" + string("a/b") + b"\x00")),
        Case("connect-trailing-byte", "8", connect(extra=b"\x00"), connect=None),
        Case("connect-trailing-bytes-after-password", "8",
             connect(username=b"u", password=b"p", extra=b"\x00\x01z"), connect=None),
        # 9. Truncation at every field boundary (the packet is framed; its fields are short).
        Case("publish-rl-only", "9", b"\x30\x00"),
        Case("publish-half-topic-length", "9", b"\x30\x01\x00"),
        Case("publish-qos1-topic-no-mid", "9", packet(0x32, string("a/b"))),
        Case("publish-qos1-half-mid", "9", packet(0x32, string("a/b") + b"\x00")),
        Case("publish-qos2-topic-no-mid", "9", packet(0x34, string("a/b"))),
        Case("subscribe-rl-only", "9", b"\x82\x00"),
        Case("subscribe-half-mid", "9", b"\x82\x01\x00"),
        Case("subscribe-half-filter-length", "9", b"\x82\x03\x00\x01\x00"),
        Case("subscribe-filter-no-qos", "9", packet(0x82, b"\x00\x01" + string("a/b"))),
        Case("subscribe-second-filter-no-qos", "9",
             packet(0x82, b"\x00\x01" + string("a/b") + b"\x00" + string("c/d"))),
        Case("unsubscribe-rl-only", "9", b"\xa2\x00"),
        Case("unsubscribe-half-filter-length", "9", b"\xa2\x03\x00\x01\x00"),
        Case("connect-rl-only", "9", b"\x10\x00", connect=None),
        Case("connect-name-length-only", "9", packet(0x10, b"\x00\x04"), connect=None),
        Case("connect-no-level", "9", packet(0x10, string("MQTT")), connect=None),
        Case("connect-no-flags", "9", packet(0x10, string("MQTT") + b"\x04"), connect=None),
        Case("connect-no-keepalive", "9", packet(0x10, string("MQTT") + b"\x04\x02"),
             connect=None),
        Case("connect-half-keepalive", "9", packet(0x10, string("MQTT") + b"\x04\x02\x00"),
             connect=None),
        Case("connect-no-client-id", "9", packet(0x10, string("MQTT") + b"\x04\x02\x00\x3c"),
             connect=None),
        Case("connect-31-no-client-id", "9", packet(0x10, string("MQIsdp") + b"\x03\x02\x00\x3c"),
             connect=None),
        Case("connect-will-flag-no-will-topic", "9", connect(flags=0x06), connect=None),
        Case("connect-will-flag-no-will-message", "9",
             connect(flags=0x06, extra=string("w/t")), connect=None),
        Case("connect-password-flag-no-password", "9", connect(username=b"u", flags=0xC2),
             connect=None),
        # 10. A string length larger than what is left of the packet.
        Case("publish-topic-length-overrun", "10", packet(0x30, b"\x00\x09a/b")),
        Case("publish-topic-length-ffff", "10", packet(0x30, b"\xff\xffa/b")),
        Case("subscribe-filter-length-overrun", "10", packet(0x82, b"\x00\x01\x00\x20a/b\x00")),
        Case("unsubscribe-filter-length-overrun", "10", packet(0xA2, b"\x00\x01\x00\x20a/b")),
        Case("connect-protocol-name-length-overrun", "10",
             packet(0x10, b"\xff\xffMQTT\x04\x02\x00\x3c\x00\x00"), connect=None),
        Case("connect-client-id-length-overrun", "10",
             packet(0x10, string("MQTT") + b"\x04\x02\x00\x3c\x00\x20abc"), connect=None),
        Case("connect-will-topic-length-overrun", "10",
             packet(0x10, string("MQTT") + b"\x04\x06\x00\x3c" + string("id") + b"\x00\x40w"),
             connect=None),
        Case("connect-username-length-overrun", "10",
             packet(0x10, string("MQTT") + b"\x04\x82\x00\x3c" + string("id") + b"\x01\x00u"),
             connect=None),
        Case("connect-password-length-overrun", "10",
             packet(0x10, string("MQTT") + b"\x04\xc2\x00\x3c" + string("id") + string("u")
                    + b"\x00\x10p"),
             connect=None),
        # 12. The first packet is not CONNECT [MQTT-3.1.0-1]: closed without a reply.
        Case("first-publish", "12", publish("a/b", b"x"), connect=None),
        Case("first-publish-qos1", "12", publish("a/b", b"x", qos=1), connect=None),
        Case("first-subscribe", "12", subscribe(1, [("a/b", 0)]), connect=None),
        Case("first-unsubscribe", "12", unsubscribe(1, ["a/b"]), connect=None),
        Case("first-pingreq", "12", PINGREQ, connect=None),
        Case("first-disconnect", "12", DISCONNECT, connect=None),
        Case("first-puback", "12", ack(0x40, 1), connect=None),
        Case("first-pubrel", "12", ack(0x62, 1), connect=None),
        Case("first-type-0", "12", b"\x00\x00", connect=None),
        Case("first-publish-256mb-claim", "12", b"\x30\xff\xff\xff\x7f\x00", connect=None),
        # 13. A second CONNECT on one connection [MQTT-3.1.0-2], valid or not.
        Case("second-connect", "13", CONNECT_311),
        Case("second-connect-other-id", "13", connect("culex-bad-input-2")),
        Case("second-connect-31", "13", CONNECT_31),
        Case("second-connect-level-6", "13", connect(level=6)),
        Case("second-connect-after-connect-31", "13", CONNECT_311, connect=CONNECT_31),
        # 14. Protocol name and level that do not match, or an unknown level: CONNACK 0x01.
        Case("connect-mqtt-level-3", "14", connect(level=3), connack(0x01), connect=None),
        Case("connect-mqisdp-level-4", "14", connect(name=b"MQIsdp", level=4), connack(0x01),
             connect=None),
        Case("connect-mqtt-level-6", "14", connect(level=6), connack(0x01), connect=None),
        Case("connect-mqtt-level-255", "14", connect(level=255), connack(0x01), connect=None),
        Case("connect-mqtt-level-0", "14", connect(level=0), connack(0x01), connect=None),
        Case("connect-mqisdp-level-6", "14", connect(name=b"MQIsdp", level=6), connack(0x01),
             connect=None),
        # policy: an unknown protocol name closes without a CONNACK [MQTT-3.1.2-1].
        Case("connect-unknown-protocol-name", "14", connect(name=b"MQTX"), connect=None),
        Case("connect-empty-protocol-name", "14", connect(name=b""), connect=None),
        # 15. The reserved CONNECT flag [MQTT-3.1.2-3].
        Case("connect-reserved-flag", "15", connect(flags=0x03), connect=None),
        # 16. Will QoS / Will Retain without the Will flag; Will QoS 3.
        Case("connect-will-qos-without-will", "16", connect(flags=0x0A), connect=None),
        Case("connect-will-retain-without-will", "16", connect(flags=0x22), connect=None),
        Case("connect-will-qos-3", "16", connect(will=(b"w/t", b"x"), will_qos=3), connect=None),
        # 17. Username flag without the username; password without username (3.1.1 and 3.1).
        Case("connect-username-flag-no-username", "17", connect(flags=0x82), connect=None),
        Case("connect-password-without-username", "17", connect(password=b"p"), connect=None),
        Case("connect-31-username-flag-no-username", "17", connect_31(flags=0x82), connect=None,
             mosquitto="Mosquitto deliberately ignores a username flag without a username from "
             "3.1 clients (old client libraries sent it)"),
        Case("connect-31-password-without-username", "17", connect_31(password=b"p"),
             connect=None),
        # 18. Empty client ids [MQTT-3.1.3-7, -8]; 3.1 has no generated ids.
        Case("connect-empty-id-persistent", "18", connect(b"", clean=False), connack(0x02),
             connect=None),
        Case("connect-empty-id-clean", "18", connect(b""), connack(0x00), connect=None),
        Case("connect-31-empty-id-clean", "18", connect_31(b""), connack(0x02), connect=None),
        Case("connect-31-empty-id-persistent", "18", connect_31(b"", clean=False),
             connack(0x02), connect=None),
        # 19. policy: wildcards, "/" and "%" in ids and usernames, and 65,535-byte ones, accepted.
        Case("connect-client-id-wildcards", "19", connect(b"c#+/%id"), connack(0x00),
             connect=None),
        Case("connect-username-wildcards", "19", connect(username=b"u#+/%c"), connack(0x00),
             connect=None),
        # Client ids are capped by max_client_id_length (default 1024): identifier rejected.
        Case("connect-client-id-1024-bytes", "19", connect(b"i" * 1024), connack(0x00),
             connect=None),
        Case("connect-client-id-65535-bytes", "19", connect(b"i" * 65535), connack(0x02),
             connect=None),
        Case("connect-username-65535-bytes", "19", connect(username=b"u" * 65535),
             connack(0x00), connect=None),
        # 20. Extreme keep-alives are accepted (max_keepalive defaults to 65535).
        Case("connect-keepalive-65535", "20", connect(keepalive=65535), connack(0x00),
             connect=None),
        Case("connect-keepalive-0", "20", connect(keepalive=0), connack(0x00), connect=None),
    ]
    # 21. Ill-formed UTF-8 [MQTT-1.5.3-1]; 22. U+0000 [MQTT-1.5.3-2] and policy for SHOULD NOTs.
    for kind, bad in BAD_UTF8.items():
        rows += _string_rows(kind, "21", bad)
    rows += _string_rows("nul", "22", NUL)
    for kind, bad in DISCOURAGED.items():
        rows.append(Case(f"publish-topic-{kind}", "22", publish(bad, b"x")))
        rows.append(Case(f"subscribe-filter-{kind}", "22", subscribe(1, [(bad, 0)])))
    rows.append(Case("connect-client-id-u0001", "22", connect(b"id\x01"), connect=None))
    rows += [
        # 23. Wildcards in a PUBLISH topic name [MQTT-3.3.2-2].
        Case("publish-topic-plus", "23", publish("a/+", b"x")),
        Case("publish-topic-hash", "23", publish("a/#", b"x")),
        Case("publish-topic-hash-alone", "23", publish("#", b"x")),
        Case("publish-topic-plus-inside-level", "23", publish("a+b", b"x")),
        Case("publish-qos1-topic-plus", "23", publish("+", b"x", qos=1)),
        Case("publish-qos2-topic-hash", "23", publish("a/#", b"x", qos=2)),
        # 24. A zero-length topic name [MQTT-4.7.3-1].
        Case("publish-empty-topic", "24", publish("", b"x")),
        Case("publish-qos1-empty-topic", "24", publish("", b"x", qos=1)),
        Case("publish-empty-topic-empty-payload", "24", b"\x30\x02\x00\x00"),
        # 26. policy: misplaced wildcards get SUBACK 0x80 for that filter; the others are granted.
        Case("subscribe-filter-a-hash-b", "26", subscribe(1, [("a/#/b", 0)]),
             reply(suback(1, [0x80])), mosquitto=M_SUBACK),
        Case("subscribe-filter-a-hash", "26", subscribe(2, [("a#", 1)]),
             reply(suback(2, [0x80])), mosquitto=M_SUBACK),
        Case("subscribe-filter-hash-a", "26", subscribe(3, [("#a", 2)]),
             reply(suback(3, [0x80])), mosquitto=M_SUBACK),
        Case("subscribe-filter-b-plus", "26", subscribe(4, [("a/b+", 0)]),
             reply(suback(4, [0x80])), mosquitto=M_SUBACK),
        Case("subscribe-filter-plus-a", "26", subscribe(5, [("+a", 1)]),
             reply(suback(5, [0x80])), mosquitto=M_SUBACK),
        Case("subscribe-filter-mixed", "26",
             # "x/#", not "#": a "#" subscription would also get the watcher's ticks, racing the
             # PINGRESP that proves nothing else was sent.
             subscribe(6, [("a/b", 1), ("a/#/b", 0), ("+/c", 2), ("+a", 1), ("x/#", 0)]),
             reply(suback(6, [0x01, 0x80, 0x02, 0x80, 0x00])), mosquitto=M_SUBACK),
        # 27. An empty filter (0x80 in SUBACK; a violation in UNSUBSCRIBE), and no filters at all.
        Case("subscribe-filter-empty", "27", subscribe(7, [("", 0)]),
             reply(suback(7, [0x80])), mosquitto=M_SUBACK),
        Case("subscribe-no-filters", "27", b"\x82\x02\x00\x01"),
        Case("unsubscribe-no-filters", "27", b"\xa2\x02\x00\x01"),
        Case("unsubscribe-filter-empty", "27", unsubscribe(1, [""])),
        Case("unsubscribe-filter-a-hash-b", "26", unsubscribe(1, ["a/#/b"])),
        # 30. "$" topics: a client may publish there (acked, never crashing), and subscribe.
        Case("publish-qos1-dollar-foo", "30", publish("$foo", b"x", qos=1, mid=9),
             reply(ack(0x40, 9))),
        Case("publish-qos1-dollar-sys", "30", publish("$SYS/culex/x", b"x", qos=1, mid=10),
             reply(ack(0x40, 10))),
        Case("publish-dollar-only", "30", publish("$", b"x") + publish("$", b"x", qos=1, mid=11),
             reply(ack(0x40, 11))),
        Case("subscribe-dollar-foo", "30", subscribe(12, [("$foo/#", 1)]),
             reply(suback(12, [0x01]))),
        # 32. Packet id 0 [MQTT-2.3.1-1].
        Case("publish-qos1-mid-0", "32", publish("a/b", b"x", qos=1, mid=0)),
        Case("publish-qos2-mid-0", "32", publish("a/b", b"x", qos=2, mid=0)),
        Case("subscribe-mid-0", "32", subscribe(0, [("a/b", 0)])),
        Case("unsubscribe-mid-0", "32", unsubscribe(0, ["a/b"])),
        Case("pubrel-mid-0", "32", ack(0x62, 0)),
        # 33. A QoS 2 PUBLISH re-sent (DUP=1) before PUBREL: PUBREC each time, one PUBCOMP.
        Case("publish-qos2-same-mid-twice", "33",
             publish("culex/q2", b"x", qos=2, mid=5) + publish("culex/q2", b"x", qos=2, mid=5,
                                                                dup=True) + ack(0x62, 5),
             reply(ack(0x50, 5) * 2 + ack(0x70, 5))),
        Case("publish-qos2-same-mid-thrice", "33",
             publish("culex/q2", b"x", qos=2, mid=5)
             + publish("culex/q2", b"x", qos=2, mid=5, dup=True) * 2 + ack(0x62, 5),
             reply(ack(0x50, 5) * 3 + ack(0x70, 5)),
             mosquitto="Mosquitto 2.0.11 closes the connection on the third copy of an "
             "unreleased QoS 2 PUBLISH, though 3.1.1 lets a client re-send it"),
        # 34. The id reused with different content before PUBREL: acked the same way.
        Case("publish-qos2-reuse-mid-new-content", "34",
             publish("culex/q2", b"one", qos=2, mid=6) + publish("culex/q2", b"two", qos=2, mid=6)
             + ack(0x62, 6),
             reply(ack(0x50, 6) * 2 + ack(0x70, 6))),
        # 35. policy: acks for unknown ids; PUBREL gets PUBCOMP, the others are ignored.
        Case("pubrel-unknown-mid", "35", ack(0x62, 7), reply(ack(0x70, 7))),
        Case("puback-unknown-mid", "35", ack(0x40, 7), reply(b"")),
        Case("pubcomp-unknown-mid", "35", ack(0x70, 7), reply(b"")),
        Case("puback-for-qos2-flow", "35",
             publish("culex/q2", b"x", qos=2, mid=8) + ack(0x40, 8) + ack(0x62, 8),
             reply(ack(0x50, 8) + ack(0x70, 8))),
    ]
    # The same violations after an MQTT 3.1 ("MQIsdp", level 3) CONNECT. (SUBACK 0x80 rows are
    # not repeated: 3.1's SUBACK has no failure code.)
    rows += [
        replace(case, name=f"{case.name}-v31", connect=CONNECT_31)
        for case in rows
        if case.name in V31_REPEATS
    ]
    return rows


# Not repeated: SUBSCRIBE flags and SUBSCRIBE / UNSUBSCRIBE without filters, on which the 3.1
# spec is silent (Mosquitto accepts both from 3.1 clients).
V31_REPEATS = {
    "rl-5-bytes-publish", "type-0", "type-15-auth", "client-sends-connack", "publish-qos-3",
    "disconnect-rl-1", "subscribe-trailing-byte", "publish-rl-only", "publish-qos1-topic-no-mid",
    "publish-topic-length-overrun", "second-connect", "publish-topic-overlong",
    "publish-topic-nul", "subscribe-filter-surrogate", "publish-topic-plus", "publish-empty-topic",
    "publish-qos1-mid-0", "pubrel-unknown-mid", "publish-qos2-same-mid-twice",
}
CASES: list[Case] = _cases()

_names = [case.name for case in CASES]
assert len(_names) == len(set(_names)), "duplicate case names"
