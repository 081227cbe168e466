"""SQLite storage for a cluster node: the same database, plus where each of the other nodes'
streams of records has been applied up to, and the records this node has yet to send.

A node applies the entries of its Redis stream, commits what they changed, and only then
acknowledges them (XACK). A crash between the commit and the XACK makes it read them again
after a restart; the cursor of each sender (its name, epoch and the entry's sequence number),
committed in the same transaction as what the entry changed, says which of them are already
applied, so that a QoS 2 message queued for a persistent session is not queued twice.

The other way round, what a node sends to the others leaves only once the tick that made it is
committed, and it is committed with that tick (`stream_outbox`): a crash before the commit sends
nothing (the client retransmits, and the message is routed again, once), a crash after it sends
the records after the restart, under their first numbers (which the receivers recognise).

The tables are created when missing, outside the schema versions: a database without it (a node
that was not clustered before) is read as it is, and a database with it opens in a Culex that
is not clustered (the table is simply not read).
"""

from __future__ import annotations

import sqlite3

from .sqlite import SqliteStorage, StorageError

# One row per receiving member (the workers of a node share the file, each with its stream)
# and sender epoch.
CURSORS = """CREATE TABLE IF NOT EXISTS stream_cursors (
    receiver TEXT NOT NULL,
    sender TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (receiver, sender, epoch)
) WITHOUT ROWID"""
OUTBOX = """CREATE TABLE IF NOT EXISTS stream_outbox (
    sender TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    receiver TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (sender, epoch, seq)
) WITHOUT ROWID"""


class ClusterSqliteStorage(SqliteStorage):
    def _open(self) -> sqlite3.Connection:
        db = super()._open()
        try:
            db.execute(CURSORS)
            db.execute(OUTBOX)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot add the stream cursors: {exc}") from None
        return db

    @property
    def changes(self) -> int:
        """Statements added since the database was opened: whether applying an entry changed
        durable state (only then is its cursor worth a row)."""
        return self._batch.added

    def cursors(self, receiver: str) -> dict[tuple[str, int], int]:
        """(sender, epoch) -> the last sequence number `receiver` applied and committed."""
        with self._lock:
            rows = self._db.execute("SELECT sender, epoch, seq FROM stream_cursors "
                                    "WHERE receiver = ?", (receiver,)).fetchall()
        return {(sender, epoch): seq for sender, epoch, seq in rows}

    def cursor_saved(self, receiver: str, sender: str, epoch: int, seq: int) -> None:
        self._add("INSERT OR REPLACE INTO stream_cursors VALUES (?, ?, ?, ?)", receiver,
                  sender, epoch, seq)

    def outbox(self, sender: str) -> list[tuple[int, int, str, bytes]]:
        """What `sender` committed and had not yet sent: (epoch, seq, receiver, records)."""
        with self._lock:
            rows = self._db.execute("SELECT epoch, seq, receiver, data FROM stream_outbox "
                                    "WHERE sender = ? ORDER BY epoch, seq", (sender,)).fetchall()
        return [(epoch, seq, receiver, bytes(data)) for epoch, seq, receiver, data in rows]

    def outbox_added(self, sender: str, epoch: int, seq: int, receiver: str,
                     data: bytes) -> None:
        self._add("INSERT OR REPLACE INTO stream_outbox VALUES (?, ?, ?, ?, ?)", sender, epoch,
                  seq, receiver, data)

    async def flush(self) -> None:
        """Nothing to do before the cluster's client closes: `close` commits what is left."""

    def outbox_sent(self, sender: str, epoch: int, seq: int) -> None:
        self._add("DELETE FROM stream_outbox WHERE sender = ? AND epoch = ? AND seq = ?",
                  sender, epoch, seq)
