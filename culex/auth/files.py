"""What the password file and the ACL file share: errors that name the file and the line, and
reading a file whose failure is such an error."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar


class FileProblem(Exception):
    """A file cannot be used; the message names the file and the line.

    `path` is the file (or a description of the source) and `line` the 1-based line number, or
    0 when the problem is with the file as a whole (missing, unreadable).
    """

    def __init__(self, path: str, line: int, problem: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


E = TypeVar("E", bound=FileProblem)


def read_file(path: str | os.PathLike[str], error: type[E]) -> tuple[str, bytes]:
    """(the file's name, its bytes); an unreadable file raises `error` naming it."""
    name = os.fspath(path)
    try:
        return name, Path(name).read_bytes()
    except OSError as exc:
        raise error(name, 0, exc.strerror or str(exc)) from None
