"""SQLite backend: one WAL-mode database file, group commit on a single writer thread.

Changes reported by the core during a loop tick become SQL statements in a list; at the end of
the tick the list is committed as one transaction on the writer thread while the loop goes on.
Only one commit is in flight at a time: changes made meanwhile wait for the next one, so batches
grow with load (fewer fsyncs per message) and never commit out of order. A failed commit (disk
full, I/O error) is retried with its statements first, which is safe because every statement is
idempotent when replayed in order (INSERT OR REPLACE, the sessions' upsert, UPDATE, DELETE,
and the retained rows' stamp-guarded upsert and delete).

Worker processes share one file: each loads and writes the sessions of its own client ids, and
retained rows carry an ordering stamp so concurrent writers agree on the newest message. A
clearing leaves a tombstone (a retained row with message 0) that keeps its stamp, so an older
set committed later by another worker cannot bring the topic back.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

from .base import CommitDone, LoadedState, StoredEntry, StoredMessage, StoredSession
from .batch import Batch
from .timing import Durations

log = logging.getLogger("culex")

SCHEMA_VERSION = 7

# Session expiry: 0xFFFFFFFF (never) is what every version 1 session meant (3.1.1 clean
# session 0), so it is the column default and the migration needs no data rewrite.
SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE sessions (
    client_id TEXT PRIMARY KEY,
    expiry INTEGER NOT NULL DEFAULT 4294967295,
    owner_known INTEGER NOT NULL DEFAULT 0,
    username TEXT,
    admitted INTEGER NOT NULL DEFAULT 0,
    unfinished INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE subscriptions (
    client_id TEXT NOT NULL,
    topic_filter TEXT NOT NULL,
    qos INTEGER NOT NULL,
    PRIMARY KEY (client_id, topic_filter)
) WITHOUT ROWID;
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    properties BLOB NOT NULL DEFAULT x'',
    expires_at REAL,
    cluster_id INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE entries (
    client_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    packet_id INTEGER NOT NULL DEFAULT 0,
    released INTEGER NOT NULL DEFAULT 0,
    identifiers TEXT,
    PRIMARY KEY (client_id, seq)
) WITHOUT ROWID;
CREATE TABLE given (
    client_id TEXT NOT NULL,
    cluster_id INTEGER NOT NULL,
    PRIMARY KEY (client_id, cluster_id)
) WITHOUT ROWID;
CREATE TABLE inbound (
    client_id TEXT NOT NULL,
    packet_id INTEGER NOT NULL,
    PRIMARY KEY (client_id, packet_id)
) WITHOUT ROWID;
CREATE TABLE retained (
    topic TEXT PRIMARY KEY,
    message_id INTEGER NOT NULL,
    stamp INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE wills (
    client_id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    properties BLOB NOT NULL DEFAULT x''
) WITHOUT ROWID;
"""

TABLES = {"schema_version", "sessions", "subscriptions", "messages", "entries", "given",
          "inbound",
          "retained", "wills"}

Statement = tuple[str, tuple[Any, ...]]

# Retain (topic, message id, stamp) unless the row holds a newer stamp; message id 0 (no
# message: message ids start at 1) makes the row a clearing's tombstone.
RETAIN = ("INSERT INTO retained (topic, message_id, stamp) VALUES (?, ?, ?) "
          "ON CONFLICT (topic) DO UPDATE SET message_id = excluded.message_id, "
          "stamp = excluded.stamp WHERE excluded.stamp >= retained.stamp")

# Version n -> the script that makes it version n + 1, run in one transaction with the version
# bump, so a crash mid-migration leaves the old version intact.
MIGRATIONS = {
    1: "ALTER TABLE sessions ADD COLUMN expiry INTEGER NOT NULL DEFAULT 4294967295;",
    # Sessions written before version 3 keep an unknown owner: no ACL applies to them until
    # their client connects again.
    2: "ALTER TABLE sessions ADD COLUMN owner_known INTEGER NOT NULL DEFAULT 0; "
       "ALTER TABLE sessions ADD COLUMN username TEXT;",
    # MQTT 5 message and will properties, message expiry as a wall-clock deadline, and the
    # Subscription Identifiers a queued message goes out with.
    3: "ALTER TABLE messages ADD COLUMN properties BLOB NOT NULL DEFAULT x''; "
       "ALTER TABLE messages ADD COLUMN expires_at REAL; "
       "ALTER TABLE wills ADD COLUMN properties BLOB NOT NULL DEFAULT x''; "
       "ALTER TABLE entries ADD COLUMN identifiers TEXT;",
    # The ordering stamp of a retained message, so that of two workers retaining on one topic
    # the newer wins; rows from one process are all equally old.
    4: "ALTER TABLE retained ADD COLUMN stamp INTEGER NOT NULL DEFAULT 0;",
    # The cluster claim its client was last let in under (not known for older rows), and
    # whether a part of it may still come from another cluster member.
    5: "ALTER TABLE sessions ADD COLUMN admitted INTEGER NOT NULL DEFAULT 0; "
       "ALTER TABLE sessions ADD COLUMN unfinished INTEGER NOT NULL DEFAULT 0;",
    # A message's cluster-wide id (what tells two copies of it apart after a move), and what
    # a session was given while a part of it could still come.
    6: "ALTER TABLE messages ADD COLUMN cluster_id INTEGER NOT NULL DEFAULT 0; "
       "CREATE TABLE given (client_id TEXT NOT NULL, cluster_id INTEGER NOT NULL, "
       "PRIMARY KEY (client_id, cluster_id)) WITHOUT ROWID;",
}


class StorageError(Exception):
    """The database cannot be used (corrupt, wrong version, unreadable); names the file."""


class SqliteStorage:
    def __init__(self, path: Path, *, durable: bool,
                 call_soon_threadsafe: Callable[..., Any]) -> None:
        self.path = path
        self.durable = durable
        self._call_soon_threadsafe = call_soon_threadsafe
        self._batch: Batch[Statement] = Batch()
        self._lock = threading.Lock()  # the connection is used by one thread at a time
        # How long each commit took, from the end of the tick that made it to the end of its
        # fsync (metrics: culex_storage_commit_seconds). Observed on the writer thread, one
        # commit at a time; a scrape reading it meanwhile sees at worst one commit half-counted.
        self.commit_seconds = Durations()
        self._db = self._open()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="culex-sqlite")

    # -- opening and loading ----------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # A database without a single table holds nothing: new, or a first start that died
            # before its creating transaction committed. Schema and version row commit together,
            # and nothing is changed in a file before it is known to be ours.
            if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                db.executescript(f"BEGIN; {SCHEMA} INSERT INTO schema_version VALUES "
                                 f"({SCHEMA_VERSION}); COMMIT;")
            self._migrate(db)
            self._check_schema(db)
            db.execute("PRAGMA journal_mode=WAL")
            # sync: every commit is fsynced (survives power loss); batch: WAL with NORMAL
            # survives a process crash, and loses at most the last commits on power loss.
            db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot open the database: {exc}") from None
        except OSError as exc:
            raise StorageError(f"{self.path}: {exc.strerror}") from None
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Bring a database written by an older Culex up to SCHEMA_VERSION, step by step."""
        if not db.execute("SELECT count(*) FROM sqlite_master WHERE type='table' AND "
                          "name='schema_version'").fetchone()[0]:
            return  # not ours: _check_schema says so
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version")]
        while len(versions) == 1 and versions[0] in MIGRATIONS:
            version = versions[0]
            log.info("%s: migrating the database from schema version %d to %d", self.path,
                     version, version + 1)
            db.executescript(f"BEGIN; {MIGRATIONS[version]} UPDATE schema_version SET "
                             f"version = {version + 1}; COMMIT;")
            versions = [version + 1]

    def _check_schema(self, db: sqlite3.Connection) -> None:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "schema_version" not in tables:
            raise StorageError(f"{self.path}: not a Culex database (no schema_version table); "
                               "refusing to start rather than overwrite it")
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version")]
        if versions != [SCHEMA_VERSION]:
            raise StorageError(f"{self.path}: schema version {versions}, this Culex reads "
                               f"version {SCHEMA_VERSION}")
        missing = TABLES - tables
        if missing:
            raise StorageError(f"{self.path}: damaged database, missing tables "
                               f"{', '.join(sorted(missing))}")

    def load(self, owns: Callable[[str], bool] | None = None) -> LoadedState:
        """Read the file back: everything (`owns` None: one process), or for a worker only the
        sessions and wills of the client ids `owns` accepts, the messages their queue entries
        hold, and every retained message (each worker keeps all of them). Tombstones are not
        retained messages: only their stamps count, in `max_stamp`.

        One read transaction: a worker that loads while others already commit sees a single
        snapshot, so a retained row or entry committed mid-load never points at a message row
        this load missed."""
        started = time.monotonic()
        try:
            with self._lock:
                db = self._db
                if owns is not None:
                    # Ownership is tested inside SQLite, so other workers' rows (and their
                    # message payloads) are never copied out of the file.
                    db.create_function("culex_owns", 1, owns)
                db.execute("BEGIN")
                try:
                    state = self._read(db, owned=owns is not None)
                finally:
                    db.execute("COMMIT")  # nothing was written: COMMIT just ends the snapshot
                    if owns is not None:
                        db.create_function("culex_owns", 1, None)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read the database: {exc}") from None
        log.debug("read %s in %.3f s", self.path, time.monotonic() - started)
        return state

    @staticmethod
    def _read(db: sqlite3.Connection, *, owned: bool) -> LoadedState:
        """The body of `load`; with `owned`, rows pass the `culex_owns` SQL function."""
        where = " WHERE culex_owns(client_id)" if owned else ""
        state = LoadedState()
        wall_now = time.time()
        messages = ("SELECT id, topic, payload, qos, retain, properties, expires_at, cluster_id "
                    "FROM messages")
        if owned:
            messages += (" WHERE id IN (SELECT message_id FROM retained WHERE message_id != 0 "
                         "UNION SELECT message_id FROM entries WHERE culex_owns(client_id))")
        for message_id, topic, payload, qos, retain, properties, expires_at, cluster_id in \
                db.execute(messages):
            state.messages[message_id] = StoredMessage(
                message_id, topic, bytes(payload), qos, bool(retain), bytes(properties),
                None if expires_at is None else expires_at - wall_now, cluster_id)
        sessions: dict[str, StoredSession] = {}
        for client_id, expiry, owner_known, username, admitted, unfinished in db.execute(
                "SELECT client_id, expiry, owner_known, username, admitted, unfinished "
                f"FROM sessions{where}"):
            sessions[client_id] = StoredSession(client_id, expiry, owner_known=bool(
                owner_known), username=username, admitted=admitted,
                unfinished=bool(unfinished))
        for client_id, topic_filter, qos in db.execute(
                f"SELECT client_id, topic_filter, qos FROM subscriptions{where}"):
            if client_id in sessions:
                sessions[client_id].subscriptions[topic_filter] = qos
        for client_id, *fields in db.execute(
                "SELECT client_id, seq, message_id, qos, retain, packet_id, released, "
                f"identifiers FROM entries{where} ORDER BY client_id, seq"):
            seq, message_id, qos, retain, packet_id, released, identifiers = fields
            if client_id in sessions and message_id in state.messages:
                sessions[client_id].entries.append(StoredEntry(
                    seq, message_id, qos, bool(retain), packet_id, bool(released),
                    int(identifiers) if identifiers else 0))
        for client_id, packet_id in db.execute(
                f"SELECT client_id, packet_id FROM inbound{where}"):
            if client_id in sessions:
                sessions[client_id].awaiting_release.add(packet_id)
        for client_id, cluster_id in db.execute(
                f"SELECT client_id, cluster_id FROM given{where}"):
            if client_id in sessions:
                sessions[client_id].given.add(cluster_id)
        state.sessions = list(sessions.values())
        state.retained = [(message_id, stamp) for message_id, stamp in db.execute(
            "SELECT message_id, stamp FROM retained WHERE message_id != 0")
            if message_id in state.messages]
        for client_id, topic, payload, qos, retain, properties in db.execute(
                f"SELECT client_id, topic, payload, qos, retain, properties FROM wills{where}"):
            state.wills.append((client_id, StoredMessage(0, topic, bytes(payload), qos,
                                                         bool(retain), bytes(properties))))
        # Over every row, loaded or not (a tombstone, or a retained row whose message is gone,
        # still guards its topic with its stamp).
        state.max_message_id = db.execute(
            "SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]
        state.max_stamp = db.execute(
            "SELECT coalesce(max(stamp), 0) FROM retained").fetchone()[0]
        return state

    def prepare(self, owner: Callable[[str], int]) -> None:
        """Make the file safe for workers that each delete message rows on their own; called
        once at start-up before anything is loaded (with workers, in the supervisor before they
        are forked), in one transaction. `owner` maps a client id, or a retained topic, to the
        index of the worker that will hold it (always 0 in single-process mode).

        A worker deletes a message row when its last reference to the row goes, so every row
        must have one holder: two workers holding one row would each delete it under the
        other. At run time that holds by construction (each worker writes its own rows), but a
        file written by one process, or by another number of workers, has rows referred to by
        the queue entries of sessions now owned by different workers, and by retained topics
        owned by yet others. So, in order:

        - tombstones go: they keep older sets of running workers out, and none is running;
        - orphans go: message rows no queue entry and no retained row refers to (left by a
          crash between two commits);
        - each row's holders are owner(client id) for every entry referring to it and
          owner(topic) for every retained row referring to it. A row with several holders
          stays with the lowest-numbered one; every other holder gets its own copy (same
          content, properties and expiry deadline) under a new id above every existing one,
          and its entries and retained rows are repointed at the copy. A row shared by retained
          and entries is left alone when one worker owns all of them, as at run time."""
        try:
            with self._lock:
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                try:
                    # Taken before the orphans go, so no id of a deleted row is reused.
                    last_id = db.execute("SELECT coalesce(max(id), 0) FROM messages"
                                         ).fetchone()[0]
                    tombstones = db.execute("DELETE FROM retained WHERE message_id = 0").rowcount
                    orphans = db.execute(
                        "DELETE FROM messages WHERE id NOT IN (SELECT message_id FROM entries) "
                        "AND id NOT IN (SELECT message_id FROM retained)").rowcount
                    copies = self._one_holder_per_row(db, owner, last_id)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot prepare the database: {exc}") from None
        if tombstones or orphans or copies:
            log.info("%s: %d tombstones and %d unreferenced messages deleted, %d copies made "
                     "of messages held by several workers", self.path, tombstones, orphans,
                     copies)

    @staticmethod
    def _one_holder_per_row(db: sqlite3.Connection, owner: Callable[[str], int],
                            last_id: int) -> int:
        """The copying step of `prepare`; returns how many copies were made.

        Two passes over the references (the first finds the rows with several holders, the
        second the references to repoint), so only those of shared rows are held in memory."""
        owners: dict[str, int] = {}

        def owner_of(key: str) -> int:  # a client has many entries: hash each id once
            worker = owners.get(key)
            if worker is None:
                worker = owners[key] = owner(key)
            return worker

        # References to rows that exist (an entry whose row is gone is skipped by load too).
        entry_refs = ("SELECT client_id, seq, message_id FROM entries "
                      "WHERE message_id IN (SELECT id FROM messages)")
        retained_refs = ("SELECT topic, message_id FROM retained "
                         "WHERE message_id IN (SELECT id FROM messages)")
        holders: dict[int, set[int]] = {}
        for client_id, _seq, message_id in db.execute(entry_refs):
            holders.setdefault(message_id, set()).add(owner_of(client_id))
        for topic, message_id in db.execute(retained_refs):
            holders.setdefault(message_id, set()).add(owner_of(topic))
        copy_ids: dict[tuple[int, int], int] = {}  # (row, holder) -> the holder's copy
        for message_id in sorted(holders):
            for worker in sorted(holders[message_id])[1:]:  # the lowest keeps the row
                last_id += 1
                copy_ids[message_id, worker] = last_id
        if not copy_ids:
            return 0
        entries = [(copy_ids[message_id, owner_of(client_id)], client_id, seq)
                   for client_id, seq, message_id in db.execute(entry_refs).fetchall()
                   if (message_id, owner_of(client_id)) in copy_ids]
        retained = [(copy_ids[message_id, owner_of(topic)], topic)
                    for topic, message_id in db.execute(retained_refs).fetchall()
                    if (message_id, owner_of(topic)) in copy_ids]
        db.executemany(
            "INSERT INTO messages (id, topic, payload, qos, retain, properties, expires_at, "
            "cluster_id) SELECT ?, topic, payload, qos, retain, properties, expires_at, "
            "cluster_id FROM messages WHERE id = ?", [(copy_id, message_id)
                             for (message_id, _worker), copy_id in copy_ids.items()])
        db.executemany("UPDATE entries SET message_id = ? WHERE client_id = ? AND seq = ?",
                       entries)
        db.executemany("UPDATE retained SET message_id = ? WHERE topic = ?", retained)
        return len(copy_ids)

    # -- group commit -----------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        return bool(self._batch)

    def commit(self, done: CommitDone) -> None:
        statements = self._batch.take()
        started = time.monotonic()
        future = self._executor.submit(self._write, statements)

        def finished(result: Future[None]) -> None:
            self.commit_seconds.observe(time.monotonic() - started)
            self._call_soon_threadsafe(self._finished, result, statements, done)

        future.add_done_callback(finished)

    def _write(self, statements: list[Statement]) -> None:
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                # Runs of one statement go through executemany: one prepared statement and
                # one call for, say, the ten entry rows of a message sent to ten sessions.
                for sql, run in groupby(statements, key=itemgetter(0)):
                    db.executemany(sql, [params for _sql, params in run])
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _finished(self, result: Future[None], statements: list[Statement],
                  done: CommitDone) -> None:
        error = result.exception()
        if error is not None:
            # Replayed first next time; nothing acknowledged depends on them yet.
            self._batch.put_back(statements)
            log.error("storage: commit to %s failed (%s); holding acknowledgements until a "
                      "commit succeeds", self.path, error)
        done(error is None)

    def close(self) -> None:
        """Commit what is left (shutdown), then close the file."""
        self._executor.shutdown(wait=True)
        if self._batch:
            statements = self._batch.take()
            try:
                self._write(statements)
            except sqlite3.Error as exc:
                log.error("storage: final commit to %s failed: %s", self.path, exc)
        with self._lock:
            self._db.close()

    # -- changes ----------------------------------------------------------------------------------

    def _add(self, sql: str, *params: Any) -> None:
        self._batch.add((sql, params))

    def session_saved(self, client_id: str, expiry: int, username: str | None) -> None:
        self._add("INSERT INTO sessions (client_id, expiry, owner_known, username) "
                  "VALUES (?, ?, 1, ?) ON CONFLICT (client_id) DO UPDATE SET "
                  "expiry = excluded.expiry, owner_known = 1, username = excluded.username",
                  client_id, expiry, username)

    def session_admitted(self, client_id: str, token: int) -> None:
        self._add("UPDATE sessions SET admitted = ? WHERE client_id = ?", token, client_id)

    def session_unfinished(self, client_id: str, unfinished: bool) -> None:
        self._add("UPDATE sessions SET unfinished = ? WHERE client_id = ?", int(unfinished),
                  client_id)

    def session_given(self, client_id: str, cluster_id: int) -> None:
        self._add("INSERT OR IGNORE INTO given VALUES (?, ?)", client_id, cluster_id)

    def session_given_forgotten(self, client_id: str, cluster_ids: Collection[int]) -> None:
        self._add("DELETE FROM given WHERE client_id = ?", client_id)

    def session_deleted(self, client_id: str) -> None:
        for table in ("sessions", "subscriptions", "entries", "inbound", "given"):
            self._add(f"DELETE FROM {table} WHERE client_id = ?", client_id)

    def subscription_set(self, client_id: str, topic_filter: str, qos: int) -> None:
        self._add("INSERT OR REPLACE INTO subscriptions VALUES (?, ?, ?)",
                  client_id, topic_filter, qos)

    def subscription_removed(self, client_id: str, topic_filter: str) -> None:
        self._add("DELETE FROM subscriptions WHERE client_id = ? AND topic_filter = ?",
                  client_id, topic_filter)

    def message_stored(self, message: StoredMessage) -> None:
        expires_at = (None if message.expires_in is None
                      else time.time() + message.expires_in)
        self._batch.add_message(message.message_id, (
            "INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (message.message_id, message.topic, message.payload, message.qos,
             int(message.retain), message.properties, expires_at, message.cluster_id)))

    def message_deleted(self, message_id: int) -> None:
        if not self._batch.drop_message(message_id):
            self._add("DELETE FROM messages WHERE id = ?", message_id)

    def entry_queued(self, client_id: str, entry: StoredEntry) -> None:
        # Packed identifiers can pass 64 bits (several 28-bit ids), so they go as text.
        self._batch.add_entry((client_id, entry.seq), (
            "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (client_id, entry.seq, entry.message_id, entry.qos, int(entry.retain),
             entry.packet_id, int(entry.released),
             str(entry.identifiers) if entry.identifiers else None)), first=True)

    def entry_sent(self, client_id: str, seq: int, packet_id: int) -> None:
        self._batch.add_entry((client_id, seq), (
            "UPDATE entries SET packet_id = ? WHERE client_id = ? AND seq = ?",
            (packet_id, client_id, seq)), first=False)

    def entry_released(self, client_id: str, seq: int) -> None:
        self._batch.add_entry((client_id, seq), (
            "UPDATE entries SET released = 1 WHERE client_id = ? AND seq = ?",
            (client_id, seq)), first=False)

    def entry_done(self, client_id: str, seq: int) -> None:
        if not self._batch.drop_entry((client_id, seq)):
            self._add("DELETE FROM entries WHERE client_id = ? AND seq = ?", client_id, seq)

    def inbound_received(self, client_id: str, packet_id: int) -> None:
        self._add("INSERT OR IGNORE INTO inbound VALUES (?, ?)", client_id, packet_id)

    def inbound_released(self, client_id: str, packet_id: int) -> None:
        self._add("DELETE FROM inbound WHERE client_id = ? AND packet_id = ?", client_id,
                  packet_id)

    def retained_set(self, topic: str, message_id: int, stamp: int) -> None:
        self._add(RETAIN, topic, message_id, stamp)

    def retained_cleared(self, topic: str, stamp: int) -> None:
        """A tombstone keeps the clearing's stamp, so an older set committed later (by another
        worker) cannot bring the topic back; `prepare` deletes them at the next start."""
        self._add(RETAIN, topic, 0, stamp)

    def will_set(self, client_id: str, will: StoredMessage) -> None:
        self._add("INSERT OR REPLACE INTO wills VALUES (?, ?, ?, ?, ?, ?)", client_id,
                  will.topic, will.payload, will.qos, int(will.retain), will.properties)

    def will_cleared(self, client_id: str) -> None:
        self._add("DELETE FROM wills WHERE client_id = ?", client_id)
