"""The broker under a connection storm: its listen backlog.

More of what 100,000 connections on one host need is proven small here as it is built; the
100,000-connection run itself is a benchmark, not a test.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from culex.bench.procstat import descendants
from tests.conftest import BrokerProcess


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
