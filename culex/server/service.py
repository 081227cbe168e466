"""What a service manager needs from the broker: one broker per state file, readiness, a pid.

* `StateLock`: an exclusive `flock(2)` on `<database>.lock`, taken before the database is
  opened. The kernel drops it when the last process holding the open file goes, however it
  goes (`kill -9` included), so a lock left by a dead broker never blocks a start. The
  supervisor takes it and its workers inherit it across `fork`: it is free only once every
  process that may write the database has gone. The holder's pid is written into the file so
  that a refused start can say who holds it.
* `Notifier`: the systemd notify protocol (`sd_notify(3)`): `READY=1`, `STOPPING=1`,
  `WATCHDOG=1` and `STATUS=...` as datagrams to `$NOTIFY_SOCKET`. A few lines of the standard
  library; without `$NOTIFY_SOCKET` every call does nothing.
* `PidFile`: `--pid-file`, for supervisors other than systemd.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
from pathlib import Path
from typing import Protocol

log = logging.getLogger("culex")


class LockError(Exception):
    """The state is in use by another broker, or its lock file cannot be used: one line."""


class StateLock:
    """The lock file beside a database, held exclusively for the life of the broker."""

    # A file unlinked by its holder between our open and our flock is retried with the new
    # one; more than a few rounds means something else keeps removing it.
    ATTEMPTS = 5

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @staticmethod
    def path_for(database: Path) -> Path:
        return database.with_name(database.name + ".lock")

    @classmethod
    def acquire(cls, database: Path) -> StateLock:
        """Take the lock of `database` or raise `LockError` naming the file and the holder.

        Creates the database's directory if needed, and nothing else: the database itself is
        opened only once the lock is ours."""
        path = cls.path_for(database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LockError(f"{path.parent}: cannot create the state directory: "
                            f"{exc.strerror}") from None
        for _attempt in range(cls.ATTEMPTS):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise LockError(f"{path}: cannot open the lock file: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise LockError(f"{path}: cannot lock: {exc.strerror}") from None
                by = f"process {holder}" if holder else "another process"
                raise LockError(f"{database}: the state is in use by another broker ({by} "
                                f"holds {path}); refusing to start") from None
            if _same_file(fd, path):
                lock = cls(path, fd)
                lock._write_pid()
                return lock
            os.close(fd)  # its holder removed it as it stopped: take the new file
        raise LockError(f"{path}: the lock file keeps being replaced; refusing to start")

    def _write_pid(self) -> None:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Remove the file, then let go of the lock (in this order: a broker that opened the
        file meanwhile sees it was removed and retries with a new one)."""
        if self._fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = -1


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


class Readiness(Protocol):
    """Where the broker's event loop reports that it serves, still runs, and stops: the
    service manager itself (one process), or the supervisor (a worker)."""

    # Seconds between `alive()` calls, or None without a watchdog.
    watchdog_interval: float | None

    def ready(self) -> None: ...

    def alive(self) -> None: ...

    def stopping(self) -> None: ...


class Notifier:
    """`sd_notify(3)` over the datagram socket systemd names in `$NOTIFY_SOCKET`."""

    def __init__(self, address: str | None, watchdog_interval: float | None) -> None:
        self._address = address
        # Half of WatchdogSec: systemd's advice, so one late ping is not yet a timeout.
        self.watchdog_interval = watchdog_interval
        self._socket: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environment(cls) -> Notifier:
        """Read `$NOTIFY_SOCKET` and `$WATCHDOG_USEC`, and take them out of the environment:
        they are this process's to answer, not its children's (`sd_notify`'s unset_environment)."""
        address = os.environ.pop("NOTIFY_SOCKET", None) or None
        usec = os.environ.pop("WATCHDOG_USEC", "")
        watchdog_pid = os.environ.pop("WATCHDOG_PID", "")
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]  # a socket in the abstract namespace
        elif address is not None and not address.startswith("/"):
            log.warning("NOTIFY_SOCKET %r is not a Unix socket path; not notifying", address)
            address = None
        interval = None
        if usec.isdigit() and int(usec) > 0 and watchdog_pid in ("", str(os.getpid())):
            interval = int(usec) / 2e6
        return cls(address, interval)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> None:
        """One datagram of `NAME=value` lines; never blocks, never raises (a service manager
        that went away must not stop the broker)."""
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto("\n".join(fields).encode(), socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify the service manager at %s: %s",
                            self._address.replace("\0", "@"), exc.strerror or exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def alive(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class PidFileError(Exception):
    """The pid file cannot be written: one line naming it."""


class PidFile:
    """`--pid-file`: this process's pid, written whole (a reader never sees half of it) and
    removed at exit unless another process has written its own meanwhile."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._written = False

    def write(self) -> None:
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            partial.write_text(f"{os.getpid()}\n")
            partial.replace(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise PidFileError(f"--pid-file {self.path}: cannot write: "
                               f"{exc.strerror}") from None
        self._written = True

    def remove(self) -> None:
        if not self._written:
            return
        self._written = False
        with contextlib.suppress(OSError):
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()
