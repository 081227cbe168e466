"""Shared fixtures: a real Culex broker in a subprocess on a free 127.0.0.1 port.

Every test that needs a broker starts its own, so tests run in any order and in parallel
(pytest-xdist). The broker's stderr goes to a file the test can read, so log lines that the
issue requires (client id, peer, cause) are asserted on, not just assumed.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


# CULEX_TEST_AGAINST=mosquitto runs the black-box tests against Debian's mosquitto instead, to
# check that a test encodes the spec rather than Culex's reading of it. Tests that read Culex's
# log lines are expected to fail there; everything else should pass against both.
AGAINST = os.environ.get("CULEX_TEST_AGAINST", "culex")
# Every integration test that starts a broker runs once per worker count here: whatever a
# client can observe must not depend on which worker its connection lands in, nor on whether
# there is more than one. CULEX_TEST_WORKERS=1 gives a quicker single pass.
WORKER_COUNTS = [int(count) for count in os.environ.get("CULEX_TEST_WORKERS", "1,2").split(",")]
# Integration files that start no broker, or whose brokers choose their own worker count.
SINGLE_PASS_FILES = {"test_workers.py", "test_cbench.py", "test_passwd_cli.py",
                     "test_check_config.py"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    path = metafunc.definition.path
    if ("broker_workers" in metafunc.fixturenames and path.parent.name == "integration"
            and path.name not in SINGLE_PASS_FILES and AGAINST == "culex"):
        metafunc.parametrize("broker_workers", WORKER_COUNTS, indirect=True,
                             ids=[f"w{count}" for count in WORKER_COUNTS])


@pytest.fixture
def broker_workers(request: pytest.FixtureRequest) -> int:
    """Worker processes of the brokers a test starts, unless their settings say."""
    return int(getattr(request, "param", 1))


def mosquitto_config(settings: dict[str, Any], port: int) -> str:
    limits = settings.get("limits", {})
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence false",
        f"sys_interval {max(1, int(settings.get('sys_interval', 10)))}",
    ]
    for key in ("max_inflight_messages", "max_queued_messages", "max_packet_size", "max_keepalive"):
        if key in limits:
            lines.append(f"{key} {limits[key]}")
    if "receive_maximum" in limits:  # Mosquitto announces max_inflight_messages for both
        lines.append(f"max_inflight_messages {limits['receive_maximum']}")
    return "\n".join(lines) + "\n"


# Test brokers' ports: below the kernel's ephemeral range (32768-60999 here). A port that
# bind(port 0) hands out is handed out again at once to the next process asking, so on a
# machine running other suites another broker could take it in the second before ours binds,
# and the test would talk to the wrong broker.
PORTS = (20000, 32000)


def worker_ports() -> tuple[int, int]:
    """This pytest-xdist worker's share of PORTS: no two workers ever pick the same port, so
    one worker's broker cannot take a port another's picked and has not bound yet (the other
    broker would fail to listen while its test talked to this one)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2:
        return PORTS
    span = (PORTS[1] - PORTS[0]) // count
    low = PORTS[0] + int(worker[2:]) * span
    return low, low + span - 1


def free_port() -> int:
    while True:
        port = random.randint(*worker_ports())
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):  # an array, of inline tables too (a bridge's topics)
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def render_config(settings: dict[str, Any]) -> str:
    """Render a dict as TOML: dict values become tables, lists of dicts arrays of tables.

    Tests run many brokers at once, and the admin listener is on by default on one fixed port:
    it is off unless the settings have an "admin" table."""
    settings = {"admin": {"host": ""}, **settings}
    top = [f"{k} = {_toml_value(v)}" for k, v in settings.items()
           if not isinstance(v, dict | list)]
    tables = []
    for name, value in settings.items():
        for table in [value] if isinstance(value, dict) else value if isinstance(value, list) \
                else []:
            tables.append(f"[[{name}]]" if isinstance(value, list) else f"[{name}]")
            tables.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(top + tables) + "\n"


@dataclass(frozen=True)
class Endpoint:
    """Another address of a broker (a second listener), as the client helpers see it. For
    paho's "unix" transport `host` is the socket path (and `port` is ignored)."""

    host: str
    port: int = 1883


class PortTaken(Exception):
    pass


class BrokerProcess:
    """A running `culex serve` subprocess."""

    def __init__(self, tmp: Path, settings: dict[str, Any], workers: int = 1) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.tmp = tmp
        self.config_path = tmp / "culex.toml"
        self.log_path = tmp / "broker.log"
        self.settings = {"workers": workers, **settings} if workers != 1 else settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed = False
        # More `culex serve` options (--pid-file, --log-file) and environment (NOTIFY_SOCKET).
        self.extra_args: list[str] = []
        self.env: dict[str, str] = {}

    def command(self) -> list[str]:
        if AGAINST == "mosquitto":
            self.config_path = self.tmp / "mosquitto.conf"
            self.config_path.write_text(mosquitto_config(self.settings, self.port))
            return ["mosquitto", "-c", str(self.config_path)]
        settings = self.settings
        where = ["--host", self.host, "--port", str(self.port)]
        if "listeners" in settings:
            # The first listener takes the test's port, and the others stay as configured
            # (--host/--port would replace them all).
            first, *others = settings["listeners"]
            settings = {**settings, "listeners": [
                {**first, "host": self.host, "port": self.port}, *others]}
            where = []
        self.config_path.write_text(render_config(settings))
        return [
            sys.executable, "-m", "culex", "serve",
            "--config", str(self.config_path), *where,
            "--log-level", "debug", *self.extra_args,
        ]

    def listening_on(self, kind: str) -> tuple[str, int]:
        """The address of the listener whose start-up log line names `kind` ("WebSocket",
        "PROXY protocol", ...): with port 0 in its settings, the port it was given."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for found in re.finditer(r"listening on (\S+):(\d+) \(([^)]*)\)", self.log_text()):
                if kind in found.group(3):
                    return found.group(1), int(found.group(2))
            time.sleep(0.05)
        raise AssertionError(f"no listener of kind {kind!r} in the log:\n{self.log_text()}")

    def start(self) -> BrokerProcess:
        for _attempt in range(3):
            try:
                return self._start_once()
            except PortTaken:
                # free_port() released the port before the broker bound it; another parallel
                # test took it meanwhile. Pick another.
                self.port = free_port()
                self.log_path.unlink()
        raise RuntimeError("no free port after 3 attempts")

    def _start_once(self) -> BrokerProcess:
        self.killed = False
        command = self.command()
        log = self.log_path.open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        # A session of its own: kill() takes its worker processes too, as a service manager
        # would (they also die with their supervisor, a moment later).
        self.proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp, env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if f":{self.port}: address already in use" in self.log_text().lower():
                    raise PortTaken(self.port)
                raise RuntimeError(f"broker exited early:\n{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"broker did not listen within 15 s:\n{self.log_text()}")

    @property
    def workers(self) -> int:
        """Its worker processes: what logs a line once per worker logs it this many times."""
        if AGAINST != "culex":
            return 1
        return int(self.settings.get("workers", 1)) or len(os.sched_getaffinity(0))

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, needle: str, timeout: float = 5.0) -> str:
        """Wait until `needle` appears in the broker log; return the log. Fails the test if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if needle in text:
                return text
            time.sleep(0.05)
        pytest.fail(f"{needle!r} not in broker log after {timeout} s:\n{self.log_text()}")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; the exit code must be 0 within the bound (graceful shutdown)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"broker ignored SIGTERM:\n{self.log_text()}") from None
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9 the broker, every process of it, and wait until its port is free."""
        assert self.proc is not None
        self.killed = True
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    time.sleep(0.01)  # a worker not yet dead still holds the socket
            except OSError:
                return
        raise AssertionError(f"port {self.port} still open 5 s after kill -9")


BrokerFactory = Callable[..., BrokerProcess]


@pytest.fixture
def broker_factory(tmp_path: Path, broker_workers: int) -> Iterator[BrokerFactory]:
    """Start brokers with config overrides, e.g. `broker_factory(limits={"connect_timeout": 1})`.

    Each started broker must shut down cleanly (exit 0 on SIGTERM) and must not have logged a
    traceback: an unhandled exception anywhere fails the test that provoked it.
    """
    started: list[BrokerProcess] = []

    def start(**settings: Any) -> BrokerProcess:
        settings.setdefault("sys_interval", 1)
        work = tmp_path / f"broker{len(started)}"
        work.mkdir()
        broker = BrokerProcess(work, settings, broker_workers).start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        if broker.killed:
            continue
        code = broker.stop()
        text = broker.log_text()
        assert "Traceback" not in text, f"broker logged a traceback:\n{text}"
        assert code == 0, f"broker exit code {code}:\n{text}"


@pytest.fixture
def broker(broker_factory: BrokerFactory) -> BrokerProcess:
    """A broker with the default configuration (sys_interval 1 s so $SYS tests are quick)."""
    return broker_factory()
