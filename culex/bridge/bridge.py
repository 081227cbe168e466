"""A bridge inside the broker: its persistent session, its status, and a link per connection.

At start-up, once storage is restored and before any client is served, `install_bridges`
gives each configured bridge this process runs its session (`$bridge/<name>`, never expiring):
restored with its queue and window if it was stored, else new; subscribed to the local side of
every `out`/`both` topic (with No Local and Retain As Published, as Mosquitto's bridges
subscribe), and unsubscribed from filters no longer configured. From then on every matching
QoS 1/2 message is stored in its queue in the publisher's commit, whether the remote is
connected or not. Sessions of bridges that are no longer configured are ended, with what they
buffered (logged), or they would keep taking messages nobody forwards.

With worker processes each bridge runs in the worker that owns its client id (as any client's
session does); routing between workers brings it every matching message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..core.access import ClientAccess
from ..core.bridges import BRIDGE_CLIENT_PREFIX, BridgeStatus, bridge_client_id
from ..core.broker import Broker
from ..core.ports import Sink
from ..core.session import NEVER_EXPIRES, Session
from ..core.subscription_value import NO_LOCAL, RETAIN_AS_PUBLISHED, V5_SUBSCRIBER
from ..protocol.packets import ConnackCode
from .client import ClientOptions, MqttClient
from .link import BridgeLink
from .settings import BridgeSettings

log = logging.getLogger("culex")

SUBSCRIPTION_OPTIONS = V5_SUBSCRIBER | NO_LOCAL | RETAIN_AS_PUBLISHED

Ended = Callable[[str, float | None], None]
"""(why the connection ended, "" for our own shutdown; how long it lasted once the remote
accepted it, None if it never did): for the server's retries."""


class Bridge:
    """One configured bridge in the process that runs it."""

    def __init__(self, broker: Broker, settings: BridgeSettings) -> None:
        self.broker = broker
        self.settings = settings
        self.client_id = bridge_client_id(settings.name)
        self.status = BridgeStatus(settings.name)
        broker.bridges[settings.name] = self.status
        # 3.1.1: the bridge bit, until a remote refuses it.
        self.try_private = settings.try_private and settings.protocol_version == "3.1.1"
        self.link: BridgeLink | None = None

    # -- the session ---------------------------------------------------------------------------

    def install(self) -> Session:
        """The bridge's session, restored or new, subscribed to exactly the configured
        `out` topics; its bounds are the bridge's buffer."""
        broker = self.broker
        settings = self.settings
        manager = broker.manager
        session = manager.sessions.get(self.client_id)
        if session is None:
            session = manager.new_session(self.client_id, persistent=True)
            session.username = settings.local_username or None
            manager.set_session_expiry(session, NEVER_EXPIRES)
            manager.sessions.put(session)
        status = self.status
        status.session = session
        if status.backlog_messages:
            log.info("bridge %s: %d messages (%d bytes) buffered for the remote", settings.name,
                     status.backlog_messages, status.backlog_bytes)
        session.v5 = True
        session.username = settings.local_username or None
        session.max_queued = settings.max_buffered_messages
        session.max_queued_bytes = settings.max_buffered_bytes
        session.acl = self.acl()
        wanted: dict[str, int] = {}
        for topic in settings.topics:
            if topic.outgoing:
                qos = max(topic.qos, wanted.get(topic.local_filter, 0) & 0x03)
                wanted[topic.local_filter] = SUBSCRIPTION_OPTIONS | qos
        router = broker.router
        for topic_filter in [known for known in session.subscriptions if known not in wanted]:
            router.unsubscribe(session, topic_filter)
        for topic_filter, value in wanted.items():
            if session.subscriptions.get(topic_filter) != value:
                router.subscribe(session, topic_filter, value)
            if session.acl is not None and not session.acl.allowed_filter(topic_filter):
                # Messages it may not read are never queued for it: say so once, at start-up,
                # rather than forward nothing in silence.
                log.warning("bridge %s: the ACL does not let %s (user %s) read all of %r: "
                            "what it may not read is not forwarded", settings.name,
                            self.client_id, settings.local_username or "anonymous",
                            topic_filter)
        return session

    def acl(self) -> ClientAccess | None:
        rules = self.broker.access.acl
        return None if rules is None else rules.for_client(
            self.client_id, self.settings.local_username or None)

    # -- connections ---------------------------------------------------------------------------

    def open(self, sink: Sink, address: str, now: float, password: bytes | None,
             ended: Ended) -> BridgeLink:
        """A connection to the remote is up: its link sends CONNECT."""
        settings = self.settings
        v5 = settings.protocol_version == "5"
        client = MqttClient(ClientOptions(
            settings.remote_client_id(), v5, settings.keepalive,
            username=settings.username or None, password=password,
            bridge_bit=self.try_private, max_packet_size=self.broker.limits.max_packet_size))

        def closed(error: str, accepted: bool) -> None:
            if self.link is link:
                self.link = None
            status = self.status
            lasted = self.broker.clock.now - status.connected_since if accepted else None
            status.connected = False
            status.connected_since = 0.0
            if error:
                status.last_error = error
            if self.try_private and link.refusal == ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION:
                self.try_private = False
                error += ("; the remote does not take the bridge bit (try_private): connecting "
                          "as a plain 3.1.1 client from now on")
            ended(error, lasted)

        link = self.link = BridgeLink(
            self.broker.services, settings, client, status=self.status, sink=sink,
            address=address, now=now, acl=self.acl(), closed=closed, accepted=self._accepted)
        return link

    def _accepted(self, link: BridgeLink) -> Session:
        """CONNACK 0: the link becomes the session's connection."""
        limits = link.client.limits
        session, _ = self.broker.manager.attach(
            link, self.client_id, clean_start=False, expiry=NEVER_EXPIRES, v5=True,
            username=self.settings.local_username or None, acl=link.acl,
            max_inflight=min(self.settings.max_inflight, limits.receive_maximum), will=None)
        status = self.status
        status.session = session
        status.connected = True
        status.remote = link.address
        status.connections += 1
        status.connected_since = self.broker.clock.now
        log.info("bridge %s: connected to %s as %r (MQTT %s%s, session present %d); %d "
                 "messages to forward", self.settings.name, link.address,
                 link.client.options.client_id, self.settings.protocol_version,
                 ", bridge bit" if link.client.options.bridge_bit else "",
                 limits.session_present, status.backlog_messages)
        return session


def install_bridges(broker: Broker, configured: tuple[BridgeSettings, ...],
                    owns: Callable[[str], bool]) -> list[Bridge]:
    """The bridges this process runs (`owns` their client ids), their sessions installed;
    the sessions of bridges no longer configured are ended."""
    names = {settings.name for settings in configured}
    manager = broker.manager
    for session in manager.sessions:
        name = session.client_id[len(BRIDGE_CLIENT_PREFIX):]
        if session.client_id.startswith(BRIDGE_CLIENT_PREFIX) and name not in names:
            log.warning("bridge %s is no longer configured: its session ends, with the %d "
                        "messages it buffered", name, len(session.queue) + len(session.inflight))
            manager.discard(session)
    bridges = [Bridge(broker, settings) for settings in configured
               if owns(bridge_client_id(settings.name))]
    for bridge in bridges:
        bridge.install()
    return bridges
