"""kill -9 under load, many times: nothing acknowledged is ever lost, QoS 2 never doubles.

Publishers (raw asyncio sockets, clean session 0) send numbered QoS 1 and QoS 2 messages to
topics held by persistent sessions. The broker is killed with SIGKILL at random moments and
started again on the same data; after every restart the publishers reconnect with clean session
0 and carry on as MQTT requires [MQTT-4.4.0-1]: an unacknowledged PUBLISH is re-sent with DUP=1
under the same packet id, a PUBREL whose PUBCOMP did not arrive is re-sent. At the end the
subscribers drain their sessions and the run is checked:

* lost: a message whose PUBACK (QoS 1) or PUBREC (QoS 2) the publisher received and that a
  subscriber never got. Must be 0: with `durability = "sync"` the ack means it was on disk.
* duplicates: a QoS 2 payload delivered more than once to one subscriber. Must be 0 (the
  retransmissions keep their packet id, so the broker can and must recognise them). QoS 1
  duplicates are allowed and only counted.
* forged: a payload nobody sent, or delivered at the wrong QoS. Must be 0.
* session present must stay 1 for every reconnect once the session was acknowledged.

`CULEX_SOAK_KILLS` (default 20) sets the number of kills, `CULEX_SOAK_SEED` replays the timing of
a run (the seed is printed; run with -s to see the counts).
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import socket
import sqlite3
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import AGAINST, BrokerFactory, BrokerProcess, free_port, render_config
from tests.integration.clients import (
    CONNACK,
    DISCONNECT_BYTES,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    ConnectionClosedError,
    Packet,
    RawClient,
    connect_packet,
    puback,
    pubcomp,
    publish_packet,
    pubrec,
    pubrel,
)
from tests.robustness.durability_clients import commit_barrier

pytestmark = pytest.mark.skipif(AGAINST != "culex",
                                reason="Culex's own storage (mosquitto runs without persistence)")

KILLS = int(os.environ.get("CULEX_SOAK_KILLS", "20"))
SEED = int(os.environ.get("CULEX_SOAK_SEED", str(random.SystemRandom().randrange(1 << 32))))
WINDOW = 8  # unacknowledged PUBLISHes per publisher
RATE = 250.0  # new messages per second per publisher, at most (keeps the drain short)
SUBSCRIBERS = ("crash-sub-a", "crash-sub-b")
LIMITS = {"max_queued_messages": 1_000_000, "max_inflight_messages": 50}
# Acknowledged messages below which a run means little, and how long the publishers may go on
# after the last kill to reach them.
MIN_ACKED = 200
LOAD_SECONDS = 30


# --- the publisher side -------------------------------------------------------------------------


async def read_packet(reader: asyncio.StreamReader) -> Packet:
    first = await reader.readexactly(1)
    length, multiplier = 0, 1
    while True:
        byte = (await reader.readexactly(1))[0]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        if not byte & 0x80:
            break
    return Packet(first[0], await reader.readexactly(length))


def send(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write, or raise ConnectionClosedError once the connection is known lost (asyncio would
    only log)."""
    if writer.transport.is_closing():
        raise ConnectionClosedError("connection lost")
    writer.write(data)


@dataclass
class Outbound:
    payload: bytes
    released: bool = False  # QoS 2: PUBREC received, PUBREL sent


@dataclass
class Publisher:
    """One MQTT publisher with its client-side session state kept across connections."""

    index: int
    qos: int
    broker: BrokerProcess
    topic: str = ""
    next_seq: int = 0
    next_packet_id: int = 1
    inflight: dict[int, Outbound] = field(default_factory=dict)  # insertion order = send order
    sent: set[bytes] = field(default_factory=set)
    acked: set[bytes] = field(default_factory=set)
    connections: int = 0
    session_acked: bool = False
    problems: list[str] = field(default_factory=list)
    unexpected_acks: int = 0
    retransmitted: int = 0  # PUBLISH with DUP and PUBREL re-sent after a reconnect

    def __post_init__(self) -> None:
        self.client_id = f"crash-pub-{self.index}"
        self.topic = f"crash/p{self.index}/q{self.qos}"

    def payload(self, seq: int) -> bytes:
        return f"p{self.index} q{self.qos} #{seq:06d} ".encode() + struct.pack("!I", seq) * 3

    def allocate_packet_id(self) -> int:
        packet_id = self.next_packet_id
        while packet_id in self.inflight:
            packet_id = packet_id % 65535 + 1
        self.next_packet_id = packet_id % 65535 + 1
        return packet_id

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, and reconnect after every loss, until `stop` is set and nothing is left in
        flight."""
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.broker.host,
                                                               self.broker.port)
            except OSError:
                await asyncio.sleep(0.02)  # the broker is down or still restoring
                continue
            try:
                if await self.session(reader, writer, stop):
                    return
            except (OSError, asyncio.IncompleteReadError, ConnectionClosedError):
                pass
            finally:
                writer.close()
            await asyncio.sleep(0.01)

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      stop: asyncio.Event) -> bool:
        send(writer, connect_packet(self.client_id, clean=False))
        connack = await read_packet(reader)
        if connack.type != CONNACK or connack.body[1] != 0:
            raise ConnectionClosedError(f"CONNACK {connack}")
        self.connections += 1
        if self.session_acked and not connack.body[0] & 0x01:
            self.problems.append(f"{self.client_id}: session present 0 on connection "
                                 f"{self.connections}, after the session had been acknowledged")
        # Retransmit in the original order, same packet ids [MQTT-4.4.0-1].
        self.retransmitted += len(self.inflight)
        for packet_id, out in self.inflight.items():
            if out.released:
                send(writer, pubrel(packet_id))
            else:
                send(writer, publish_packet(self.topic, out.payload, qos=self.qos,
                                            packet_id=packet_id, dup=True))
        progress = asyncio.Event()
        reading = asyncio.create_task(self.read_acks(reader, writer, progress))
        try:
            while True:
                if stop.is_set() and not self.inflight:
                    send(writer, DISCONNECT_BYTES)
                    await writer.drain()
                    return True
                while len(self.inflight) < WINDOW and not stop.is_set():
                    payload = self.payload(self.next_seq)
                    self.next_seq += 1
                    packet_id = self.allocate_packet_id()
                    self.inflight[packet_id] = Outbound(payload)
                    self.sent.add(payload)
                    send(writer, publish_packet(self.topic, payload, qos=self.qos,
                                                packet_id=packet_id))
                    await asyncio.sleep(1 / RATE)
                await writer.drain()
                progress.clear()
                waiter = asyncio.create_task(progress.wait())
                await asyncio.wait({reading, waiter}, timeout=0.1,
                                   return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if reading.done():
                    reading.result()  # raises the connection loss
                    raise ConnectionClosedError("reader stopped")
        finally:
            reading.cancel()

    async def read_acks(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        progress: asyncio.Event) -> None:
        while True:
            got = await read_packet(reader)
            packet_id = got.packet_id if got.type in (PUBACK, PUBREC, PUBCOMP) else 0
            out = self.inflight.get(packet_id)
            if got.type == PUBACK and out is not None and self.qos == 1:
                del self.inflight[packet_id]
                self.acked.add(out.payload)
            elif got.type == PUBREC and out is not None and self.qos == 2:
                self.acked.add(out.payload)
                out.released = True
                send(writer, pubrel(packet_id))
            elif got.type == PUBCOMP and out is not None and out.released:
                del self.inflight[packet_id]
            else:
                self.unexpected_acks += 1
                continue
            self.session_acked = True
            progress.set()


async def kill_loop(broker: BrokerProcess, kills: int, rng: random.Random,
                    log: list[str]) -> None:
    for number in range(kills):
        # Mostly under steady load, sometimes right after a restart (publishers reconnecting
        # and retransmitting, the restored state not yet committed again).
        delay = rng.uniform(0.0, 0.03) if rng.random() < 0.3 else rng.uniform(0.05, 0.45)
        await asyncio.sleep(delay)
        await asyncio.to_thread(broker.kill)
        await asyncio.sleep(rng.uniform(0.0, 0.05))
        started = time.monotonic()
        await asyncio.to_thread(broker.start)
        log.append(f"kill {number + 1}: after {delay:.3f} s, restart took "
                   f"{time.monotonic() - started:.2f} s")
    await asyncio.sleep(0.2)


async def load_with_kills(broker: BrokerProcess, publishers: list[Publisher], kills: int,
                          rng: random.Random) -> list[str]:
    stop = asyncio.Event()
    log: list[str] = []
    tasks = [asyncio.create_task(p.run(stop)) for p in publishers]
    await kill_loop(broker, kills, rng, log)
    # Enough acknowledged load to mean something, however busy the machine is with other
    # suites: the publishers go on (for at most LOAD_SECONDS) until there is.
    deadline = time.monotonic() + LOAD_SECONDS
    while sum(len(p.acked) for p in publishers) <= MIN_ACKED and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stop.set()
    done, pending = await asyncio.wait(tasks, timeout=30)
    for task in pending:
        task.cancel()
    for task in done:
        task.result()
    assert not pending, (f"{len(pending)} publishers could not finish their in-flight messages "
                         f"within 30 s after the last restart: "
                         f"{[len(p.inflight) for p in publishers]}")
    return log


# --- the subscriber side ------------------------------------------------------------------------


def subscribe_offline(broker: BrokerProcess, client_id: str) -> None:
    sub = RawClient(broker)
    assert sub.connect(client_id, clean=False).session_present is False
    assert sub.subscribe([("crash/#", 2)]) == [2]
    sub.disconnect()


def drain(broker: BrokerProcess, client_id: str, quiet: float = 1.0) -> list[tuple[bytes, int]]:
    """Reconnect a persistent session and take everything it has: (payload, qos) in order."""
    sub = RawClient(broker)
    assert sub.connect(client_id, clean=False).session_present is True, f"{client_id}: session lost"
    got: list[tuple[bytes, int]] = []
    awaiting_pubrel: set[int] = set()
    while True:
        try:
            packet = sub.read_packet(quiet)
        except TimeoutError:
            break
        if packet.type == PUBLISH:
            message = packet.publish()
            if message.qos == 1:
                got.append((message.payload, 1))
                sub.send(puback(message.packet_id))
            else:  # deliver on PUBLISH unless this id awaits its PUBREL (a retransmission)
                if message.packet_id not in awaiting_pubrel:
                    got.append((message.payload, message.qos))
                    awaiting_pubrel.add(message.packet_id)
                sub.send(pubrec(message.packet_id))
        elif packet.type == PUBREL:
            awaiting_pubrel.discard(packet.packet_id)
            sub.send(pubcomp(packet.packet_id))
        else:
            pytest.fail(f"{client_id}: unexpected {packet}")
    sub.disconnect()
    assert not awaiting_pubrel, f"{client_id}: PUBREL never came for {awaiting_pubrel}"
    return got


def check(publishers: list[Publisher], deliveries: dict[str, list[tuple[bytes, int]]]
          ) -> tuple[dict[str, int], list[str]]:
    """Counts over every subscriber, and the problems (lost, duplicates, forged, order)."""
    qos_of = {payload: p.qos for p in publishers for payload in p.sent}
    counts = collections.Counter[str](dict.fromkeys(
        ("lost", "duplicates", "qos1 duplicates", "forged", "out of order"), 0))
    problems: list[str] = []
    for client_id, got in deliveries.items():
        seen = collections.Counter(payload for payload, _ in got)
        for payload, qos in got:
            if qos_of.get(payload) != qos:
                counts["forged"] += 1
                problems.append(f"{client_id}: {payload!r} at QoS {qos} was never sent so")
        for publisher in publishers:
            for payload in publisher.acked:
                if not seen[payload]:
                    counts["lost"] += 1
                    problems.append(f"{client_id}: acknowledged {payload!r} never delivered")
            for payload in publisher.sent:
                extra = seen[payload] - 1
                if extra > 0 and publisher.qos == 2:
                    counts["duplicates"] += extra
                    problems.append(f"{client_id}: QoS 2 {payload!r} delivered {seen[payload]}x")
                elif extra > 0:
                    counts["qos1 duplicates"] += extra
            # Order: first deliveries from one publisher keep the publishing order.
            firsts = [payload for payload in dict.fromkeys(p for p, _ in got)
                      if payload in publisher.sent]
            if firsts != sorted(firsts):
                counts["out of order"] += 1
                problems.append(f"{client_id}: messages of {publisher.client_id} out of order")
        counts["delivered"] += len(got)
    counts["acked"] = sum(len(p.acked) for p in publishers)
    counts["sent"] = sum(len(p.sent) for p in publishers)
    return dict(counts), problems


@pytest.fixture
def rng() -> Iterator[random.Random]:
    print(f"\ncrash test seed: CULEX_SOAK_SEED={SEED}, kills: {KILLS}")
    yield random.Random(SEED)


# Room for the kills (`make soak` asks for many), and for the load to reach MIN_ACKED after them.
KILL_TEST_TIMEOUT = 60 + LOAD_SECONDS + 2 * KILLS


@pytest.mark.timeout(KILL_TEST_TIMEOUT)
def test_kill9_under_load_loses_no_acknowledged_message(
        broker_factory: BrokerFactory, rng: random.Random) -> None:
    started = time.monotonic()
    broker = broker_factory(limits=LIMITS)
    for client_id in SUBSCRIBERS:
        subscribe_offline(broker, client_id)
    commit_barrier(broker)
    publishers = [Publisher(index, qos, broker) for index, qos in enumerate((1, 2, 1, 2))]

    kill_log = asyncio.run(load_with_kills(broker, publishers, KILLS, rng))
    loaded = time.monotonic()

    deliveries = {client_id: drain(broker, client_id) for client_id in SUBSCRIBERS}
    counts, problems = check(publishers, deliveries)
    for publisher in publishers:
        problems += publisher.problems
    print("\n".join(kill_log))
    print(f"load with {KILLS} kills: {loaded - started:.1f} s, drain: "
          f"{time.monotonic() - loaded:.1f} s; reconnects "
          f"{[p.connections for p in publishers]}, retransmissions "
          f"{[p.retransmitted for p in publishers]}, unexpected acks "
          f"{[p.unexpected_acks for p in publishers]}")
    print("counts:", ", ".join(f"{name} {value}" for name, value in sorted(counts.items())))
    assert counts["acked"] > MIN_ACKED, f"too little load to mean much: {counts}"
    assert all(p.connections >= 2 for p in publishers), "a publisher never saw a restart"
    summary = {name: counts.get(name, 0) for name in ("lost", "duplicates", "forged",
                                                      "out of order")}
    assert not problems, (f"{summary} (seed {SEED}):\n" + "\n".join(problems[:30])
                          + (f"\n... {len(problems) - 30} more" if len(problems) > 30 else ""))

    # Everything is delivered and completed: the database holds no message and no queue entry
    # any more (nothing leaked across the crashes), and it is intact.
    commit_barrier(broker)
    assert broker.stop() == 0
    db = sqlite3.connect(broker.tmp / "data" / "culex.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("messages", "entries", "inbound", "retained", "wills")}
        sessions = db.execute("SELECT count(*) FROM sessions").fetchone()[0]
    finally:
        db.close()
    assert rows == dict.fromkeys(rows, 0), f"rows left after everything was delivered: {rows}"
    assert sessions == len(SUBSCRIBERS) + len(publishers)


# --- subscribers connected through the kills -----------------------------------------------------


@dataclass
class OnlineSubscriber:
    """A persistent-session subscriber that stays connected (reconnecting after each kill) and
    keeps its side of the QoS 2 state across connections, as a receiver must: a message is
    handed over on its first PUBLISH, its packet id is kept until the PUBREL, and a PUBLISH
    under a kept id is a retransmission, not a new message."""

    client_id: str
    broker: BrokerProcess
    got: list[tuple[bytes, int]] = field(default_factory=list)
    awaiting_pubrel: set[int] = field(default_factory=set)
    payloads: dict[int, bytes] = field(default_factory=dict)  # of the ids awaiting PUBREL
    released: dict[int, bytes] = field(default_factory=dict)  # last payload released per id
    connections: int = 0
    problems: list[str] = field(default_factory=list)
    last_packet: float = field(default_factory=time.monotonic)

    async def run(self, done: asyncio.Event) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.broker.host,
                                                               self.broker.port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            try:
                if await self.session(reader, writer, done):
                    return
            except (OSError, asyncio.IncompleteReadError, ConnectionClosedError):
                pass
            finally:
                writer.close()

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      done: asyncio.Event) -> bool:
        send(writer, connect_packet(self.client_id, clean=False))
        connack = await read_packet(reader)
        if connack.type != CONNACK or connack.body[1] != 0:
            raise ConnectionClosedError(f"CONNACK {connack}")
        self.connections += 1
        if not connack.body[0] & 0x01:
            self.problems.append(f"{self.client_id}: session present 0 on connection "
                                 f"{self.connections}")
        reading = asyncio.create_task(self.read_loop(reader, writer))
        try:
            while True:
                await asyncio.wait({reading}, timeout=0.2)
                if reading.done():
                    reading.result()
                    raise ConnectionClosedError("reader stopped")
                if done.is_set() and time.monotonic() - self.last_packet > 1.0:
                    send(writer, DISCONNECT_BYTES)
                    await writer.drain()
                    return True
        finally:
            reading.cancel()

    async def read_loop(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        while True:
            got = await read_packet(reader)
            self.last_packet = time.monotonic()
            if got.type == PUBLISH:
                message = got.publish()
                if message.qos == 1:
                    self.got.append((message.payload, 1))
                    send(writer, puback(message.packet_id))
                    continue
                if message.packet_id not in self.awaiting_pubrel:
                    if self.released.get(message.packet_id) == message.payload:
                        self.problems.append(
                            f"{self.client_id}: PUBLISH {message.payload!r} (id "
                            f"{message.packet_id}, dup={message.dup}) came again after the "
                            f"broker had sent its PUBREL")
                    self.got.append((message.payload, 2))
                    self.awaiting_pubrel.add(message.packet_id)
                    self.payloads[message.packet_id] = message.payload
                send(writer, pubrec(message.packet_id))
            elif got.type == PUBREL:
                if got.packet_id in self.awaiting_pubrel:
                    self.awaiting_pubrel.discard(got.packet_id)
                    self.released[got.packet_id] = self.payloads.pop(got.packet_id)
                send(writer, pubcomp(got.packet_id))
            else:
                self.problems.append(f"{self.client_id}: unexpected {got}")


@pytest.mark.timeout(KILL_TEST_TIMEOUT)
def test_kill9_with_subscribers_online_delivers_qos2_exactly_once(
        broker_factory: BrokerFactory, rng: random.Random) -> None:
    """The same run with the subscribers connected all along: deliveries, acks, PUBRELs and
    PUBCOMPs are on the wire when the broker dies, in both directions."""
    kills = KILLS
    broker = broker_factory(limits=LIMITS)
    for client_id in SUBSCRIBERS:
        subscribe_offline(broker, client_id)
    commit_barrier(broker)
    publishers = [Publisher(index, qos, broker) for index, qos in enumerate((1, 2, 1, 2))]
    subscribers = [OnlineSubscriber(client_id, broker) for client_id in SUBSCRIBERS]

    async def run() -> list[str]:
        done = asyncio.Event()
        reading = [asyncio.create_task(s.run(done)) for s in subscribers]
        await asyncio.sleep(0.2)
        log = await load_with_kills(broker, publishers, kills, rng)
        done.set()
        finished, pending = await asyncio.wait(reading, timeout=30)
        for task in pending:
            task.cancel()
        for task in finished:
            task.result()
        assert not pending, "subscribers still receiving 30 s after the last restart"
        return log

    kill_log = asyncio.run(run())
    deliveries = {s.client_id: s.got for s in subscribers}
    counts, problems = check(publishers, deliveries)
    for publisher in publishers:
        problems += publisher.problems
    for subscriber in subscribers:
        problems += subscriber.problems
    counts["PUBLISH re-sent after its PUBREL"] = sum(
        "after the broker had sent its PUBREL" in problem for problem in problems)
    print("\n".join(kill_log))
    print(f"reconnects: publishers {[p.connections for p in publishers]}, subscribers "
          f"{[s.connections for s in subscribers]}")
    print("counts:", ", ".join(f"{name} {value}" for name, value in sorted(counts.items())))
    assert counts["acked"] > MIN_ACKED, f"too little load to mean much: {counts}"
    summary = {name: counts.get(name, 0) for name in (
        "lost", "duplicates", "forged", "out of order", "PUBLISH re-sent after its PUBREL")}
    assert not problems, (f"{summary} (seed {SEED}):\n" + "\n".join(problems[:30])
                          + (f"\n... {len(problems) - 30} more" if len(problems) > 30 else ""))


# --- a kill during the very first start ---------------------------------------------------------


DIE_DURING_CREATION = textwrap.dedent("""
    import os, sqlite3, sys
    from pathlib import Path
    import culex.storage.sqlite as backend

    point = sys.argv[2]
    real_connect = sqlite3.connect

    class Dying:
        '''A connection that dies (like kill -9: no cleanup) at one step of creating the file.'''
        def __init__(self, db):
            self._db = db
        def execute(self, sql, *args):
            return self._db.execute(sql, *args)
        def executescript(self, script):
            if point == "before-schema":
                os._exit(137)
            if point == "inside-creation":  # every table written, the COMMIT never reached
                self._db.executescript(script.replace("COMMIT;", ""))
                os._exit(137)
            return self._db.executescript(script)
        def __getattr__(self, name):
            return getattr(self._db, name)

    backend.sqlite3.connect = lambda *a, **k: Dying(real_connect(*a, **k))
    backend.SqliteStorage(Path(sys.argv[1]), durable=True, call_soon_threadsafe=print)
    sys.exit("survived: the crash point was never reached")
""")


@pytest.mark.parametrize("point", ["before-schema", "inside-creation"])
def test_kill_while_creating_the_database_does_not_brick_the_broker(
        tmp_path: Path, point: str) -> None:
    """The first start creates data/culex.db in steps. A crash between two steps leaves a file
    that Culex itself wrote; the next start must use it (or start afresh), not refuse it as
    "not a Culex database" for ever."""
    work = tmp_path / "broker"
    (work / "data").mkdir(parents=True)
    target = work / "data" / "culex.db"
    died = subprocess.run([sys.executable, "-c", DIE_DURING_CREATION, str(target), point],
                          check=False, capture_output=True, text=True, timeout=20)
    assert died.returncode == 137, died.stderr
    assert target.exists()

    config = work / "culex.toml"
    config.write_text(render_config({"storage": {"path": "data/culex.db"}}))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "culex", "serve", "--config", str(config),
                             "--host", "127.0.0.1", "--port", str(port)],
                            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    listening = False
    try:
        deadline = time.monotonic() + 15
        while not listening and proc.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                listening = True
            except OSError:
                time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.terminate()
        code = proc.wait(10)
    output = proc.stdout.read() if proc.stdout else ""
    assert listening, (f"after a crash during its first start the broker refuses to start "
                       f"(exit {code}):\n{output}")
    assert code == 0, output
