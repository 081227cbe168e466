"""What 100,000 connections on one host need, proven small: `culex bench --sources` and
`conns --broadcast` against a real broker (1 and 2 workers), the broker's listen backlog under a
connection storm, and the usage errors that stop a run this host cannot open.

The 100,000-connection run itself is a benchmark (BENCHMARKS.md, "100,000 connections",
gives its command), not a test.
"""

from __future__ import annotations

import json
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from culex.bench.endpoint import ephemeral_ports
from culex.bench.procstat import descendants
from tests.conftest import BrokerFactory, BrokerProcess
from tests.integration.test_bench import bench

CONNECTED = re.compile(r"client (cb\w+c(\d+)) connected from (127\.0\.0\.\d+):\d+")


def run_conns(broker: BrokerProcess, tmp_path: Path, *args: str,
              expect: int = 0) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    out = tmp_path / "out.json"
    result = bench("conns", "--host", broker.host, "--port", str(broker.port),
                   "--duration", "0.3", "--json", str(out), *args)
    assert result.returncode == expect, f"exit {result.returncode}:\n{result.stdout}\n" \
                                        f"{result.stderr}"
    assert "Traceback" not in result.stderr
    document: dict[str, Any] = json.loads(out.read_text())
    return document, result


def test_sources_spread_clients_and_the_broadcast_reaches_every_one(
        broker: BrokerProcess, tmp_path: Path) -> None:
    """200 clients from two load-generator processes over 127.0.0.1-4: the broker sees each
    client come from the address round-robin gives its number, the one broadcast arrives at
    all 200, and the RSS of every broker process is reported."""
    assert broker.proc is not None
    document, result = run_conns(broker, tmp_path, "--clients", "200", "--procs", "2",
                                 "--sources", "4", "--broadcast",
                                 "--broker-pid", str(broker.proc.pid))
    [row] = document["results"]
    assert document["options"]["sources"] == [f"127.0.0.{n}" for n in range(1, 5)]
    assert row["connected"] == row["still_open"] == 200
    assert row["failed"] == 0
    assert row["errors"]["connection"] == row["errors"]["protocol"] == 0
    assert row["broadcast"]["expected"] == row["broadcast"]["received"] == 200
    assert 0 <= row["broadcast"]["last_ms"] < 30_000
    assert re.search(r"broadcast received +200 / 200", result.stdout), result.stdout

    seen = {int(number): address for _client, number, address
            in CONNECTED.findall(broker.log_text())}
    assert sorted(seen) == list(range(200)), broker.log_text()[-2000:]
    assert all(address == f"127.0.0.{1 + number % 4}" for number, address in seen.items()), seen
    assert len(set(seen.values())) == 4

    processes = row["broker"]["processes"]
    assert processes[0]["pid"] == broker.proc.pid
    assert len(processes) == (1 if broker.workers == 1 else 1 + broker.workers)
    assert all(p["rss_mb"] > 1 for p in processes)
    assert sum(p["rss_mb"] for p in processes) == pytest.approx(row["broker"]["rss_mb"],
                                                                 abs=0.05)


def test_a_broadcast_that_does_not_arrive_fails_the_run(broker_factory: BrokerFactory,
                                                        tmp_path: Path) -> None:
    """The ACL lets anonymous clients read the bench's topics but publish nothing, so the
    broadcast is dropped (3.1.1 cannot refuse a QoS 0 PUBLISH): the count says 0 of 20 and the
    run exits 1 with one line once --broadcast-timeout has passed."""
    acl = tmp_path / "acl"
    acl.write_text("topic read culex-bench/#\n")
    broker = broker_factory(auth={"acl_file": str(acl), "allow_anonymous": True})
    document, result = run_conns(broker, tmp_path, "--clients", "20", "--broadcast",
                                 "--broadcast-timeout", "0.5", expect=1)
    [row] = document["results"]
    assert row["connected"] == 20
    assert row["broadcast"] == {"expected": 20, "received": 0, "last_ms": None}
    assert result.stderr.splitlines()[-1] == (
        "culex bench: error: the broadcast reached 0 of 20 clients within 0.5 s")


@contextmanager
def stopped(broker: BrokerProcess) -> Iterator[None]:
    """SIGSTOP every process of the broker (nothing accepts), SIGCONT at the end."""
    assert broker.proc is not None
    pids = [broker.proc.pid, *descendants(broker.proc.pid)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_listen_backlog_holds_a_connection_storm(broker: BrokerProcess) -> None:
    """300 clients connect at once while no worker can accept: the kernel completes every
    handshake into the listen backlog (4096). A loop that listens again with asyncio's default
    of 100 drops the SYNs beyond it, and those clients would wait for SYN retransmits."""
    with open("/proc/sys/net/core/somaxconn") as file:
        somaxconn = int(file.read())
    storm = 300
    assert somaxconn > storm, f"net.core.somaxconn is {somaxconn}: the kernel caps every " \
                              "listen backlog there"
    # The port accepts into the backlog as soon as it is bound; stop the broker only once every
    # worker's loop serves it (and has listened again).
    deadline = time.monotonic() + 10
    while broker.log_text().count("listening on") < broker.workers:
        assert time.monotonic() < deadline, broker.log_text()
        time.sleep(0.05)
    sockets: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    try:
        with stopped(broker):
            for _ in range(storm):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex((broker.host, broker.port))
                sockets.append(sock)
                selector.register(sock, selectors.EVENT_WRITE)
            connected = 0
            deadline = time.monotonic() + 10
            while connected < storm and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=0.2):
                    selector.unregister(key.fileobj)
                    sock = cast(socket.socket, key.fileobj)
                    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                    connected += 1
            assert connected == storm, f"only {connected} of {storm} handshakes completed"
    finally:
        selector.close()
        for sock in sockets:
            sock.close()


def bench_usage(*args: str, open_files: int | None = None) -> str:
    """Run `culex bench` with arguments it must refuse; return its one-line error."""
    def limit() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    result = subprocess.run([sys.executable, "-m", "culex", "bench", *args], check=False,
                            capture_output=True, text=True, timeout=30, preexec_fn=limit)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()[-1:]
    return line


@pytest.mark.parametrize(("args", "message"), [
    (("conns", "--sources", "4", "--unix", "/tmp/x.sock"), "it does not apply to --unix"),
    (("conns", "--sources", "4", "--host", "10.1.2.3"),
     "--sources needs a broker on an IPv4 loopback address (--host 127.x.x.x), not 10.1.2.3"),
    (("conns", "--sources", "4", "--host", "::1"), "not ::1"),
    (("conns", "--sources", "255"), "--sources must be between 1 and 254"),
    (("pubsub", "--broadcast"), "--broadcast is for the conns scenario"),
    (("conns", "--broadcast-timeout", "3"), "--broadcast-timeout needs --broadcast"),
])
def test_sources_and_broadcast_usage_errors(args: tuple[str, ...], message: str) -> None:
    assert message in bench_usage(*args)


def test_more_clients_per_process_than_open_files_is_refused() -> None:
    """5,000 clients in 2 processes with 1,024 descriptors each cannot be opened: the error
    says how many processes can (5,000 / (1,024 - 64 reserved) -> 6)."""
    line = bench_usage("conns", "--clients", "5000", "--procs", "2", open_files=1024)
    assert line == ("culex bench: error: 2,500 connections per load-generator process is more "
                    "than its open-file limit of 1,024 allows: use --procs 6 or more")


def test_more_clients_per_source_than_ephemeral_ports_is_refused() -> None:
    ports = ephemeral_ports()
    assert ports is not None, "no /proc/sys/net/ipv4/ip_local_port_range"
    clients = 3 * ports + 1
    procs = -(-clients // 900)
    line = bench_usage("conns", "--clients", str(clients), "--procs", str(procs),
                       "--sources", "2", open_files=1024)
    per_source = -(-clients // 2)
    assert line == (f"culex bench: error: {per_source:,} connections from one source address "
                    f"need more local ports than net.ipv4.ip_local_port_range has ({ports:,}): "
                    "use --sources 4 or more")
