"""Limits on sockets rather than clients: a listener's max_connections and the open-file limit.

Both act before any MQTT is spoken, so the checks are on sockets: the broker must close what is
over the bound, say so once in its log (not once per socket of a flood), and keep serving
everyone it admitted, and anyone once the load is gone.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from tests.conftest import BrokerFactory, BrokerProcess
from tests.integration.clients import Clients


def closed_by_broker(sock: socket.socket, timeout: float = 3.0) -> bool:
    """True when the broker closes (or resets) `sock` without sending anything."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@contextmanager
def open_sockets(broker: BrokerProcess, count: int) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection((broker.host, broker.port), 2))
            sockets.append(sock)
        yield sockets


def test_listener_max_connections_closes_sockets_beyond_it(
        broker_factory: BrokerFactory) -> None:
    """Three sockets fit (CONNECTed or not); more are closed on accept, logged once; when one
    of the three ends, a new client gets in."""
    broker = broker_factory(listeners=[{"max_connections": 3}])
    with Clients(broker) as clients:
        admitted = [clients.raw() for _ in range(3)]
        admitted[0].connect("first")  # a logged-in client and two silent sockets count alike
        with open_sockets(broker, 5) as extra:
            assert all(closed_by_broker(sock) for sock in extra)
        text = broker.wait_for_log("max_connections (3) reached")
        assert text.count("max_connections (3) reached") == 1, text
        assert admitted[0].is_open()

        admitted[1].close()
        broker.wait_for_log("accepting connections again (5 refused meanwhile)")
        late = clients.subscriber("t", qos=0, client_id="late")
        admitted[0].publish("t", b"still served")
        assert late.get().payload == b"still served"


def test_open_file_limit_warns_and_keeps_serving(broker_factory: BrokerFactory) -> None:
    """Out of descriptors the OS accept fails (EMFILE): the broker must neither die nor spin,
    must log why clients are refused, and must serve again once descriptors are free."""
    broker = broker_factory()
    assert broker.proc is not None
    limit = 64
    resource.prlimit(broker.proc.pid, resource.RLIMIT_NOFILE, (limit, limit))
    with Clients(broker) as clients:
        subscriber = clients.subscriber("t", qos=0, client_id="steady")
        with open_sockets(broker, limit) as flood:
            broker.wait_for_log(f"of the limit {limit} in use")
            # Over the limit, sockets are accepted by the kernel and closed by libuv at once.
            assert closed_by_broker(flood[-1])
            started = cpu_seconds(broker)
            time.sleep(1.0)
            assert cpu_seconds(broker) - started < 0.5, "the accept loop spins at EMFILE"
        broker.wait_for_log(f"of the limit {limit} in use again")
        publisher = clients.paho("after")
        publisher.publish("t", b"served again", qos=0)
        assert subscriber.get().payload == b"served again"
    assert broker.log_text().count(f"of the limit {limit} in use;") == 1


def cpu_seconds(broker: BrokerProcess) -> float:
    """User + system CPU time of the broker process, from /proc."""
    assert broker.proc is not None
    with open(f"/proc/{broker.proc.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
