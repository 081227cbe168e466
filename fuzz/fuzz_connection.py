"""Fuzz a whole broker connection, sans I/O: hostile bytes must not raise nor break anyone else.

Run (see fuzz/README.md)::

    PYTHONPATH=. .venv/bin/python fuzz/fuzz_connection.py fuzz/corpus/connection -max_total_time=600

Each input builds a fresh `Broker` (limits, authentication, ACL, $SYS and a durable storage
model chosen by three setup values), a well-behaved *observer* client subscribed to `probe/+`, and
two hostile connection slots. The rest of the input is a script of operations, read like
fuzz_decoder.py's chunks: operation codes (and chunk sizes) from the end of the input, the bytes
the hostile clients send from the front::

    [hostile bytes ...][... op, size, op ...][more limits][broker setup][limits setup]

Operations: bytes to hostile slot 0 or 1 (`data_received(chunk, now)`), the clock moving forward
plus `broker.tick(now)`, `broker.flush()`, the transport losing a slot (`connection_lost`) or
opening another one, back-pressure (`pause_writing`/`resume_writing`), an authentication
answer, and a storage commit finishing (or failing). `encode_input` builds such a script.

Findings, i.e. what makes `one_input` raise:

- any exception escaping `data_received`, `tick`, `flush`, `connection_lost` and friends (the
  fake sinks also raise on a write after close or after the connection was lost);
- a broken broker invariant (`check_invariants`): connection and session bookkeeping,
  `clients_connected`, subscription counts, in-flight and queue bounds;
- a malformed byte stream sent to a hostile client;
- the observer losing its connection (unless a hostile client took over its client id) or not
  receiving a QoS 0 and a QoS 1 probe published afterwards by a third, fresh client, which must
  get its PUBACK: a hostile connection must not break the others;
- with storage, what a restart would restore (from committed data only) differing from the
  persistent sessions, retained messages and wills in memory once every commit has finished.

`one_input` needs neither atheris nor instrumentation, so CI replays the corpus with pytest.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

try:
    import atheris
except ImportError:  # CI replays the corpus without it
    atheris = None

# Make `culex`, `fuzz` and `tests` importable when run as a script from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with (atheris.instrument_imports(include=["culex"]) if atheris is not None
      and __name__ == "__main__" else contextlib.nullcontext()):
    from culex.auth.acl import AclRules
    from culex.core.access import AuthDone, AuthRequest
    from culex.core.broker import Broker
    from culex.core.connection import Connection
    from culex.core.limits import Limits
    from culex.core.states import State
    from culex.protocol.codec import decode_packet
    from culex.protocol.packets import Puback, Publish
    from culex.protocol.reader import FrameReader
    from culex.protocol.v5 import decode_packet_v5
    from culex.storage.base import (
        CommitDone,
        LoadedState,
        StoredEntry,
        StoredMessage,
        StoredSession,
    )
    from fuzz.fuzz_decoder import DataProvider, provider_for, trailer
    from tests.unit.core_helpers import FakeClient, FakeSink, Harness

OBSERVER_ID = "observer"
PUBLISHER_ID = "probe-publisher"
PROBE_FILTER = "probe/+"
GOOD_PEER = "good:"  # peers of the well-behaved clients; the authenticator answers them at once

ACL_TEXT = """\
topic readwrite probe/#
topic read $SYS/#
topic write w/#
topic deny w/secret
user alice
topic readwrite alice/#
topic deny alice/private/#
pattern readwrite clients/%c/#
pattern read users/%u/#
pattern deny denied/%c/#
"""

# Clock steps (seconds) an operation picks from: around the connect timeout, the keep-alive
# grace (x 1.5), the stalled-reader timeout and the $SYS interval.
TIME_STEPS = (0.0, 0.001, 0.1, 0.5, 1.0, 1.5, 2.0, 5.0, 9.9, 10.0, 30.0, 60.0, 91.0, 600.0,
              3600.0, 100_000.0)
AUTH_CODES = (0, 4, 5)
MAX_OPERATIONS = 2000
MAX_DRAIN_ROUNDS = 3000

# -- operation codes (the low three bits; bit 3 picks the hostile slot, bits 4-7 an argument) --
OP_DATA = 0  # 0..3: a chunk of bytes for the slot (size from the next value, 0: all the rest)
OP_TIME = 4
OP_FLUSH = 5
OP_TRANSPORT = 6  # arg 0-3: lost and reopened; 4-7 pause_writing; 8-11 resume; 12-15: reopen
OP_SERVICE = 7  # arg 0-5: auth answer; 6-9 commit done; 10-11 commit failed; 12-15 commit/tick


def op(kind: int, slot: int = 0, arg: int = 0) -> int:
    """An operation code for `encode_input`."""
    return kind | (slot << 3) | (arg << 4)


# -- fakes --------------------------------------------------------------------------------------

class StrictLogHandler(logging.Handler):
    """Formats every record and lets a formatting error propagate to the logging call site (the
    standard handlers print such errors and carry on, which would hide a broken log call)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)

    def handle(self, record: logging.LogRecord) -> bool:
        record.getMessage()
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() decides
        record.getMessage()


@contextlib.contextmanager
def strict_logging() -> Any:
    """Route culex's log records (all levels) to `StrictLogHandler` while active."""
    logger = logging.getLogger("culex")
    handler = StrictLogHandler()
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


class HostileSink(FakeSink):
    """FakeSink that also refuses writes once the transport reported the connection lost."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = False

    def writelines(self, list_of_data: list[bytes]) -> None:
        if self.lost:
            raise AssertionError(f"write after connection_lost: {list_of_data!r}")
        super().writelines(list_of_data)


class FuzzAuthenticator:
    """Answers the well-behaved clients at once; the hostile ones as `mode` says."""

    def __init__(self, mode: int) -> None:
        self.mode = mode  # 1: by user name, at once; 2: later, when the script says; 3: yes
        self.pending: dict[str, AuthDone] = {}

    def authenticate(self, request: AuthRequest, done: AuthDone) -> None:
        if request.peer.startswith(GOOD_PEER) or self.mode == 3:
            done(0)
        elif self.mode == 1:
            done({"bad": 4, "denied": 5}.get(request.username or "", 0))
        else:
            self.pending[request.peer] = done

    def answer(self, peer: str, code: int) -> None:
        done = self.pending.pop(peer, None)
        if done is not None:
            done(code)


@dataclass
class Tables:
    """What the SQLite backend's tables would hold (culex/storage/sqlite.py, same semantics)."""

    messages: dict[int, StoredMessage] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)  # client id -> expiry
    subscriptions: dict[tuple[str, str], int] = field(default_factory=dict)
    entries: dict[tuple[str, int], StoredEntry] = field(default_factory=dict)
    inbound: set[tuple[str, int]] = field(default_factory=set)
    # (message id, stamp); message id 0 is a clearing's tombstone
    retained: dict[str, tuple[int, int]] = field(default_factory=dict)
    wills: dict[str, StoredMessage] = field(default_factory=dict)


Statement = Callable[[Tables], object]  # the return value is ignored


class ModelStorage:
    """An in-memory `Storage` with SQLite's statement semantics and group commits that finish
    only when the script says (successfully or not, like a full disk)."""

    def __init__(self, durable: bool, committed: Tables | None = None) -> None:
        self.durable = durable
        self.committed = committed or Tables()
        self._statements: list[Statement] = []
        self.in_flight: list[tuple[list[Statement], CommitDone]] = []

    @property
    def pending(self) -> bool:
        return bool(self._statements)

    def commit(self, done: CommitDone) -> None:
        statements, self._statements = self._statements, []
        self.in_flight.append((statements, done))

    def finish(self, ok: bool) -> bool:
        """Finish the oldest commit; False when none is running."""
        if not self.in_flight:
            return False
        statements, done = self.in_flight.pop(0)
        if ok:
            for statement in statements:
                statement(self.committed)
        else:
            self._statements[:0] = statements  # replayed first, as SqliteStorage does
        done(ok)
        return True

    def close(self) -> None:
        pass

    def load(self, owns: Callable[[str], bool] | None = None) -> LoadedState:
        assert owns is None, "the harness runs a single broker process"
        tables = self.committed
        state = LoadedState(messages=dict(tables.messages))
        sessions = {client_id: StoredSession(client_id, expiry)
                     for client_id, expiry in tables.sessions.items()}
        for (client_id, topic_filter), qos in tables.subscriptions.items():
            if client_id in sessions:
                sessions[client_id].subscriptions[topic_filter] = qos
        for (client_id, _seq), entry in sorted(tables.entries.items()):
            if client_id in sessions and entry.message_id in state.messages:
                sessions[client_id].entries.append(replace(entry))
        for client_id, packet_id in tables.inbound:
            if client_id in sessions:
                sessions[client_id].awaiting_release.add(packet_id)
        state.sessions = list(sessions.values())
        state.retained = [(mid, stamp) for mid, stamp in tables.retained.values()
                          if mid != 0 and mid in state.messages]  # not tombstones
        state.wills = list(tables.wills.items())
        state.max_message_id = max(tables.messages, default=0)
        state.max_stamp = max((stamp for _mid, stamp in tables.retained.values()), default=0)
        return state

    def _add(self, statement: Statement) -> None:
        self._statements.append(statement)

    def session_saved(self, client_id: str, expiry: int, username: str | None) -> None:
        self._add(lambda t: t.sessions.__setitem__(client_id, expiry))

    def session_deleted(self, client_id: str) -> None:
        def apply(t: Tables) -> None:
            t.sessions.pop(client_id, None)
            t.subscriptions = {k: v for k, v in t.subscriptions.items() if k[0] != client_id}
            t.entries = {k: v for k, v in t.entries.items() if k[0] != client_id}
            t.inbound = {k for k in t.inbound if k[0] != client_id}
        self._add(apply)

    def subscription_set(self, client_id: str, topic_filter: str, qos: int) -> None:
        self._add(lambda t: t.subscriptions.__setitem__((client_id, topic_filter), qos))

    def subscription_removed(self, client_id: str, topic_filter: str) -> None:
        self._add(lambda t: t.subscriptions.pop((client_id, topic_filter), None))

    def message_stored(self, message: StoredMessage) -> None:
        stored = replace(message)
        self._add(lambda t: t.messages.__setitem__(stored.message_id, stored))

    def message_deleted(self, message_id: int) -> None:
        self._add(lambda t: t.messages.pop(message_id, None))

    def entry_queued(self, client_id: str, entry: StoredEntry) -> None:
        stored = replace(entry)
        self._add(lambda t: t.entries.__setitem__((client_id, stored.seq), stored))

    def _update_entry(self, client_id: str, seq: int, **changes: Any) -> None:
        def apply(t: Tables) -> None:
            entry = t.entries.get((client_id, seq))
            if entry is not None:
                t.entries[client_id, seq] = replace(entry, **changes)
        self._add(apply)

    def entry_sent(self, client_id: str, seq: int, packet_id: int) -> None:
        self._update_entry(client_id, seq, packet_id=packet_id)

    def entry_released(self, client_id: str, seq: int) -> None:
        self._update_entry(client_id, seq, released=True)

    def entry_done(self, client_id: str, seq: int) -> None:
        self._add(lambda t: t.entries.pop((client_id, seq), None))

    def inbound_received(self, client_id: str, packet_id: int) -> None:
        self._add(lambda t: t.inbound.add((client_id, packet_id)))

    def inbound_released(self, client_id: str, packet_id: int) -> None:
        self._add(lambda t: t.inbound.discard((client_id, packet_id)))

    def retained_set(self, topic: str, message_id: int, stamp: int) -> None:
        def apply(t: Tables) -> None:
            if stamp >= t.retained.get(topic, (0, stamp))[1]:
                t.retained[topic] = (message_id, stamp)
        self._add(apply)

    def retained_cleared(self, topic: str, stamp: int) -> None:
        def apply(t: Tables) -> None:
            if stamp > 0:  # a tombstone: message 0 keeps the stamp
                if stamp >= t.retained.get(topic, (0, stamp))[1]:
                    t.retained[topic] = (0, stamp)
            elif t.retained.get(topic, (0, stamp))[1] <= stamp:
                t.retained.pop(topic, None)
        self._add(apply)

    def will_set(self, client_id: str, will: StoredMessage) -> None:
        stored = replace(will)
        self._add(lambda t: t.wills.__setitem__(client_id, stored))

    def will_cleared(self, client_id: str) -> None:
        self._add(lambda t: t.wills.pop(client_id, None))


# -- the scenario -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    limits: Limits
    auth_mode: int  # 0: no authenticator; see FuzzAuthenticator
    acl: bool
    sys_interval: float
    storage: bool
    durable: bool

    @classmethod
    def from_values(cls, limits_value: int, broker_value: int, more_limits: int = 0) -> Setup:
        limits = Limits(
            max_packet_size=(16 * 1024 * 1024, 128, 1024, 65536)[limits_value & 0x03],
            max_inflight_messages=(20, 1, 2, 65535)[(limits_value >> 2) & 0x03],
            max_queued_messages=(1000, 0, 3, 100)[(limits_value >> 4) & 0x03],
            max_topic_levels=(1024, 3)[(limits_value >> 6) & 0x01],
            # Room for the observer, both hostile slots and the probe publisher: exactly full.
            max_connections=(-1, 4)[limits_value >> 7],
            connect_timeout=(10.0, 1.0)[(broker_value >> 5) & 0x01],
            stalled_reader_timeout=(2.0, 0.0)[(broker_value >> 4) & 0x01],
            # Bursts of one second's worth: the probe's two PUBLISHes always fit.
            max_publish_rate=(0.0, 5.0, 100.0, 2.0)[more_limits & 0x03],
            max_subscriptions=(10_000, 1, 3, 100)[(more_limits >> 2) & 0x03],
            max_retained_messages=(1_000_000, 0, 2, 20)[(more_limits >> 4) & 0x03],
            max_queued_bytes=(64 * 1024 * 1024, 64)[(more_limits >> 6) & 0x01],
            # Long enough for the well-behaved clients' ids (PUBLISHER_ID is the longest).
            max_client_id_length=(1024, 15)[more_limits >> 7],
        )
        return cls(limits, broker_value & 0x03, bool(broker_value & 0x04),
                   (0.0, 1.0)[(broker_value >> 3) & 0x01], bool(broker_value & 0x40),
                   not broker_value & 0x80)


class Scenario:
    """One broker, the observer, and the hostile slots; `run` plays a script on them."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.harness = harness = Harness(setup.limits, sys_interval=setup.sys_interval)
        self.storage = ModelStorage(setup.durable) if setup.storage else None
        harness.broker = broker = Broker(setup.limits, sys_interval=setup.sys_interval,
                                         storage=self.storage, now=harness.now)
        self.broker = broker
        self.authenticator = FuzzAuthenticator(setup.auth_mode) if setup.auth_mode else None
        broker.access.authenticator = self.authenticator
        if setup.acl:
            broker.set_acl(AclRules.parse(ACL_TEXT))
        self.hostile: list[tuple[Connection, HostileSink]] = []
        self.slots: list[int] = [0, 0]  # index into self.hostile per slot
        # Bytes that arrived while the broker had paused reading: a transport delivers them
        # only after resume_reading (asyncio: "no data will be passed to data_received").
        self.unread: dict[int, list[bytes]] = {}
        self.observer = self.new_observer()
        for slot in (0, 1):
            self.reopen(slot)

    @property
    def now(self) -> float:
        return self.harness.now

    def new_observer(self) -> FakeClient:
        observer = self.harness.client(f"{GOOD_PEER}observer")
        connack = observer.connect(OBSERVER_ID)
        assert connack.return_code == 0, f"observer refused: {connack!r}"
        assert observer.subscribe((PROBE_FILTER, 1)) == [1], "observer's subscription refused"
        self.settle()
        return observer

    def reopen(self, slot: int) -> None:
        sink = HostileSink()
        peer = f"hostile:{len(self.hostile)}"
        self.hostile.append((self.broker.open_connection(sink, peer, self.now), sink))
        self.slots[slot] = len(self.hostile) - 1

    def slot(self, slot: int) -> tuple[Connection, HostileSink]:
        return self.hostile[self.slots[slot]]

    def receive(self, index: int, data: bytes) -> None:
        """Bytes from hostile connection `index`, delivered as its transport would."""
        self.unread.setdefault(index, []).append(data)
        self.read_unpaused()

    def read_unpaused(self) -> None:
        """Deliver what waits on every connection whose reading is not paused."""
        for index, waiting in self.unread.items():
            connection, sink = self.hostile[index]
            while waiting and not sink.reading_paused and not sink.lost:
                connection.data_received(waiting.pop(0), self.now)

    # -- operations -----------------------------------------------------------------------------

    def run(self, fdp: DataProvider) -> None:
        for _ in range(MAX_OPERATIONS):
            if not fdp.remaining_bytes():
                break
            code = fdp.ConsumeIntInRange(0, 255)
            kind, slot, arg = code & 0x07, (code >> 3) & 0x01, code >> 4
            self.read_unpaused()
            connection, sink = self.slot(slot)
            if kind <= 3:
                size = fdp.ConsumeIntInRange(0, 255)
                self.receive(self.slots[slot], fdp.ConsumeBytes(size or fdp.remaining_bytes()))
            elif kind == OP_TIME:
                self.harness.now += TIME_STEPS[arg]
                self.broker.tick(self.now)
            elif kind == OP_FLUSH:
                self.broker.flush()
            elif kind == OP_TRANSPORT:
                if arg < 4:
                    sink.lost = True
                    connection.connection_lost(self.now)
                    self.reopen(slot)
                elif arg < 8:
                    connection.pause_writing(self.now)
                elif arg < 12:
                    connection.resume_writing()
                else:
                    self.reopen(slot)
            elif arg < 6:
                if self.authenticator is not None:
                    self.authenticator.answer(connection.address, AUTH_CODES[arg % 3])
            elif arg < 12:
                if self.storage is not None:
                    self.storage.finish(ok=arg < 10)
            elif arg < 14:
                self.broker.gate.commit()
            else:
                self.broker.tick(self.now)

    def settle(self) -> None:
        """Flush, and let every storage commit (and any it calls for) finish successfully."""
        broker = self.broker
        storage = self.storage
        for _ in range(100):
            broker.flush()
            if storage is None:
                return
            if storage.finish(ok=True):
                continue
            if storage.pending or broker.gate.holding:
                broker.gate.commit(retry=True)  # also after a failed commit, as tick() would
                if storage.in_flight:
                    continue
            return
        raise AssertionError("storage commits never settle")

    # -- checks ---------------------------------------------------------------------------------

    def check_invariants(self) -> None:
        broker = self.broker
        connections = [connection for connection, _sink in self.hostile]
        connections += [self.observer.connection]
        for connection in connections:
            live = connection.state is not State.CLOSED
            assert (connection in broker.connections) == live, \
                f"{connection!r}: in broker.connections is {not live}"
        connected = [c for c in broker.connections if c.state is State.CONNECTED]
        assert broker.stats.clients_connected == len(connected), \
            f"clients_connected {broker.stats.clients_connected}, connected {connected!r}"
        limit = broker.limits.max_connections
        assert limit < 0 or len(connected) <= limit, \
            f"{len(connected)} clients connected, max_connections is {limit}"
        for connection in connected:
            session = connection.session
            assert session is not None and session.connection is connection, \
                f"{connection!r} and its session disagree"
            assert broker.sessions.get(session.client_id) is session, \
                f"{connection!r}: its session is not the stored one"
        subscriptions = 0
        for session in broker.sessions:
            subscriptions += len(session.subscriptions)
            if session.connection is not None:
                assert session.connection.state is State.CONNECTED, \
                    f"{session!r} attached to {session.connection!r}"
            else:
                assert not session.clean, f"clean {session!r} outlived its connection"
            assert len(session.inflight) <= session.max_inflight, f"{session!r} window overrun"
            assert len(session.queue) <= session.max_queued, f"{session!r} queue overrun"
        assert broker.subscriptions.count == subscriptions, \
            f"trie has {broker.subscriptions.count} subscriptions, sessions {subscriptions}"
        for connection, sink in self.hostile:
            if connection.state is State.CLOSED and not sink.lost:
                assert sink.closed, f"{connection!r} closed but its socket is open"

    def check_hostile_output(self) -> None:
        """Whatever the broker sent a hostile client is a well-formed stream of its version."""
        for connection, sink in self.hostile:
            reader = FrameReader(268_435_460, connect_only=False)
            for first, frame, offset in reader.feed(bytes(sink.data)):
                if connection.v5:  # also a refused level-5 CONNECT with a 3.1 name
                    decode_packet_v5(first, frame, offset, from_client=False)
                else:
                    decode_packet(first, frame, offset)
            assert reader.error is None and reader.buffered == 0, \
                f"{connection!r} was sent a broken stream: {reader.error!r}"

    def drain(self, client: FakeClient) -> list[Publish]:
        """Every PUBLISH the client gets until nothing more comes, acknowledging as it goes."""
        publishes: list[Publish] = []
        for _ in range(MAX_DRAIN_ROUNDS):
            self.settle()
            packets = client.received_packets()
            if not packets:
                return publishes
            publishes += [p for p in packets if isinstance(p, Publish)]
            client.ack_all(packets)
        raise AssertionError(f"{client.connection!r} is flooded without end")

    def check_others_unharmed(self) -> None:
        """The observer still receives what a fresh client publishes, at QoS 0 and 1."""
        if self.setup.limits.max_connections > 0:
            # Connections the script opened beside its two slots may fill max_connections, which
            # is theirs to do: they go, leaving room for the observer, the slots and the probe.
            for index, (connection, sink) in enumerate(self.hostile):
                if index not in self.slots and not sink.lost:
                    sink.lost = True
                    connection.connection_lost(self.now)
        observer = self.observer
        self.drain(observer)
        if observer.sink.closed:
            assert any(c.client_id == OBSERVER_ID for c, _sink in self.hostile), \
                "the observer was disconnected, and no hostile client took over its id"
            self.observer = observer = self.new_observer()
            self.drain(observer)
        publisher = self.harness.client(f"{GOOD_PEER}publisher")
        connack = publisher.connect(PUBLISHER_ID)
        assert connack.return_code == 0, f"probe publisher refused: {connack!r}"
        # Taking PUBLISHER_ID over from a hostile client publishes that client's will, which may
        # fill a one-message window with no queue (max_inflight 1, max_queued 0): receive it.
        self.drain(observer)
        packet_id = publisher.publish("probe/q1", b"probe-1", qos=1)
        publisher.publish("probe/q0", b"probe-0", qos=0)
        self.settle()
        acks = [p for p in publisher.received_packets() if isinstance(p, Puback)]
        assert acks == [Puback(packet_id)], f"probe PUBACK missing: {acks!r}"
        got = [(p.topic, p.payload) for p in self.drain(observer)]
        for wanted in (("probe/q1", b"probe-1"), ("probe/q0", b"probe-0")):
            assert wanted in got, f"observer did not receive {wanted!r}; got {got!r}"
        assert not observer.sink.closed and not publisher.sink.closed
        publisher.disconnect()
        self.settle()

    def check_restart(self) -> None:
        """A restart from what is committed restores the persistent state held in memory."""
        storage = self.storage
        if storage is None:
            return
        self.settle()
        assert not storage.pending and not storage.in_flight
        broker = self.broker
        wills = {c.client_id: (c.will.topic, c.will.payload, c.will.qos, c.will.retain)
                 for c in broker.connections if c.state is State.CONNECTED and c.will}
        stored_wills = {client_id: (w.topic, w.payload, w.qos, w.retain)
                        for client_id, w in storage.committed.wills.items()}
        assert stored_wills == wills, f"stored wills {stored_wills!r}, in memory {wills!r}"
        tables = copy.deepcopy(storage.committed)
        tables.wills.clear()  # wills would be published on restart, changing the queues
        restarted = Broker(self.setup.limits, sys_interval=0,
                           storage=ModelStorage(storage.durable, tables))
        restarted.restore()
        assert _sessions_state(restarted) == _sessions_state(broker), \
            "persistent sessions differ after a restart"
        topics = set(storage.committed.retained)
        topics.update(m.topic for m in broker.retained.store.match("#"))
        for topic in topics:
            if topic.startswith("$SYS/"):
                continue
            before, after = broker.retained.get(topic), restarted.retained.get(topic)
            assert (before and (before.payload, before.qos)) == \
                (after and (after.payload, after.qos)), f"retained {topic!r} differs on restart"


def _sessions_state(broker: Broker) -> dict[str, Any]:
    """The persistent sessions' state a restart must reproduce."""
    def outgoing(entry: Any) -> tuple[str, bytes, int, int, bool, bool]:
        message = entry.message
        return (message.topic, message.payload, message.qos, entry.qos, entry.retain,
                entry.released)

    return {
        session.client_id: (
            dict(session.subscriptions),
            {packet_id: outgoing(entry) for packet_id, entry in session.inflight.items()},
            [outgoing(entry) for entry in session.queue],
            set(session.awaiting_release),
        )
        for session in broker.sessions if not session.clean
    }


# -- the harness --------------------------------------------------------------------------------

def one_input(data: bytes) -> None:
    """One fuzz input (see the module docstring for its layout)."""
    fdp = provider_for(data)
    setup = Setup.from_values(*(fdp.ConsumeIntInRange(0, 255) for _ in range(3)))
    scenario = Scenario(setup)
    scenario.run(fdp)
    scenario.read_unpaused()
    scenario.broker.flush()
    scenario.check_invariants()
    scenario.check_hostile_output()
    scenario.check_others_unharmed()
    scenario.check_invariants()
    scenario.check_restart()


Step = tuple[int, bytes | None]
"""(operation code, the bytes of a data operation or None)."""


def encode_input(steps: Sequence[Step], limits_value: int = 0, broker_value: int = 0,
                 more_limits: int = 0) -> bytes:
    """The input that plays `steps`. Data longer than 255 bytes is split into several sends."""
    controls = [limits_value, broker_value, more_limits]
    front: list[bytes] = []
    for code, data in steps:
        if code & 0x07 > 3:
            assert data is None, f"operation {code:#04x} takes no data"
            controls.append(code)
            continue
        assert data, "a data operation needs bytes"
        for start in range(0, len(data), 255):
            piece = data[start:start + 255]
            controls += [code, len(piece)]
            front.append(piece)
    return b"".join(front) + trailer(controls)


def main(argv: list[str] | None = None) -> None:
    if atheris is None:
        raise SystemExit("atheris is not installed: make fuzz (or pip install -e '.[fuzz]')")
    with strict_logging():
        atheris.Setup(sys.argv if argv is None else argv, one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
