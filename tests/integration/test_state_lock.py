"""One broker per state file, and a start that fails changes nothing (issue 17).

Two real `culex serve` processes on one real SQLite database: the first serves clients, the
second is started the way the issue's reproductions start it, and every row of every table is
compared before and after (`dump`), with the database's bytes where no broker runs.

* a second broker on the same state and another port refuses (the lock), one line naming the
  file and the first broker's pid, exit 1; the first broker's live client keeps its will, and no
  false will reaches a persistent subscriber;
* a second broker on a busy port refuses before it opens the state (one line, exit 1);
* `--host`/`--port` on the command line are blamed as such, not the configuration file;
* start-up order: a failing bind on a fresh directory leaves no database behind, a locked
  state leaves the database byte for byte as it was, and a lock left by `kill -9` never
  blocks the next start.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AGAINST, BrokerFactory, BrokerProcess, free_port, render_config
from tests.integration.clients import MosquittoSub, PahoClient, Will, wait_until

pytestmark = pytest.mark.skipif(AGAINST != "culex", reason="Culex's own state and start-up")

State = dict[str, list[tuple[object, ...]]]


def dump(database: Path) -> State:
    """Every row of every table, sorted: what a start must not change."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {table: sorted(db.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
                for table in tables}
    finally:
        db.close()


def wait_committed(database: Path, **rows: str) -> None:
    """Wait until each `table=client_id` has a row in the database. With workers, a commit
    barrier covers only the worker its client lands on: the database itself says when."""
    def present() -> bool:
        state = dump(database)
        return all(any(row[0] == client for row in state[table]) for table, client in
                   rows.items())

    assert wait_until(present), f"{rows} not committed: {dump(database)}"


def files_of(directory: Path) -> dict[str, bytes]:
    """The bytes of every file of a state directory (database, WAL, shared memory, lock)."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def serve(cwd: Path, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """A second `culex serve` that is expected to refuse to start, run to its end."""
    return subprocess.run([sys.executable, "-m", "culex", "serve", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    return lines[0]


def database_of(broker: BrokerProcess) -> Path:
    return broker.tmp / "data" / "culex.db"


@pytest.fixture
def live_will(broker_factory: BrokerFactory) -> Iterator[tuple[BrokerProcess, MosquittoSub]]:
    """The issue's set-up: a persistent subscriber to dblwill/# (gone offline) and a client
    connected with a will to dblwill/y, all committed to the first broker's database."""
    broker = broker_factory()
    watch = MosquittoSub(broker, "-c", "-i", "willwatch", "-q", "1", "-t", "dblwill/#")
    watch.wait_subscribed()
    watch.close()
    holder = MosquittoSub(broker, "-i", "dbl-will2", "-t", "x", "--will-topic", "dblwill/y",
                          "--will-payload", "died2", "--will-qos", "1")
    holder.wait_subscribed()
    wait_committed(database_of(broker), wills="dbl-will2", subscriptions="willwatch")
    try:
        yield broker, holder
    finally:
        holder.close()


def assert_no_false_will(broker: BrokerProcess, holder: MosquittoSub) -> None:
    """The first broker's client still holds its session, and nothing was queued for the
    persistent subscriber in its name."""
    assert holder.proc.poll() is None, holder.log
    watch = PahoClient(broker, "willwatch", clean_session=False)
    try:
        assert watch.connect().session_present
        watch.assert_no_message(1.0)
    finally:
        watch.close()


def test_a_second_broker_on_the_same_state_refuses_and_changes_nothing(
        live_will: tuple[BrokerProcess, MosquittoSub]) -> None:
    """Reproduction 1: `culex serve --config culex.toml --port 18861` beside a running one."""
    broker, holder = live_will
    database = database_of(broker)
    before = dump(database)
    assert before["wills"] and before["subscriptions"], before  # there is something to lose
    result = serve(broker.tmp, "--config", str(broker.config_path), "--port", str(free_port()))
    line = one_line(result, 1)
    assert "data/culex.db" in line and "data/culex.db.lock" in line, line
    assert f"process {broker.proc.pid if broker.proc else '?'}" in line, line
    assert "in use by another broker" in line, line
    assert dump(database) == before
    assert_no_false_will(broker, holder)


def test_a_second_broker_on_a_busy_port_refuses_before_touching_the_state(
        live_will: tuple[BrokerProcess, MosquittoSub]) -> None:
    """Reproductions 1 (`make run` twice) and 2: one line, exit 1, database untouched."""
    broker, holder = live_will
    database = database_of(broker)
    before = dump(database)
    result = serve(broker.tmp, "--config", str(broker.config_path), "--port", str(broker.port))
    line = one_line(result, 1)
    assert f"cannot listen on 127.0.0.1:{broker.port}: address already in use" in line, line
    assert dump(database) == before
    assert_no_false_will(broker, holder)


def test_command_line_listener_is_blamed_not_the_configuration_file(tmp_path: Path) -> None:
    """Reproduction 3: `culex serve --config culex.toml --host 0.0.0.0 --port 18851`."""
    config = tmp_path / "culex.toml"
    config.write_text(render_config({"limits": {"max_inflight_messages": 20}}))
    port = free_port()
    line = one_line(serve(tmp_path, "--config", str(config), "--host", "0.0.0.0",
                          "--port", str(port)), 2)
    assert line.startswith(f"culex: configuration error: command line --host 0.0.0.0 "
                           f"--port {port}: listener 0.0.0.0:{port} is reachable"), line
    assert str(config) not in line, line
    assert not (tmp_path / "data").exists()


def test_an_exposed_host_from_the_file_and_a_port_from_the_command_line_name_both(
        tmp_path: Path) -> None:
    config = tmp_path / "culex.toml"
    config.write_text(render_config({"listeners": [{"host": "0.0.0.0", "port": free_port()}]}))
    port = free_port()
    line = one_line(serve(tmp_path, "--config", str(config), "--port", str(port)), 2)
    assert f"command line --port {port} (host from {config}: listeners[0])" in line, line


def test_a_port_out_of_range_on_the_command_line_is_a_usage_error(tmp_path: Path) -> None:
    result = serve(tmp_path, "--port", "70000")
    assert result.returncode == 2
    assert "argument --port: 70000 is not a TCP port" in result.stderr, result.stderr


def test_a_failing_bind_on_a_fresh_directory_leaves_no_database(tmp_path: Path) -> None:
    """Every listener is bound before the state is locked or opened: the second of two
    listeners failing stops the start before a file is created."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        config = tmp_path / "culex.toml"
        config.write_text(render_config({"listeners": [
            {"host": "127.0.0.1", "port": free_port()}, {"host": "127.0.0.1", "port": busy}]}))
        line = one_line(serve(tmp_path, "--config", str(config)), 1)
    assert f"cannot listen on 127.0.0.1:{busy}: address already in use" in line, line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["culex.toml"]


def hold_lock(database: Path) -> int:
    """Take the state lock from this process, as a broker would (pid written in the file)."""
    lock = os.open(database.with_name("culex.db.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    return lock


def test_a_locked_state_is_left_byte_for_byte_as_it_was(broker_factory: BrokerFactory,
                                                       broker_workers: int) -> None:
    """State that a start would change (a will to publish, a session whose client was
    connected) stays exactly as it was, file by file, while another process holds the lock;
    once the lock is free, the same start does change it, so the comparison can fail."""
    broker = broker_factory()
    watch = PahoClient(broker, "locked-watch", clean_session=False)
    watch.connect()
    watch.subscribe("locked/#", 1)
    watch.close()
    dying = PahoClient(broker, "locked-dying", will=Will("locked/will", b"gone", 1))
    dying.connect()
    wait_committed(database_of(broker), wills="locked-dying", subscriptions="locked-watch")
    broker.kill()
    dying.close()
    data = database_of(broker).parent
    lock = hold_lock(database_of(broker))
    try:
        before = files_of(data)
        line = one_line(serve(broker.tmp, "--config", str(broker.config_path),
                              "--port", str(free_port())), 1)
        assert f"process {os.getpid()} holds data/culex.db.lock" in line, line
        assert files_of(data) == before
    finally:
        os.close(lock)
    broker.start()  # the lock is free: the will is published now
    assert resume(broker, "locked-watch") == b"gone"


def resume(broker: BrokerProcess, client_id: str) -> bytes:
    """Resume a persistent session (it must be there) and return the first message queued
    for it."""
    client = PahoClient(broker, client_id, clean_session=False)
    try:
        assert client.connect().session_present
        return client.get().payload
    finally:
        client.close()


def test_a_lock_left_by_kill_9_does_not_block_a_restart(broker_factory: BrokerFactory,
                                                       broker_workers: int) -> None:
    """`kill -9` of the broker's main process (with workers: the supervisor alone; its
    workers die with it) leaves the lock file behind, and the next start takes it."""
    broker = broker_factory()
    sub = PahoClient(broker, "stale-sub", clean_session=False)
    sub.connect()
    sub.subscribe("stale/#", 1)
    sub.close()
    wait_committed(database_of(broker), subscriptions="stale-sub")
    assert broker.proc is not None
    dead = broker.proc.pid
    lock_file = database_of(broker).with_name("culex.db.lock")
    assert lock_file.read_text() == f"{dead}\n"
    os.kill(dead, signal.SIGKILL)
    broker.proc.wait()
    broker.killed = True
    assert wait_until(lambda: not port_open(broker), 10), "the workers outlived the supervisor"
    assert lock_file.read_text() == f"{dead}\n"  # stale, and not in the way
    broker.start()  # returns once the port is bound, which comes before the lock
    assert wait_until(lambda: lock_file.read_text() == f"{broker.proc.pid}\n"), \
        lock_file.read_text()
    sub = PahoClient(broker, "stale-sub", clean_session=False)
    try:
        assert sub.connect().session_present
    finally:
        sub.close()


def port_open(broker: BrokerProcess) -> bool:
    try:
        with socket.create_connection((broker.host, broker.port), timeout=0.2):
            return True
    except OSError:
        return False


def test_a_clean_stop_removes_the_lock_file(broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    data = database_of(broker).parent
    # the port is bound before the lock is taken: the lock file comes a moment later
    assert wait_until(lambda: "culex.db.lock" in os.listdir(data)), os.listdir(data)
    assert broker.stop() == 0
    broker.killed = True  # stopped here
    assert "culex.db.lock" not in os.listdir(data)
    assert "culex.db" in os.listdir(data)


def test_durability_none_takes_no_lock(tmp_path: Path, broker_workers: int) -> None:
    """Without a database there is nothing to protect: two memory-only brokers started in one
    directory both serve."""
    brokers = [BrokerProcess(tmp_path, {"storage": {"durability": "none"}}, broker_workers)
               for _ in range(2)]
    brokers[1].log_path = tmp_path / "broker-2.log"
    try:
        for broker in brokers:
            broker.start()
            broker.wait_for_log("serving:")
        for broker in brokers:
            client = PahoClient(broker, "memory-only")
            client.connect()
            client.close()
    finally:
        codes = [broker.stop() for broker in brokers if broker.proc is not None]
    assert codes == [0, 0]
    assert not (tmp_path / "data").exists()
