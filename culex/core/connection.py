"""One client connection as a sans-I/O state machine: bytes in, frames out, time passed in.

The transport feeds `data_received(data, now)` and reports `connection_lost(now)`; the connection
parses, dispatches by packet type to a `_handle_<name>` method, and appends outgoing frames to its
outbox. It never writes directly: the first frame of a loop tick puts it on the broker's ready
list, and the broker's single flush per tick hands each outbox to `Sink.writelines` at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Protocol

from ..auth.acl import Access, ClientAcl
from ..protocol.codec import (
    PINGRESP,
    decode_subscribe,
    decode_unsubscribe,
    decode_utf8,
    encode_connack,
    encode_suback,
    encode_varint,
)
from ..protocol.errors import MalformedPacket, MQTTError, ProtocolError, UnacceptableProtocol
from ..protocol.packets import SUBACK_FAILURE, ConnackCode, Connect, PacketType
from ..protocol.properties import Properties, PropertyId, read_varint
from ..protocol.reader import Frame, FrameReader
from ..protocol.reasons import ReasonCode, reason_name
from ..protocol.topics import (
    SHARE_PREFIX,
    check_topic_name,
    filter_problem,
    shared_filter_problem,
    split_shared,
)
from ..protocol.v5 import (
    Ack5,
    Connect5,
    decode_connect_any,
    decode_packet_v5,
    encode_ack5,
    encode_connack5,
    encode_disconnect5,
    publish_head_v5,
)
from . import connection5, enhanced_auth
from .access import AuthRequest
from .message import QOS0_PLAIN, Message
from .states import State

if TYPE_CHECKING:
    from .broker import Broker
    from .session import Session

log = logging.getLogger("culex")

PUBACK = 0x40
PUBREC = 0x50
PUBREL = 0x62
PUBCOMP = 0x70
UNSUBACK = 0xB0

# Bytes one connection may feed in per event-loop tick before its reading pauses until the next
# tick. libuv reads a readable socket up to 32 times per poll, so without this 100 flooding
# publishers queued ~200 MB (1.5 M messages) per tick before a single flush (bench `pairs`:
# 100% loss, RSS growing 50 MB/s). With it every connection gets its turn, and output is
# flushed after each round.
FAIR_SHARE = 64 * 1024


class Sink(Protocol):
    """Where a connection's bytes go: an asyncio transport, or a list in tests."""

    def writelines(self, list_of_data: list[bytes]) -> None: ...

    def close(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Connection:
    __slots__ = (
        "_deferred",
        "acl",
        "auth_exchange",
        "auth_method",
        "awaiting_peers",
        "barriers_pending",
        "broker",
        "bytes_sent",
        "certificate_username",
        "client_id",
        "close_after_flush",
        "connack_properties",
        "flush_pending",
        "handlers",
        "keepalive",
        "last_activity",
        "max_packet_out",
        "opened_at",
        "outbox",
        "packets_sent",
        "paused_since",
        "peer",
        "peer_sends",
        "problem_information",
        "protocol_level",
        "publish_byte_tokens",
        "publish_tokens",
        "publishes_sent",
        "rate_paused_until",
        "reader",
        "reading",
        "receive_maximum",
        "session",
        "sink",
        "sink_gone",
        "state",
        "throttled_by",
        "tick_bytes",
        "tokens_at",
        "topic_alias_max_out",
        "topic_aliases_in",
        "topic_aliases_out",
        "username",
        "v5",
        "will",
        "will_delay",
        "write_paused",
    )

    def __init__(self, broker: Broker, sink: Sink, peer: str, now: float) -> None:
        self.broker = broker
        self.sink = sink
        self.peer = peer
        self.opened_at = now
        self.last_activity = now
        self.reader = FrameReader(broker.limits.max_packet_size)
        self.state = State.AWAITING_CONNECT
        self.client_id = "-"
        self.protocol_level = 0
        # The CONNECT decides the protocol family: which handler table every later packet goes
        # through, so a 3.1.1 client never pays for an MQTT 5 check.
        self.v5 = False
        self.handlers = self._HANDLERS
        self.connack_properties: Properties | None = None
        # QoS 1/2 messages in flight to this client at once: ours, or the client's smaller
        # MQTT 5 Receive Maximum [MQTT-3.3.4-9].
        self.receive_maximum = broker.limits.max_inflight_messages
        # The client's MQTT 5 Maximum Packet Size (0: none, as for every 3.1.1 client).
        self.max_packet_out = 0
        # MQTT 5 Topic Aliases, per connection only [MQTT-3.3.2-7]: the client's (alias ->
        # topic name, its bytes), made on its first aliased PUBLISH; and ours towards it (topic
        # bytes -> alias, up to the client's Topic Alias Maximum; see AliasingConnection).
        self.topic_aliases_in: dict[int, tuple[str, bytes]] | None = None
        self.topic_aliases_out: dict[bytes, int] = {}
        self.topic_alias_max_out = 0
        # False when an MQTT 5 CONNECT said Request Problem Information 0 (see connection5).
        self.problem_information = True
        self.keepalive = 0
        self.session: Session | None = None
        self.username: str | None = None
        # Set by the transport on TLS listeners that take the user name from the certificate.
        self.certificate_username: str | None = None
        self.acl: ClientAcl | None = None
        # MQTT 5 enhanced authentication: the CONNECT's Authentication Method (AUTH must repeat
        # it, and only then is AUTH allowed at all), and the exchange in progress, if any.
        self.auth_method: str | None = None
        self.auth_exchange: enhanced_auth.InProgress | None = None
        # Packets that arrived behind a CONNECT still being authenticated.
        self._deferred: list[Frame] = []
        self.will: Message | None = None
        # The will's MQTT 5 Will Delay Interval in seconds (0: published on close).
        self.will_delay = 0
        self.outbox: list[bytes] = []
        self.flush_pending = False
        self.close_after_flush = False
        self.sink_gone = False
        # Set while the peer's socket buffer is over its high-water mark (see `Limits`).
        self.write_paused = False
        self.paused_since = 0.0
        # How many full subscribers this connection, as a publisher, is paused for.
        self.throttled_by = 0
        self.reading = True
        # SUBACKs and acks waiting for the other workers (see `_after_peers`), in order.
        self.awaiting_peers: list[Callable[[], None]] | None = None
        self.barriers_pending = 0
        # `Cluster.sends` when this client's last message went to another worker.
        self.peer_sends = 0
        # Bytes read since this connection was last given a new fair share (see FAIR_SHARE).
        self.tick_bytes = 0
        # max_publish_rate token bucket, and when reading resumes after going over it.
        self.publish_tokens = broker.limits.max_publish_rate
        self.publish_byte_tokens = broker.limits.max_publish_bytes_rate
        self.tokens_at = now
        self.rate_paused_until = 0.0
        # Per-connection counters, folded into the broker totals on close: a local increment is
        # cheaper on the hot path than reaching through to a shared object.
        self.packets_sent = 0
        self.publishes_sent = 0
        self.bytes_sent = 0

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def __repr__(self) -> str:
        return f"<Connection {self.client_id} {self.peer} {self.state.value}>"

    # -- input ---------------------------------------------------------------------------------

    def data_received(self, data: bytes, now: float) -> None:
        if self.state is State.CLOSED:
            return
        self.last_activity = now
        broker = self.broker
        broker.now = now
        broker.bytes_received += len(data)
        self.tick_bytes += len(data)
        if self.tick_bytes >= FAIR_SHARE:
            broker.read_next_tick(self)
        reader = self.reader
        frames = reader.feed(data)
        broker.packets_received += len(frames)
        if self._deferred:  # read before a pause took effect: after the packets waiting
            self._deferred += frames
        elif self._process(frames) and reader.error is not None and not self._deferred:
            self.protocol_violation(reader.error)
        limits = broker.limits
        if limits.max_publish_rate or limits.max_publish_bytes_rate:
            self._charge_publishes(frames, now)

    def _process(self, frames: list[Frame]) -> bool:
        """Dispatch frames in order; False once the connection closed.

        Where a PUBLISH fills a subscriber (this client is then `throttled_by` it), the rest
        of the read waits in `_deferred` until the subscriber drains (`update_reading`). A
        read holds up to thousands of PUBLISHes: handled at once, a hundred publishers each
        paused only after its whole read keep a subscriber over its high-water mark for
        seconds, and it counted as stalled (QoS 0 dropped) or its queue overflowed (QoS 1)
        although it read steadily."""
        handlers = self.handlers
        connected = State.CONNECTED
        try:
            for position, packet in enumerate(frames):
                first, frame, offset = packet
                handler = handlers.get(first >> 4)
                if handler is None:
                    if not first >> 4:  # reserved, "Forbidden" (§2.1.2): no packet at all
                        raise MalformedPacket("reserved packet type 0", "§2.1.2")
                    raise ProtocolError(f"packet type {first >> 4} not allowed from a client")
                handler(self, first, frame, offset)
                if first == 0x10:  # a CONNECT (the only valid first byte) chose the table
                    handlers = self.handlers
                    if self.state is State.MOVING:
                        return self._move(frames)
                if self.state is not connected:  # one check per packet on the hot path
                    if self.state is State.CLOSED:
                        return False
                    if self.state is State.AUTHENTICATING:
                        self._deferred += frames[position + 1:]
                        break
                if self.throttled_by:
                    self._deferred += frames[position + 1:]
                    break
        except UnacceptableProtocol as exc:
            self.v5 = self.v5 or exc.mqtt5  # answer in the form the client reads
            self.refuse(ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION, str(exc))
            return False
        except MQTTError as exc:
            self.protocol_violation(exc)
            return False
        return True

    def _move(self, frames: list[Frame]) -> bool:
        """Hand this connection to the worker that owns its client id, with the CONNECT
        (always the first of `frames`) and whatever followed it; False: it is gone from here.
        Garbage behind the CONNECT is refused here: the stream is lost anyway."""
        error = self.reader.error
        if error is not None:
            self.state = State.AWAITING_CONNECT
            raise error
        data = b"".join([frame for _, frame, _ in frames]) + self.reader.take_pending()
        self.broker.move(self, data)
        return False

    def connection_lost(self, now: float) -> None:
        """The transport is gone: whatever was not a DISCONNECT is an abnormal close."""
        # The Will Delay and Session Expiry Intervals count from this moment, not from the
        # last timer tick: a stale clock would publish the will before its delay had passed,
        # when a reconnect must still be able to cancel it [MQTT-3.1.3-9].
        self.broker.now = now
        self.sink_gone = True
        self.outbox = []
        if self.state is not State.CLOSED:
            if self.state is State.CONNECTED:
                log.info("client %s (%s) connection lost", self.client_id, self.peer)
            self.close(publish_will=True)

    # -- output --------------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        self.outbox.append(frame)
        self.packets_sent += 1
        if not self.flush_pending:
            self.flush_pending = True
            self.broker.mark_ready(self)

    def send_publish(self, frames: list[bytes]) -> None:
        """One PUBLISH in pieces (shared head, packet id, shared payload)."""
        self.outbox += frames
        self.packets_sent += 1
        self.publishes_sent += 1
        if not self.flush_pending:
            self.flush_pending = True
            self.broker.mark_ready(self)

    def use_topic_aliases(self, maximum: int) -> None:
        """The client accepts up to `maximum` Topic Aliases from us: from now on this
        connection is an `AliasingConnection`. A class of its own, not a flag tested per
        delivery, so that every other connection's `send_publish` is exactly the shared-frame
        fast path it was."""
        self.topic_alias_max_out = maximum
        self.__class__ = AliasingConnection

    def acknowledge(self, frame: bytes) -> None:
        """PUBACK, PUBREC or PUBCOMP: a promise that what it acknowledges is safe, so with a
        durable store it leaves only after the commit that makes it true (and in order)."""
        cluster = self.broker.cluster
        if cluster is None or not self._after_peers(partial(self._acknowledge_now, frame),
                                                    self.peer_sends):
            self._acknowledge_now(frame)

    def _acknowledge_now(self, frame: bytes) -> None:
        broker = self.broker
        if broker.acks_wait_for_commit():
            broker.hold(self, [frame], publish=False)
        else:
            self.send(frame)

    def send_after_commit(self, frames: list[bytes], publish: bool) -> None:
        self.broker.hold(self, frames, publish)

    def too_large(self, frames: list[bytes]) -> bool:
        """Whether a PUBLISH exceeds the client's Maximum Packet Size: then it must not be
        sent, and is dropped (counted) as if delivered [MQTT-3.1.2-24, MQTT-3.1.2-25]."""
        limit = self.max_packet_out
        if not limit or sum(map(len, frames)) <= limit:
            return False
        self.broker.publishes_dropped += 1
        log.debug("client %s: PUBLISH of %d bytes over its Maximum Packet Size %d dropped",
                  self.client_id, sum(map(len, frames)), limit)
        return True

    def pause_writing(self, now: float) -> None:
        self.write_paused = True
        self.paused_since = now

    def resume_writing(self) -> None:
        self.write_paused = False
        self.broker.release_publishers(self)

    def connack(self, session_present: bool) -> bytes:
        """The CONNACK that accepts this client, in its protocol's form."""
        if self.v5:
            return encode_connack5(session_present, ReasonCode.SUCCESS, self.connack_properties)
        # MQTT 3.1 has no Session Present flag: its acknowledge-flags byte is reserved (0).
        return encode_connack(session_present and self.protocol_level != 3, 0)

    def send_pubrel(self, packet_id: int) -> None:
        self.send(bytes((PUBREL, 2, packet_id >> 8, packet_id & 0xFF)))

    def flush(self) -> None:
        """Hand the outbox to the sink in one call; close the sink if a close was requested."""
        self.flush_pending = False
        if self.sink_gone:
            self.outbox = []
            return
        outbox = self.outbox
        if outbox:
            self.outbox = []
            self.bytes_sent += sum(map(len, outbox))
            self.sink.writelines(outbox)
        if self.close_after_flush:
            self.sink_gone = True
            self.broker.close_sink(self.sink)

    # -- closing -------------------------------------------------------------------------------

    def close(self, publish_will: bool, reason: int | None = None) -> None:
        """Close once: detach from the session, maybe publish the will, then close the sink.

        An MQTT 5 client is first sent DISCONNECT with `reason` [MQTT-4.13.1-1]; a 3.1.1
        client has no such packet and just sees the socket close."""
        if self.state is State.CLOSED:
            return
        was_connected = self.state is State.CONNECTED
        if reason is not None and self.v5 and was_connected:
            self.send(encode_disconnect5(reason))
        self.state = State.CLOSED
        self.close_after_flush = True
        if not self.flush_pending:
            self.flush_pending = True
            self.broker.mark_ready(self)
        self.broker.connection_closed(self, was_connected, publish_will)

    def protocol_violation(self, exc: MQTTError) -> None:
        if self.state is State.EXCHANGING:
            # Mid-way through enhanced authentication the client awaits a CONNACK, and
            # DISCONNECT may not come before one [MQTT-3.14.0-1]: say why in the CONNACK.
            self.refuse5(exc.reason_code, f"protocol violation: {exc}")
            return
        log.warning("client %s (%s) protocol violation: %s; closing connection",
                    self.client_id, self.peer, exc)
        self.close(publish_will=True, reason=exc.reason_code)

    def refuse(self, code: ConnackCode, reason: str, *, v5_code: int | None = None,
               server_reference: str | None = None) -> None:
        """CONNACK with a failure code, then close [MQTT-3.2.2-5]; MQTT 5 clients get the
        matching reason code (or `v5_code`, which 3.1.1 cannot say) and the reason as a Reason
        String, which CONNACK may carry whatever Request Problem Information said."""
        if self.v5:
            self.refuse5(connection5.REFUSAL_CODES[code] if v5_code is None else v5_code,
                         reason, server_reference=server_reference)
            return
        log.warning("client %s (%s) refused with CONNACK %#04x (%s): %s", self.client_id,
                    self.peer, code, code.name.lower().replace("_", " "), reason)
        self.send(encode_connack(False, code))
        self.close(publish_will=False)

    def refuse5(self, reason_code: int, reason: str, *,
                server_reference: str | None = None) -> None:
        """`refuse` with an MQTT 5 reason code. The Reason String goes out even when the client
        set Request Problem Information to 0: CONNACK is exempt [MQTT-3.1.2-29]."""
        log.warning("client %s (%s) refused with CONNACK %#04x (%s): %s", self.client_id,
                    self.peer, reason_code, reason_name(reason_code, PacketType.CONNACK), reason)
        self.send(encode_connack5(False, reason_code, Properties(
            reason_string=reason, server_reference=server_reference)))
        self.close(publish_will=False)

    def deadline(self) -> float | None:
        """When this connection must next be checked: CONNECT timeout (which covers the whole
        authentication, enhanced exchanges included), keep-alive expiry, or the end of a
        publish-rate pause."""
        if self.state is State.AWAITING_CONNECT or self.state is State.AUTHENTICATING \
                or self.state is State.EXCHANGING:
            return self.opened_at + self.broker.limits.connect_timeout
        if self.state is not State.CONNECTED:
            return None
        if self.rate_paused_until:
            return self.rate_paused_until
        return self.last_activity + self.keepalive * 1.5 if self.keepalive else None

    def on_deadline(self, now: float) -> None:
        if self.rate_paused_until:
            if now >= self.rate_paused_until:
                self.rate_paused_until = 0.0
                self.last_activity = now  # we were not reading: no silence to hold against it
                self.update_reading()
            return
        if self.throttled_by:
            self.last_activity = now  # paused by back-pressure, likewise
            return
        deadline = self.deadline()
        if deadline is not None and deadline <= now:
            self.expire()

    def update_reading(self) -> None:
        """Read the socket unless something holds it: a CONNECT being authenticated, a full
        subscriber (back-pressure), the publish rate, or this tick's fair share used up."""
        wanted = not (self.state is State.AUTHENTICATING or self.throttled_by
                      or self.rate_paused_until or self.tick_bytes >= FAIR_SHARE
                      or self.sink_gone or self.awaiting_peers is not None)
        if wanted and self._deferred and self.state is State.CONNECTED:
            self.broker.resume_deferred(self)  # the packets already read first
            return
        if wanted is not self.reading:
            self.reading = wanted
            if wanted:
                self.sink.resume_reading()
            else:
                self.sink.pause_reading()

    def _charge_publishes(self, frames: list[Frame], now: float) -> None:
        """Token buckets for max_publish_rate and max_publish_bytes_rate (burst: one second's
        worth of each): over either, stop reading until both have refilled, instead of
        disconnecting."""
        publishes = [frame for first, frame, _offset in frames
                     if first >> 4 == PacketType.PUBLISH]
        limits = self.broker.limits
        elapsed = now - self.tokens_at
        self.tokens_at = now
        wait = 0.0
        rate = limits.max_publish_rate
        if rate:
            tokens = min(rate, self.publish_tokens + elapsed * rate) - len(publishes)
            self.publish_tokens = tokens
            wait = -tokens / rate
        byte_rate = limits.max_publish_bytes_rate
        if byte_rate:
            tokens = (min(byte_rate, self.publish_byte_tokens + elapsed * byte_rate)
                      - sum(map(len, publishes)))
            self.publish_byte_tokens = tokens
            wait = max(wait, -tokens / byte_rate)
        if wait > 0 and not self.rate_paused_until and not self.closed:
            self.rate_paused_until = now + wait
            self.update_reading()
            self.broker.schedule(self, self.rate_paused_until)

    def expire(self) -> None:
        if self.state is State.AWAITING_CONNECT:
            log.warning("client - (%s) sent no CONNECT within %g s (connect timeout); closing",
                        self.peer, self.broker.limits.connect_timeout)
            self.close(publish_will=False)
        elif self.state is not State.CONNECTED:
            log.warning("client %s (%s) not authenticated within %g s (connect timeout); "
                        "closing", self.client_id, self.peer, self.broker.limits.connect_timeout)
            self.close(publish_will=False)
        else:
            log.warning("client %s (%s) keep-alive timeout (%d s x 1.5); closing connection",
                        self.client_id, self.peer, self.keepalive)
            self.close(publish_will=True, reason=ReasonCode.KEEP_ALIVE_TIMEOUT)

    # -- handlers ------------------------------------------------------------------------------

    def _require_connected(self) -> None:
        if self.state is not State.CONNECTED:
            if self.state is State.EXCHANGING:
                raise ProtocolError("packet other than AUTH or DISCONNECT before CONNACK, after "
                                    "a CONNECT with an Authentication Method", "MQTT-3.1.2-30")
            raise ProtocolError("packet before CONNECT", "MQTT-3.1.0-1")

    def _handle_connect(self, first: int, frame: bytes, offset: int) -> None:
        if self.state is not State.AWAITING_CONNECT:
            raise ProtocolError("second CONNECT on one connection", "MQTT-3.1.0-2")
        packet = decode_connect_any(first, frame, offset)
        self.protocol_level = packet.protocol_level
        if isinstance(packet, Connect5):
            self.v5 = True
            self.handlers = self._HANDLERS_V5
        if packet.client_id:
            self.client_id = packet.client_id
            cluster = self.broker.cluster
            if cluster is not None and not cluster.owns(packet.client_id):
                self.state = State.MOVING  # `_process` hands it to the owner
                return
        options = self.broker.mqtt5
        if options.server_reference:
            # Maintenance move: nobody is served here, so nobody is authenticated either.
            moved = options.server_moved
            self.refuse(ConnackCode.SERVER_UNAVAILABLE,
                        f"{'server moved' if moved else 'use another server'}: "
                        f"{options.server_reference}",
                        v5_code=ReasonCode.SERVER_MOVED if moved else ReasonCode.USE_ANOTHER_SERVER,
                        server_reference=options.server_reference)
            return
        self._check_will(packet)
        max_qos = self.broker.limits.max_qos
        if self.v5 and self.will is not None and self.will.qos > max_qos:
            # MQTT 5 can say it [MQTT-3.2.2-12]; a 3.1.1 will is just delivered at max_qos.
            self.refuse(ConnackCode.NOT_AUTHORIZED,
                        f"will QoS {self.will.qos} above Maximum QoS {max_qos}",
                        v5_code=ReasonCode.QOS_NOT_SUPPORTED)
            return
        refusal = self._connect_refusal(packet)
        if refusal is not None:
            self.refuse(*refusal)
            return
        assigned = not packet.client_id
        if assigned:
            packet.client_id = self.client_id = self.broker.assign_client_id()
        if isinstance(packet, Connect5):
            connection5.negotiate(self, packet, assigned)
        self.username = self.certificate_username or packet.username
        if isinstance(packet, Connect5) and packet.properties.authentication_method is not None:
            # Enhanced authentication replaces the password check (§4.12).
            enhanced_auth.begin(self, packet, packet.properties.authentication_method)
            return
        authenticator = self.broker.authenticator
        if authenticator is None:
            self.authorize(packet)
            return
        self.state = State.AUTHENTICATING
        self.update_reading()  # whatever follows the CONNECT waits in the socket
        authenticator.authenticate(
            AuthRequest(packet.client_id, packet.username, packet.password,
                        self.certificate_username, self.peer),
            lambda code: self._authenticated(packet, code))

    def _authenticated(self, packet: Connect | Connect5, code: int) -> None:
        if self.state is not State.AUTHENTICATING:
            return  # closed while the check ran (connection lost, CONNECT timeout)
        self.end_check()
        if code:
            self.refuse(ConnackCode(code), "bad user name or password"
                        if code == ConnackCode.BAD_USERNAME_OR_PASSWORD else "not authorized")
            return
        self.authorize(packet)
        self.process_deferred()

    def end_check(self) -> None:
        """An authentication check answered: back to reading, before CONNACK or refusal."""
        self.state = State.AWAITING_CONNECT
        self.update_reading()

    def process_deferred(self) -> None:
        """Handle the packets that arrived while a check ran, now that it has answered, or
        that waited for a full subscriber, now that it has drained."""
        deferred, self._deferred = self._deferred, []
        if deferred and self._process(deferred) and self.reader.error is not None \
                and not self._deferred:
            self.protocol_violation(self.reader.error)

    def authorize(self, packet: Connect | Connect5) -> None:
        """Authenticated: resolve this client's ACL, check its will topic, then accept."""
        over = self._over_connection_limit(packet.client_id)
        if over is not None:
            self.refuse(*over)
            return
        rules = self.broker.acl
        if rules is not None:
            self.acl = rules.for_client(packet.client_id, self.username)
            if self.will is not None and not self.acl.allowed(self.will.topic, Access.WRITE):
                self.refuse(ConnackCode.NOT_AUTHORIZED,
                            f"will topic {self.will.topic!r} denied by the ACL")
                return
        self.broker.accept(self, packet)

    def _check_will(self, packet: Connect | Connect5) -> None:
        if packet.will is not None:
            check_topic_name(packet.will.topic, self.broker.limits.max_topic_levels)
            will = packet.will
            properties: Properties | None = getattr(will, "properties", None)
            if properties is not None:
                # The Will Delay Interval says when to publish; it is no PUBLISH property
                # (the others are forwarded with the will [MQTT-3.1.3-10]).
                self.will_delay = properties.will_delay_interval or 0
                properties.will_delay_interval = None
                if properties.is_empty():
                    properties = None
            self.will = Message(will.topic, will.payload, will.qos, will.retain,
                                properties=properties)

    def _connect_refusal(self, packet: Connect | Connect5) -> tuple[ConnackCode, str] | None:
        limits = self.broker.limits
        if not packet.client_id and isinstance(packet, Connect):
            # MQTT 5 lets the server assign an id whatever Clean Start says (§3.1.3.1).
            if packet.protocol_level == 3:
                return ConnackCode.IDENTIFIER_REJECTED, "MQTT 3.1 requires a client id"
            if not packet.clean_session:
                return (ConnackCode.IDENTIFIER_REJECTED,
                        "empty client id with clean session 0 [MQTT-3.1.3-8]")
        if len(packet.client_id.encode()) > limits.max_client_id_length:
            return (ConnackCode.IDENTIFIER_REJECTED,
                    f"client id longer than max_client_id_length ({limits.max_client_id_length})")
        if limits.max_keepalive < 65535 and not 0 < packet.keepalive <= limits.max_keepalive \
                and isinstance(packet, Connect):  # MQTT 5 clients get Server Keep Alive
            return (ConnackCode.IDENTIFIER_REJECTED,
                    f"keep-alive {packet.keepalive} s outside 1..{limits.max_keepalive}")
        return self._over_connection_limit(packet.client_id)

    def _over_connection_limit(self, client_id: str) -> tuple[ConnackCode, str] | None:
        """Checked when CONNECT arrives and again once it is authenticated: clients accepted
        while this one's password was being checked count too. A takeover adds no client."""
        limit = self.broker.limits.max_connections
        session = self.broker.sessions.get(client_id) if client_id else None
        taking_over = session is not None and session.connection is not None
        if 0 < limit <= self.broker.clients_connected and not taking_over:
            return ConnackCode.SERVER_UNAVAILABLE, f"max_connections ({limit}) reached"
        return None

    def _handle_publish(self, first: int, frame: bytes, pos: int) -> None:
        if self.state is not State.CONNECTED:
            self._require_connected()
        qos = (first >> 1) & 0x03
        if qos == 3:
            raise MalformedPacket("PUBLISH with QoS 3", "MQTT-3.3.1-4")
        if first & 0x08 and not qos:
            raise MalformedPacket("PUBLISH with DUP set at QoS 0", "MQTT-3.3.1-2")
        end = len(frame)
        if pos + 2 > end:
            raise MalformedPacket("PUBLISH ends before the topic name")
        start = pos + 2
        stop = start + ((frame[pos] << 8) | frame[pos + 1])
        if stop > end:
            raise MalformedPacket("topic name runs past the packet end")
        topic_bytes = frame[start:stop]
        broker = self.broker
        topic = broker.topic_names.get(topic_bytes)
        if topic is None:
            topic = broker.learn_topic_name(topic_bytes)
        packet_id = 0
        if qos:
            if stop + 2 > end:
                raise MalformedPacket("PUBLISH ends before the packet identifier")
            packet_id = (frame[stop] << 8) | frame[stop + 1]
            if not packet_id:
                raise ProtocolError("packet identifier 0 in PUBLISH", "MQTT-2.3.1-1")
            stop += 2
        broker.publishes_received += 1
        routed = (topic[0] != "$" and self.acl is None) or self.may_publish(topic)
        if qos == 2 and not self.session.inbound_received(packet_id):  # type: ignore[union-attr]
            routed = False  # a retransmission: routed when it first arrived
        if routed:
            if first == QOS0_PLAIN:
                broker.forward(topic, frame, self)
            else:
                message = Message(topic, frame[stop:], qos, bool(first & 0x01),
                                  topic_bytes=topic_bytes)
                if not first & 0x09:
                    # Without DUP and RETAIN our head is the head of a delivery at this QoS:
                    # a slice instead of an encoding (measured: 1 -> 1 QoS 1, -10% CPU).
                    message.seed_head(first, frame[:stop - 2])
                broker.publish(message, self)
        if qos:
            self.acknowledge(bytes((PUBACK if qos == 1 else PUBREC, 2, packet_id >> 8,
                                    packet_id & 0xFF)))

    def may_publish(self, topic: str) -> bool:
        """Whether this client may publish to `topic`; a refusal is logged. 3.1.1 cannot say
        no, so there the message is acknowledged as usual and not routed; MQTT 5 says 0x87."""
        if topic.startswith("$SYS"):
            # Clients may not write the broker's own tree (Mosquitto denies it the same way).
            log.info("client %s (%s) publish to %r dropped: $SYS is read-only", self.client_id,
                     self.peer, topic)
            return False
        if self.acl is not None and not self.acl.allowed(topic, Access.WRITE):
            log.info("client %s (%s) publish to %r dropped: denied by the ACL", self.client_id,
                     self.peer, topic)
            return False
        return True

    def _ack_id(self, first: int, frame: bytes, pos: int, flags: int, name: str) -> int:
        self._require_connected()
        if self.v5:
            # MQTT 5 acks may carry a reason code and properties; the codec checks them.
            ack = decode_packet_v5(first, frame, pos)
            assert isinstance(ack, Ack5)
            return ack.packet_id
        if first & 0x0F != flags:
            raise MalformedPacket(f"{name} fixed-header flags {first & 0x0F:#06b}",
                                  "MQTT-2.2.2-2")
        if len(frame) - pos != 2:
            raise MalformedPacket(f"{name} remaining length must be 2")
        packet_id = (frame[pos] << 8) | frame[pos + 1]
        if not packet_id:
            raise ProtocolError(f"packet identifier 0 in {name}", "MQTT-2.3.1-1")
        return packet_id

    def _handle_puback(self, first: int, frame: bytes, pos: int) -> None:
        packet_id = self._ack_id(first, frame, pos, 0, "PUBACK")
        assert self.session is not None
        if not self.session.acknowledge(packet_id, 1):
            log.debug("client %s: PUBACK for unknown packet id %d ignored", self.client_id,
                      packet_id)

    def _handle_pubrec(self, first: int, frame: bytes, pos: int) -> None:
        packet_id = self._ack_id(first, frame, pos, 0, "PUBREC")
        assert self.session is not None
        session = self.session
        if session.release(packet_id):
            pubrel = bytes((PUBREL, 2, packet_id >> 8, packet_id & 0xFF))
            if session.persistence is not None and session.persistence.durable:
                # The subscriber completes delivery on PUBREL and forgets the id; if the broker
                # died before "released" was on disk it would send the PUBLISH again as new.
                self.send_after_commit([pubrel], publish=False)
            else:
                self.send(pubrel)
        else:
            log.debug("client %s: PUBREC for unknown packet id %d ignored", self.client_id,
                      packet_id)

    def _handle_pubrel(self, first: int, frame: bytes, pos: int) -> None:
        packet_id = self._ack_id(first, frame, pos, 0b0010, "PUBREL")
        assert self.session is not None
        known = self.session.inbound_released(packet_id)
        # PUBCOMP even for an unknown id: the sender may be retrying after our restart.
        if self.v5 and not known:
            self.acknowledge(encode_ack5(PacketType.PUBCOMP, packet_id,
                                         ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
        else:
            self.acknowledge(bytes((PUBCOMP, 2, packet_id >> 8, packet_id & 0xFF)))

    def _handle_pubcomp(self, first: int, frame: bytes, pos: int) -> None:
        packet_id = self._ack_id(first, frame, pos, 0, "PUBCOMP")
        assert self.session is not None
        if not self.session.acknowledge(packet_id, 2):
            log.debug("client %s: PUBCOMP for unknown packet id %d ignored", self.client_id,
                      packet_id)

    def _handle_subscribe(self, first: int, frame: bytes, pos: int) -> None:
        self._require_connected()
        packet = decode_subscribe(first & 0x0F, frame, pos)
        session = self.session
        assert session is not None
        broker = self.broker
        codes = []
        granted: list[tuple[str, int]] = []
        max_qos = broker.limits.max_qos
        for topic_filter, requested in packet.topics:
            qos = requested if requested <= max_qos else max_qos  # granting less is allowed
            if self.subscribe(topic_filter, qos):
                codes.append(SUBACK_FAILURE)
                continue
            codes.append(qos)
            if not topic_filter.startswith(SHARE_PREFIX):  # shared: no retained (§4.8.2)
                granted.append((topic_filter, qos))
        self.send_suback(encode_suback(packet.packet_id, codes), granted)

    def send_suback(self, frame: bytes, retained: list[tuple[str, int]]) -> None:
        """SUBACK, then the retained messages for the subscriptions that get them."""
        cluster = self.broker.cluster
        if cluster is None or not self._after_peers(partial(self._subscribed, frame, retained),
                                                    cluster.route_sends):
            self._subscribed(frame, retained)

    def _subscribed(self, frame: bytes, retained: list[tuple[str, int]]) -> None:
        self.send(frame)
        session = self.session
        assert session is not None
        for topic_filter, value in retained:
            self.broker.send_retained(session, topic_filter, value)

    def _after_peers(self, action: Callable[[], None], upto: int) -> bool:
        """With workers, a SUBACK or an ack also promises something of the other workers: a
        client told it is subscribed may have another client publish at once, through another
        worker that must route to it; an acknowledged message another worker queued for its
        sessions must be in that worker's store. So the `action` sending it waits (True) until
        every peer has applied, and committed, the first `upto` records this worker counted
        (`Cluster.when_known`), and what follows waits too, to keep the order. Reading waits
        meanwhile."""
        cluster = self.broker.cluster
        assert cluster is not None
        waiting = self.awaiting_peers
        if cluster.when_known(self._peers_caught_up, upto):
            self.barriers_pending += 1
        elif waiting is None:
            return False
        if waiting is None:
            waiting = self.awaiting_peers = []
            self.update_reading()
        waiting.append(action)
        return True

    def _peers_caught_up(self) -> None:
        self.barriers_pending -= 1
        if self.barriers_pending:
            return
        waiting, self.awaiting_peers = self.awaiting_peers, None
        if self.state is State.CLOSED or waiting is None:
            return
        for action in waiting:
            action()
        self.update_reading()

    def subscribe(self, topic_filter: str, value: int) -> int:
        """Check and make one subscription (`value`: see options.py). Returns 0, or
        the MQTT 5 reason it was refused with (logged): 0x8F, 0x87 or 0x97."""
        broker = self.broker
        assert self.session is not None
        code: int = ReasonCode.SUCCESS
        shared = split_shared(topic_filter)
        if shared is None:
            problem = filter_problem(topic_filter, broker.limits.max_topic_levels)
        else:
            # 3.1.1 clients may share too, as with Mosquitto; the ACL judges the inner filter.
            problem = shared_filter_problem(topic_filter, broker.limits.max_topic_levels)
        if problem is not None:
            code = ReasonCode.TOPIC_FILTER_INVALID
        elif self.acl is not None and not self.acl.allowed_filter(
                topic_filter if shared is None else shared[1]):
            code, problem = ReasonCode.NOT_AUTHORIZED, "denied by the ACL"
        elif not broker.subscribe(self.session, topic_filter, value):
            code = ReasonCode.QUOTA_EXCEEDED
            problem = f"max_subscriptions ({broker.limits.max_subscriptions}) reached"
        if problem is not None:
            log.info("client %s (%s) subscription to %r refused: %s", self.client_id,
                     self.peer, topic_filter, problem)
        return code

    def _handle_unsubscribe(self, first: int, frame: bytes, pos: int) -> None:
        self._require_connected()
        packet = decode_unsubscribe(first & 0x0F, frame, pos)
        session = self.session
        assert session is not None
        for topic_filter in packet.filters:
            problem = filter_problem(topic_filter, self.broker.limits.max_topic_levels)
            if problem is not None:
                # UNSUBACK has no per-filter code in 3.1.1; Mosquitto closes here as well.
                raise ProtocolError(f"UNSUBSCRIBE with invalid filter {topic_filter!r}: {problem}")
        for topic_filter in packet.filters:
            self.broker.unsubscribe(session, topic_filter)
        self.send(bytes((UNSUBACK, 2, packet.packet_id >> 8, packet.packet_id & 0xFF)))

    def _handle_pingreq(self, first: int, frame: bytes, pos: int) -> None:
        self._require_connected()
        if first != 0xC0 or len(frame) != pos:
            raise MalformedPacket("PINGREQ with flags or a body")
        self.send(PINGRESP)

    def _handle_disconnect(self, first: int, frame: bytes, pos: int) -> None:
        self._require_connected()
        if first != 0xE0 or len(frame) != pos:
            raise MalformedPacket("DISCONNECT with flags or a body")
        log.info("client %s (%s) disconnected", self.client_id, self.peer)
        self.close(publish_will=False)  # MQTT-3.14.4-3: a clean DISCONNECT discards the will

    _HANDLERS: dict[int, Callable[[Connection, int, bytes, int], None]] = {
        PacketType.CONNECT: _handle_connect,
        PacketType.PUBLISH: _handle_publish,
        PacketType.PUBACK: _handle_puback,
        PacketType.PUBREC: _handle_pubrec,
        PacketType.PUBREL: _handle_pubrel,
        PacketType.PUBCOMP: _handle_pubcomp,
        PacketType.SUBSCRIBE: _handle_subscribe,
        PacketType.UNSUBSCRIBE: _handle_unsubscribe,
        PacketType.PINGREQ: _handle_pingreq,
        PacketType.DISCONNECT: _handle_disconnect,
    }

    # MQTT 5: the acks and PINGREQ share the 3.1.1 handlers (`_ack_id` reads the v5 form).
    _HANDLERS_V5: dict[int, Callable[[Connection, int, bytes, int], None]] = {
        **_HANDLERS,
        PacketType.PUBLISH: connection5.handle_publish,
        PacketType.SUBSCRIBE: connection5.handle_subscribe,
        PacketType.UNSUBSCRIBE: connection5.handle_unsubscribe,
        PacketType.DISCONNECT: connection5.handle_disconnect,
        PacketType.AUTH: connection5.handle_auth,
    }


_TOPIC_ALIAS_ID = bytes((PropertyId.TOPIC_ALIAS,))


class AliasingConnection(Connection):
    """An MQTT 5 connection whose client allowed Topic Aliases and the broker's
    `topic_alias_out` policy is "first": the first topics sent get aliases, up to the client's
    Topic Alias Maximum [MQTT-3.3.2-11], and keep them; other topics go as they are.

    Aliasing happens here, as each PUBLISH is queued, rather than where frames are encoded:
    so the frames shared by every other subscriber stay shared, and an alias is defined on
    the wire by the first PUBLISH that really leaves with it, whatever the path (QoS 0, a QoS
    2 delivery held until its commit, a re-send on reconnect). The rewrite costs one new head
    and property block per PUBLISH; the payload piece is reused unless the PUBLISH came as a
    single frame (QoS 0), whose tail is sliced.
    """

    __slots__ = ()

    def send_publish(self, frames: list[bytes]) -> None:
        head = frames[0]
        first = head[0]
        pos = 1
        while head[pos] & 0x80:
            pos += 1
        start = pos + 3
        stop = start + ((head[pos + 1] << 8) | head[pos + 2])
        topic = head[start:stop]
        aliases = self.topic_aliases_out
        alias = aliases.get(topic)
        if alias is None and len(aliases) >= self.topic_alias_max_out:
            Connection.send_publish(self, frames)  # a full table keeps what it has
            return
        packet_id = b""
        if len(frames) == 1:  # head, [packet id], properties and payload in one piece
            if first & 0x06:
                packet_id = head[stop:stop + 2]
                stop += 2
            length, body = read_varint(head, stop, len(head), "properties")
            props = head[body:body + length]
            payload = head[body + length:]
        else:  # [head, [packet id], properties, payload] (Message.frames5)
            if len(frames) == 4:
                packet_id = frames[1]
            length, body = read_varint(frames[-2], 0, len(frames[-2]), "properties")
            props = frames[-2][body:]
            payload = frames[-1]
        new = alias is None
        number = len(aliases) + 1 if alias is None else alias
        # Properties may come in any order: the alias goes first, the rest follow unchanged.
        block = (encode_varint(length + 3) + _TOPIC_ALIAS_ID + number.to_bytes(2, "big")
                 + props)
        aliased = [publish_head_v5(topic if new else b"", len(payload), first, block)]
        if packet_id:
            aliased.append(packet_id)
        aliased += (block, payload)
        limit = self.max_packet_out
        if limit and sum(map(len, aliased)) > limit:
            # The caller checked the frames as they were; an alias may add up to 4 bytes.
            Connection.send_publish(self, frames)
            return
        if new:
            aliases[topic] = number
        Connection.send_publish(self, aliased)


def validate_topic_name(topic_bytes: bytes, max_levels: int) -> str:
    """Decode and check a PUBLISH topic; the broker caches the result per distinct name."""
    topic = decode_utf8(topic_bytes, "topic name")
    check_topic_name(topic, max_levels)
    return topic
