"""benchmarks/cbench, the C load generator, end to end against a real broker.

The program is compiled here with the exact command its README gives (so a warning is a test
failure, as it would be for a user), then run as a user would, and its one line of JSON is
checked for what the tool promises: messages sent and delivered, loss as their difference
(with --subscribers N, against N deliveries of each message), latency percentiles in order.
Throughput is never asserted: these runs share the machine with everything else and prove the
tool works, not how fast.

A QoS 1 publisher flat out outruns any broker's delivery to one subscriber with the default 20
messages in flight, and brokers drop QoS 1 once that client's queue is full (1000), so the
flat-out QoS 1 run gets a broker with room to queue; "no loss" then holds, as it does for a run
at a modest --rate against the default configuration.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, BrokerFactory, BrokerProcess, free_port

SOURCE = ROOT / "benchmarks" / "cbench" / "cbench.c"
SHORT = ("--duration", "1", "--warmup", "0.3")


@pytest.fixture(scope="module")
def cbench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """benchmarks/cbench/cbench.c built with -Werror; no gcc is a failure, never a skip."""
    gcc = shutil.which("gcc")
    assert gcc is not None, "gcc not found: benchmarks/cbench needs it (apt-get install gcc)"
    binary = tmp_path_factory.mktemp("cbench") / "cbench"
    result = subprocess.run(
        [gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", str(binary), str(SOURCE)],
        check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"gcc failed:\n{result.stderr}"
    return binary


def run(cbench: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(cbench), "--host", "127.0.0.1", "--port", str(port), *args],
                          check=False, capture_output=True, text=True, timeout=30)


def run_json(cbench: Path, broker: BrokerProcess, *args: str) -> dict[str, Any]:
    """One run against `broker`: exit 0, one JSON line, the common promises; the document."""
    result = run(cbench, broker.port, *args)
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert result.stderr == ""
    [line] = result.stdout.splitlines()
    document: dict[str, Any] = json.loads(line)
    assert document["sent"] > 0
    expected = document["sent"] * document["subscribers"]
    assert document["deliveries_expected"] == expected
    assert 0 < document["delivered"] <= expected
    assert document["lost"] == expected - document["delivered"]
    assert document["delivery_rate"] > 0
    latency = document["latency_us"]
    assert 0 <= latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["p999"]
    assert latency["p999"] <= latency["max"]
    assert set(document["cpu_percent"]) == {"process", "publisher", "subscriber"}
    return document


def test_qos0_as_fast_as_the_broker_takes(cbench: Path, broker: BrokerProcess) -> None:
    """No --rate: TCP back-pressure paces the publisher; loss is allowed at QoS 0."""
    document = run_json(cbench, broker, "--qos", "0", "--payload", "100", *SHORT)
    assert (document["qos"], document["payload"]) == (0, 100)
    assert document["subscribers"] == 1
    assert document["deliveries_expected"] == document["sent"]


def test_qos1_flat_out_delivers_everything(cbench: Path, broker_factory: BrokerFactory) -> None:
    """The --window and packet-id recycling at full speed (ids wrap after 65535 messages)."""
    broker = broker_factory(limits={"max_inflight_messages": 1000,
                                    "max_queued_messages": 1_000_000})
    document = run_json(cbench, broker, "--qos", "1", "--payload", "100", "--window", "50",
                        *SHORT)
    assert (document["qos"], document["payload"]) == (1, 100)
    assert document["lost"] == 0, document


def test_qos1_at_a_rate_delivers_everything(cbench: Path, broker: BrokerProcess) -> None:
    document = run_json(cbench, broker, "--qos", "1", "--payload", "64", "--rate", "5000",
                        *SHORT)
    assert document["lost"] == 0, document
    # Stamped inside the 1 s window at 5000 msgs/s, give or take the batch at each edge.
    assert 4900 <= document["sent"] <= 5100, document


def test_frames_larger_than_a_read(cbench: Path, broker: BrokerProcess) -> None:
    """300 KB payloads: every frame spans several reads of the subscriber's 256 KB buffer."""
    document = run_json(cbench, broker, "--qos", "1", "--payload", "300000", "--rate", "50",
                        *SHORT)
    assert document["lost"] == 0, document


def test_fanout_qos1_delivers_every_copy(cbench: Path, broker: BrokerProcess) -> None:
    """--subscribers 5: five connections read by one epoll thread, each answering PUBACK on its
    own socket (a missing PUBACK would stall that subscriber's window and lose deliveries)."""
    document = run_json(cbench, broker, "--qos", "1", "--payload", "100", "--rate", "2000",
                        "--subscribers", "5", *SHORT)
    assert (document["qos"], document["subscribers"]) == (1, 5)
    assert document["lost"] == 0, document
    assert document["delivered"] == document["sent"] * 5 == document["deliveries_expected"]


def test_fanout_qos0_fields(cbench: Path, broker: BrokerProcess) -> None:
    """--subscribers 10 at QoS 0, flat out: the fan-out fields of the JSON line (loss is
    allowed at QoS 0; run_json checks lost = sent * 10 - delivered)."""
    document = run_json(cbench, broker, "--qos", "0", "--payload", "100", "--subscribers", "10",
                        *SHORT)
    assert (document["qos"], document["payload"], document["subscribers"]) == (0, 100, 10)
    assert document["deliveries_expected"] == document["sent"] * 10
    assert set(document) == {"sent", "subscribers", "deliveries_expected", "delivered", "lost",
                             "delivery_rate", "publish_rate", "latency_us", "qos", "payload",
                             "cpu_percent"}


def test_unreachable_broker_is_one_line_and_exit_1(cbench: Path) -> None:
    port = free_port()
    result = run(cbench, port, "--duration", "1")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"cbench: cannot connect to 127.0.0.1:{port}: Connection refused"]


def test_refused_connection_is_exit_1(cbench: Path, broker_factory: BrokerFactory) -> None:
    broker = broker_factory(auth={"allow_anonymous": False})
    result = run(cbench, broker.port, "--duration", "1")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "refused the connection: CONNACK return code 5 (not authorized)" in result.stderr


def test_usage_errors_are_exit_2(cbench: Path) -> None:
    result = run(cbench, free_port(), "--qos", "2")
    assert result.returncode == 2
    assert "--qos must be a whole number from 0 to 1" in result.stderr
    result = run(cbench, free_port(), "--subscribers", "0")
    assert result.returncode == 2
    assert "--subscribers must be a whole number from 1 to 10000" in result.stderr


def test_refused_subscription_is_exit_1(cbench: Path, broker_factory: BrokerFactory,
                                        tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite elsewhere/#\n")  # anonymous clients: nothing under cbench/
    broker = broker_factory(auth={"allow_anonymous": True, "acl_file": str(acl)})
    result = run(cbench, broker.port, "--duration", "1")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "refused the subscription to cbench/" in result.stderr
    assert "(SUBACK 0x80)" in result.stderr
