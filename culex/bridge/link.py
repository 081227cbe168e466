"""One connection of a bridge to its remote broker, as the core sees it: a `ClientLink`.

To the local broker the bridge is a client with a persistent session (bridge.py installs it).
While the remote is connected, this link is that session's connection, so everything a
subscriber has, the bridge has: the session's window and queue (in order, in the same SQLite
file and group commit as every other session), its packet ids, DUP re-sends and PUBRELs after a
reconnect or a restart, QoS 2 sent only once its record is committed. What the session gives
the link goes to the remote, its topic remapped (frames.py); the remote's PUBACK, PUBREC and
PUBCOMP go back to the session, exactly as a subscriber's would.

The other way, the remote's messages are published here as if a client had sent them, with
this link as their publisher: back-pressure pauses it like a client (its socket stops being
read), the bridge's own No Local subscriptions keep them from going straight back out, and the
remote's PUBACK/PUBREC leaves only after the commit (and with workers, once the workers the
message went to hold it), in order.

Sans-I/O like `Connection`: bytes in with the time (`data_received`), frames out once per
loop tick (`flush` to the `Sink`), deadlines (CONNACK, keep-alive) through the core's one
timer. The server (server/bridges.py) owns the socket and decides when to connect again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..auth.acl import Access
from ..core.access import ClientAccess
from ..core.bridges import BridgeStatus, bridge_client_id, is_bridge_state
from ..core.context import CoreServices
from ..core.message import Message
from ..core.ports import Sink
from ..core.session import Session
from ..core.states import State
from ..core.stats import TOO_LARGE
from ..core.write_flow import WriteFlow
from ..protocol.errors import MQTTError
from ..protocol.packets import (
    Connack,
    Packet,
    PacketType,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Unsuback,
)
from ..protocol.packets5 import (
    Connack5,
    Disconnect5,
    Packet5,
    Puback5,
    Pubcomp5,
    Publish5,
    Pubrec5,
    Pubrel5,
    Suback5,
    Unsuback5,
)
from ..protocol.reasons import ReasonCode, reason_name
from .client import ClientState, MqttClient
from .frames import for_remote
from .settings import BridgeSettings

log = logging.getLogger("culex")

# As for a client connection (connection.py): bytes one link may feed in per loop tick before
# it waits for the next one, so a remote flooding us cannot starve the local clients.
FAIR_SHARE = 64 * 1024
# Distinct local topics whose remote name is remembered.
TOPIC_CACHE_SIZE = 10_000

Closed = Callable[[str, bool], None]
"""Told when the link ends: why ("" for our own shutdown), and whether the remote had accepted
it (CONNACK 0)."""


class BridgeLink(WriteFlow):
    """The `ClientLink` of a bridge's session while one connection to the remote lasts."""

    def __init__(self, core: CoreServices, settings: BridgeSettings, client: MqttClient, *,
                 status: BridgeStatus, sink: Sink, address: str, now: float,
                 acl: ClientAccess | None, closed: Closed,
                 accepted: Callable[[BridgeLink], Session]) -> None:
        self.core = core
        self.settings = settings
        self.status = status
        self.client = client
        self.client_id = bridge_client_id(settings.name)
        self.sink = sink
        # The remote's address (host:port), for logs and $SYS.
        self.address = address
        self.acl = acl
        self._closed = closed
        self._accepted = accepted
        self.session: Session | None = None
        # The CONNACK code that refused the connection, if one did.
        self.refusal: int | None = None
        self.state = State.AWAITING_CONNECT
        self.v5 = True  # the session's family (see frames.py)
        self.opened_at = now
        self.last_activity = now  # last input, as for a client (flow.py)
        self.last_sent = now
        self.throttled_by = 0
        self.link_sends = 0
        self.write_paused = False
        self.paused_since = 0.0
        self.bytes_sent = 0
        self.packets_sent = 0
        self.publishes_sent = 0
        self.outbox: list[bytes] = []
        self.flush_pending = False
        self.close_after_flush = False
        self.reading = True
        self.tick_bytes = 0
        # Packets read but held back by a full subscriber (back-pressure).
        self._deferred: list[Packet | Packet5] = []
        # Acks waiting for other workers (with them, in order), and barriers outstanding.
        self._waiting: list[bytes] | None = None
        self._barriers = 0
        self._remote_topics: dict[str, str] = {}
        # How many bytes longer a topic can get on its way out (prefixes).
        self._growth = max((len(topic.remote_prefix.encode()) - len(topic.local_prefix.encode())
                            for topic in settings.topics if topic.outgoing), default=0)
        # A refused message is logged once per connection; all are counted (status.refused).
        self._refusals = 0
        core.sessions.connections.add(self)
        core.deadlines.schedule(self, now + settings.connect_timeout)
        self.send(client.connect())

    def __repr__(self) -> str:
        return f"<BridgeLink {self.settings.name} {self.address} {self.state.value}>"

    # -- input ---------------------------------------------------------------------------------

    def data_received(self, data: bytes, now: float) -> None:
        if self.state is State.CLOSED:
            return
        core = self.core
        core.clock.now = self.last_activity = now
        core.stats.bytes_received += len(data)
        self.tick_bytes += len(data)
        if self.tick_bytes >= FAIR_SHARE:
            self.update_reading()
            core.output.read_next_tick(self)
        try:
            packets = self.client.receive(data)
        except MQTTError as exc:
            self._fail(f"protocol violation by the remote: {exc}")
            return
        core.stats.packets_received += len(packets)
        if self._deferred:
            self._deferred += packets
        else:
            self._process(packets)

    def _process(self, packets: list[Packet | Packet5]) -> None:
        for position, packet in enumerate(packets):
            self._handle(packet)
            if self.state is State.CLOSED:
                return
            if self.throttled_by:
                self._deferred += packets[position + 1:]
                return

    def process_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        self._process(deferred)

    def _handle(self, packet: Packet | Packet5) -> None:
        match packet:
            case Publish() | Publish5():
                self._incoming(packet)
            case Puback5():
                self._completed(packet.packet_id, 1, packet.reason_code)
            case Puback():
                self._completed(packet.packet_id, 1, 0)
            case Pubrec5():
                self._received(packet.packet_id, packet.reason_code)
            case Pubrec():
                self._received(packet.packet_id, 0)
            case Pubcomp() | Pubcomp5():
                self._completed(packet.packet_id, 2, 0)
            case Pubrel() | Pubrel5():
                self._released(packet.packet_id)
            case Connack() | Connack5():
                self._connack(packet)
            case Suback() | Suback5():
                self._subscribed(packet)
            case Disconnect5():
                reason = reason_name(packet.reason_code, PacketType.DISCONNECT)
                text = packet.properties.reason_string
                self._fail(f"the remote disconnected: {packet.reason_code:#04x} ({reason})"
                           + (f": {text}" if text else ""))
            case Pingresp() | Unsuback() | Unsuback5():
                pass

    # -- the handshake -------------------------------------------------------------------------

    def _connack(self, packet: Connack | Connack5) -> None:
        client = self.client
        if client.state is not ClientState.CONNECTED:
            self.refusal = packet.return_code if isinstance(packet, Connack) \
                else packet.reason_code
            self._fail(f"refused: {client.refusal(packet)}")
            return
        settings = self.settings
        limits = client.limits
        too_high = [topic.qos for topic in settings.topics
                    if topic.outgoing and topic.qos > limits.maximum_qos]
        if too_high:
            self._fail(f"the remote's Maximum QoS is {limits.maximum_qos}, below the QoS "
                       f"{max(too_high)} of an outgoing topic: lower that topic's qos")
            return
        self.state = State.CONNECTED
        session = self.session = self._accepted(self)
        if not limits.session_present:
            # The remote kept nothing of ours: the QoS 2 ids it was releasing are gone too.
            for packet_id in list(session.awaiting_release):
                session.inbound_released(packet_id)
        incoming: dict[str, int] = {}
        for topic in settings.topics:
            if topic.incoming:
                incoming[topic.remote_filter] = max(topic.qos, incoming.get(topic.remote_filter, 0))
        if incoming:
            # The id is the session's, so no PUBLISH of its window can have it; the session's
            # next ids follow it, and SUBACK comes long before they wrap around.
            self.send(client.subscribe(session.allocate_packet_id(), list(incoming.items())))
        session.resume()
        deadline = self._next_deadline()
        if deadline is not None:  # keep-alive may come before the CONNACK deadline would
            self.core.deadlines.schedule(self, deadline)

    def _subscribed(self, packet: Suback | Suback5) -> None:
        codes = packet.return_codes if isinstance(packet, Suback) else packet.reason_codes
        filters = [topic.remote_filter for topic in self.settings.topics if topic.incoming]
        for topic_filter, code in zip(dict.fromkeys(filters), codes, strict=False):
            if code >= 0x80:
                log.warning("bridge %s: the remote %s refused the subscription to %r (%#04x)",
                            self.settings.name, self.address, topic_filter, code)

    # -- outgoing: the session's messages to the remote ----------------------------------------

    def send_publish(self, frames: list[bytes]) -> None:
        """A PUBLISH of the session (QoS 1/2, under its packet id) or from routing (QoS 0)."""
        if self.state is not State.CONNECTED:
            return  # the session re-sends it on the next connection (QoS 1/2)
        limits = self.client.limits
        pieces = for_remote(frames, self._remote_topic, v5=self.client.v5,
                            retain_available=limits.retain_available)
        self.outbox += pieces
        self.packets_sent += 1
        self.publishes_sent += 1
        if not frames[0][0] & 0x06:
            self.status.sent += 1  # QoS 0: done once written
        self._mark_ready()

    def send_publish_when_durable(self, frames: list[bytes]) -> None:
        self.core.gate.when_durable(self.send_publish, frames)

    def send_pubrel(self, packet_id: int) -> None:
        self.send(self.client.ack(PacketType.PUBREL, packet_id))

    def drop_will(self) -> bool:
        return False  # a bridge's local side has no will

    def too_large(self, frames: list[bytes]) -> bool:
        """Over the remote's Maximum Packet Size: never sent, dropped (and counted) as a
        subscriber's would be [MQTT-3.1.2-25]."""
        limit = self.client.limits.maximum_packet_size
        if not limit or self.state is not State.CONNECTED:
            return False
        # The remote's copy differs only by its topic (and one more length byte at most): the
        # exact size is worked out only for a PUBLISH near the limit.
        size = sum(map(len, frames))
        if size + self._growth + 1 <= limit:
            return False
        size = sum(map(len, for_remote(frames, self._remote_topic, v5=self.client.v5,
                                       retain_available=True)))
        if size <= limit:
            return False
        self.core.stats.drop(TOO_LARGE)
        log.warning("bridge %s: a PUBLISH of %d bytes is over the remote's Maximum Packet "
                    "Size %d: dropped", self.settings.name, size, limit)
        return True

    def _remote_topic(self, topic: str) -> str:
        remote = self._remote_topics.get(topic)
        if remote is None:
            entry = self.settings.outgoing_topic(topic)
            # A topic no `out` pattern maps (a message queued under an older configuration)
            # keeps its name, as in Mosquitto.
            remote = topic if entry is None else entry.to_remote(topic)
            if len(self._remote_topics) >= TOPIC_CACHE_SIZE:
                self._remote_topics.clear()
            self._remote_topics[topic] = remote
        return remote

    def _completed(self, packet_id: int, qos: int, reason: int) -> None:
        """PUBACK or PUBCOMP: the remote has the message; the session forgets it."""
        session = self.session
        assert session is not None
        if session.acknowledge(packet_id, qos):
            if reason >= 0x80:
                self._refused(packet_id, reason)
            else:
                self.status.sent += 1
        else:
            log.debug("bridge %s: %s for unknown packet id %d ignored", self.settings.name,
                      "PUBACK" if qos == 1 else "PUBCOMP", packet_id)

    def _received(self, packet_id: int, reason: int) -> None:
        """PUBREC: the remote has the QoS 2 message; PUBREL once that is recorded (a restart
        must send PUBREL, never the PUBLISH again). A refusal ends the exchange."""
        session = self.session
        assert session is not None
        if not session.release(packet_id):
            log.debug("bridge %s: PUBREC for unknown packet id %d ignored", self.settings.name,
                      packet_id)
            return
        if reason >= 0x80:
            self._refused(packet_id, reason)
            session.acknowledge(packet_id, 2)
            return
        self.core.gate.when_durable(self._send_if_open, self.client.ack(PacketType.PUBREL,
                                                                        packet_id))

    def _refused(self, packet_id: int, reason: int) -> None:
        self._refusals += 1
        self.status.refused += 1
        if self._refusals == 1:
            log.warning("bridge %s: the remote %s refused a message (packet id %d): %#04x "
                        "(%s); it is not sent again (further refusals on this connection are "
                        "only counted)", self.settings.name, self.address, packet_id, reason,
                        reason_name(reason, PacketType.PUBACK))

    # -- incoming: the remote's messages, published here ---------------------------------------

    def _incoming(self, packet: Publish | Publish5) -> None:
        core = self.core
        session = self.session
        assert session is not None
        qos, packet_id = packet.qos, packet.packet_id
        core.stats.publishes_received += 1
        reason = self._route(packet, session)
        if qos == 2 and reason >= 0x80 and reason != _RETRANSMISSION:
            session.inbound_released(packet_id)  # a refused PUBREC ends the exchange
        if qos:
            self._acknowledge(self.client.ack(PacketType.PUBACK if qos == 1 else PacketType.PUBREC,
                                              packet_id, reason if reason < 0x100 else 0))

    def _route(self, packet: Publish | Publish5, session: Session) -> int:
        """Publish the remote's message here; the reason code its ack carries."""
        entry = self.settings.incoming_topic(packet.topic)
        if entry is None:
            log.info("bridge %s: a message on %r matches no `in` topic of the bridge: dropped",
                     self.settings.name, packet.topic)
            return ReasonCode.SUCCESS
        topic = entry.to_local(packet.topic)
        system = topic.startswith("$SYS") and not is_bridge_state(topic)
        if system or (self.acl is not None and not self.acl.allowed(topic, Access.WRITE)):
            log.info("bridge %s: a message for %r dropped: %s", self.settings.name, topic,
                     "$SYS is read-only" if system else "denied by the ACL")
            return ReasonCode.NOT_AUTHORIZED
        if packet.qos == 2 and not session.inbound_received(packet.packet_id):
            return _RETRANSMISSION  # routed when it first came
        properties = packet.properties if isinstance(packet, Publish5) else None
        if properties is not None:
            properties.subscription_identifiers = []  # the remote's, for its subscription
            if properties.is_empty():
                properties = None
        core = self.core
        qos = min(packet.qos, core.limits.max_qos)
        reason = core.router.publish(Message(topic, packet.payload, qos, packet.retain,
                                             properties=properties, created=core.clock.now),
                                     self)
        self.status.received += 1
        return reason

    def _released(self, packet_id: int) -> None:
        """PUBREL of an inbound QoS 2 message: PUBCOMP once its release is recorded."""
        session = self.session
        assert session is not None
        known = session.inbound_released(packet_id)
        self._acknowledge(self.client.ack(
            PacketType.PUBCOMP, packet_id,
            ReasonCode.SUCCESS if known else ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))

    def _acknowledge(self, frame: bytes) -> None:
        """An ack promises that what it acknowledges is stored: after the commit and, with
        workers, once the workers the message went to have committed it too; in order."""
        links = self.core.links
        if links is not None:
            waiting = self._waiting
            if links.when_known(self._workers_caught_up, self.link_sends):
                self._barriers += 1
            elif waiting is None:
                self.core.gate.when_durable(self._send_if_open, frame)
                return
            if waiting is None:
                waiting = self._waiting = []
            waiting.append(frame)
            return
        self.core.gate.when_durable(self._send_if_open, frame)

    def _workers_caught_up(self) -> None:
        self._barriers -= 1
        if self._barriers:
            return
        waiting, self._waiting = self._waiting, None
        for frame in waiting or ():
            self.core.gate.when_durable(self._send_if_open, frame)

    # -- output ------------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        self.outbox.append(frame)
        self.packets_sent += 1
        self._mark_ready()

    def _send_if_open(self, frame: bytes) -> None:
        if self.state is not State.CLOSED:  # else the remote sends it again
            self.send(frame)

    def _mark_ready(self) -> None:
        if not self.flush_pending:
            self.flush_pending = True
            self.core.output.mark_ready(self)

    def flush(self) -> None:
        self.flush_pending = False
        outbox = self.outbox
        if outbox:
            self.outbox = []
            self.bytes_sent += sum(map(len, outbox))
            self.last_sent = self.core.clock.now
            self.sink.writelines(outbox)
        if self.close_after_flush:
            self.close_after_flush = False
            self.sink.close()

    # -- flow control ------------------------------------------------------------------------

    def update_reading(self) -> None:
        """Read the remote unless a full subscriber holds it back (back-pressure) or it has
        used its fair share of this tick."""
        if self.state is State.CLOSED:
            return
        wanted = not (self.throttled_by or self.tick_bytes >= FAIR_SHARE)
        if wanted and self._deferred and self.state is State.CONNECTED:
            self.core.flow.resume_deferred(self)
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

    # -- time --------------------------------------------------------------------------------

    def _next_deadline(self) -> float | None:
        if self.state is State.AWAITING_CONNECT:
            return self.opened_at + self.settings.connect_timeout
        keepalive = self.client.keepalive
        if self.state is not State.CONNECTED or not keepalive:
            return None
        return min(self.last_sent + keepalive, self.last_activity + keepalive * 1.5)

    def on_deadline(self, now: float) -> float | None:
        """No CONNACK in time, or keep-alive: PINGREQ when we have been silent for the
        keep-alive, and the end when the remote has been silent for one and a half."""
        if self.state is State.AWAITING_CONNECT:
            if now >= self.opened_at + self.settings.connect_timeout:
                self._fail(f"no CONNACK within {self.settings.connect_timeout:g} s")
        elif self.state is State.CONNECTED and self.client.keepalive:
            keepalive = self.client.keepalive
            if self.throttled_by:
                self.last_activity = now  # not reading by our choice: no silence to count
            if now >= self.last_activity + keepalive * 1.5:
                self._fail(f"nothing from the remote for {keepalive * 1.5:g} s "
                           f"(keep-alive {keepalive} s)")
            elif now >= self.last_sent + keepalive:
                self.send(self.client.pingreq())
                self.last_sent = now
        return self._next_deadline()

    # -- closing -----------------------------------------------------------------------------

    def connection_lost(self, now: float, error: str) -> None:
        """The socket is gone (the transport says why)."""
        self.core.clock.now = now
        self.outbox = []
        if self.state is not State.CLOSED:
            self._end(error or ("the remote closed the connection"
                                + (" before CONNACK" if self.state is State.AWAITING_CONNECT
                                   else "")), farewell=False)

    def close(self, publish_will: bool = False, reason: int | None = None) -> None:
        """Our side ends it (the broker stops): a normal DISCONNECT, so the remote keeps the
        session and publishes no will."""
        self._end("", farewell=True)

    def _fail(self, error: str) -> None:
        self._end(error, farewell=False)

    def _end(self, error: str, *, farewell: bool) -> None:
        if self.state is State.CLOSED:
            return
        accepted = self.state is State.CONNECTED
        if farewell and accepted:
            self.send(self.client.disconnect())
        self.state = State.CLOSED
        self.close_after_flush = True
        self._mark_ready()
        core = self.core
        core.sessions.connections.discard(self)
        core.flow.release_publishers(self)
        core.deadlines.forget(self)
        stats = core.stats
        stats.closed_bytes_sent += self.bytes_sent
        stats.closed_packets_sent += self.packets_sent
        stats.closed_publishes_sent += self.publishes_sent
        if accepted:
            core.sessions.detach(self, self.session, None, 0, False)
        self._closed(error, accepted)


# `_route`'s answer for a QoS 2 retransmission: acknowledged again (PUBREC 0), not routed.
_RETRANSMISSION = 0x100
