"""The SQLite schema migrations (1: before MQTT 5 session expiry, 2: before the session owner
was stored, 3: before message properties were, 4: before retained rows had a stamp, 5: before
the cluster claim a session's client was let in under was stored, 6: before messages kept
their cluster id and sessions what they were given during a move) to the current version,
and what each added surviving a round trip through the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from culex.storage.base import LoadedState, StoredEntry, StoredMessage, StoredSession
from culex.storage.sqlite import SCHEMA_VERSION, SqliteStorage

# The tables that changed since version 1, as Culex before MQTT 5 wrote them; the other tables
# did not change, so they are created from today's schema.
V1_TABLES = """
CREATE TABLE sessions (client_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE messages (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,
                       qos INTEGER NOT NULL, retain INTEGER NOT NULL);
CREATE TABLE wills (client_id TEXT PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,
                    qos INTEGER NOT NULL, retain INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE entries (client_id TEXT NOT NULL, seq INTEGER NOT NULL,
                      message_id INTEGER NOT NULL, qos INTEGER NOT NULL,
                      retain INTEGER NOT NULL, packet_id INTEGER NOT NULL DEFAULT 0,
                      released INTEGER NOT NULL DEFAULT 0,
                      PRIMARY KEY (client_id, seq)) WITHOUT ROWID;
CREATE TABLE retained (topic TEXT PRIMARY KEY, message_id INTEGER NOT NULL) WITHOUT ROWID;
"""


def run_now(callback: Any, *args: Any) -> None:
    callback(*args)


def open_storage(path: Path) -> SqliteStorage:
    return SqliteStorage(path, durable=True, call_soon_threadsafe=run_now)


def committed_and_reloaded(storage: SqliteStorage, path: Path) -> LoadedState:
    """Commit what `storage` holds, close it, and read the file back with a new instance."""
    results: list[bool] = []
    storage.commit(results.append)
    storage.close()
    assert results == [True]
    reopened = open_storage(path)
    try:
        return reopened.load()
    finally:
        reopened.close()


def make_v1_database(path: Path) -> None:
    """A version 1 database holding one 3.1.1 persistent session."""
    open_storage(path).close()
    db = sqlite3.connect(path)
    db.executescript("BEGIN; DROP TABLE sessions; DROP TABLE messages; DROP TABLE wills; "
                     "DROP TABLE entries; DROP TABLE retained; DROP TABLE given; "
                     f"{V1_TABLES} "
                     "UPDATE schema_version SET version = 1; "
                     "INSERT INTO sessions VALUES ('old-client'); COMMIT;")
    db.close()


def the_session_after(path: Path, script: str) -> StoredSession:
    """The one session of the database at `path` once `script` has run on it (making it an
    older version) and it is opened again (migrating it to the current one)."""
    db = sqlite3.connect(path)
    db.executescript(f"BEGIN; {script} COMMIT;")
    db.close()
    storage = open_storage(path)
    try:
        [session] = storage.load().sessions
    finally:
        storage.close()
    return session


def test_version_1_database_is_migrated_and_keeps_its_sessions(tmp_path: Path) -> None:
    path = tmp_path / "culex.db"
    make_v1_database(path)
    storage = open_storage(path)
    try:
        state = storage.load()
        assert [(s.client_id, s.expiry, s.owner_known) for s in state.sessions] == [
            ("old-client", 0xFFFFFFFF, False)]
    finally:
        storage.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION == 7
    db.close()


def test_version_2_sessions_keep_an_unknown_owner(tmp_path: Path) -> None:
    """A session stored before its owner was: no ACL until its client connects again."""
    path = tmp_path / "culex.db"
    make_v1_database(path)
    session = the_session_after(path, "ALTER TABLE sessions ADD COLUMN expiry INTEGER NOT "
                                      "NULL DEFAULT 4294967295; UPDATE schema_version SET "
                                      "version = 2;")
    assert (session.client_id, session.owner_known, session.username) == (
        "old-client", False, None)


def test_version_4_retained_rows_get_stamp_0(tmp_path: Path) -> None:
    """Retained rows written by one process before stamps existed are all equally old."""
    path = tmp_path / "culex.db"
    open_storage(path).close()
    db = sqlite3.connect(path)
    db.executescript(
        "BEGIN; DROP TABLE retained; DROP TABLE given; ALTER TABLE messages DROP COLUMN "
        "cluster_id; ALTER TABLE sessions DROP COLUMN admitted; "
        "ALTER TABLE sessions DROP COLUMN unfinished; "
        "CREATE TABLE retained (topic TEXT PRIMARY KEY, message_id INTEGER NOT NULL) "
        "WITHOUT ROWID; UPDATE schema_version SET version = 4; "
        "INSERT INTO messages (id, topic, payload, qos, retain) VALUES (3, 'a', x'01', 0, 1); "
        "INSERT INTO messages (id, topic, payload, qos, retain) VALUES (9, 'b', x'02', 1, 1); "
        "INSERT INTO retained VALUES ('a', 3); INSERT INTO retained VALUES ('b', 9); COMMIT;")
    db.close()
    storage = open_storage(path)
    try:
        state = storage.load()
    finally:
        storage.close()
    assert sorted(state.retained) == [(3, 0), (9, 0)]
    assert (state.max_stamp, state.max_message_id) == (0, 9)
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert db.execute("SELECT topic, message_id, stamp FROM retained ORDER BY topic"
                      ).fetchall() == [("a", 3, 0), ("b", 9, 0)]
    db.close()


def test_session_expiry_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "culex.db"
    storage = open_storage(path)
    storage.session_saved("v5-client", 3600, "alice")
    storage.session_saved("v5-client", 60, "alice")  # a DISCONNECT shortened it
    storage.session_saved("forever", 0xFFFFFFFF, None)
    loaded = {s.client_id: (s.expiry, s.owner_known, s.username)
              for s in committed_and_reloaded(storage, path).sessions}
    assert loaded == {"v5-client": (60, True, "alice"), "forever": (0xFFFFFFFF, True, None)}


def test_version_5_sessions_were_let_in_under_no_known_claim(tmp_path: Path) -> None:
    path = tmp_path / "culex.db"
    make_v1_database(path)
    open_storage(path).close()  # to the current version
    session = the_session_after(path, "DROP TABLE given; ALTER TABLE messages DROP COLUMN "
                                      "cluster_id; ALTER TABLE sessions DROP COLUMN admitted; "
                                      "ALTER TABLE sessions DROP COLUMN unfinished; "
                                      "UPDATE schema_version SET version = 5;")
    assert (session.client_id, session.admitted, session.unfinished) == ("old-client", 0, False)


def test_the_claim_a_client_was_let_in_under_round_trips(tmp_path: Path) -> None:
    """And whether a part of the session may still come. Saving the session again (a
    DISCONNECT that changes its expiry) keeps both."""
    path = tmp_path / "culex.db"
    storage = open_storage(path)
    storage.session_saved("roamer", 0xFFFFFFFF, None)
    storage.session_admitted("roamer", 41)
    storage.session_unfinished("roamer", True)
    storage.session_saved("roamer", 60, None)
    storage.session_saved("never-let-in", 60, None)
    storage.session_unfinished("never-let-in", True)
    storage.session_unfinished("never-let-in", False)
    loaded = {s.client_id: (s.expiry, s.admitted, s.unfinished)
              for s in committed_and_reloaded(storage, path).sessions}
    assert loaded == {"roamer": (60, 41, True), "never-let-in": (60, 0, False)}


def test_version_6_messages_and_sessions_get_their_cluster_ids(tmp_path: Path) -> None:
    """A message keeps its cluster-wide id, and a session what it was given while a part of
    it could still come, until that is forgotten; a file of version 6 is migrated."""
    path = tmp_path / "culex.db"
    open_storage(path).close()
    db = sqlite3.connect(path)
    db.executescript("BEGIN; DROP TABLE given; ALTER TABLE messages DROP COLUMN cluster_id; "
                     "UPDATE schema_version SET version = 6; COMMIT;")
    db.close()
    storage = open_storage(path)
    storage.session_saved("roamer", 60, None)
    storage.message_stored(StoredMessage(1, "a", b"x", 2, False, cluster_id=1 << 40 | 7))
    storage.entry_queued("roamer", StoredEntry(1, 1, 2, False, 0, False))
    for cluster_id in (11, 12, 13):
        storage.session_given("roamer", cluster_id)
    storage.session_saved("settled", 60, None)
    storage.session_given("settled", 11)
    storage.session_given_forgotten("settled", {11})
    state = committed_and_reloaded(storage, path)
    assert state.messages[1].cluster_id == 1 << 40 | 7
    assert {s.client_id: s.given for s in state.sessions} == {"roamer": {11, 12, 13},
                                                              "settled": set()}


def test_message_properties_and_expiry_round_trip(tmp_path: Path) -> None:
    """Properties are kept as the encoded block; the time left is kept as a wall-clock
    deadline, so it comes back smaller by the time the file sat unread."""
    path = tmp_path / "culex.db"
    storage = open_storage(path)
    block = b"\x05\x03\x00\x02hi"  # Content Type "hi"
    storage.message_stored(StoredMessage(7, "t", b"p", 1, True, block, 30.0))
    storage.message_stored(StoredMessage(8, "u", b"q", 0, False))
    storage.will_set("c", StoredMessage(0, "w", b"bye", 1, False, block))
    state = committed_and_reloaded(storage, path)
    kept, plain = state.messages[7], state.messages[8]
    assert (kept.properties, plain.properties, plain.expires_in) == (block, b"", None)
    assert kept.expires_in is not None and 25 < kept.expires_in <= 30
    assert [(client, will.properties) for client, will in state.wills] == [("c", block)]
