"""The packet trace of a client id: every packet it sends and is sent, decoded, while someone
watches.

Connections nobody traces pay nothing, not even a flag test: a traced connection's class is
swapped for a tracing subclass of it (as aliases.py does for Topic Aliases), whose `send`,
`send_publish` and `close` record before doing what they always do, and its handler table for
one whose entries record each packet before handling it. Both are put back when the last trace
of the client ends. A client that is not connected yet is caught as it attaches to its session
(`SessionManager.on_attach`, set only while a trace waits), so a trace started before a client
connects shows it from its CONNECT on; the CONNECT itself was read before its client id was
known, so it is described from what the accepted connection holds.

Events are JSON-ready dicts with the wall-clock `time`, the `direction` ("in": from the client,
"out": to it, "event": something that is no packet) and the decoded packet (protocol/describe.py:
no password, payloads cut to a preview).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, cast

from ..protocol.describe import describe_frame, payload_fields, protocol_name
from ..protocol.packets import PacketType
from ..protocol.reasons import reason_name
from .connection import Connection, Handler
from .ports import ClientLink
from .sessions import SessionManager
from .states import State

Event = dict[str, Any]

CONNACK = PacketType.CONNACK << 4


class PacketTrace:
    """One watcher of one client id: where its events go."""

    def __init__(self, client_id: str, emit: Callable[[Event], None],
                 payload_limit: int | None) -> None:
        self.client_id = client_id
        self.emit = emit
        self.payload_limit = payload_limit


class _Watch:
    """A traced connection: its traces, and what to put back when they end."""

    def __init__(self, connection: Connection, traces: list[PacketTrace],
                 wall_time: Callable[[], float], connecting: bool) -> None:
        self.connection = connection
        self.traces = traces
        self.wall_time = wall_time
        self.original_class = type(connection)
        self.original_handlers = connection.handlers
        # Attached just now: its CONNECT is described when its CONNACK goes out, by when
        # the connection holds everything the CONNECT said (its keep-alive comes last).
        self.connecting = connecting
        connection.handlers = {kind: self._traced(handler)
                               for kind, handler in connection.handlers.items()}
        connection.__class__ = cast(type[Connection], type(
            f"Traced{self.original_class.__name__}", (TracingConnection, self.original_class),
            {"__slots__": (), "watch": self}))

    def restore(self) -> None:
        connection = self.connection
        connection.handlers = self.original_handlers
        connection.__class__ = self.original_class

    def _traced(self, handler: Handler) -> Handler:
        def handle(connection: Connection, first: int, frame: bytes, offset: int) -> None:
            self.packet("in", frame)
            handler(connection, first, frame, offset)

        return handle

    def packet(self, direction: str, frame: bytes) -> None:
        if self.connecting and frame[0] == CONNACK:
            self.connecting = False
            self.event("in", self._connect())
        for trace in self.traces:
            self.event(direction, describe_frame(frame, v5=self.connection.v5,
                                                 from_client=direction == "in",
                                                 payload_limit=trace.payload_limit), trace)

    def event(self, direction: str, fields: Event, only: PacketTrace | None = None) -> None:
        event = {"time": self.wall_time(), "client_id": self.connection.client_id,
                 "direction": direction, **fields}
        for trace in self.traces if only is None else [only]:
            trace.emit(event)

    def _connect(self) -> Event:
        connection = self.connection
        session = connection.session
        will = connection.will
        fields: Event = {"type": "CONNECT", "client_id": connection.client_id,
                         "protocol": protocol_name(connection.protocol_level),
                         "keepalive": connection.keepalive, "username": connection.username,
                         "address": connection.address, "listener": connection.listener,
                         "session_expiry_interval": None if session is None
                         else session.expiry_interval}
        if will is not None:
            fields["will"] = {"topic": will.topic, "qos": will.qos, "retain": will.retain,
                              **payload_fields(will.payload)}
        return fields


class TracingConnection(Connection):
    """A traced connection's methods that record what passes (see the module docstring);
    the class of a traced connection is a subclass of this and of its own class."""

    __slots__ = ()
    watch: ClassVar[_Watch]

    def send(self, frame: bytes) -> None:
        self.watch.packet("out", frame)
        super().send(frame)

    def send_publish(self, frames: list[bytes]) -> None:
        self.watch.packet("out", b"".join(frames))
        super().send_publish(frames)

    def close(self, publish_will: bool, reason: int | None = None) -> None:
        was_open = self.state is not State.CLOSED
        super().close(publish_will, reason)
        if was_open:
            self.watch.event("event", {"type": "closed", "reason": None if reason is None
                                       else reason_name(reason, PacketType.DISCONNECT)})

    def connection_lost(self, now: float) -> None:
        if self.state is not State.CLOSED:
            self.watch.event("event", {"type": "connection lost"})
        super().connection_lost(now)


class ClientTraces:
    """Every trace of this broker (worker) by client id, and the connections they watch."""

    def __init__(self, manager: SessionManager, wall_time: Callable[[], float]) -> None:
        self._manager = manager
        self._wall_time = wall_time
        self._traces: dict[str, list[PacketTrace]] = {}
        self._watched: dict[str, _Watch] = {}

    def start(self, client_id: str, emit: Callable[[Event], None],
              payload_limit: int | None) -> PacketTrace:
        """Trace `client_id` from now on: its live connection at once, or the next one."""
        trace = PacketTrace(client_id, emit, payload_limit)
        traces = self._traces.setdefault(client_id, [])
        traces.append(trace)
        self._manager.on_attach = self._attached
        session = self._manager.sessions.get(client_id)
        connection = None if session is None else session.connection
        watch = self._watched.get(client_id)
        if watch is not None and watch.connection is connection:
            state = "connected"
        elif isinstance(connection, Connection):
            self._watch(connection, traces, connecting=False)
            state = "connected"
        else:
            state = "not connected: waiting for it to connect"
        trace.emit({"time": self._wall_time(), "client_id": client_id, "direction": "event",
                    "type": "trace started", "state": state})
        return trace

    def stop(self, trace: PacketTrace) -> None:
        traces = self._traces.get(trace.client_id, [])
        if trace in traces:
            traces.remove(trace)
        if traces:
            return
        self._traces.pop(trace.client_id, None)
        watch = self._watched.pop(trace.client_id, None)
        if watch is not None:
            watch.restore()
        if not self._traces:
            self._manager.on_attach = None

    def _attached(self, link: ClientLink) -> None:
        traces = self._traces.get(link.client_id)
        if traces is not None and isinstance(link, Connection):
            previous = self._watched.get(link.client_id)
            if previous is not None:
                previous.restore()  # taken over: the old connection is closed already
            self._watch(link, traces, connecting=True)

    def _watch(self, connection: Connection, traces: list[PacketTrace], *,
               connecting: bool) -> None:
        self._watched[connection.client_id] = _Watch(connection, traces, self._wall_time,
                                                     connecting)
