"""Disk faults and crashes between commits, in process: the real SQLite backend on a temporary
file, the sans-I/O broker core, fake sockets (tests/unit/core_helpers.py) and no event loop.

`FlakyStorage` is `SqliteStorage` whose `_write` (one commit) raises "database or disk is full"
when told to, or blocks like a slow fsync. The backend reports a finished commit through
`call_soon_threadsafe`; here that appends to a list the test runs by hand (`LoopStandIn`), so
the test decides exactly when the broker learns that a commit succeeded or failed. A "crash" is
`FlakyStorage.crash()`: the writer thread stops, statements not yet committed are dropped, and
the file is left as it is, as after kill -9; a new Broker restored from the same file plays the
restarted broker.

Promises checked (durability "sync"): while commits fail no PUBACK/PUBREC/PUBCOMP leaves and no
QoS 2 PUBLISH reaches a persistent session, QoS 0 keeps flowing, the failure is logged; when a
retry on `tick()` succeeds the held frames leave in their original order and the data is in the
file; a restored broker has it. And a PUBREL may leave only once the release is durable, or a
crash makes the broker send the PUBLISH again after its PUBREL (a duplicate at QoS 2).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from culex.core.broker import Broker
from culex.core.limits import Limits
from culex.protocol.packets import Packet, Puback, Pubcomp, Publish, Pubrec, Pubrel
from culex.storage.base import CommitDone
from culex.storage.sqlite import SqliteStorage, Statement
from tests.unit.core_helpers import FakeClient, Harness

DISK_FULL = "database or disk is full"


class LoopStandIn:
    """What the backend needs of the event loop: `call_soon_threadsafe`. Callbacks from the
    writer thread are queued; the test runs them with `run()`."""

    def __init__(self) -> None:
        self._calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._lock = threading.Lock()

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            self._calls.append((callback, args))

    def run(self, at_least: int = 1, timeout: float = 5.0) -> int:
        """Wait for `at_least` queued callbacks, then run every queued one; how many ran."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self._calls) >= at_least:
                    calls, self._calls = self._calls, []
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"no commit finished within {timeout} s")
            time.sleep(0.001)
        for callback, args in calls:
            callback(*args)
        return len(calls)


class FlakyStorage(SqliteStorage):
    """SqliteStorage with faults on demand.

    `fail_commits(first, count)`: commits number first .. first + count - 1 (counted from 1
    over the file's life in this process) raise sqlite3.OperationalError("database or disk is
    full") and write nothing. `fail_next(n)`: the next n commits fail. `stall()`: commits
    block (a slow fsync) until `crash()` or `unstall()`.
    """

    def __init__(self, path: Path, loop: LoopStandIn) -> None:
        self.writes = 0  # _write calls (commits attempted on the writer thread)
        self.failures = 0
        self.started = 0  # commit() calls
        self.finished = 0  # their results delivered to the broker
        self._fail_from = 0
        self._fail_count = 0
        self._fail_extra = 0
        self._flow = threading.Event()
        self._flow.set()
        self._crashed = False
        super().__init__(path, durable=True, call_soon_threadsafe=loop.call_soon_threadsafe)

    # -- fault switches ----------------------------------------------------------------------

    def fail_commits(self, first: int, count: int) -> None:
        self._fail_from = first
        self._fail_count = count

    def fail_next(self, count: int) -> None:
        self._fail_extra = count

    def stall(self) -> None:
        self._flow.clear()

    def unstall(self) -> None:
        self._flow.set()

    def crash(self) -> None:
        """kill -9: nothing more reaches the file (a stalled commit dies in its fsync)."""
        self._crashed = True
        self._flow.set()
        self._executor.shutdown(wait=True)
        self._statements = []
        with self._lock:
            self._db.close()

    # -- hooks -------------------------------------------------------------------------------

    def commit(self, done: CommitDone) -> None:
        self.started += 1
        super().commit(done)

    def _write(self, statements: list[Statement]) -> None:
        self._flow.wait()
        self.writes += 1
        if self._crashed:
            raise sqlite3.OperationalError("the process is gone")
        failing = self._fail_from and self._fail_from <= self.writes < (
            self._fail_from + self._fail_count)
        if failing or self._fail_extra:
            if not failing:
                self._fail_extra -= 1
            self.failures += 1
            raise sqlite3.OperationalError(DISK_FULL)
        super()._write(statements)

    def _finished(self, *args: Any) -> None:
        self.finished += 1
        super()._finished(*args)

    @property
    def in_flight(self) -> bool:
        return self.started > self.finished


class StorageHarness(Harness):
    """core_helpers.Harness around a Broker with a storage backend."""

    def __init__(self, storage: FlakyStorage, loop: LoopStandIn,
                 limits: Limits | None = None) -> None:
        super().__init__(limits)
        self.storage = storage
        self.loop = loop
        self.broker = Broker(limits, sys_interval=0.0, storage=storage, now=self.now)

    def settle(self) -> None:
        """Flush, and let every commit that starts run to its end (success or failure), as
        the event loop would between two ticks."""
        for _ in range(100):
            self.broker.flush()
            if not self.storage.in_flight:
                return
            self.loop.run()
        raise AssertionError("commits never settle")


@pytest.fixture
def storages() -> Iterator[list[FlakyStorage]]:
    """Every FlakyStorage a test makes is crashed (threads and file closed) at the end."""
    made: list[FlakyStorage] = []
    yield made
    for storage in made:
        if not storage._crashed:
            storage.crash()


def open_broker(path: Path, storages: list[FlakyStorage], *,
                restore: bool = False) -> StorageHarness:
    loop = LoopStandIn()
    storage = FlakyStorage(path, loop)
    storages.append(storage)
    harness = StorageHarness(storage, loop)
    if restore:
        harness.broker.restore()
    return harness


def acks(packets: list[Packet]) -> list[tuple[str, int]]:
    return [(type(p).__name__, p.packet_id) for p in packets
            if isinstance(p, Puback | Pubrec | Pubrel | Pubcomp)]


def queued_rows(path: Path, client_id: str) -> list[tuple[bytes, str, int]]:
    """(payload, topic, qos) of a session's stored entries in queue order, read with sqlite3."""
    db = sqlite3.connect(path)
    try:
        return [(bytes(payload), topic, qos) for payload, topic, qos in db.execute(
            "SELECT m.payload, m.topic, e.qos FROM entries e JOIN messages m "
            "ON m.id = e.message_id WHERE e.client_id = ? ORDER BY e.seq", (client_id,))]
    finally:
        db.close()


def error_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# --- commits fail, then succeed -----------------------------------------------------------------


@pytest.mark.parametrize(("fail_count", "ticks"), [(1, 1), (3, 3)],
                         ids=["fails-once", "fails-three-times"])
def test_acks_wait_while_commits_fail_and_leave_in_order_after(
        tmp_path: Path, storages: list[FlakyStorage], caplog: pytest.LogCaptureFixture,
        fail_count: int, ticks: int) -> None:
    caplog.set_level(logging.DEBUG, logger="culex")
    path = tmp_path / "culex.db"
    h = open_broker(path, storages)
    keeper = h.connected("keeper", clean_session=False)
    assert keeper.subscribe(("t/#", 2)) == [2]
    keeper.disconnect()
    live = h.connected("live")  # a clean session: QoS 0 flows to it, nothing is stored for it
    assert live.subscribe(("t/#", 0)) == [0]
    pub = h.connected("pub", clean_session=False)  # its inbound QoS 2 ids are stored
    h.settle()
    assert h.storage.failures == 0
    first_failing = h.storage.writes + 1
    h.storage.fail_commits(first_failing, fail_count)

    pub.publish("t/1", b"m1", qos=1, packet_id=11)
    h.settle()  # commit N fails
    assert h.storage.failures == 1
    assert [e for e in error_records(caplog) if DISK_FULL in e and str(path) in e], \
        "the failed commit must be logged as an error naming the file"
    pub.publish("t/2", b"m2", qos=2, packet_id=12)
    pub.publish("t/3", b"m3", qos=0)
    pub.publish("t/4", b"m4", qos=1, packet_id=13)
    pub.publish("t/5", b"m5", qos=1, retain=True, packet_id=14)
    h.settle()
    assert h.storage.started == first_failing, "no new commit until tick() retries"
    assert pub.received_packets() == [], "an acknowledgement left before its commit"
    assert [(p.topic, p.payload, p.qos) for p in live.publishes()] == [
        ("t/1", b"m1", 0), ("t/2", b"m2", 0), ("t/3", b"m3", 0), ("t/4", b"m4", 0),
        ("t/5", b"m5", 0)], "QoS 0 must keep flowing while the disk is full"

    for second in range(1, ticks + 1):
        assert pub.received_packets() == []
        h.tick(float(second))  # retries the commit with everything that waits
        h.settle()
    assert h.storage.failures == fail_count
    assert acks(pub.received_packets()) == [
        ("Puback", 11), ("Pubrec", 12), ("Puback", 13), ("Puback", 14)], \
        "held acknowledgements must all leave, in the order of the PUBLISHes"

    # On disk: the queue of the offline session and the retained message.
    assert queued_rows(path, "keeper") == [
        (b"m1", "t/1", 1), (b"m2", "t/2", 2), (b"m4", "t/4", 1), (b"m5", "t/5", 1)]
    db = sqlite3.connect(path)
    try:
        retained = db.execute("SELECT r.topic, m.payload FROM retained r JOIN messages m "
                              "ON m.id = r.message_id").fetchall()
        inbound = db.execute("SELECT client_id, packet_id FROM inbound").fetchall()
    finally:
        db.close()
    assert [(t, bytes(p)) for t, p in retained] == [("t/5", b"m5")]
    assert inbound == [("pub", 12)], "the PUBREC promised that id 12 is remembered"

    # A PUBREL while the disk is full again: the PUBCOMP waits too.
    h.storage.fail_next(1)
    pub.pubrel(12)
    h.settle()
    assert pub.received_packets() == []
    h.tick(float(ticks + 1))
    h.settle()
    assert acks(pub.received_packets()) == [("Pubcomp", 12)]
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT count(*) FROM inbound").fetchone() == (0,)
    finally:
        db.close()

    # Crash, restart from the file: the session and its queue are back.
    h.storage.crash()
    h2 = open_broker(path, storages, restore=True)
    sub = h2.client()
    assert sub.connect("keeper", clean_session=False).session_present
    h2.settle()  # QoS 2 deliveries to a persistent session wait for a commit
    got = sub.publishes()
    assert sorted((p.topic, p.payload, p.qos) for p in got) == [
        ("t/1", b"m1", 1), ("t/2", b"m2", 2), ("t/4", b"m4", 1), ("t/5", b"m5", 1)]
    reader = h2.connected("reader")
    reader.subscribe(("t/5", 1))
    assert [(p.payload, p.retain) for p in reader.publishes()] == [(b"m5", True)]


def test_recovery_from_failing_commits_is_logged(
        tmp_path: Path, storages: list[FlakyStorage], caplog: pytest.LogCaptureFixture) -> None:
    """The operator who saw "commit failed; holding acknowledgements" must also be told when
    the acknowledgements flow again (the broker has a warning for it: "commits succeed
    again; releasing held acknowledgements")."""
    caplog.set_level(logging.DEBUG, logger="culex")
    h = open_broker(tmp_path / "culex.db", storages)
    keeper = h.connected("keeper", clean_session=False)
    keeper.subscribe(("r/#", 1))
    keeper.disconnect()
    pub = h.connected("pub")
    h.settle()
    h.storage.fail_next(1)
    pub.publish("r/1", b"m", qos=1, packet_id=1)
    h.settle()
    assert pub.received_packets() == []
    h.tick(1.0)
    h.settle()
    assert acks(pub.received_packets()) == [("Puback", 1)]
    records = caplog.records
    failed = [i for i, r in enumerate(records)
              if r.levelno == logging.ERROR and DISK_FULL in r.getMessage()]
    assert failed, "the failure was not logged"
    recovered = [r.getMessage() for r in records[failed[-1] + 1:]
                 if r.levelno >= logging.INFO and "storage" in r.getMessage()]
    assert recovered, ("commits succeed again after a failure, the held acknowledgements "
                       "left, and nothing says so in the log")


def test_qos2_delivery_to_persistent_session_waits_for_a_good_commit(
        tmp_path: Path, storages: list[FlakyStorage]) -> None:
    """Exactly once across a crash: a QoS 2 PUBLISH reaches a persistent subscriber only once
    the record of it being sent is on disk, so while commits fail it does not leave."""
    path = tmp_path / "culex.db"
    h = open_broker(path, storages)
    keeper = h.connected("keeper", clean_session=False)
    keeper.subscribe(("q/#", 2))
    h.settle()
    pub = h.connected("pub")
    h.storage.fail_next(2)
    pub.publish("q/1", b"two", qos=2, packet_id=1)
    h.settle()
    assert keeper.received_packets() == [], "QoS 2 PUBLISH left before its commit"
    assert pub.received_packets() == []
    h.tick(1.0)
    h.settle()
    assert keeper.received_packets() == [] and pub.received_packets() == []
    h.tick(2.0)
    h.settle()
    got = keeper.publishes()
    assert [(p.payload, p.qos, p.dup) for p in got] == [(b"two", 2, False)]
    assert acks(pub.received_packets()) == [("Pubrec", 1)]
    assert queued_rows(path, "keeper") == [(b"two", "q/1", 2)]


def test_commits_never_run_out_of_order_or_lose_statements(
        tmp_path: Path, storages: list[FlakyStorage]) -> None:
    """Changes made while a failed batch waits are committed after it, in one piece: a queue
    entry added and completed during the failure leaves no row behind, one still queued does."""
    path = tmp_path / "culex.db"
    h = open_broker(path, storages)
    keeper = h.connected("keeper", clean_session=False)
    keeper.subscribe(("o/#", 1))
    h.settle()
    pub = h.connected("pub")
    h.storage.fail_next(1)
    pub.publish("o/1", b"first", qos=1, packet_id=1)
    h.settle()  # fails: entry for "first" waits
    [first] = keeper.publishes()
    keeper.puback(first.packet_id)  # done while its INSERT is not even on disk
    pub.publish("o/2", b"second", qos=1, packet_id=2)
    h.tick(1.0)
    h.settle()
    assert acks(pub.received_packets()) == [("Puback", 1), ("Puback", 2)]
    [second] = keeper.publishes()
    assert second.payload == b"second"
    assert queued_rows(path, "keeper") == [(b"second", "o/2", 1)]
    db = sqlite3.connect(path)
    try:
        messages = [bytes(p) for (p,) in db.execute("SELECT payload FROM messages")]
    finally:
        db.close()
    assert messages == [b"second"], "a completed message's row was left behind"


# --- crash between sending and committing -------------------------------------------------------


@pytest.mark.parametrize("fault", ["disk-full", "crash-during-fsync"])
def test_pubrel_not_sent_before_the_release_is_durable(
        tmp_path: Path, storages: list[FlakyStorage], fault: str) -> None:
    """Outbound QoS 2: PUBLISH, PUBREC from the subscriber, then the broker sends PUBREL. A
    receiver that gets the PUBREL hands the message over and forgets the packet id; if the
    broker then crashes before `released` is on disk, the restarted broker sends the PUBLISH
    again and the subscriber takes it as a new message: delivered twice."""
    path = tmp_path / "culex.db"
    h = open_broker(path, storages)
    keeper = h.connected("keeper", clean_session=False)
    keeper.subscribe(("x/#", 2))
    h.settle()
    pub = h.connected("pub")
    pub.publish("x/1", b"exactly once", qos=2, packet_id=1)
    h.settle()
    [message] = keeper.publishes()
    pub.pubrel(1)
    h.settle()

    if fault == "disk-full":
        h.storage.fail_next(1)
    else:
        h.storage.stall()
    keeper.pubrec(message.packet_id)
    if fault == "disk-full":
        h.settle()
    packets = keeper.received_packets()  # flushes: whatever the broker sends now
    saw_pubrel = any(isinstance(p, Pubrel) and p.packet_id == message.packet_id
                     for p in packets)
    if saw_pubrel:
        keeper.pubcomp(message.packet_id)  # message handed over, id forgotten
    h.storage.crash()

    h2 = open_broker(path, storages, restore=True)
    again = h2.client()
    assert again.connect("keeper", clean_session=False).session_present
    h2.settle()
    resent = again.received_packets()
    republished = [p for p in resent if isinstance(p, Publish) and p.payload == b"exactly once"]
    assert not (saw_pubrel and republished), (
        f"PUBREL {message.packet_id} left before the release was committed, and after the "
        f"crash the broker re-sent the PUBLISH (dup={republished[0].dup if republished else '-'}"
        f"): the subscriber gets the QoS 2 message twice. Sent after the restart: {resent}")


def test_puback_for_offline_queue_never_precedes_its_commit(
        tmp_path: Path, storages: list[FlakyStorage]) -> None:
    """Crash while the commit is in its fsync: the publisher has no PUBACK (it will re-send),
    and what the restarted broker has is either nothing or the whole message."""
    path = tmp_path / "culex.db"
    h = open_broker(path, storages)
    keeper = h.connected("keeper", clean_session=False)
    keeper.subscribe(("s/#", 1))
    keeper.disconnect()
    h.settle()
    pub = h.connected("pub")
    h.storage.stall()
    pub.publish("s/1", b"in the fsync", qos=1, packet_id=5)
    assert pub.received_packets() == [], "PUBACK left while its commit was still running"
    h.storage.crash()
    h2 = open_broker(path, storages, restore=True)
    again = h2.client()
    assert again.connect("keeper", clean_session=False).session_present
    assert again.publishes() == []  # the commit never finished: nothing was promised


def test_restore_of_a_large_queue_keeps_order_and_ids(
        tmp_path: Path, storages: list[FlakyStorage]) -> None:
    """In-flight entries keep their packet ids, queued ones their order, through two crashes."""
    path = tmp_path / "culex.db"
    h = open_broker(path, storages)
    keeper = h.connected("keeper", clean_session=False)
    keeper.subscribe(("big/#", 1))
    h.settle()
    pub = h.connected("pub")
    for index in range(300):
        pub.publish("big/t", index.to_bytes(2, "big") * 50, qos=1, packet_id=index % 65535 + 1)
    h.settle()
    window = keeper.publishes()  # max_inflight_messages (20) in flight, the rest queued
    assert len(window) == Limits().max_inflight_messages
    assert len(acks(pub.received_packets())) == 300
    h.storage.crash()
    for generation in range(2):
        h = open_broker(path, storages, restore=True)
        client: FakeClient = h.client()
        assert client.connect("keeper", clean_session=False).session_present
        again = client.publishes()
        assert [(p.packet_id, p.payload, p.dup) for p in again] == [
            (p.packet_id, p.payload, True) for p in window], f"restart {generation + 1}"
        h.settle()
        h.storage.crash()
    h = open_broker(path, storages, restore=True)
    client = h.client()
    assert client.connect("keeper", clean_session=False).session_present
    got: list[bytes] = []
    for _ in range(40):
        packets = client.publishes()
        if not packets:
            break
        got += [p.payload for p in packets]
        for packet in packets:
            client.puback(packet.packet_id)
        h.settle()
    assert got == [index.to_bytes(2, "big") * 50 for index in range(300)]
    assert queued_rows(path, "keeper") == []
