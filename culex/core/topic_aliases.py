"""A connection's MQTT 5 Topic Aliases, both ways (the behaviour is in aliasing.py).

Per connection only [MQTT-3.3.2-7], and made only for a connection whose client uses aliases
or allows ours: every other connection holds a None in their place.
"""

from __future__ import annotations


class TopicAliases:
    __slots__ = ("inbound", "maximum_out", "outbound")

    def __init__(self, maximum_out: int = 0) -> None:
        # The client's: alias -> (topic name, its bytes), made on its first aliased PUBLISH.
        self.inbound: dict[int, tuple[str, bytes]] = {}
        # Ours towards it: topic bytes -> alias, up to the client's Topic Alias Maximum.
        self.outbound: dict[bytes, int] = {}
        self.maximum_out = maximum_out
