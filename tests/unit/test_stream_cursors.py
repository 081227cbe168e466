"""A cluster node's SQLite storage keeps, in the same transaction as what they changed, how
far each sender's records were applied; a database with or without that table opens either
way."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from culex.storage.sqlite import SqliteStorage
from culex.storage.stream_cursors import ClusterSqliteStorage


def commit(storage: SqliteStorage) -> None:
    results: list[bool] = []
    storage.commit(results.append)
    storage.close()
    assert results == [True]


def test_cursors_commit_with_the_changes_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    plain = SqliteStorage(path, durable=True, call_soon_threadsafe=lambda f, *a: f(*a))
    plain.session_saved("kept", 60, None)
    commit(plain)  # a node that was not clustered before

    storage = ClusterSqliteStorage(path, durable=True,
                                   call_soon_threadsafe=lambda f, *a: f(*a))
    assert storage.cursors("node-a") == {}
    before = storage.changes
    storage.subscription_set("kept", "a/#", 1)
    assert storage.changes == before + 1
    storage.cursor_saved("node-a", "node-b", 3, 41)
    storage.cursor_saved("node-a", "node-b", 3, 42)
    storage.cursor_saved("node-a", "node-c", 1, 7)
    storage.cursor_saved("node-a/1", "node-b", 3, 43)  # another worker of the node
    commit(storage)

    again = ClusterSqliteStorage(path, durable=True, call_soon_threadsafe=lambda f, *a: f(*a))
    assert again.cursors("node-a") == {("node-b", 3): 42, ("node-c", 1): 7}
    assert again.cursors("node-a/1") == {("node-b", 3): 43}
    assert [session.client_id for session in again.load().sessions] == ["kept"]
    again.close()
    # Opened by a Culex that is not clustered: the extra table is left alone.
    SqliteStorage(path, durable=True, call_soon_threadsafe=lambda f, *a: f(*a)).close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM stream_cursors").fetchone() == (3,)
    db.close()
