"""What the password file, the ACL file and the dynamic-security file share: errors that name
the file and the line, reading a file whose failure is such an error, and writing one
atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
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


def write_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    """Write with mode 0600, atomically: readers see the old file or the new, never half.

    A temporary file in the same directory (so os.replace is a rename on one filesystem) is
    written and fsynced, then renamed over the target, then the directory is fsynced so the
    rename itself survives a crash. Raises OSError; the temporary file is removed on failure.
    """
    target = Path(os.fspath(path))
    directory = target.parent
    # mkstemp creates the file 0600 before any secret is written to it: no window in which
    # another local user could open it.
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as temp:
            os.fchmod(temp.fileno(), 0o600)
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # Not every platform can open a directory; the rename is still atomic.
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
