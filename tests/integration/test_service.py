"""Running under a service manager: the systemd notify protocol, the watchdog, the pid file,
the log file and its reopening, the start-up summary, and the unit file shipped in
packaging/ (issue 17).

The notify protocol is tested against a real AF_UNIX datagram socket the test binds and names
in `$NOTIFY_SOCKET`, as systemd does, with a real broker process (one and two workers).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from culex import __version__
from tests.conftest import AGAINST, ROOT, BrokerProcess, free_port, render_config
from tests.integration.clients import PahoClient, wait_until
from tests.integration.test_auth import make_password_file
from tests.integration.test_state_lock import resume

pytestmark = pytest.mark.skipif(AGAINST != "culex", reason="Culex's own service integration")

UNIT = ROOT / "packaging" / "culex.service"
PACKAGED_CONFIG = ROOT / "packaging" / "culex.toml"


class NotifySocket:
    """What systemd listens on for `sd_notify`: a datagram socket, by path or abstract."""

    def __init__(self, address: str) -> None:
        self.address = address  # as $NOTIFY_SOCKET says it
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.received: list[dict[str, str]] = []

    def next(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        message = dict(line.split("=", 1) for line in data.decode().splitlines())
        self.received.append(message)
        return message

    def wait_for(self, name: str, timeout: float = 15) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.next(left)
            if message is not None and name in message:
                return message
        pytest.fail(f"no {name} within {timeout} s; received {self.received}")

    def collect(self, seconds: float) -> list[dict[str, str]]:
        deadline = time.monotonic() + seconds
        got = []
        while (left := deadline - time.monotonic()) > 0:
            message = self.next(left)
            if message is not None:
                got.append(message)
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(str(tmp_path / "notify.sock"))
    yield listener
    listener.close()


def service_broker(tmp_path: Path, workers: int, notify: NotifySocket | None = None,
                   **settings: object) -> BrokerProcess:
    broker = BrokerProcess(tmp_path, {"sys_interval": 1, **settings}, workers)
    if notify is not None:
        broker.env["NOTIFY_SOCKET"] = notify.address
    return broker


def stop_cleanly(broker: BrokerProcess) -> None:
    code = broker.stop()
    text = broker.log_text()
    assert "Traceback" not in text, text
    assert code == 0, text


def worker_pids(broker: BrokerProcess) -> list[int]:
    match = re.search(r"pids ([\d, ]+)\)", broker.wait_for_log("workers started"))
    assert match is not None
    return [int(pid) for pid in match.group(1).split(", ")]


# --- readiness ------------------------------------------------------------------------------


def test_ready_once_every_worker_serves_with_its_state_restored(
        tmp_path: Path, broker_workers: int, notify_socket: NotifySocket) -> None:
    first = service_broker(tmp_path, broker_workers).start()
    sub = PahoClient(first, "ready-sub", clean_session=False)
    sub.connect()
    sub.subscribe("ready/#", 1)
    sub.close()
    publisher = PahoClient(first, "ready-pub")
    publisher.connect()
    publisher.publish("ready/queued", b"kept", qos=1)
    publisher.close()
    stop_cleanly(first)
    first.log_path.rename(tmp_path / "first.log")

    broker = service_broker(tmp_path, broker_workers, notify_socket)
    broker.port = first.port
    broker.start()
    ready = notify_socket.wait_for("READY")
    assert ready == {"READY": "1", "STATUS": f"serving on 127.0.0.1:{broker.port}"
                     + (" with 2 workers" if broker_workers == 2 else "")}
    assert notify_socket.received[0] == {"STATUS": "restoring the state from data/culex.db"}
    # By then every worker has restored its share of the state and serves its sockets.
    text = broker.log_text()
    assert text.count("storage: data/culex.db") == broker_workers, text
    assert text.count(f"listening on 127.0.0.1:{broker.port}") == broker_workers, text
    assert text.count(" serving: ") == 1, text
    assert resume(broker, "ready-sub") == b"kept"
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGTERM)
    stopping = notify_socket.wait_for("STOPPING")
    assert stopping == {"STOPPING": "1", "STATUS": "stopping"}
    stop_cleanly(broker)
    assert [message for message in notify_socket.received if "READY" in message] == [ready]


def test_ready_through_an_abstract_notify_socket(tmp_path: Path, broker_workers: int) -> None:
    notify = NotifySocket(f"@culex-test-{uuid.uuid4().hex}")
    broker = service_broker(tmp_path, broker_workers, notify)
    try:
        broker.start()
        assert notify.wait_for("READY")["READY"] == "1"
    finally:
        stop_cleanly(broker)
        notify.close()


def test_watchdog_pings_while_the_event_loops_turn(tmp_path: Path, broker_workers: int,
                                                   notify_socket: NotifySocket) -> None:
    broker = service_broker(tmp_path, broker_workers, notify_socket)
    broker.env["WATCHDOG_USEC"] = "300000"  # WatchdogSec=0.3: a ping every 0.15 s
    try:
        broker.start()
        notify_socket.wait_for("READY")
        pings = [message for message in notify_socket.collect(1.5) if "WATCHDOG" in message]
        assert 5 <= len(pings) <= 15, pings
        assert all(message == {"WATCHDOG": "1"} for message in pings)
    finally:
        stop_cleanly(broker)


def test_no_watchdog_pings_for_another_process(tmp_path: Path, broker_workers: int,
                                               notify_socket: NotifySocket) -> None:
    """WATCHDOG_PID names the process systemd watches; a broker started under another
    process (a wrapper that did not pass it on) must not answer in its place."""
    broker = service_broker(tmp_path, broker_workers, notify_socket)
    broker.env.update(WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    try:
        broker.start()
        notify_socket.wait_for("READY")
        assert not [message for message in notify_socket.collect(1.0) if "WATCHDOG" in message]
    finally:
        stop_cleanly(broker)


def test_watchdog_is_withheld_while_a_worker_is_stuck(tmp_path: Path,
                                                      notify_socket: NotifySocket) -> None:
    """With workers the supervisor pings only when every worker's loop has pinged it: a
    stuck worker (SIGSTOP here) lets systemd's watchdog fire, and the log says which."""
    broker = service_broker(tmp_path, 2, notify_socket)
    broker.env["WATCHDOG_USEC"] = "300000"
    broker.start()
    try:
        notify_socket.wait_for("READY")
        notify_socket.wait_for("WATCHDOG")
        stuck = worker_pids(broker)[1]
        os.kill(stuck, signal.SIGSTOP)
        try:
            broker.wait_for_log("watchdog: worker(s) 1 did not answer")
            notify_socket.collect(0.2)  # a ping already on its way
            assert not [m for m in notify_socket.collect(1.0) if "WATCHDOG" in m]
        finally:
            os.kill(stuck, signal.SIGCONT)
        notify_socket.wait_for("WATCHDOG", timeout=3)
    finally:
        stop_cleanly(broker)


# --- pid file -------------------------------------------------------------------------------


def test_pid_file_while_serving_removed_at_exit(tmp_path: Path, broker_workers: int) -> None:
    pid_file = tmp_path / "run" / "culex.pid"
    pid_file.parent.mkdir()
    broker = service_broker(tmp_path, broker_workers)
    broker.extra_args = ["--pid-file", str(pid_file)]
    broker.start()
    assert broker.proc is not None
    assert wait_until(pid_file.exists), "no pid file"
    assert pid_file.read_text() == f"{broker.proc.pid}\n"
    stop_cleanly(broker)
    assert not pid_file.exists()
    assert os.listdir(pid_file.parent) == []  # no temporary file left either


def test_pid_file_of_a_running_broker_survives_a_refused_start(tmp_path: Path,
                                                               broker_workers: int) -> None:
    pid_file = tmp_path / "culex.pid"
    broker = service_broker(tmp_path, broker_workers)
    broker.extra_args = ["--pid-file", str(pid_file)]
    broker.start()
    try:
        assert broker.proc is not None
        assert wait_until(pid_file.exists)
        second = subprocess.run(
            [sys.executable, "-m", "culex", "serve", "--config", str(broker.config_path),
             "--port", str(free_port()), "--pid-file", str(pid_file)],
            cwd=tmp_path, capture_output=True, text=True, timeout=20, check=False)
        assert second.returncode == 1, second
        assert "in use by another broker" in second.stderr
        assert pid_file.read_text() == f"{broker.proc.pid}\n"
    finally:
        stop_cleanly(broker)


def test_pid_file_that_cannot_be_written_stops_the_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "culex", "serve", "--port", str(free_port()), "--admin", "off",
         "--pid-file", str(tmp_path / "missing" / "culex.pid")],
        cwd=tmp_path, capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"--pid-file {tmp_path / 'missing' / 'culex.pid'}: cannot write" in lines[0]
    # Nothing was opened: the lock taken before it is gone, and no database was made.
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == []


# --- log file -------------------------------------------------------------------------------


def test_log_file_is_reopened_on_sigusr1(tmp_path: Path, broker_workers: int) -> None:
    """logrotate's way: rename the file, send SIGUSR1, and every process (the supervisor
    and each worker) writes to a new file by the old name."""
    log_file = tmp_path / "culex.log"
    broker = service_broker(tmp_path, broker_workers)
    broker.extra_args = ["--log-file", str(log_file)]
    broker.log_path = log_file  # the fixture's wait_for_log reads it
    broker.start()
    try:
        broker.wait_for_log(" serving: ")
        assert (tmp_path / "culex.log").stat().st_size > 0
        rotated = tmp_path / "culex.log.1"
        log_file.rename(rotated)
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGUSR1)
        expected = 1 + (broker_workers if broker_workers > 1 else 0)  # + the supervisor
        assert wait_until(lambda: log_file.exists() and log_file.read_text().count(
            f"log file {log_file} reopened") == expected), broker.log_text()
        client = PahoClient(broker, "after-rotation")
        client.connect()
        client.close()
        broker.wait_for_log("after-rotation")
        assert "after-rotation" not in rotated.read_text()
        assert "reopened" not in rotated.read_text()
    finally:
        stop_cleanly(broker)
    assert "stopped" in log_file.read_text()


def test_log_file_gets_every_line_and_stderr_nothing(tmp_path: Path, broker_workers: int
                                                    ) -> None:
    log_file = tmp_path / "from-config.log"
    broker = service_broker(tmp_path, broker_workers, logging={"file": str(log_file)})
    broker.start()
    try:
        assert wait_until(lambda: log_file.exists() and " serving: " in log_file.read_text())
    finally:
        stop_cleanly(broker)
    assert broker.log_text() == "", broker.log_text()  # the process's stderr
    assert log_file.read_text().rstrip().endswith(" stopped")


@pytest.mark.parametrize("where", ["command line", "configuration"])
def test_log_file_that_cannot_be_opened_is_a_configuration_error(tmp_path: Path,
                                                                 where: str) -> None:
    target = tmp_path / "no-such-dir" / "culex.log"
    config = tmp_path / "culex.toml"
    config.write_text(render_config({"logging": {"file": str(target)}} if where ==
                                    "configuration" else {}))
    args = ["--log-file", str(target)] if where == "command line" else []
    result = subprocess.run(
        [sys.executable, "-m", "culex", "serve", "--config", str(config),
         "--port", str(free_port()), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    setting = "--log-file" if where == "command line" else f"{config}: logging.file"
    assert lines[0] == (f"culex: configuration error: {setting}: {target}: cannot open: "
                        "No such file or directory")
    assert not (tmp_path / "data").exists()


def test_a_start_up_failure_reaches_stderr_when_logging_to_a_file(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "culex", "serve", "--port", str(port),
             "--log-file", str(tmp_path / "culex.log")],
            cwd=tmp_path, capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 1
    assert result.stderr == f"culex: cannot listen on 127.0.0.1:{port}: address already in use\n"
    assert f"ERROR cannot listen on 127.0.0.1:{port}" in (tmp_path / "culex.log").read_text()


# --- the summary line -----------------------------------------------------------------------


def test_one_summary_line_says_what_is_running(tmp_path: Path, broker_workers: int) -> None:
    passwords = make_password_file(tmp_path / "passwords", {"alice": "secret"})
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic readwrite #\n")
    broker = service_broker(
        tmp_path, broker_workers,
        auth={"password_file": str(passwords), "acl_file": str(acl),
              "enhanced_methods": ["SCRAM-SHA-256"]},
        storage={"durability": "batch"})
    broker.start()
    try:
        text = broker.wait_for_log(" serving: ")
    finally:
        stop_cleanly(broker)
    lines = [line for line in text.splitlines() if " serving: " in line]
    assert len(lines) == 1, text
    assert broker.proc is not None
    plural = "s" if broker_workers > 1 else ""
    summary = re.fullmatch(r"\S+ \S+ INFO (.*; open-file limit )(\d+)", lines[0])
    assert summary is not None, lines[0]
    assert summary.group(1) == (
        f"culex {__version__} serving: listeners 127.0.0.1:{broker.port}; "
        f"{broker_workers} worker{plural} (pid {broker.proc.pid}); "
        "durability batch, state data/culex.db (locked); "
        f"auth: anonymous refused, password file {passwords}, enhanced methods SCRAM-SHA-256; "
        f"ACL {acl}; admin API off; open-file limit ")
    assert int(summary.group(2)) > 0


# --- the unit file --------------------------------------------------------------------------


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    assert path is not None, ("systemd-analyze is missing: install the 'systemd' Debian "
                              "package to check packaging/culex.service")
    return path


def unit_for_this_machine(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointing at this checkout's `culex` (verify checks
    that the program exists; everything else is as shipped)."""
    culex = Path(sys.executable).with_name("culex")
    assert culex.is_file(), culex
    text = UNIT.read_text()
    assert "ExecStart=/opt/culex/bin/culex " in text
    unit = tmp_path / "culex.service"
    unit.write_text(text.replace("ExecStart=/opt/culex/bin/culex ", f"ExecStart={culex} "))
    return unit


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    result = subprocess.run([systemd_analyze(), "verify", str(unit_for_this_machine(tmp_path))],
                            capture_output=True, text=True, timeout=60, check=False)
    # verify only warns (exit 0) about unknown keys or bad values: any output is a failure.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result


def test_unit_file_is_hardened(tmp_path: Path) -> None:
    """systemd's own exposure score (0 = locked down, 10 = none of it): the same unit
    without its hardening scores 9.6, with it 1.1 (what is left: it may use the network, and
    so has Internet and local sockets and no IP allow list)."""
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", "--threshold=15", "--no-pager",
         str(unit_for_this_machine(tmp_path))],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    score = re.search(r"Overall exposure level for culex.service: ([\d.]+)", result.stdout)
    assert score is not None, result.stdout
    assert float(score.group(1)) <= 1.5, result.stdout
    text = UNIT.read_text()
    for setting in ("Type=notify", "DynamicUser=yes", "StateDirectory=culex",
                    "ProtectSystem=strict", "NoNewPrivileges=yes", "LimitNOFILE=",
                    "Restart=on-failure", "WatchdogSec=", "KillMode=mixed"):
        assert f"\n{setting}" in text, setting


def test_readme_shows_the_unit_file_as_shipped() -> None:
    assert UNIT.read_text() in (ROOT / "README.md").read_text()


def test_packaged_configuration_is_valid() -> None:
    result = subprocess.run([sys.executable, "-m", "culex", "check-config",
                             str(PACKAGED_CONFIG)],
                            capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 0, result.stderr
    assert "durability sync" in result.stdout


def test_broker_runs_under_memory_deny_write_execute(tmp_path: Path, broker_workers: int
                                                     ) -> None:
    """The unit's MemoryDenyWriteExecute=yes, applied the way the kernel does it for
    systemd (PR_SET_MDWE, inherited across fork and exec): the broker, its workers and the
    libraries they load never need memory that is writable and executable."""
    wrapper = tmp_path / "mdwe.py"
    wrapper.write_text(
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.prctl(65, 1, 0, 0, 0):  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN\n"
        "    sys.exit('PR_SET_MDWE: ' + os.strerror(ctypes.get_errno()))\n"
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n")
    probe = subprocess.run([sys.executable, str(wrapper), "-c",
                            "import mmap; mmap.mmap(-1, 4096, prot=7)"],
                           capture_output=True, text=True, timeout=20, check=False)
    assert "PR_SET_MDWE" not in probe.stderr, f"this kernel lacks PR_SET_MDWE: {probe.stderr}"
    assert "PermissionError" in probe.stderr, "writable+executable memory was not refused"
    broker = service_broker(tmp_path, broker_workers)
    broker.command = lambda: [sys.executable, str(wrapper), *BrokerProcess.command(broker)[1:]]
    broker.start()
    try:
        sub = PahoClient(broker, "mdwe-sub")
        sub.connect()
        sub.subscribe("mdwe/#", 1)
        pub = PahoClient(broker, "mdwe-pub")
        pub.connect()
        pub.publish("mdwe/t", b"ok", qos=1)
        assert sub.get().payload == b"ok"
        sub.close()
        pub.close()
    finally:
        stop_cleanly(broker)
