"""The SQLite backend shared by worker processes: retained rows ordered by stamp whatever order
the workers' commits land in (clearings leave tombstones), a worker loading only the sessions it
owns, and the parent's preparation of the file before the workers are forked."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from culex.storage.base import LoadedState, StoredEntry, StoredMessage
from tests.unit.sqlite_helpers import commit, open_storage


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
    """Equal stamps never come from two workers (the worker index is in the low bits); the
    same row written again (a replayed commit) must still take effect."""
    path = tmp_path / "culex.db"
    storage = open_storage(path)
    storage.retained_set("t", 10, stamp=5)
    commit(storage)
    storage.retained_set("t", 11, stamp=5)
    commit(storage)
    storage.close()
    assert rows(path, "retained", "topic") == [("t", 11, 5)]


def test_clearing_with_an_older_stamp_leaves_the_newer_row(tmp_path: Path) -> None:
    """"u" is cleared: a tombstone (message 0) keeps its stamp."""
    path = tmp_path / "culex.db"
    storage = open_storage(path)
    storage.retained_set("t", 10, stamp=5)
    storage.retained_set("u", 12, stamp=5)
    commit(storage)
    storage.retained_cleared("t", stamp=4)
    storage.retained_cleared("u", stamp=5)
    commit(storage)
    storage.close()
    assert rows(path, "retained", "topic") == [("t", 10, 5), ("u", 0, 5)]


def load(path: Path, owns: Any = None) -> LoadedState:
    storage = open_storage(path)
    try:
        return storage.load(owns=owns)
    finally:
        storage.close()


def test_a_clearing_is_not_undone_by_an_older_set(tmp_path: Path) -> None:
    """Worker A clears at stamp 5; worker B's set at stamp 3 commits after it and must not
    bring the topic back; B's later set at stamp 7 does retain."""
    path = tmp_path / "culex.db"
    a, b = open_storage(path), open_storage(path)
    a.message_stored(message(1, "t"))
    a.retained_set("t", 1, stamp=1)
    commit(a)
    a.message_deleted(1)
    a.retained_cleared("t", stamp=5)
    commit(a)
    b.message_stored(message(2, "t"))
    b.retained_set("t", 2, stamp=3)
    commit(b)
    assert rows(path, "retained", "topic") == [("t", 0, 5)]
    for owns in (None, lambda client_id: True):
        state = load(path, owns)
        assert (state.retained, state.max_stamp) == ([], 5)
    b.message_stored(message(3, "t"))
    b.retained_set("t", 3, stamp=7)
    commit(b)
    a.close()
    b.close()
    for owns in (None, lambda client_id: True):
        state = load(path, owns)
        assert (state.retained, state.max_stamp) == ([(3, 7)], 7)
        assert state.messages[3].payload == b"payload 3"


def test_tombstones_are_kept_until_the_next_start_prepares_the_file(tmp_path: Path) -> None:
    """A single process writes tombstones too; `prepare` at the next start removes them, so
    the file does not keep a row for every topic ever cleared."""
    path = tmp_path / "culex.db"
    storage = open_storage(path)
    storage.message_stored(message(1, "t"))
    storage.retained_set("t", 1, stamp=1)
    commit(storage)
    storage.retained_cleared("t", stamp=2)
    commit(storage)
    storage.close()
    assert rows(path, "retained", "topic") == [("t", 0, 2)]
    reopened = open_storage(path)
    assert reopened.load().retained == []
    reopened.prepare(lambda key: 0)
    reopened.close()
    assert rows(path, "retained", "topic") == []


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


def test_prepare_gives_each_holder_its_own_row(tmp_path: Path) -> None:
    """Message 2 is queued for c (worker 0) and d (worker 1) and retained on "both" (worker 2):
    worker 0 keeps it, d's entry and the retained row move to copies above the old highest id
    (the orphan 4's, which is deleted). Message 3 is queued for c and e and retained on
    "mine", all worker 0's, so it stays one row; the tombstone on "gone" is deleted."""
    owners = {"c": 0, "d": 1, "e": 0, "both": 2, "mine": 0, "gone": 1}
    path = tmp_path / "culex.db"
    storage = open_storage(path)
    storage.message_stored(message(1, "queued"))
    storage.message_stored(StoredMessage(2, "both", b"shared", 2, True, b"\x03\x00\x01x", 300.0))
    storage.message_stored(message(3, "mine"))
    storage.message_stored(message(4, "orphan"))
    for client_id in ("c", "d", "e"):
        storage.session_saved(client_id, 60, None)
    storage.entry_queued("c", entry(1, 1))
    storage.entry_queued("c", entry(2, 2))
    storage.entry_queued("c", entry(3, 3))
    storage.entry_queued("d", entry(4, 2))
    storage.entry_queued("e", entry(5, 3))
    storage.retained_set("both", 2, stamp=6)
    storage.retained_set("mine", 3, stamp=4)
    storage.retained_cleared("gone", stamp=9)
    storage.will_set("c", message(0, "will"))
    commit(storage)
    before = every_table(path)
    storage.prepare(owners.__getitem__)
    storage.close()
    after = every_table(path)

    old_messages = {row[0]: row[1:] for row in before["messages"]}
    new_messages = {row[0]: row[1:] for row in after["messages"]}
    assert sorted(new_messages) == [1, 2, 3, 5, 6]
    # The same content, properties and expiry deadline in all three.
    assert new_messages[2] == new_messages[5] == new_messages[6] == old_messages[2]
    assert {k: new_messages[k] for k in (1, 3)} == {k: old_messages[k] for k in (1, 3)}
    assert [(client_id, seq, message_id) for client_id, seq, message_id, *_ in after["entries"]
            ] == [("c", 1, 1), ("c", 2, 2), ("c", 3, 3), ("d", 4, 5), ("e", 5, 3)]
    assert after["retained"] == [("both", 6, 6), ("mine", 3, 4)]
    for table in ("sessions", "subscriptions", "inbound", "wills"):
        assert after[table] == before[table], table
    # Each worker's load now holds only rows no other worker holds.
    held: dict[int, set[int]] = {}
    for worker in range(3):
        state = load(path, lambda client_id, worker=worker: owners[client_id] == worker)
        mine = {e.message_id for s in state.sessions for e in s.entries}
        mine |= {message_id for message_id, _stamp in state.retained
                 if owners[state.messages[message_id].topic] == worker}
        held[worker] = mine
    assert held == {0: {1, 2, 3}, 1: {5}, 2: {6}}


def test_prepare_leaves_rows_held_by_one_worker(tmp_path: Path) -> None:
    """Retained and queued, but every reference belongs to worker 0: nothing is copied (and
    the ids stay as they are, so a second run changes nothing either)."""
    path = tmp_path / "culex.db"
    storage = open_storage(path)
    storage.message_stored(message(1, "t"))
    for client_id in ("c", "d"):
        storage.session_saved(client_id, 60, None)
        storage.entry_queued(client_id, entry(ord(client_id), 1))
    storage.retained_set("t", 1, stamp=2)
    commit(storage)
    before = every_table(path)
    storage.prepare(lambda key: 0)
    storage.prepare(lambda key: 0)
    storage.close()
    assert every_table(path) == before


def test_prepare_rolls_back_when_owner_fails(tmp_path: Path) -> None:
    path = tmp_path / "culex.db"
    storage = open_storage(path)
    storage.message_stored(message(1, "t"))
    storage.message_stored(message(2, "orphan"))
    storage.retained_set("t", 1, stamp=2)
    storage.retained_cleared("gone", stamp=3)
    commit(storage)
    before = every_table(path)

    def owner(key: str) -> int:
        raise KeyError(key)

    with pytest.raises(KeyError):
        storage.prepare(owner)
    storage.close()
    assert every_table(path) == before


def test_prepare_leaves_a_clean_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "culex.db"
    two_workers_database(path)  # its only orphan is 4; nothing is shared
    before = every_table(path)
    storage = open_storage(path)
    storage.prepare(lambda key: 0 if key.startswith("a") else 1)
    storage.close()
    after = every_table(path)
    assert [row[0] for row in after["messages"]] == [1, 2, 3, 5]
    assert after == {**before, "messages": [row for row in before["messages"] if row[0] != 4]}
