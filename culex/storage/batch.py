"""The changes a backend collects between two commits, as its own statements, in order.

Both backends (SQLite rows, Redis commands) turn the core's reports into statements and commit
them once per tick. Statements about a queue entry or a message that goes again before its
first statement was ever committed are blanked instead of being followed by a deletion, so a
message delivered and acknowledged within one commit window costs the store nothing.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

S = TypeVar("S")


class Batch(Generic[S]):
    __slots__ = ("_entries", "_messages", "_statements", "added")

    def __init__(self) -> None:
        self._statements: list[S | None] = []
        # Statements added so far, blanked or not: whether something changed durable state.
        self.added = 0
        # Where the uncommitted statements about one entry / one message sit in `_statements`.
        self._entries: dict[Hashable, list[int]] = {}
        self._messages: dict[int, list[int]] = {}

    def __bool__(self) -> bool:
        return bool(self._statements)

    def add(self, statement: S) -> None:
        self.added += 1
        self._statements.append(statement)

    def add_message(self, message_id: int, statement: S) -> None:
        """The first statement about a message row."""
        self.add(statement)
        self._messages[message_id] = [len(self._statements) - 1]

    def add_entry(self, key: Hashable, statement: S, *, first: bool) -> None:
        """A statement about a queue entry (`first`: the one that creates it)."""
        self.add(statement)
        position = len(self._statements) - 1
        if first:
            self._entries[key] = [position]
        elif (positions := self._entries.get(key)) is not None:
            positions.append(position)

    def drop_message(self, message_id: int) -> bool:
        """Blank what is uncommitted about the message; False if its row was committed."""
        return self._blank(self._messages.pop(message_id, None))

    def drop_entry(self, key: Hashable) -> bool:
        """Blank what is uncommitted about the entry; False if its row was committed."""
        return self._blank(self._entries.pop(key, None))

    def _blank(self, positions: list[int] | None) -> bool:
        if positions is None:
            return False
        statements = self._statements
        for position in positions:
            statements[position] = None
        return True

    def take(self) -> list[S]:
        """Everything to commit, in order; what is taken can no longer be blanked."""
        statements = [statement for statement in self._statements if statement is not None]
        self._statements = []
        self._entries.clear()
        self._messages.clear()
        return statements

    def put_back(self, statements: list[S]) -> None:
        """A failed commit's statements, to go first in the next one. (The positions of the
        pending ones shift, so nothing pending is blanked any more.)"""
        self._statements[:0] = statements
        self._entries.clear()
        self._messages.clear()
