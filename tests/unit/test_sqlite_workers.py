"""The SQLite backend shared by worker processes: retained rows ordered by stamp whatever order
the workers' commits land in, a worker loading only the sessions it owns, and the parent's
preparation of the file before the workers are forked."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from culex.storage.base import StoredEntry, StoredMessage
from culex.storage.sqlite import SqliteStorage


def run_now(callback: Any, *args: Any) -> None:
    callback(*args)


def open_storage(path: Path) -> SqliteStorage:
    return SqliteStorage(path, durable=True, call_soon_threadsafe=run_now)


def commit(storage: SqliteStorage) -> None:
    """One commit, waited for (it runs on the writer thread)."""
    done = threading.Event()
    results: list[bool] = []

    def finished(ok: bool) -> None:
        results.append(ok)
        done.set()

    storage.commit(finished)
    assert done.wait(5)
    assert results == [True]


def rows(path: Path, table: str, order: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
    finally:
        db.close()


def every_table(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    orders = {"sessions": "client_id", "subscriptions": "client_id, topic_filter",
              "messages": "id", "entries": "client_id, seq", "inbound": "client_id, packet_id",
              "retained": "topic", "wills": "client_id"}
    return {table: rows(path, table, order) for table, order in orders.items()}


# -- the stamp guard ------------------------------------------------------------------------------


@pytest.mark.parametrize("newer_first", [True, False])
def test_an_older_stamp_never_replaces_a_newer_one(tmp_path: Path, newer_first: bool) -> None:
    """Two workers retain on one topic; whichever commits last, the newer stamp stays."""
    path = tmp_path / "culex.db"
    newer, older = open_storage(path), open_storage(path)
    newer.retained_set("t", 20, stamp=2)
    older.retained_set("t", 10, stamp=1)
    for storage in (newer, older) if newer_first else (older, newer):
        commit(storage)
    newer.close()
    older.close()
    assert rows(path, "retained", "topic") == [("t", 20, 2)]


def test_an_equal_stamp_replaces(tmp_path: Path) -> None:
    """Stamp 0 is what one process writes every time: each set must still take effect."""
    path = tmp_path / "culex.db"
    storage = open_storage(path)
    storage.retained_set("t", 10, stamp=5)
    commit(storage)
    storage.retained_set("t", 11, stamp=5)
    commit(storage)
    storage.close()
    assert rows(path, "retained", "topic") == [("t", 11, 5)]


def test_clearing_with_an_older_stamp_leaves_the_newer_row(tmp_path: Path) -> None:
    path = tmp_path / "culex.db"
    storage = open_storage(path)
    storage.retained_set("t", 10, stamp=5)
    storage.retained_set("u", 12, stamp=5)
    commit(storage)
    storage.retained_cleared("t", stamp=4)
    storage.retained_cleared("u", stamp=5)
    commit(storage)
    storage.close()
    assert rows(path, "retained", "topic") == [("t", 10, 5)]


@pytest.mark.parametrize("clear_first", [True, False])
def test_an_older_clearing_never_removes_a_newer_set(tmp_path: Path, clear_first: bool) -> None:
    path = tmp_path / "culex.db"
    setter, clearer = open_storage(path), open_storage(path)
    setter.retained_set("t", 10, stamp=5)
    clearer.retained_cleared("t", stamp=3)
    for storage in (clearer, setter) if clear_first else (setter, clearer):
        commit(storage)
    setter.close()
    clearer.close()
    assert rows(path, "retained", "topic") == [("t", 10, 5)]


# -- loading one worker's share -------------------------------------------------------------------


def message(message_id: int, topic: str) -> StoredMessage:
    return StoredMessage(message_id, topic, f"payload {message_id}".encode(), 1, False)


def entry(seq: int, message_id: int) -> StoredEntry:
    return StoredEntry(seq, message_id, 1, False, 0, False)


def two_workers_database(path: Path) -> None:
    """Sessions a1, a2 (the "a" worker's) and b1; b1's message 5 has the highest id, message
    4 is referenced by nothing, message 3 is retained only."""
    storage = open_storage(path)
    for message_id in range(1, 6):
        storage.message_stored(message(message_id, f"m/{message_id}"))
    for client_id in ("a1", "a2", "b1"):
        storage.session_saved(client_id, 60, None)
        storage.subscription_set(client_id, f"f/{client_id}", 1)
    storage.entry_queued("a1", entry(1, 1))
    storage.entry_queued("b1", entry(2, 2))
    storage.entry_queued("b1", entry(3, 5))
    storage.inbound_received("a1", 7)
    storage.inbound_received("b1", 8)
    storage.retained_set("m/3", 3, stamp=7)
    storage.will_set("a1", message(0, "will/a1"))
    storage.will_set("b1", message(0, "will/b1"))
    commit(storage)
    storage.close()


def test_a_worker_loads_its_own_sessions_and_every_retained_message(tmp_path: Path) -> None:
    path = tmp_path / "culex.db"
    two_workers_database(path)
    storage = open_storage(path)
    try:
        state = storage.load(owns=lambda client_id: client_id.startswith("a"))
    finally:
        storage.close()
    assert {s.client_id: (s.subscriptions, [e.message_id for e in s.entries],
                          s.awaiting_release) for s in state.sessions} == {
        "a1": ({"f/a1": 1}, [1], {7}), "a2": ({"f/a2": 1}, [], set())}
    assert sorted(state.messages) == [1, 3]  # not b1's 2 and 5, nor the orphan 4
    assert state.retained == [(3, 7)]
    assert [(client_id, will.topic) for client_id, will in state.wills] == [("a1", "will/a1")]
    assert (state.max_message_id, state.max_stamp) == (5, 7)


def test_without_owns_everything_is_loaded(tmp_path: Path) -> None:
    """One process: every session, and every message row, the orphan too (the core drops
    it)."""
    path = tmp_path / "culex.db"
    two_workers_database(path)
    storage = open_storage(path)
    try:
        state = storage.load()
    finally:
        storage.close()
    assert sorted(s.client_id for s in state.sessions) == ["a1", "a2", "b1"]
    assert sorted(state.messages) == [1, 2, 3, 4, 5]
    assert state.retained == [(3, 7)]
    assert sorted(client_id for client_id, _will in state.wills) == ["a1", "b1"]
    assert (state.max_message_id, state.max_stamp) == (5, 7)


# -- preparing the file for workers ---------------------------------------------------------------


def test_prepare_for_workers_drops_orphans_and_splits_shared_rows(tmp_path: Path) -> None:
    """Message 2 is both retained and queued for two sessions: the retained row moves to a copy
    above the old highest id (the orphan 4's, which is deleted), the entries keep 2."""
    path = tmp_path / "culex.db"
    storage = open_storage(path)
    storage.message_stored(message(1, "queued"))
    storage.message_stored(StoredMessage(2, "both", b"shared", 2, True, b"\x03\x00\x01x", 300.0))
    storage.message_stored(message(3, "retained"))
    storage.message_stored(message(4, "orphan"))
    for client_id in ("c", "d"):
        storage.session_saved(client_id, 60, None)
    storage.entry_queued("c", entry(1, 1))
    storage.entry_queued("c", entry(2, 2))
    storage.entry_queued("d", entry(3, 2))
    storage.retained_set("both", 2, stamp=6)
    storage.retained_set("retained", 3, stamp=4)
    storage.will_set("c", message(0, "will"))
    commit(storage)
    before = every_table(path)
    storage.prepare_for_workers()
    storage.close()
    after = every_table(path)

    old_messages = {row[0]: row[1:] for row in before["messages"]}
    new_messages = {row[0]: row[1:] for row in after["messages"]}
    assert sorted(new_messages) == [1, 2, 3, 5]
    assert new_messages[5] == new_messages[2] == old_messages[2]  # expiry deadline too
    assert {k: new_messages[k] for k in (1, 2, 3)} == {k: old_messages[k] for k in (1, 2, 3)}
    assert after["retained"] == [("both", 5, 6), ("retained", 3, 4)]
    assert [row[2] for row in after["entries"]] == [1, 2, 2]
    for table in ("sessions", "subscriptions", "entries", "inbound", "wills"):
        assert after[table] == before[table], table


def test_prepare_for_workers_leaves_a_clean_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "culex.db"
    two_workers_database(path)  # its only orphan is 4; nothing is shared
    before = every_table(path)
    storage = open_storage(path)
    storage.prepare_for_workers()
    storage.close()
    after = every_table(path)
    assert [row[0] for row in after["messages"]] == [1, 2, 3, 5]
    assert after == {**before, "messages": [row for row in before["messages"] if row[0] != 4]}
