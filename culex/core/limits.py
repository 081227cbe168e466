"""Every resource limit in one place. Field names are the `[limits]` keys of culex.toml."""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.topics import DEFAULT_MAX_TOPIC_LEVELS

# The values of `shared_subscription_strategy` (culex/core/shared.py implements them).
STRATEGIES = ("round_robin", "random", "sticky", "hash")


@dataclass(frozen=True, slots=True)
class Limits:
    # Largest whole packet accepted, checked from the fixed header before buffering; bounds the
    # memory one connection can make us hold for a partial packet.
    max_packet_size: int = 16 * 1024 * 1024
    # Largest PUBLISH payload accepted (0: any). A larger one is dropped without closing the
    # connection, as Mosquitto's message_size_limit does: QoS 1/2 still get their PUBACK/PUBREC
    # (MQTT 5: reason 0x83), and a CONNECT whose will payload is larger is refused.
    message_size_limit: int = 0
    # Unacknowledged QoS 1/2 PUBLISHes sent to one client at a time; the rest wait in its queue
    # in order. Keeps a slow client's retransmission set, and our memory per client, small.
    max_inflight_messages: int = 20
    # The Receive Maximum announced to MQTT 5 clients: inbound QoS 2 messages a client may
    # have awaiting PUBREL at once; one more gets DISCONNECT 0x93 [MQTT-3.3.4-7]. Each costs a
    # packet id in a set (tens of bytes). Generous because MQTT.js (5.x) ignores the server's
    # Receive Maximum and publishes bursts as they come.
    receive_maximum: int = 1024
    # QoS 1/2 messages waiting for one client (offline or window full). Past this they are
    # dropped, counted in $SYS/broker/publish/messages/dropped and logged.
    max_queued_messages: int = 1000
    # ...and their payload bytes (0: no byte bound). One client's offline queue of large
    # messages must not be able to take the broker's memory.
    max_queued_bytes: int = 64 * 1024 * 1024
    # Connected clients at once; -1 means no limit. Beyond it CONNECT gets 0x03 (unavailable).
    max_connections: int = -1
    # Subscriptions one client may hold; more get 0x80 in SUBACK (10,000-filter SUBSCRIBEs).
    max_subscriptions: int = 10_000
    # Longest client id accepted (bytes of UTF-8); longer ones get CONNACK 0x02.
    max_client_id_length: int = 1024
    # Retained topics in the whole broker; past it new retained topics are not stored (logged),
    # while replacing or clearing existing ones always works.
    max_retained_messages: int = 1_000_000
    # PUBLISH packets per second one client may send (0: unlimited). A client above it is not
    # disconnected: its socket is simply not read until it is back under the rate (TCP
    # back-pressure), so one flooder cannot starve the others on the event loop.
    max_publish_rate: float = 0.0
    # PUBLISH bytes (whole packets) per second one client may send (0: unlimited); same
    # mechanism and one second of burst. A single packet larger than the rate is read, then
    # the socket waits as long as that packet's size takes at the rate.
    max_publish_bytes_rate: float = 0.0
    # Largest keep-alive a client may ask for; with a value below 65535, keep-alive 0 (never
    # time out) is refused too, since it would let an idle client hold a slot for ever.
    max_keepalive: int = 65535
    # Seconds a new socket has to send CONNECT before it is closed (slowloris, port scanners).
    connect_timeout: float = 10.0
    # Topic and filter depth; far above real hierarchies, it stops CVE-2019-11779 style inputs.
    max_topic_levels: int = DEFAULT_MAX_TOPIC_LEVELS
    # Bytes queued on a socket before it counts as full. While a subscriber's socket is full,
    # the publishers feeding it are paused (TCP back-pressure, nothing lost)...
    max_write_buffer: int = 256 * 1024
    # ...for at most this many seconds: a subscriber that stays full longer is not reading, so
    # its QoS 0 messages are dropped (and counted) and the publishers go on for everyone else.
    stalled_reader_timeout: float = 2.0
    # Whether an MQTT 5 PUBLISH whose Payload Format Indicator says UTF-8 is checked: a payload
    # that is not is refused with reason 0x99 instead of reaching subscribers that trust the
    # flag. Off saves a UTF-8 decode per such message.
    check_payload_format: bool = True
    # Highest QoS granted to a subscription (a higher request is granted this one), and for
    # MQTT 5 clients announced in CONNACK and enforced on their PUBLISHes (DISCONNECT 0x9B).
    # Below 2 it spares the broker the QoS 2 state for clients that do not need it.
    max_qos: int = 2
    # Topic Aliases an MQTT 5 client may define towards the broker (its CONNACK's Topic Alias
    # Maximum; 0 turns inbound aliases off). Each costs one topic name of memory per
    # connection, so the bound caps what a client can make us hold.
    max_topic_alias: int = 10
    # Which member of a shared subscription group ($share/{name}/{filter}) gets each message:
    # "round_robin", "random", "sticky" (one member while it stays connected) or "hash" (by
    # publisher client id, so each publisher's messages stay in order on one member). Only
    # connected members are chosen while there are any. See culex/core/shared.py.
    shared_subscription_strategy: str = "round_robin"

    def problems(self) -> list[str]:
        """Human-readable reasons this set of limits is unusable (empty when valid)."""
        found = []
        if not 2 <= self.max_packet_size <= 268_435_460:
            found.append("max_packet_size must be between 2 and 268435460")
        if not 0 <= self.message_size_limit <= 268_435_455:
            found.append("message_size_limit must be between 0 (no limit) and 268435455")
        if not 1 <= self.max_inflight_messages <= 65535:
            found.append("max_inflight_messages must be between 1 and 65535")
        if not 1 <= self.receive_maximum <= 65535:
            found.append("receive_maximum must be between 1 and 65535")
        if self.max_queued_messages < 0:
            found.append("max_queued_messages must be 0 or more")
        if self.max_queued_bytes < 0:
            found.append("max_queued_bytes must be 0 (unbounded) or more")
        if self.max_subscriptions < 1:
            found.append("max_subscriptions must be positive")
        if not 1 <= self.max_client_id_length <= 65535:
            found.append("max_client_id_length must be between 1 and 65535")
        if self.max_retained_messages < 0:
            found.append("max_retained_messages must be 0 or more")
        if self.max_publish_rate < 0:
            found.append("max_publish_rate must be 0 (unlimited) or positive")
        if self.max_publish_bytes_rate < 0:
            found.append("max_publish_bytes_rate must be 0 (unlimited) or positive")
        if self.max_connections < -1 or self.max_connections == 0:
            found.append("max_connections must be -1 (unlimited) or positive")
        if not 1 <= self.max_keepalive <= 65535:
            found.append("max_keepalive must be between 1 and 65535")
        if self.connect_timeout <= 0:
            found.append("connect_timeout must be positive")
        if self.max_topic_levels < 1:
            found.append("max_topic_levels must be positive")
        if self.max_write_buffer < 1024:
            found.append("max_write_buffer must be at least 1024")
        if not 0 <= self.max_qos <= 2:
            found.append("max_qos must be 0, 1 or 2")
        if not 0 <= self.max_topic_alias <= 65535:
            found.append("max_topic_alias must be between 0 and 65535")
        if self.shared_subscription_strategy not in STRATEGIES:
            found.append(f"shared_subscription_strategy must be one of {', '.join(STRATEGIES)}")
        if self.stalled_reader_timeout < 0:
            found.append("stalled_reader_timeout must be 0 or more")
        return found
