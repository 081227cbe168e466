"""Bridges as the core sees them: the client ids reserved for their sessions, and their status.

A bridge (culex/bridge/) is, to the broker, a client with a persistent session subscribed to
the topics it forwards: its queue is the store of what waits for the other broker. That session
lives under a client id real clients cannot take (`BRIDGE_CLIENT_PREFIX` + the bridge's name:
a CONNECT with such an id is refused, handshake.py), so no client can take it over or read it.

`BridgeStatus` is what an observer reads about one bridge: `$SYS/broker/bridges/<name>/...`
(sys_topics.py) and whatever else looks at `Broker.bridges` (an admin API, metrics). With
worker processes a bridge runs in the worker that owns its client id, and only that worker's
broker has its status.
"""

from __future__ import annotations

from .session import Session

BRIDGE_CLIENT_PREFIX = "$bridge/"


def bridge_client_id(name: str) -> str:
    """The client id of a bridge's session."""
    return BRIDGE_CLIENT_PREFIX + name


def is_bridge_state(topic: str) -> bool:
    """`$SYS/broker/connection/<client id>/state`: where another broker's bridge (Mosquitto's,
    with `notifications true`, its default) publishes whether it is connected, and its will.
    The one `$SYS` topic clients may write, as in Mosquitto."""
    return (topic.startswith("$SYS/broker/connection/") and topic.endswith("/state")
            and topic.count("/") == 4)


class BridgeStatus:
    """One bridge's state for observers. The bridge updates it as things happen; the backlog
    is read from its session when asked, so nothing is counted twice."""

    __slots__ = ("connected", "connected_since", "connections", "last_error", "name",
                 "received", "refused", "remote", "sent", "session")

    def __init__(self, name: str) -> None:
        self.name = name
        self.connected = False
        # Where it is (or was last) connected, "host:port"; "" before the first connection.
        self.remote = ""
        # When the current connection was accepted (the broker's clock), 0.0 when down.
        self.connected_since = 0.0
        # Connections the remote accepted since start-up.
        self.connections = 0
        # Why the last connection ended or the last attempt failed; "" if nothing went wrong.
        self.last_error = ""
        # Messages the remote acknowledged (QoS 1/2; QoS 0: sent), and messages received
        # from it and published here.
        self.sent = 0
        self.received = 0
        # Messages the remote acknowledged with a failure (MQTT 5 reason code 0x80 or more):
        # done with, not sent again.
        self.refused = 0
        # The bridge's session, whose queue and window hold what waits for the remote.
        self.session: Session | None = None

    @property
    def backlog_messages(self) -> int:
        """QoS 1/2 messages not yet acknowledged by the remote: queued and in flight."""
        session = self.session
        return 0 if session is None else len(session.queue) + len(session.inflight)

    @property
    def backlog_bytes(self) -> int:
        """Their payload bytes."""
        session = self.session
        if session is None:
            return 0
        return session.queued_bytes + sum(len(entry.message.payload)
                                          for entry in session.inflight.values())

    def values(self) -> dict[str, str]:
        """`$SYS/broker/bridges/<name>/...`: name (below the prefix) -> value."""
        return {
            "connected": "1" if self.connected else "0",
            "remote": self.remote,
            "connections": str(self.connections),
            "backlog/messages": str(self.backlog_messages),
            "backlog/bytes": str(self.backlog_bytes),
            "messages/sent": str(self.sent),
            "messages/received": str(self.received),
            "messages/refused": str(self.refused),
            "last_error": self.last_error,
        }
