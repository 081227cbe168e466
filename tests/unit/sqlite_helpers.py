"""Real SQLite files in tests: a backend whose commits are waited for."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

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
