"""The SQLite backend shared by worker processes: retained rows ordered by stamp whatever order
the workers' commits land in."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

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
