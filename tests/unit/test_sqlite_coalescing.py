"""Write coalescing in the SQLite backend: a queue entry (or message) that is done before its
rows were committed costs the disk nothing, and one that was committed is deleted for real."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from culex.storage.base import StoredEntry, StoredMessage
from culex.storage.sqlite import SqliteStorage
from tests.unit.sqlite_helpers import commit, open_storage


def rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT * FROM {table}").fetchall()
    finally:
        db.close()


def queue_one(storage: SqliteStorage, seq: int, message_id: int) -> None:
    storage.message_stored(StoredMessage(message_id, "t", b"p", 1, False))
    storage.entry_queued("c", StoredEntry(seq, message_id, 1, False, 0, False))


def test_acknowledged_before_the_commit_writes_nothing(tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "culex.db")
    storage.session_saved("c", 60, None)
    queue_one(storage, 1, 10)
    storage.entry_sent("c", 1, 7)
    storage.entry_done("c", 1)
    storage.message_deleted(10)
    statements = [s for s in storage._batch._statements if s is not None]
    assert [sql.split()[0:3] for sql, _ in statements] == [["INSERT", "INTO", "sessions"]]
    commit(storage)
    storage.close()
    assert rows(tmp_path / "culex.db", "entries") == []
    assert rows(tmp_path / "culex.db", "messages") == []
    assert [row[0] for row in rows(tmp_path / "culex.db", "sessions")] == ["c"]


def test_acknowledged_after_the_commit_is_deleted(tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "culex.db")
    queue_one(storage, 1, 10)
    commit(storage)
    assert len(rows(tmp_path / "culex.db", "entries")) == 1
    storage.entry_done("c", 1)
    storage.message_deleted(10)
    commit(storage)
    storage.close()
    assert rows(tmp_path / "culex.db", "entries") == []
    assert rows(tmp_path / "culex.db", "messages") == []


def test_a_message_still_referenced_stays(tmp_path: Path) -> None:
    """Two sessions queue one message; the first acknowledges before the commit: its entry goes,
    the message and the other entry are written."""
    storage = open_storage(tmp_path / "culex.db")
    storage.message_stored(StoredMessage(10, "t", b"p", 1, False))
    storage.entry_queued("a", StoredEntry(1, 10, 1, False, 0, False))
    storage.entry_queued("b", StoredEntry(2, 10, 1, False, 0, False))
    storage.entry_done("a", 1)
    commit(storage)
    storage.close()
    assert [row[:2] for row in rows(tmp_path / "culex.db", "entries")] == [("b", 2)]
    assert [row[0] for row in rows(tmp_path / "culex.db", "messages")] == [10]


def test_a_failed_commit_is_replayed_whole(tmp_path: Path) -> None:
    """After a failure the replayed statements are no longer blanked: a later acknowledgement
    deletes for real, in order after the replayed insert."""
    storage = open_storage(tmp_path / "culex.db")
    queue_one(storage, 1, 10)
    real_write = storage._write
    failures = [sqlite3.OperationalError("disk I/O error")]

    def failing_write(statements: list[Any]) -> None:
        if failures:
            raise failures.pop()
        real_write(statements)

    storage._write = failing_write  # type: ignore[method-assign]
    done = threading.Event()
    results: list[bool] = []
    storage.commit(lambda ok: (results.append(ok), done.set()))
    assert done.wait(5)
    assert results == [False]
    storage.entry_done("c", 1)
    storage.message_deleted(10)
    storage.close()  # writes what is left: the replayed inserts, then the deletes
    assert rows(tmp_path / "culex.db", "entries") == []
    assert rows(tmp_path / "culex.db", "messages") == []
