"""`culex bench --ws` and `--unix` drive a broker's WebSocket and Unix socket listeners: the
same promises as over TCP (test_bench.py: exit 0, every QoS 1 message delivered, latencies in
order), 1 and 2 workers, and a one-line error for --ws against a port without WebSocket."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import BrokerFactory
from tests.integration.test_bench import SHORT, bench, run_scenario


@pytest.mark.parametrize("qos", [0, 1])
def test_bench_over_websocket(broker_factory: BrokerFactory, tmp_path: Path, qos: int) -> None:
    broker = broker_factory(listeners=[{"protocol": "websocket"}])
    rate = ("--rate", "2000") if qos else ()
    document = run_scenario(broker, tmp_path, "fanout", "--subscribers", "5", "--qos", str(qos),
                            "--ws", *rate, *SHORT)
    row = document["results"][0]
    assert row["delivered"] > 0
    if qos:
        assert row["loss"] == 0
    assert document["options"]["websocket_path"] == "/mqtt"
    assert broker.log_text().count("websocket client") >= 6  # the handshakes, one per client


def test_bench_over_unix_socket(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    path = tmp_path / "culex.sock"
    broker = broker_factory(listeners=[{}, {"unix": str(path)}])
    document = run_scenario(broker, tmp_path, "pubsub", "--qos", "1", "--rate", "2000",
                            "--unix", str(path), *SHORT)
    row = document["results"][0]
    assert row["delivered"] > 0 and row["loss"] == 0
    assert document["options"]["unix"] == str(path)
    broker.wait_for_log(f"connected from unix:{path}")


def test_bench_ws_against_a_plain_port_is_one_line(broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    result = bench("pubsub", "--ws", "--host", broker.host, "--port", str(broker.port), *SHORT)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "culex bench: error: connection closed during the WebSocket handshake: by the broker"]
