"""`culex bench` end to end: every scenario, briefly, against a real broker.

Each test runs the command as a user would (`python -m culex bench ... --json out.json`) against
the `broker` fixture and checks what the tool promises: exit code 0, the table on stdout, and in
the JSON messages sent, every QoS 1 message delivered (expected == delivered: the tool's own
counting and the drain are right), latency percentiles in order. Throughput is never asserted:
these runs share the machine with everything else and prove the tool works, not how fast.

QoS 1 runs use a modest --rate: a broker is allowed to drop QoS 1 messages once a client's
queue is full (Culex and Mosquitto both do, at 1000), so "no loss" only holds below capacity.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BrokerProcess, free_port

SHORT = ("--duration", "1.5", "--warmup", "0.5")


def bench(*args: str, timeout: float = 45) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "culex", "bench", *args],
                          check=False, capture_output=True, text=True, timeout=timeout)


def run_scenario(broker: BrokerProcess, tmp_path: Path, *args: str) -> dict[str, Any]:
    """Run one bench against `broker`; assert the common promises; return the JSON document."""
    out = tmp_path / "out.json"
    result = bench(*args, "--host", broker.host, "--port", str(broker.port),
                   "--json", str(out))
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("figure"), result.stdout
    document: dict[str, Any] = json.loads(out.read_text())
    protocol = "5" if "--mqtt5" in args else "3.1.1"
    assert lines[2].split() == ["mqtt"] + [protocol] * len(document["results"]), lines[2]
    for row in document["results"]:
        assert row["label"] in lines[0]
        if row["scenario"] != "conns":
            assert_traffic_sane(row)
    return document


def assert_traffic_sane(row: dict[str, Any]) -> None:
    assert row["sent"] > 0
    assert row["expected"] == row["sent"] * expected_fanout(row)
    assert row["loss"] == row["expected"] - row["delivered"]
    latency = row["latency_us"]
    assert latency["count"] == row["delivered"]
    if row["delivered"]:
        assert 0 <= latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["p99_9"]
        assert latency["p99_9"] <= latency["max"]
    assert row["errors"]["connection"] == 0
    assert row["errors"]["protocol"] == 0
    if row["qos"] >= 1:
        assert row["delivered"] == row["expected"], row
        assert row["duplicates"] == 0
        assert row["out_of_order"] == 0


def expected_fanout(row: dict[str, Any]) -> int:
    """Deliveries per message in each scenario's topology."""
    return {"fanout": row["subscribers"], "hot": row["subscribers"],
            "spread": row["subscribers"], "fanin": row["subscribers"]}.get(row["scenario"], 1)


@pytest.mark.parametrize(("scenario", "extra"), [
    ("pubsub", ("--rate", "5000")),
    ("fanout", ("--rate", "200")),
    ("fanin", ("--rate", "2000")),
    ("pairs", ("--rate", "2000")),
    ("hot", ("--rate", "2000", "--subscribers", "3")),
    ("spread", ("--rate", "2000")),
])
def test_scenario_qos1_delivers_everything(broker: BrokerProcess, tmp_path: Path,
                                           scenario: str, extra: tuple[str, ...]) -> None:
    document = run_scenario(broker, tmp_path, scenario, "--qos", "1", *SHORT, *extra)
    [row] = document["results"]
    assert row["scenario"] == scenario
    assert row["delivered"] > 0


@pytest.mark.parametrize(("scenario", "extra"), [
    ("pubsub", ("--qos", "0", "--rate", "5000")),
    ("pubsub", ("--qos", "1", "--rate", "5000")),
    ("fanout", ("--qos", "1", "--rate", "200")),
    ("fanout", ("--qos", "2", "--rate", "200", "--persistent", "--procs", "2")),
])
def test_mqtt5_delivers_everything(broker: BrokerProcess, tmp_path: Path, scenario: str,
                                   extra: tuple[str, ...]) -> None:
    """MQTT 5 clients: PUBLISH with a property block, acks, SUBACK and CONNACK with properties.

    At a modest rate nothing may be lost even at QoS 0, so every row must deliver everything.
    """
    document = run_scenario(broker, tmp_path, scenario, "--mqtt5", *SHORT, *extra)
    assert document["options"]["mqtt5"] is True
    [row] = document["results"]
    assert row["protocol"] == "5"
    assert row["delivered"] == row["expected"] > 0, row
    assert row["loss"] == 0


def test_conns_mqtt5(broker: BrokerProcess, tmp_path: Path) -> None:
    document = run_scenario(broker, tmp_path, "conns", "--mqtt5", "--clients", "100",
                            "--duration", "0.3")
    [row] = document["results"]
    assert row["protocol"] == "5"
    assert row["connected"] == row["still_open"] == 100


def test_sizes_reports_two_rows(broker: BrokerProcess, tmp_path: Path) -> None:
    document = run_scenario(broker, tmp_path, "sizes", "--qos", "1", "--rate", "2000",
                            "--duration", "1", "--warmup", "0.3")
    payloads = [row["payload"] for row in document["results"]]
    assert payloads == [100, 10240]


def test_qos0_as_fast_as_the_broker_takes(broker: BrokerProcess, tmp_path: Path) -> None:
    """No --rate: back-pressure paces the publisher; loss is allowed at QoS 0, errors are not."""
    assert broker.proc is not None
    document = run_scenario(broker, tmp_path, "pubsub", *SHORT, "--drain", "0.5",
                            "--broker-pid", str(broker.proc.pid))
    [row] = document["results"]
    assert row["protocol"] == "3.1.1"
    assert row["duplicates"] is None  # not told apart from reordering at QoS 0
    assert row["broker"]["rss_mb"] > 0
    assert row["timeline"] and row["timeline"][0]["sent"] > 0


def test_qos2_with_two_load_processes(broker: BrokerProcess, tmp_path: Path) -> None:
    document = run_scenario(broker, tmp_path, "fanout", "--qos", "2", "--subscribers", "10",
                            "--rate", "500", "--procs", "2", *SHORT)
    [row] = document["results"]
    assert row["procs"] == 2


def test_conns_connects_every_client(broker: BrokerProcess, tmp_path: Path) -> None:
    document = run_scenario(broker, tmp_path, "conns", "--clients", "300",
                            "--duration", "0.5")
    [row] = document["results"]
    assert row["connected"] == row["clients"] == 300
    assert row["failed"] == 0
    assert row["still_open"] == 300
    assert row["connect_rate"] > 0


def test_unreachable_broker_is_one_line_and_exit_1() -> None:
    result = bench("pubsub", "--host", "127.0.0.1", "--port", str(free_port()), "--duration", "1")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("culex bench: error: cannot connect to 127.0.0.1:")
    assert "refused" in lines[0]
    assert result.stdout == ""


def test_options_that_do_not_fit_the_scenario_are_usage_errors() -> None:
    result = bench("pubsub", "--subscribers", "5", "--port", str(free_port()))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "drop --subscribers" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is not None,
                    reason="matplotlib is installed; the missing-extra error cannot happen")
def test_plot_without_matplotlib_fails_before_running() -> None:
    result = bench("pubsub", "--port", str(free_port()), "--plot", "x.png")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "pip install 'culex[bench-plot]'" in result.stderr
