"""One QoS 1/2 message on its way to one session: the unit of a session's queue and window."""

from __future__ import annotations

from .message import Message


class Outgoing:
    """A QoS 1/2 message for one session: queued, or in flight under a packet id.

    `released`: PUBREC seen and PUBREL sent (QoS 2). `seq` orders the entry in storage.
    `identifiers`: the packed Subscription Identifiers it goes out with (see
    subscription_value.py), kept here (and in storage) so a queued or re-sent copy carries them
    too. `group`: the (ShareName, filter) of the shared subscription that gave it to this
    session, so it can go to another member if this session leaves; not stored: after a
    restart a restored entry stays with its session.
    """

    __slots__ = ("group", "identifiers", "message", "qos", "released", "retain", "seq")

    def __init__(self, message: Message, qos: int, retain: bool, identifiers: int = 0,
                 group: tuple[str, str] | None = None) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.identifiers = identifiers
        self.group = group
        self.released = False
        self.seq = 0
