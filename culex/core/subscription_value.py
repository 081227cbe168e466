"""The trie value of a subscription: one int, so routing pays one integer test per delivery.

For a 3.1/3.1.1 subscriber the value is the granted QoS (0..2). For an MQTT 5 subscriber it is

    bits 0-1   granted QoS
    bit  2     No Local
    bit  3     Retain As Published          (Retain Handling only matters at SUBSCRIBE time)
    bit  8     V5_SUBSCRIBER, so that every MQTT 5 value is > 2
    bits 9-    Subscription Identifiers, 28 bits each (1..268,435,455 fits, 0 never occurs)

A 3.1/3.1.1 subscription carries No Local and Retain As Published too when its client is
another broker's bridge (handlers.handle_bridge_subscribe), without V5_SUBSCRIBER. Routing tells
the plain case apart with `value > 2`, the family with `value >= V5_SUBSCRIBER` and identifiers
with `value >= WITH_IDENTIFIER`, all plain int comparisons: a 3.1.1 subscription and an MQTT 5
one without an identifier pay nothing for identifiers. A stored
subscription holds at most one identifier (what one SUBSCRIBE gave it); several appear only in
a match result, where the trie merges the overlapping subscriptions of one client into one
delivery that must carry all of their identifiers [MQTT-3.3.4-3, MQTT-3.3.4-4].
"""

from __future__ import annotations

from typing import Final

NO_LOCAL: Final = 0x04
RETAIN_AS_PUBLISHED: Final = 0x08
ROUTING_FLAGS: Final = NO_LOCAL | RETAIN_AS_PUBLISHED
V5_SUBSCRIBER: Final = 0x100
IDENTIFIER_SHIFT: Final = 9
WITH_IDENTIFIER: Final = 1 << IDENTIFIER_SHIFT
_IDENTIFIER_BITS: Final = 28
_IDENTIFIER_MASK: Final = (1 << _IDENTIFIER_BITS) - 1
_OPTION_MASK: Final = WITH_IDENTIFIER - 1


def with_identifier(value: int, identifier: int | None) -> int:
    """`value` (options and QoS) carrying one Subscription Identifier, or none."""
    value &= _OPTION_MASK
    return value | identifier << IDENTIFIER_SHIFT if identifier else value


def identifiers_of(packed: int) -> list[int]:
    """The identifiers packed by `with_identifier` / `merge` (`value >> IDENTIFIER_SHIFT`)."""
    found = []
    while packed:
        found.append(packed & _IDENTIFIER_MASK)
        packed >>= _IDENTIFIER_BITS
    return found


def merge(previous: int, value: int) -> int:
    """One delivery for two overlapping subscriptions of one client: the options of the one
    with the higher QoS [MQTT-3.3.4-2] and the identifiers of both, each once."""
    options = value if previous & 0x03 < value & 0x03 else previous
    packed = previous >> IDENTIFIER_SHIFT
    for identifier in identifiers_of(value >> IDENTIFIER_SHIFT):
        if identifier not in identifiers_of(packed):
            packed = packed << _IDENTIFIER_BITS | identifier
    return options & _OPTION_MASK | packed << IDENTIFIER_SHIFT
