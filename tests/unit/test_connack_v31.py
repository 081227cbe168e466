"""The CONNACK that accepts a client, byte for byte, in the core harness: MQTT 3.1 (protocol
name MQIsdp, level 3) has no Session Present flag, so its acknowledge-flags byte stays 0 even
when a clean-session-0 client resumes a kept session; 3.1.1 sets it."""

from __future__ import annotations

import pytest

from culex.protocol.codec import encode_connect
from culex.protocol.packets import Connect
from tests.unit.core_helpers import Harness


def connack_bytes(harness: Harness, name: str, level: int) -> bytes:
    client = harness.client()
    client.send(encode_connect(Connect("kept", name, level, False, 0, None)))
    harness.broker.flush()
    return bytes(client.sink.data[:4])


@pytest.mark.parametrize(("name", "level", "resumed"), [
    ("MQIsdp", 3, b"\x20\x02\x00\x00"),
    ("MQTT", 4, b"\x20\x02\x01\x00"),
])
def test_resumed_session_connack(name: str, level: int, resumed: bytes) -> None:
    harness = Harness()
    assert connack_bytes(harness, name, level) == b"\x20\x02\x00\x00"  # a new session
    assert connack_bytes(harness, name, level) == resumed  # takes over the kept one
