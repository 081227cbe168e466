"""Routing: from a published message to every subscriber it must reach, encoded once.

A PUBLISH is matched against the subscription trie (cached per topic name) and goes to each
matching session at min(message QoS, granted QoS); QoS 1/2 copies go through the session's
window and queue, QoS 0 copies straight to the connection. The commonest message, a QoS 0
PUBLISH without RETAIN, is never decoded: `forward` passes the frame as the publisher sent it
to every subscriber of the same protocol family (one `bytes` object for all of them). Shared
subscriptions give each message to one member of each matching group; with worker processes
the message also goes to the workers whose filters match (`WorkerLinks`).

A subscription's trie value is an int (subscription_value.py): the granted QoS for a 3.1/3.1.1
client, options and Subscription Identifiers above the QoS bits for an MQTT 5 one (and the
options of a 3.1/3.1.1 bridge), so routing tells the plain case apart with one comparison
(`value > 2`) per delivery.
"""

from __future__ import annotations

import logging

from ..auth.acl import Access
from ..protocol.publish import qos0_payload_offset, topic_span
from ..protocol.reasons import ReasonCode
from ..protocol.topics import split_shared, validate_topic_name
from .access import CONTROL_PREFIX
from .flow import FlowControl
from .limits import Limits
from .message import Message
from .ports import Publisher
from .retained import RetainedMessages
from .session import Session
from .shared import SharedSubscriptions
from .stats import NO_MEMBER, NOT_AUTHORIZED, QUEUE_FULL, STALLED_READER, Stats
from .subscription_value import (
    IDENTIFIER_SHIFT,
    NO_LOCAL,
    RETAIN_AS_PUBLISHED,
    V5_SUBSCRIBER,
    WITH_IDENTIFIER,
)
from .timers import Clock
from .trie import SubscriptionTrie
from .worker_links import WorkerLinks

log = logging.getLogger("culex")

# Distinct topic names whose validation is cached; a publisher spraying unique names only
# costs a cache reset now and then.
TOPIC_NAME_CACHE_SIZE = 100_000


class Router:
    def __init__(self, limits: Limits, stats: Stats, clock: Clock, *, flow: FlowControl,
                 retained: RetainedMessages, links: WorkerLinks | None) -> None:
        self._limits = limits
        self._stats = stats
        self._clock = clock
        self._flow = flow
        self.retained = retained
        # Worker processes: None in single-process mode.
        self.links = links
        # In a cluster: every QoS 1/2 message gets a cluster-wide id (Message.cluster_id).
        self.identifies = False
        self.subscriptions: SubscriptionTrie[Session] = SubscriptionTrie()
        self.shared = SharedSubscriptions(limits.shared_subscription_strategy)
        # The same dict as `shared.groups`: asked once per PUBLISH (not per delivery) whether
        # any shared subscription exists before looking for groups.
        self.shared_groups = self.shared.groups
        # Topic bytes -> the validated name, for every PUBLISH topic seen (see `topic_name`).
        self.topic_names: dict[bytes, str] = {}

    def topic_name(self, topic_bytes: bytes) -> str:
        """The decoded, validated name of a PUBLISH topic; raises MQTTError if it is invalid.
        Each distinct name is validated once: a cache hit is one dict lookup."""
        topic = self.topic_names.get(topic_bytes)
        if topic is None:
            topic = validate_topic_name(topic_bytes, self._limits.max_topic_levels)
            if topic.startswith(CONTROL_PREFIX):
                return topic  # never cached: it must not take a forwarding shortcut (control.py)
            names = self.topic_names
            if len(names) >= TOPIC_NAME_CACHE_SIZE:
                names.clear()
            names[topic_bytes] = topic
        return topic

    # -- subscriptions -------------------------------------------------------------------------

    def subscribe(self, session: Session, topic_filter: str, value: int) -> bool:
        """Make or renew a subscription; False when the client already holds
        max_subscriptions other filters. `value`: see subscription_value.py."""
        if topic_filter not in session.subscriptions \
                and len(session.subscriptions) >= self._limits.max_subscriptions:
            return False
        session.subscriptions[topic_filter] = value
        self.add_to_tries(session, topic_filter, value)
        if session.persistence is not None:
            session.persistence.subscribed(session.client_id, topic_filter, value)
        return True

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        """False when there was no such subscription (UNSUBACK v5 reason 0x11)."""
        if session.subscriptions.pop(topic_filter, None) is None:
            return False
        self.remove_from_tries(session, topic_filter)
        if session.persistence is not None:
            session.persistence.unsubscribed(session.client_id, topic_filter)
        return True

    def add_to_tries(self, session: Session, topic_filter: str, value: int) -> None:
        """Route `topic_filter` to `session` (a shared filter to its group), announcing a new
        filter to the other workers."""
        shared = split_shared(topic_filter)
        if shared is None:
            new = self.subscriptions.add(topic_filter, session, value)
        else:
            new = self.shared.add(*shared, session, value)
        if new and self.links is not None:
            self.links.subscribed(topic_filter)

    def remove_from_tries(self, session: Session, topic_filter: str) -> None:
        shared = split_shared(topic_filter)
        if shared is None:
            removed = self.subscriptions.remove(topic_filter, session)
        else:
            removed = self.shared.remove(*shared, session)
        if removed and self.links is not None:
            self.links.unsubscribed(topic_filter)

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, message: Message, origin: Publisher | None = None) -> int:
        """Route one message to every matching session, each at min(message, granted) QoS,
        and to the workers with matching subscriptions.

        `origin` is the publisher: paused while a subscriber it feeds is full, and skipped by
        its own No Local subscriptions. Returns the MQTT 5 PUBACK/PUBREC reason: 0x10 when
        nobody subscribes, 0x97 when a persistent session's queue had no room."""
        stamp = 0
        if message.retain:
            stamp = self.retained.stamp(message.topic)
            self.retained.retain(message, stamp, hold=True)
        if self.identifies:  # one test per PUBLISH when unclustered
            if message.qos and not stamp:
                stamp = self.retained.fresh_id()
            message.cluster_id = stamp
        reason = self._deliver(message, origin, shared_too=True)
        links = self.links
        if links is not None and links.publish(message, stamp, origin) \
                and reason == ReasonCode.NO_MATCHING_SUBSCRIBERS:
            reason = ReasonCode.SUCCESS
        return reason

    def publish_from_link(self, message: Message, stamp: int, link: Publisher) -> None:
        """A message another worker routed here: its local subscribers (not shared groups:
        the publishing worker chose their workers). A retained one replaces ours only when it
        is newer, and its stored row stays the publishing worker's."""
        if message.retain and self.retained.newer(message.topic, stamp):
            self.retained.retain(message, stamp, hold=False)
        self._deliver(message, link, shared_too=False)

    def _deliver(self, message: Message, origin: Publisher | None, shared_too: bool) -> int:
        """Deliver to the local subscribers; `publish` says what the return value means."""
        matches = self.subscriptions.match(message.topic)
        shared: int = ReasonCode.NO_MATCHING_SUBSCRIBERS
        if shared_too and (self.shared_groups or (self.links is not None
                                                  and self.links.shared_routes.count)):
            shared = self._deliver_to_groups(message, origin)
        if not matches:
            return shared
        if not message.qos:
            self._send_qos0(matches, message.topic, message.frame_qos0(), origin, message)
            return ReasonCode.SUCCESS
        reason = self._deliver_matches(message, matches, origin)
        return reason if shared == ReasonCode.NO_MATCHING_SUBSCRIBERS else max(reason, shared)

    def deliver_to(self, session: Session, message: Message) -> None:
        """A QoS 1/2 message for `session` alone, by its subscriptions here, as if it had
        been published now (what a dead member's stream held for a session taken from its
        store)."""
        matches = [match for match in self.subscriptions.match(message.topic)
                   if match[0] is session]
        if matches and message.qos:
            self._deliver_matches(message, matches, None)

    def _deliver_matches(self, message: Message, matches: list[tuple[Session, int]],
                         origin: Publisher | None) -> int:
        """A QoS 1/2 message for each of `matches`; the reason code `publish` returns. A
        session that remembers what it was given (a part of it may still come) is not given
        a message twice: in a cluster one can reach it both directly and through another
        member (session_moves.py, dead_streams.py), in either order."""
        qos = message.qos
        reason: int = ReasonCode.SUCCESS
        at_qos0 = []
        for match in matches:
            session, value = match
            if session.seen is not None and message.cluster_id in session.seen:
                continue
            retain = False
            identifiers = 0
            if value > 2:  # MQTT 5: options above the QoS bits
                if value & NO_LOCAL and origin is not None and session.connection is origin:
                    continue
                retain = message.retain and bool(value & RETAIN_AS_PUBLISHED)
                identifiers = value >> IDENTIFIER_SHIFT
                value &= 0x03
            if not value:
                at_qos0.append(match)
            elif session.acl is None or session.acl.allowed(message.topic, Access.READ):
                if not session.deliver(message, value if value < qos else qos, retain,
                                       identifiers):
                    self._queue_overflow(session)
                    if not session.clean:
                        reason = ReasonCode.QUOTA_EXCEEDED
                elif session.queue and origin is not None:
                    self._flow.queue_pressure(session, origin)
            else:
                session.count_drop(NOT_AUTHORIZED)
        if at_qos0:
            self._send_qos0(at_qos0, message.topic, message.frame_qos0(), origin, message)
        return reason

    def forward(self, topic: str, frame: bytes, origin: Publisher) -> None:
        """The hot path: a QoS 0 PUBLISH without RETAIN (and, from an MQTT 5 client, without
        properties). Every delivery to the publisher's protocol family is that very frame, so
        no Message is made unless the other family subscribes (measured: 14% of a 1 -> 1
        profile)."""
        matches = self.subscriptions.match(topic)
        if matches:
            if origin.v5:
                self._send_qos0(matches, topic, frame, origin, None)
            else:
                # The plain case, inline: a connected 3.1.1 subscriber without an ACL that is
                # not full gets the frame itself. Everyone else goes through `_send_qos0`,
                # together, so a variant is still made once for all of them.
                others = None
                for match in matches:
                    session, value = match
                    connection = session.connection
                    if connection is None:
                        continue  # QoS 0 is not queued for offline clients
                    if value > 2 or connection.write_paused or session.acl is not None:
                        if others is None:
                            others = [match]
                        else:
                            others.append(match)
                    else:
                        connection.send_publish([frame])
                if others is not None:
                    self._send_qos0(others, topic, frame, origin, None)
        links = self.links
        if links is not None:
            links.forward(topic, frame, origin)
            if links.shared_routes.count:
                self._deliver_to_groups(
                    Message(topic, frame[qos0_payload_offset(frame, origin.v5):]), origin)
                return
        if self.shared_groups:
            chosen = self.shared.choose(topic, 0, origin.client_id)
            if chosen:
                self._send_qos0([(session, value) for session, value, _ in chosen], topic,
                                frame, origin, None)

    def forwarded(self, frame: bytes, link: Publisher) -> None:
        """A QoS 0 frame forwarded by another worker, for the local subscribers; the link is
        the publisher that a full subscriber pauses."""
        start, stop = topic_span(frame)
        topic = self.topic_name(frame[start:stop])
        matches = self.subscriptions.match(topic)
        if matches:
            self._send_qos0(matches, topic, frame, link, None)

    def _send_qos0(self, matches: list[tuple[Session, int]], topic: str, frame: bytes,
                   origin: Publisher | None, message: Message | None) -> None:
        """Deliver at QoS 0. `frame` is the plain QoS 0 PUBLISH: 3.1.1 when `message` is
        given, else (`forward`) the publisher's own frame, of its family. Any other variant
        comes from `message`, made from `frame` the first time one is needed."""
        frame_v5 = message is None and origin is not None and origin.v5
        for session, value in matches:
            connection = session.connection
            if connection is None:
                continue  # QoS 0 is not queued for offline clients
            if session.acl is not None and not session.acl.allowed(topic, Access.READ):
                session.count_drop(NOT_AUTHORIZED)
                continue
            if connection.write_paused and not self._flow.throttle(origin, session, connection):
                session.count_drop(STALLED_READER)
                continue
            if value > 2 or frame_v5:  # options, an MQTT 5 subscriber or publisher
                if value & NO_LOCAL and connection is origin:
                    continue
                retain = bool(value & RETAIN_AS_PUBLISHED) and message is not None \
                    and message.retain
                frames = [frame]
                if (value >= V5_SUBSCRIBER) is not frame_v5 or retain \
                        or value >= WITH_IDENTIFIER:
                    if message is None:
                        message = Message(topic, frame[qos0_payload_offset(frame, frame_v5):])
                    if value >= WITH_IDENTIFIER:
                        frames = message.frames5_ids(0, 0, self._clock.now,
                                                     value >> IDENTIFIER_SHIFT, retain=retain)
                    elif value >= V5_SUBSCRIBER:
                        frames = message.frames5(0, 0, self._clock.now, retain=retain)
                    else:
                        frames = message.frames(0, 0, retain=retain)
                if not connection.too_large(frames):
                    connection.send_publish(frames)
                continue
            connection.send_publish([frame])

    def _queue_overflow(self, session: Session) -> None:
        session.count_drop(QUEUE_FULL)
        if not session.overflowing:
            session.overflowing = True
            log.warning("client %s: queue full (%d messages, %d bytes), dropping QoS 1/2 "
                        "messages until it drains", session.client_id, len(session.queue),
                        session.queued_bytes)

    # -- shared subscriptions ------------------------------------------------------------------

    def _deliver_to_groups(self, message: Message, origin: Publisher | None) -> int:
        """Give the message to one member of every shared subscription group it matches
        (§4.8.2); with workers, the group's worker is chosen first. Returns what `publish`
        does for these deliveries alone."""
        publisher = None if origin is None else origin.client_id
        chosen = self.shared.choose(message.topic, message.qos, publisher) \
            if self.shared_groups else []
        reason: int = ReasonCode.SUCCESS
        if self.links is not None:
            kept, sent = self.links.choose_workers(message, origin,
                                                   [group.key for _, _, group in chosen])
            if len(kept) < len(chosen):
                chosen = [pick for pick in chosen if pick[2].key in kept]
            if not chosen:
                return reason if sent else ReasonCode.NO_MATCHING_SUBSCRIBERS
        if not chosen:
            return ReasonCode.NO_MATCHING_SUBSCRIBERS
        for session, value, group in chosen:
            if not self._deliver_to_member(message, session, value, group.key, origin) \
                    and not session.clean:
                reason = ReasonCode.QUOTA_EXCEEDED
        return reason

    def deliver_to_group(self, message: Message, group_key: tuple[str, str],
                         link: Publisher) -> None:
        """Another worker chose this one for a shared group's message: one member gets it."""
        group = self.shared.groups.get(group_key)
        picked = None if group is None else self.shared.pick(group, message.topic,
                                                             message.qos > 0, None)
        if picked is None:
            self._stats.drop(NO_MEMBER)  # the group's last member here left meanwhile
            return
        self._deliver_to_member(message, picked[0], picked[1], group_key, link)

    def _deliver_to_member(self, message: Message, session: Session, value: int,
                           group_key: tuple[str, str], origin: Publisher | None) -> bool:
        """One group member's copy, at min(message, member's granted) QoS, tagged with its
        group so it can go to another member if this one leaves. False when its queue was
        full."""
        qos = min(message.qos, value & 0x03)
        if not qos:
            self._send_qos0([(session, value)], message.topic, message.frame_qos0(), origin,
                            message)
            return True
        retain = value > 2 and message.retain and bool(value & RETAIN_AS_PUBLISHED)
        if session.deliver(message, qos, retain, value >> IDENTIFIER_SHIFT, group_key):
            if session.queue and origin is not None:
                self._flow.queue_pressure(session, origin)
            return True
        self._queue_overflow(session)
        return False

    def reassign_shared(self, session: Session, ending: bool) -> None:
        """A shared subscription member went away: what the groups gave it and it has not
        acknowledged goes to another member. When its session is `ending`, that is
        everything not past PUBREC, to a connected member if any, else queued for an offline
        one, else dropped (counted). When only its connection went (the session is kept),
        just the messages still queued move, and only to a connected member: what is in
        flight stays, to be re-sent when it comes back [MQTT-4.4.0-1] (what EMQX does; the
        spec allows either, §4.8.2)."""
        if not session.inflight and not session.queue:
            return
        persistence = session.persistence
        for entry in session.take_shared(with_inflight=ending):
            key = entry.group
            assert key is not None
            message = entry.message
            group = self.shared.groups.get(key)
            picked = None if group is None else self.shared.pick(
                group, message.topic, ending, None, exclude=session)
            if picked is not None:
                self._deliver_to_member(message, picked[0], picked[1], key, None)
            elif self.links is not None and self.links.hand_to_group(message, key):
                pass  # a worker where the group has members takes it
            elif not ending:
                session.enqueue(entry)  # nobody to take it now: it waits for its owner
                continue
            else:
                self._stats.drop(NO_MEMBER)
            if persistence is not None:
                persistence.done(session.client_id, entry)

    # -- retained ------------------------------------------------------------------------------

    def send_retained(self, session: Session, topic_filter: str, value: int) -> None:
        """Retained messages for a new or renewed subscription, with RETAIN set [MQTT-3.3.1-8]
        and the subscription's identifier, if it has one [MQTT-3.3.4-3]. (Never called for a
        shared subscription: they get no retained messages, §4.8.2.)"""
        connection = session.connection
        assert connection is not None
        acl = session.acl
        now = self._clock.now
        for message in self.retained.store.match(topic_filter):
            if acl is not None and not acl.allowed(message.topic, Access.READ):
                continue
            if message.expired(now):
                continue  # still stored until replaced, but never delivered [MQTT-3.3.2-5]
            qos = min(message.qos, value & 0x03)
            if not qos:
                if value >= WITH_IDENTIFIER:
                    frames = message.frames5_ids(0, 0, now, value >> IDENTIFIER_SHIFT,
                                                 retain=True)
                elif session.v5:
                    frames = message.frames5(0, 0, now, retain=True)
                else:
                    frames = message.frames(0, 0, retain=True)
                if not connection.too_large(frames):
                    connection.send_publish(frames)
            elif not session.deliver(message, qos, True, value >> IDENTIFIER_SHIFT):
                self._queue_overflow(session)
