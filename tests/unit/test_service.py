"""culex/server/service.py on its own: the state lock (real files, real flock), the notify
protocol's environment and failures, the pid file. The broker-level behaviour is in
tests/integration/test_state_lock.py and test_service.py."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from pathlib import Path

import pytest

from culex.server import service
from culex.server.service import LockError, Notifier, PidFile, PidFileError, StateLock


def test_a_second_lock_on_the_same_state_is_refused_naming_file_and_holder(
        tmp_path: Path) -> None:
    database = tmp_path / "data" / "culex.db"
    held = StateLock.acquire(database)
    try:
        # flock belongs to an open file, so a second open in this process is refused too.
        with pytest.raises(LockError) as refused:
            StateLock.acquire(database)
        assert str(refused.value) == (
            f"{database}: the state is in use by another broker (process {os.getpid()} holds "
            f"{database}.lock); refusing to start")
    finally:
        held.release()
    assert not database.exists()  # the lock never creates the database


def test_release_removes_the_file_and_the_next_acquire_takes_it(tmp_path: Path) -> None:
    database = tmp_path / "culex.db"
    StateLock.acquire(database).release()
    assert list(tmp_path.iterdir()) == []
    again = StateLock.acquire(database)
    assert (tmp_path / "culex.db.lock").read_text() == f"{os.getpid()}\n"
    again.release()


def test_a_lock_file_without_a_holder_does_not_block(tmp_path: Path) -> None:
    """What `kill -9` leaves: the file, a dead pid in it, and no lock."""
    (tmp_path / "culex.db.lock").write_text("99999999\n")
    lock = StateLock.acquire(tmp_path / "culex.db")
    try:
        assert (tmp_path / "culex.db.lock").read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()


def test_a_file_removed_between_open_and_lock_is_not_the_one_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder may remove the file (a clean stop) after we opened it and before our flock
    succeeds: a lock on the removed file protects nothing, so the new file is taken."""
    path = tmp_path / "culex.db.lock"
    real_flock = fcntl.flock
    calls = []

    def holder_stops_in_between(fd: int, operation: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            path.unlink()
            path.write_text("")  # another broker's start created the file anew
        real_flock(fd, operation)

    monkeypatch.setattr(service.fcntl, "flock", holder_stops_in_between)
    lock = StateLock.acquire(tmp_path / "culex.db")
    try:
        assert len(calls) == 2
        assert os.fstat(lock._fd).st_ino == path.stat().st_ino
    finally:
        lock.release()


def test_an_unusable_state_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(LockError, match=r"cannot create the state directory: "):
        StateLock.acquire(tmp_path / "file" / "data" / "culex.db")


def test_notifier_reads_and_clears_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "@culex-abstract")
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier.from_environment()
    assert notifier.enabled and notifier._address == "\0culex-abstract"
    assert notifier.watchdog_interval == 1.5  # half of WatchdogSec
    # Children (the workers) must not answer systemd in the supervisor's place.
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & set(os.environ)


@pytest.mark.parametrize(("environment", "interval"), [
    ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, None),  # watches another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": "500000"}, 0.25),
])
def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str],
                           interval: float | None) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert Notifier.from_environment().watchdog_interval == interval


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier.from_environment()
    assert not notifier.enabled
    notifier.ready("serving")
    assert notifier._socket is None


def test_a_notify_socket_that_is_not_a_path_is_ignored(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    with caplog.at_level(logging.WARNING, "culex"):
        assert not Notifier.from_environment().enabled
    assert "not a Unix socket path" in caplog.text


def test_a_service_manager_that_went_away_is_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"), None)
    with caplog.at_level(logging.WARNING, "culex"):
        notifier.ready("serving")
        notifier.alive()
    notifier.close()
    assert caplog.text.count("cannot notify the service manager") == 1


def test_messages_are_newline_separated_assignments(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(path)
        notifier = Notifier(path, None)
        notifier.ready("serving on 127.0.0.1:1883")
        notifier.stopping("stopping")
        notifier.close()
        assert manager.recv(4096) == b"READY=1\nSTATUS=serving on 127.0.0.1:1883"
        assert manager.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


def test_pid_file_is_written_whole_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "culex.pid"
    pid_file = PidFile(path)
    pid_file.write()
    assert path.read_text() == f"{os.getpid()}\n"
    pid_file.remove()
    assert list(tmp_path.iterdir()) == []


def test_pid_file_of_another_process_is_not_removed(tmp_path: Path) -> None:
    path = tmp_path / "culex.pid"
    pid_file = PidFile(path)
    pid_file.write()
    path.write_text("1\n")  # another broker took the file over since
    pid_file.remove()
    assert path.read_text() == "1\n"


def test_pid_file_that_cannot_be_written(tmp_path: Path) -> None:
    with pytest.raises(PidFileError, match=r"^--pid-file .*/missing/culex.pid: cannot write: "):
        PidFile(tmp_path / "missing" / "culex.pid").write()
