"""MQTT 5 behaviour that is a choice rather than a resource bound: the `[mqtt5]` keys of
culex.toml. (Bounds, such as how many Topic Aliases a client may define, are `Limits`.)"""

from __future__ import annotations

from dataclasses import dataclass

TOPIC_ALIAS_POLICIES = ("none", "first")


@dataclass(frozen=True, slots=True)
class Mqtt5Options:
    # Topic Aliases the broker assigns on PUBLISHes it sends to a client whose CONNECT allowed
    # them (Topic Alias Maximum > 0). "first": the first topics sent on a connection get the
    # aliases, up to the client's maximum, and keep them for the connection's life (a full
    # table replaces nothing); later PUBLISHes on those topics carry an empty topic name.
    # "none": never. Only clients that asked pay for it: the others keep the shared frames.
    topic_alias_out: str = "first"
    # Prefix of the Response Information returned in CONNACK to a client that sets Request
    # Response Information 1: the client's response topics live under prefix + client id.
    # Empty: none is returned (the client must then agree on response topics some other way).
    response_information: str = ""
    # Server redirection (maintenance moves): when set, every CONNECT is refused with this
    # Server Reference ("host:port", or several separated by spaces) and reason 0x9C Use
    # another server, or 0x9D Server moved with `server_moved` (the client should use the
    # other server from now on). 3.1.1 clients, who cannot be told where, get 0x03.
    server_reference: str = ""
    server_moved: bool = False

    def problems(self) -> list[str]:
        """Human-readable reasons these options are unusable (empty when valid)."""
        found = []
        if self.topic_alias_out not in TOPIC_ALIAS_POLICIES:
            found.append(f"topic_alias_out must be one of {', '.join(TOPIC_ALIAS_POLICIES)}")
        if self.server_moved and not self.server_reference:
            found.append("server_moved needs server_reference")
        return found
