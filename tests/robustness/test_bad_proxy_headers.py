"""Malformed PROXY protocol headers over real sockets (the BAD rows of tests/proxy_table.py),
fed whole and one byte at a time: each connection is closed and the log names the peer and the
cause, never a traceback, and a well-formed client is served afterwards. Also a header that
never completes (closed at connect_timeout), and a PROXY header sent to a listener without
`proxy_protocol`, which is just bad MQTT."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.conftest import BrokerProcess, Endpoint
from tests.integration.clients import RawClient
from tests.proxy_table import BAD, GOOD, Bad
from tests.robustness.conftest import module_broker


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess,
                                                                         Endpoint]]:
    for broker in module_broker(tmp_path_factory, "bad-proxy-broker", {
            "limits": {"connect_timeout": 1}, "listeners": [
                {}, {"host": "127.0.0.1", "port": 0, "proxy_protocol": True}]}):
        yield broker, Endpoint(*broker.listening_on("PROXY protocol"))


def closed_by_broker(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the broker closes the connection (EOF or reset) within `timeout`, having sent
    nothing: a PROXY listener never answers a bad header."""
    sock.settimeout(timeout)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def local_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def still_serves(endpoint: Endpoint) -> None:
    client = RawClient(endpoint)
    try:
        client.send(GOOD[0].data)
        client.connect("after-bad-header")
        client.disconnect()
    finally:
        client.close()


@pytest.mark.parametrize("case", BAD, ids=lambda case: case.name)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_bad_header_closes_with_a_reason(proxied: tuple[BrokerProcess, Endpoint], case: Bad,
                                         mode: str) -> None:
    broker, endpoint = proxied
    with socket.create_connection((endpoint.host, endpoint.port), timeout=5) as sock:
        peer = local_address(sock)
        chunks = [case.data] if mode == "whole" else [bytes([b]) for b in case.data]
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # refused before the rest: that is the point
        assert closed_by_broker(sock)
    broker.wait_for_log(f"connection from {peer} closed: invalid PROXY protocol header: ")
    line = next(line for line in broker.log_text().splitlines() if f"from {peer} closed" in line)
    assert case.error in line
    still_serves(endpoint)


def test_a_header_that_never_completes_is_closed_at_connect_timeout(
        proxied: tuple[BrokerProcess, Endpoint]) -> None:
    broker, endpoint = proxied
    with socket.create_connection((endpoint.host, endpoint.port), timeout=5) as sock:
        peer = local_address(sock)
        sock.sendall(b"PROXY TCP4 1.2.")
        started = time.monotonic()
        assert closed_by_broker(sock)
        assert 0.5 < time.monotonic() - started < 4
    broker.wait_for_log(f"connection from {peer} closed: invalid PROXY protocol header: no "
                        "complete header within 1 s")
    still_serves(endpoint)


def test_a_header_on_a_plain_listener_is_a_protocol_violation(
        proxied: tuple[BrokerProcess, Endpoint]) -> None:
    broker, _endpoint = proxied
    client = RawClient(broker)  # the first listener: no proxy_protocol
    try:
        client.send(GOOD[0].data)
        client.wait_closed()
        broker.wait_for_log(f"({client.peer}) protocol violation")
    finally:
        client.close()
