"""The `culex` command line as a user meets it: version, config errors, port in use, signals."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from culex import __version__
from tests.conftest import BrokerProcess, free_port


def run_culex(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """`culex ARGS` in a scratch directory, so a default `data/culex.db` lands there and not
    in the checkout."""
    with tempfile.TemporaryDirectory(prefix="culex-cli-") as scratch:
        return subprocess.run([sys.executable, "-m", "culex", *args], capture_output=True,
                              text=True, timeout=timeout, check=False, cwd=scratch)


def test_version() -> None:
    result = run_culex("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"culex {__version__}"


def test_bad_config_is_one_line_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "culex.toml"
    config.write_text("[limits]\nmax_inflight_mesages = 5\n")
    result = run_culex("serve", "--config", str(config), "--port", str(free_port()))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(config) in lines[0] and "limits.max_inflight_mesages: unknown key" in lines[0]


def test_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_culex("serve", "--port", str(port))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in errors[0]


def test_sigint_with_clients_connected_exits_0_quickly(tmp_path: Path,
                                                      broker_workers: int) -> None:
    broker = BrokerProcess(tmp_path, {}, broker_workers).start()
    clients = [socket.create_connection((broker.host, broker.port)) for _ in range(20)]
    assert broker.proc is not None
    started = time.monotonic()
    broker.proc.send_signal(signal.SIGINT)
    assert broker.proc.wait(10) == 0
    assert time.monotonic() - started < 5
    for client in clients:
        client.settimeout(2)
        # Closed by the broker (EOF), or reset by the exiting process: closed either way.
        with contextlib.suppress(ConnectionResetError):
            assert client.recv(10) == b""
        client.close()
    assert "Traceback" not in broker.log_text()


def test_json_log_format(tmp_path: Path, broker_workers: int) -> None:
    broker = BrokerProcess(tmp_path, {"logging": {"format": "json"}}, broker_workers)
    broker.start()
    try:
        # (With workers the supervisor's socket accepts before a worker says it listens.)
        text = broker.wait_for_log("listening on 127.0.0.1:")
    finally:
        broker.stop()
    # --log-level debug is passed by the fixture; the format comes from the file.
    records = [json.loads(line) for line in text.splitlines()]
    assert any(record["message"].startswith("listening on 127.0.0.1:") for record in records)
    # With workers, each record also says which one wrote it.
    assert all(set(record) - {"worker"} == {"time", "level", "logger", "message"}
               for record in records)
