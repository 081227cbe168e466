"""The SQLite schema migrations (1: before MQTT 5 session expiry, 2: before the session owner
was stored) to the current version, and the Session Expiry Interval and owner surviving a round
trip through the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from culex.storage.sqlite import SCHEMA_VERSION, SqliteStorage

# The version 1 schema's sessions table, as Culex before MQTT 5 wrote it; the other tables did
# not change, so they are created from today's schema.
V1_SESSIONS = "CREATE TABLE sessions (client_id TEXT PRIMARY KEY) WITHOUT ROWID;"


def run_now(callback: Any, *args: Any) -> None:
    callback(*args)


def open_storage(path: Path) -> SqliteStorage:
    return SqliteStorage(path, durable=True, call_soon_threadsafe=run_now)


def make_v1_database(path: Path) -> None:
    """A version 1 database holding one 3.1.1 persistent session."""
    open_storage(path).close()
    db = sqlite3.connect(path)
    db.executescript(f"BEGIN; DROP TABLE sessions; {V1_SESSIONS} "
                     "UPDATE schema_version SET version = 1; "
                     "INSERT INTO sessions VALUES ('old-client'); COMMIT;")
    db.close()


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
    assert SCHEMA_VERSION == 3
    db.close()


def test_version_2_sessions_keep_an_unknown_owner(tmp_path: Path) -> None:
    """A session stored before its owner was: no ACL until its client connects again."""
    path = tmp_path / "culex.db"
    make_v1_database(path)
    db = sqlite3.connect(path)
    db.executescript("BEGIN; ALTER TABLE sessions ADD COLUMN expiry INTEGER NOT NULL DEFAULT "
                     "4294967295; UPDATE schema_version SET version = 2; COMMIT;")
    db.close()
    storage = open_storage(path)
    try:
        [session] = storage.load().sessions
    finally:
        storage.close()
    assert (session.client_id, session.owner_known, session.username) == (
        "old-client", False, None)


def test_session_expiry_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "culex.db"
    storage = open_storage(path)
    storage.session_saved("v5-client", 3600, "alice")
    storage.session_saved("v5-client", 60, "alice")  # a DISCONNECT shortened it
    storage.session_saved("forever", 0xFFFFFFFF, None)
    results: list[bool] = []
    storage.commit(results.append)
    storage.close()
    assert results == [True]
    reopened = open_storage(path)
    try:
        loaded = {s.client_id: (s.expiry, s.owner_known, s.username)
                  for s in reopened.load().sessions}
    finally:
        reopened.close()
    assert loaded == {"v5-client": (60, True, "alice"), "forever": (0xFFFFFFFF, True, None)}
