"""One client connection as a sans-I/O state machine: bytes in, frames out, time passed in.

The transport feeds `data_received(data, now)` and reports `connection_lost(now)`. The
connection frames the bytes, and hands each packet to the handler its table names for that
packet type: the CONNECT handshake before CONNACK (handshake.py), then the handlers of the
client's protocol family (handlers.py for 3.1/3.1.1, handlers5.py for what MQTT 5 does
differently). It never writes directly: its first frame of a loop tick marks it ready with the
`OutputScheduler`, and the broker's flush hands the whole outbox to the `Sink` in one call.

What it keeps is what belongs to the socket: the reader, the outbox, flow control (back-pressure,
the fair share of a tick, the publish rate), the deadlines (CONNECT timeout, keep-alive) and
closing. It implements `ClientLink` for the rest of the core.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from ..protocol.codec import encode_connack
from ..protocol.errors import MalformedPacket, MQTTError, ProtocolError, UnacceptableProtocol
from ..protocol.packets import ConnackCode, PacketType
from ..protocol.properties import Properties
from ..protocol.reader import Frame, FrameReader
from ..protocol.reasons import V5_CONNACK_CODES, ReasonCode, reason_name
from ..protocol.v5 import encode_connack5, encode_disconnect5
from .access import AuthInProgress, ClientAccess
from .context import CoreServices
from .message import Message
from .ports import Sink
from .rate import PublishRate
from .session import Session
from .states import Event, State, next_state
from .stats import TOO_LARGE
from .topic_aliases import TopicAliases
from .write_flow import WriteFlow

log = logging.getLogger("culex")

PUBREL = 0x62

# Bytes one connection may feed in per event-loop tick before its reading pauses until the next
# tick. libuv reads a readable socket up to 32 times per poll, so without this 100 flooding
# publishers queue ~200 MB (1.5 M messages) per tick before a single flush (bench `pairs`:
# 100% loss, RSS growing 50 MB/s). With it every connection gets its turn, and output is
# flushed after each round.
FAIR_SHARE = 64 * 1024

Handler = Callable[["Connection", int, bytes, int], None]
"""Handles one packet: (connection, first byte, whole frame, offset of the variable header)."""


class Connection(WriteFlow):
    __slots__ = (
        "_deferred",
        "acl",
        "address",
        "aliases",
        "auth_exchange",
        "auth_method",
        "awaiting_workers",
        "barriers_pending",
        "bytes_sent",
        "certificate_username",
        "client_id",
        "close_after_flush",
        "connack_properties",
        "core",
        "flush_pending",
        "handlers",
        "keepalive",
        "last_activity",
        "link_sends",
        "listener",
        "max_packet_out",
        "opened_at",
        "outbox",
        "packets_sent",
        "problem_information",
        "protocol_level",
        "publishes_sent",
        "rate",
        "reader",
        "reading",
        "receive_maximum",
        "session",
        "sink",
        "sink_gone",
        "state",
        "throttled_by",
        "tick_bytes",
        "username",
        "v5",
        "will",
        "will_delay",
    )

    def __init__(self, core: CoreServices, sink: Sink, address: str, now: float,
                 handlers: dict[int, Handler]) -> None:
        self.core = core
        self.sink = sink
        # The client's address ("ip:port", or what a PROXY header said), for logs and $SYS.
        self.address = address
        self.listener = ""  # the listener it came through, as the admin API names it
        self.opened_at = now
        self.last_activity = now
        limits = core.limits
        self.reader = FrameReader(limits.max_packet_size)
        self.state = State.AWAITING_CONNECT
        self.client_id = "-"
        self.protocol_level = 0
        # Packet type -> handler. The CONNECT chooses the protocol family's table, so a 3.1.1
        # client never pays for an MQTT 5 check.
        self.handlers = handlers
        self.v5 = False
        self.connack_properties: Properties | None = None
        # QoS 1/2 messages in flight to this client at once: ours, or the client's smaller
        # MQTT 5 Receive Maximum [MQTT-3.3.4-9].
        self.receive_maximum = limits.max_inflight_messages
        # The client's MQTT 5 Maximum Packet Size (0: none, as for every 3.1.1 client).
        self.max_packet_out = 0
        # MQTT 5 Topic Aliases both ways (aliasing.py), made when the client first uses them
        # or allows ours.
        self.aliases: TopicAliases | None = None
        # False when an MQTT 5 CONNECT said Request Problem Information 0 (see handshake.py).
        self.problem_information = True
        self.keepalive = 0
        self.session: Session | None = None
        self.username: str | None = None
        # Set by the transport on TLS listeners that take the user name from the certificate.
        self.certificate_username: str | None = None
        self.acl: ClientAccess | None = None
        # MQTT 5 enhanced authentication: the CONNECT's Authentication Method (AUTH must repeat
        # it, and only then is AUTH allowed at all), and the exchange in progress, if any.
        self.auth_method: str | None = None
        self.auth_exchange: AuthInProgress | None = None
        # Packets read but not handled yet: behind a CONNECT being authenticated, or behind
        # the PUBLISH that filled a subscriber. Like the outbox, None rather than an empty
        # list when there are none: most connections are idle, and each empty list costs.
        self._deferred: list[Frame] | None = None
        self.will: Message | None = None
        # The will's MQTT 5 Will Delay Interval in seconds (0: published on close).
        self.will_delay = 0
        # This tick's frames, until the flush hands them to the sink.
        self.outbox: list[bytes] | None = None
        self.flush_pending = False
        self.close_after_flush = False
        self.sink_gone = False
        # Set while the client's socket buffer is over its high-water mark (see `Limits`).
        self.write_paused = False
        self.paused_since = 0.0
        # How many full subscribers this connection, as a publisher, is paused for.
        self.throttled_by = 0
        self.reading = True
        # SUBACKs and acks waiting for the other workers (see `_after_workers`), in order.
        self.awaiting_workers: list[Callable[[], None]] | None = None
        self.barriers_pending = 0
        # `WorkerLinks.sends` when this client's last message went to another worker.
        self.link_sends = 0
        # Bytes read since this connection was last given a new fair share (see FAIR_SHARE).
        self.tick_bytes = 0
        # The max_publish_rate / max_publish_bytes_rate buckets, when either is set.
        self.rate = (PublishRate(limits, now) if limits.max_publish_rate
                     or limits.max_publish_bytes_rate else None)
        # Per-connection counters, folded into `Stats` on close: a local increment is cheaper
        # on the hot path than reaching through to a shared object.
        self.packets_sent = 0
        self.publishes_sent = 0
        self.bytes_sent = 0

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def __repr__(self) -> str:
        return f"<Connection {self.client_id} {self.address} {self.state.value}>"

    # -- input ---------------------------------------------------------------------------------

    def data_received(self, data: bytes, now: float) -> None:
        if self.state is State.CLOSED:
            return
        self.last_activity = now
        core = self.core
        core.clock.now = now
        stats = core.stats
        stats.bytes_received += len(data)
        self.tick_bytes += len(data)
        if self.tick_bytes >= FAIR_SHARE:
            self.update_reading()
            core.output.read_next_tick(self)
        reader = self.reader
        frames = reader.feed(data)
        stats.packets_received += len(frames)
        if self._deferred:  # read before a pause took effect: after the packets waiting
            self._deferred += frames
        elif self._process(frames) and reader.error is not None and not self._deferred:
            self.protocol_violation(reader.error)
        if self.rate is not None:
            self._charge_publishes(self.rate, frames, now)

    def _process(self, frames: list[Frame]) -> bool:
        """Dispatch frames in order; False once the connection closed.

        Where a PUBLISH fills a subscriber (this client is then `throttled_by` it), the rest
        of the read waits in `_deferred` until the subscriber drains (`update_reading`). A
        read holds up to thousands of PUBLISHes: handled at once, a hundred publishers each
        paused only after its whole read would keep a subscriber over its high-water mark for
        seconds, and it would count as stalled (QoS 0 dropped) or its queue overflow (QoS 1)
        although it reads steadily."""
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
                if self.state is not connected:  # one check per packet on the hot path
                    if self.state is State.CLOSED:
                        return False
                    if self.state is State.MOVING:
                        return self._hand_over(frames)
                    if self.state is State.AUTHENTICATING:
                        self._defer(frames[position + 1:])
                        break
                if self.throttled_by:
                    self._defer(frames[position + 1:])
                    break
        except UnacceptableProtocol as exc:
            self.v5 = self.v5 or exc.mqtt5  # answer in the form the client reads
            self.refuse(ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION, str(exc))
            return False
        except MQTTError as exc:
            self.protocol_violation(exc)
            return False
        return True

    def _defer(self, frames: list[Frame]) -> None:
        if frames:
            if self._deferred is None:
                self._deferred = frames
            else:
                self._deferred += frames

    def process_deferred(self) -> None:
        """Handle the packets that arrived while a check ran, now that it has answered, or
        that waited for a full subscriber, now that it has drained."""
        deferred, self._deferred = self._deferred, None
        if deferred and self._process(deferred) and self.reader.error is not None \
                and not self._deferred:
            self.protocol_violation(self.reader.error)

    def _hand_over(self, frames: list[Frame]) -> bool:
        """Hand this connection to the worker that owns its client id, with the CONNECT
        (always the first of `frames`) and whatever followed it; False: it is gone from here.
        Garbage behind the CONNECT is refused here: the stream is lost anyway."""
        error = self.reader.error
        if error is not None:
            self.state = next_state(self.state, Event.MOVE_REFUSED)
            raise error
        data = b"".join([frame for _, frame, _ in frames]) + self.reader.take_pending()
        core = self.core
        links = core.links
        assert links is not None
        core.sessions.connections.discard(self)
        core.deadlines.forget(self)
        self.state = next_state(self.state, Event.HANDED_OVER)
        self.sink_gone = True
        links.hand_over(links.owner(self.client_id), self.sink, data, self.address,
                        self.certificate_username)
        return False

    def connection_lost(self, now: float) -> None:
        """The transport is gone: whatever was not a DISCONNECT is an abnormal close."""
        # The Will Delay and Session Expiry Intervals count from this moment, not from the
        # last timer: a stale clock would publish the will before its delay had passed, when
        # a reconnect must still be able to cancel it [MQTT-3.1.3-9].
        self.core.clock.now = now
        self.sink_gone = True
        self.outbox = None
        if self.state is not State.CLOSED:
            if self.state is State.CONNECTED:
                log.info("client %s (%s) connection lost", self.client_id, self.address)
            self.close(publish_will=True)

    def require_connected(self) -> None:
        """Raise the protocol error a packet other than CONNECT gets before CONNACK."""
        if self.state is not State.CONNECTED:
            if self.state is State.EXCHANGING:
                raise ProtocolError("packet other than AUTH or DISCONNECT before CONNACK, after "
                                    "a CONNECT with an Authentication Method", "MQTT-3.1.2-30")
            raise ProtocolError("packet before CONNECT", "MQTT-3.1.0-1")

    # -- output --------------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        outbox = self.outbox
        if outbox is None:
            self.outbox = [frame]
        else:
            outbox.append(frame)
        self.packets_sent += 1
        if not self.flush_pending:
            self.flush_pending = True
            self.core.output.mark_ready(self)

    def send_publish(self, frames: list[bytes]) -> None:
        """One PUBLISH in pieces (shared head, packet id, shared payload)."""
        outbox = self.outbox
        if outbox is None:
            self.outbox = frames[:]
        else:
            outbox += frames
        self.packets_sent += 1
        self.publishes_sent += 1
        if not self.flush_pending:
            self.flush_pending = True
            self.core.output.mark_ready(self)

    def send_pubrel(self, packet_id: int) -> None:
        self.send(bytes((PUBREL, 2, packet_id >> 8, packet_id & 0xFF)))

    def drop_will(self) -> bool:
        had = self.will is not None
        self.will = None
        return had

    def acknowledge(self, frame: bytes) -> None:
        """PUBACK, PUBREC or PUBCOMP: a promise that what it acknowledges is safe, so with a
        durable store it leaves only after the commit that makes it true (and in order), and
        with workers only once the workers the message went to hold it."""
        core = self.core
        if core.links is not None and self._after_workers(
                partial(self.send_when_durable, frame), self.link_sends):
            return
        core.gate.when_durable(self._send_if_open, frame)

    def send_when_durable(self, frame: bytes) -> None:
        self.core.gate.when_durable(self._send_if_open, frame)

    def send_publish_when_durable(self, frames: list[bytes]) -> None:
        self.core.gate.when_durable(self._send_publish_if_open, frames)

    def _send_if_open(self, frame: bytes) -> None:
        if self.state is not State.CLOSED:  # else the client retries, or the session resends
            self.send(frame)

    def _send_publish_if_open(self, frames: list[bytes]) -> None:
        if self.state is not State.CLOSED:
            self.send_publish(frames)

    def send_suback(self, frame: bytes, retained: list[tuple[str, int]]) -> None:
        """SUBACK, then the retained messages for the subscriptions that get them."""
        links = self.core.links
        if links is None or not self._after_workers(
                partial(self._subscribed, frame, retained), links.route_sends):
            self._subscribed(frame, retained)

    def _subscribed(self, frame: bytes, retained: list[tuple[str, int]]) -> None:
        self.send(frame)
        session = self.session
        assert session is not None
        for topic_filter, value in retained:
            self.core.router.send_retained(session, topic_filter, value)

    def _after_workers(self, action: Callable[[], None], upto: int) -> bool:
        """With workers, a SUBACK or an ack also promises something of the other workers: a
        client told it is subscribed may have another client publish at once, through another
        worker that must route to it; an acknowledged message another worker queued for its
        sessions must be in that worker's store. So the `action` sending it waits (True) until
        every other worker has applied, and committed, the first `upto` records this worker
        counted (`WorkerLinks.when_known`), and what follows waits too, to keep the order.
        Reading waits meanwhile."""
        links = self.core.links
        assert links is not None
        waiting = self.awaiting_workers
        if links.when_known(self._workers_caught_up, upto):
            self.barriers_pending += 1
        elif waiting is None:
            return False
        if waiting is None:
            waiting = self.awaiting_workers = []
            self.update_reading()
        waiting.append(action)
        return True

    def _workers_caught_up(self) -> None:
        self.barriers_pending -= 1
        if self.barriers_pending:
            return
        waiting, self.awaiting_workers = self.awaiting_workers, None
        if self.state is State.CLOSED or waiting is None:
            return
        for action in waiting:
            action()
        self.update_reading()

    def too_large(self, frames: list[bytes]) -> bool:
        """Whether a PUBLISH exceeds the client's Maximum Packet Size: then it must not be
        sent, and is dropped (counted) as if delivered [MQTT-3.1.2-24, MQTT-3.1.2-25]."""
        limit = self.max_packet_out
        if not limit or sum(map(len, frames)) <= limit:
            return False
        assert self.session is not None  # only a connected client is sent PUBLISHes
        self.session.count_drop(TOO_LARGE)
        log.debug("client %s: PUBLISH of %d bytes over its Maximum Packet Size %d dropped",
                  self.client_id, sum(map(len, frames)), limit)
        return True

    def flush(self) -> None:
        """Hand the outbox to the sink in one call; close the sink if a close was requested."""
        self.flush_pending = False
        if self.sink_gone:
            self.outbox = None
            return
        outbox = self.outbox
        if outbox:
            self.outbox = None
            self.bytes_sent += sum(map(len, outbox))
            self.sink.writelines(outbox)
        if self.close_after_flush:
            self.sink_gone = True
            self.core.host.close_sink(self.sink)

    # -- flow control --------------------------------------------------------------------------

    def update_reading(self) -> None:
        """Read the socket unless something holds it: a CONNECT being authenticated, a full
        subscriber (back-pressure), the publish rate, this tick's fair share used up, or
        acks waiting for the other workers."""
        wanted = not (self.state is State.AUTHENTICATING or self.throttled_by
                      or (self.rate is not None and self.rate.paused_until)
                      or self.tick_bytes >= FAIR_SHARE
                      or self.sink_gone or self.awaiting_workers is not None)
        if wanted and self._deferred and self.state is State.CONNECTED:
            self.core.flow.resume_deferred(self)  # the packets already read first
            return
        if wanted is not self.reading:
            self.reading = wanted
            if wanted:
                self.sink.resume_reading()
            else:
                self.sink.pause_reading()

    def renew_fair_share(self) -> None:
        self.tick_bytes = 0
        self.update_reading()

    def _charge_publishes(self, rate: PublishRate, frames: list[Frame], now: float) -> None:
        """Over the publish rate: stop reading until the buckets have refilled."""
        publishes = [frame for first, frame, _offset in frames
                     if first >> 4 == PacketType.PUBLISH]
        wait = rate.charge(self.core.limits, len(publishes), sum(map(len, publishes)), now)
        if wait > 0 and not rate.paused_until and not self.closed:
            rate.paused_until = now + wait
            self.update_reading()
            self.core.deadlines.schedule(self, rate.paused_until)

    # -- time ----------------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When this connection must next be checked: CONNECT timeout (which covers the whole
        authentication, enhanced exchanges included), keep-alive expiry, or the end of a
        publish-rate pause."""
        if self.state is State.AWAITING_CONNECT or self.state is State.AUTHENTICATING \
                or self.state is State.EXCHANGING:
            return self.opened_at + self.core.limits.connect_timeout
        if self.state is not State.CONNECTED:
            return None
        if self.rate is not None and self.rate.paused_until:
            return self.rate.paused_until
        return self.last_activity + self.keepalive * 1.5 if self.keepalive else None

    def on_deadline(self, now: float) -> float | None:
        """A deadline passed: resume after a rate pause, or close on a timeout. Returns the
        next deadline."""
        rate = self.rate
        if rate is not None and rate.paused_until:
            if now >= rate.paused_until:
                rate.paused_until = 0.0
                self.last_activity = now  # we were not reading: no silence to hold against it
                self.update_reading()
        elif self.throttled_by:
            self.last_activity = now  # paused by back-pressure, likewise
        else:
            deadline = self.deadline()
            if deadline is not None and deadline <= now:
                self._expire()
        return self.deadline()

    def _expire(self) -> None:
        timeout = self.core.limits.connect_timeout
        if self.state is State.AWAITING_CONNECT:
            log.warning("client - (%s) sent no CONNECT within %g s (connect timeout); closing",
                        self.address, timeout)
            self.close(publish_will=False)
        elif self.state is not State.CONNECTED:
            log.warning("client %s (%s) not authenticated within %g s (connect timeout); "
                        "closing", self.client_id, self.address, timeout)
            self.close(publish_will=False)
        else:
            log.warning("client %s (%s) keep-alive timeout (%d s x 1.5); closing connection",
                        self.client_id, self.address, self.keepalive)
            self.close(publish_will=True, reason=ReasonCode.KEEP_ALIVE_TIMEOUT)

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
        self.state = next_state(self.state, Event.CLOSE)
        self.close_after_flush = True
        if not self.flush_pending:
            self.flush_pending = True
            self.core.output.mark_ready(self)
        core = self.core
        core.sessions.connections.discard(self)
        core.flow.release_publishers(self)
        core.deadlines.forget(self)
        stats = core.stats
        stats.closed_bytes_sent += self.bytes_sent
        stats.closed_packets_sent += self.packets_sent
        stats.closed_publishes_sent += self.publishes_sent
        if was_connected:
            will, self.will = self.will, None
            core.sessions.detach(self, self.session, will, self.will_delay, publish_will)

    def protocol_violation(self, exc: MQTTError) -> None:
        if self.state is State.EXCHANGING:
            # Mid-way through enhanced authentication the client awaits a CONNACK, and
            # DISCONNECT may not come before one [MQTT-3.14.0-1]: say why in the CONNACK.
            self.refuse5(exc.reason_code, f"protocol violation: {exc}")
            return
        log.warning("client %s (%s) protocol violation: %s; closing connection",
                    self.client_id, self.address, exc)
        self.close(publish_will=True, reason=exc.reason_code)

    def refuse(self, code: ConnackCode, reason: str, *, v5_code: int | None = None,
               server_reference: str | None = None) -> None:
        """CONNACK with a failure code, then close [MQTT-3.2.2-5]; MQTT 5 clients get the
        matching reason code (or `v5_code`, which 3.1.1 cannot say) and the reason as a Reason
        String, which CONNACK may carry whatever Request Problem Information said."""
        if self.v5:
            self.refuse5(V5_CONNACK_CODES[code] if v5_code is None else v5_code, reason,
                         server_reference=server_reference)
            return
        log.warning("client %s (%s) refused with CONNACK %#04x (%s): %s", self.client_id,
                    self.address, code, code.name.lower().replace("_", " "), reason)
        self.send(encode_connack(False, code))
        self.close(publish_will=False)

    def refuse5(self, reason_code: int, reason: str, *,
                server_reference: str | None = None) -> None:
        """`refuse` with an MQTT 5 reason code. The Reason String goes out even when the client
        set Request Problem Information to 0: CONNACK is exempt [MQTT-3.1.2-29]."""
        log.warning("client %s (%s) refused with CONNACK %#04x (%s): %s", self.client_id,
                    self.address, reason_code, reason_name(reason_code, PacketType.CONNACK),
                    reason)
        self.send(encode_connack5(False, reason_code, Properties(
            reason_string=reason, server_reference=server_reference)))
        self.close(publish_will=False)
