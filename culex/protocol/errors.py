"""Errors raised by the codec, each naming who is at fault and the spec rule it enforces.

    MQTTError                 the peer broke the protocol; the connection must close
    ├── MalformedPacket       bytes that cannot be a valid packet (v5 reason 0x81)
    │   └── PacketTooLarge    Remaining Length above our limit, known from the header (0x95)
    ├── ProtocolError         a well-formed packet that is illegal here (v5 reason 0x82)
    └── UnacceptableProtocol  CONNECT names a protocol or level we do not speak (CONNACK 0x01)

Nothing else may escape the decoder: a fuzz/property test feeds it arbitrary bytes and checks that.
"""

from __future__ import annotations


class MQTTError(Exception):
    """The peer sent something the spec forbids. `rule` names the normative statement."""

    reason_code = 0x80

    def __init__(self, message: str, rule: str = "") -> None:
        super().__init__(message)
        self.rule = rule

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} [{self.rule}]" if self.rule else text


class MalformedPacket(MQTTError):
    """The bytes do not form a valid packet: bad lengths, flags, UTF-8, or leftovers."""

    reason_code = 0x81


class PacketTooLarge(MalformedPacket):
    """Remaining Length exceeds the configured maximum; raised before buffering the body."""

    reason_code = 0x95


class ProtocolError(MQTTError):
    """A valid packet that is not allowed in the current state (second CONNECT, id 0, ...)."""

    reason_code = 0x82


class UnacceptableProtocol(MQTTError):
    """CONNECT with an unknown protocol name/level pair: answer CONNACK 0x01, then close."""

    reason_code = 0x84
    # The CONNECT said level 5: the client reads MQTT 5 CONNACKs, so it gets 0x84 in that form
    # [MQTT-3.1.2-2] rather than the 3.1.1 return code 0x01.
    mqtt5 = False
