"""What every section of benchmarks/run.py shares: the scenarios, the brokers and where each
runs (taskset placement), starting and stopping them, one scenario's run (culex bench or
cbench), and reading its figures back."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from culex.bench.procstat import ProcessSampler

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    args: tuple[str, ...]
    # Which figure decides the ratio: delivery msgs/s, or p99 latency (lower is better).
    figure: str = "delivery_rate"
    # The load generator: `culex bench`, or the C one in benchmarks/cbench/.
    generator: str = "culex"


SCENARIOS = [
    Scenario("pubsub", "1 -> 1, QoS 0, 100 B", ("pubsub", "--qos", "0")),
    Scenario("fanout", "1 -> 100 fan-out, QoS 0, 100 B", ("fanout", "--subscribers", "100")),
    Scenario("pairs", "100 -> 100 pairs, QoS 0, 100 B", ("pairs", "--publishers", "100")),
    Scenario("pubsub-qos1", "1 -> 1, QoS 1, 100 B", ("pubsub", "--qos", "1")),
    Scenario("pubsub-10k", "1 -> 1, QoS 0, 10 KB", ("pubsub", "--payload", "10240")),
    Scenario("fanin", "100 -> 1 fan-in, QoS 0, 100 B", ("fanin", "--publishers", "100")),
    # Hot vs spread at a rate both brokers carry (flat out, 100 publishers overrun 10 Python
    # subscribers tenfold and the figures measure the overload, not the routing).
    Scenario("hot", "hot topic: 100 publishers -> 1 topic -> 10 subscribers, 20,000 msg/s "
             "(200,000 deliveries/s), QoS 0 (P99 latency)",
             ("hot", "--publishers", "100", "--subscribers", "10", "--rate", "20000"),
             figure="p99"),
    Scenario("spread", "spread: 100 publishers on 100 topics -> 10 `#` subscribers, 20,000 "
             "msg/s (200,000 deliveries/s), QoS 0 (P99 latency)",
             ("spread", "--publishers", "100", "--subscribers", "10", "--rate", "20000"),
             figure="p99"),
    Scenario("pubsub-qos2", "1 -> 1, QoS 2, 100 B", ("pubsub", "--qos", "2")),
    # Ordinary rates, where every message arrives in its own read and leaves in its own write.
    Scenario("latency-1k", "10 -> 10 at a fixed 1,000 msg/s (P99 latency)",
             ("pairs", "--publishers", "10", "--rate", "1000"), figure="p99"),
    Scenario("latency", "10 -> 10 at a fixed 10,000 msg/s (P99 latency)",
             ("pairs", "--publishers", "10", "--rate", "10000"), figure="p99"),
    Scenario("conns", "10,000 idle connections", ("conns", "--clients", "10000"),
             figure="rss"),
    Scenario("conns-1000", "1,000 idle connections", ("conns", "--clients", "1000"),
             figure="rss"),
    Scenario("conns-100", "100 idle connections", ("conns", "--clients", "100"),
             figure="rss"),
]


# The rows where `culex bench` (Python, at ~95% of its core) is the limit, again with the
# independent C generator: one publisher connection and one subscriber connection (100 for the
# fan-out, read by one thread).
CBENCH_SCENARIOS = [
    Scenario("c-pubsub", "1 -> 1, QoS 0, 100 B", ("--qos", "0", "--payload", "100"),
             generator="cbench"),
    Scenario("c-pubsub-qos1", "1 -> 1, QoS 1, 100 B, 20 in flight",
             ("--qos", "1", "--payload", "100", "--window", "20"), generator="cbench"),
    Scenario("c-pubsub-qos1-w100", "1 -> 1, QoS 1, 100 B, 100 in flight",
             ("--qos", "1", "--payload", "100", "--window", "100"), generator="cbench"),
    Scenario("c-pubsub-10k", "1 -> 1, QoS 0, 10 KB", ("--qos", "0", "--payload", "10240"),
             generator="cbench"),
    Scenario("c-fanout", "1 -> 100, QoS 0, 100 B",
             ("--qos", "0", "--payload", "100", "--subscribers", "100"), generator="cbench"),
    Scenario("c-fanout-qos1", "1 -> 100, QoS 1, 100 B, 100 in flight",
             ("--qos", "1", "--payload", "100", "--subscribers", "100", "--window", "100"),
             generator="cbench"),
]
CBENCH_SOURCE = ROOT / "benchmarks" / "cbench" / "cbench.c"

# Durability cost: the same Culex with each `storage.durability`, subscribers with persistent
# sessions so every QoS 1 message is stored (and, with sync, committed before its PUBACK).
DURABILITY_SCENARIOS = [
    Scenario("persistent-qos1", "1 -> 1, QoS 1, persistent subscriber",
             ("pubsub", "--qos", "1", "--persistent")),
    Scenario("persistent-fanout", "1 -> 10, QoS 1, persistent subscribers",
             ("fanout", "--qos", "1", "--subscribers", "10", "--persistent")),
]
DURABILITY_MODES = ("sync", "batch", "none")

# Worker processes: some of the scenarios above, picked before --only filters them. First with
# `culex bench`, then with cbench, which needs far less CPU per message and so leaves more of
# the two shared cores to the workers.
WORKER_SCENARIOS = [
    *(s for s in SCENARIOS if s.name in ("fanout", "pairs", "fanin", "pubsub-qos1")),
    *(s for s in CBENCH_SCENARIOS if s.name in ("c-fanout", "c-fanout-qos1")),
]
WORKER_COUNTS = (1, 2)


@dataclass(frozen=True)
class Placement:
    """Where a broker and its load generator run (`taskset -c` core lists), and what else the
    load generator is told."""

    cores: str
    bench_cores: str
    bench_args: tuple[str, ...] = ()


# One core each: the broker's figures are not disturbed by its clients.
PINNED = Placement("0", "1")
# Two workers need two cores, and this VM has no third for the clients: everything shares them.
SHARED = Placement("0,1", "0,1", ("--procs", "2"))
# A WebSocket listener: the same pinning, `culex bench --ws`.
OVER_WEBSOCKET = Placement("0", "1", ("--ws",))


@dataclass
class Broker:
    name: str
    command: list[str]
    cwd: Path
    port: int
    placement: Placement = PINNED
    # "culex", "baseline" (Culex from another tree, --baseline) or "other" (what Culex is
    # compared with: Mosquitto, aedes).
    kind: str = "culex"
    # Extra environment: PYTHONPATH for a baseline tree.
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def free_port() -> int:
    """A free port below the ephemeral range: a broker may be started several times on its
    port, and Redis clients or bridges open many outgoing connections, whose ephemeral ports
    could meanwhile take one from that range."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(10_000, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def ensure_mosquitto() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if Path("/usr/sbin/mosquitto").exists() else None)
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("benchmarks: mosquitto is not installed (apt-get install mosquitto)")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "mosquitto"], check=True,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    return "/usr/sbin/mosquitto"


def culex_broker(work: Path, name: str, durability: str, workers: int | None = None, *,
                 placement: Placement = PINNED, baseline: Path | None = None,
                 admin: bool = True) -> Broker:
    """A Culex as configured by default (the admin listener on, on a free port rather than
    18083, which a broker started by hand may hold), with `durability` and `workers`; from
    another tree when `baseline` names one."""
    directory = work / name.replace(" ", "-").replace("(", "").replace(")", "").replace(
        ",", "").lower()
    directory.mkdir()
    port = free_port()
    top = f"workers = {workers}\n" if workers is not None else ""  # before any [table]
    (directory / "culex.toml").write_text(f'{top}[storage]\ndurability = "{durability}"\n')
    return Broker(name, [sys.executable, "-m", "culex", "serve", "--config", "culex.toml",
                         "--port", str(port), "--log-level", "warning",
                         # A baseline tree may predate the admin listener and its option.
                         *(("--admin", f"127.0.0.1:{free_port()}" if admin else "off")
                           if baseline is None else ())],
                  directory, port, placement, kind="culex" if baseline is None else "baseline",
                  env={} if baseline is None else {"PYTHONPATH": str(baseline)})


def worker_brokers(work: Path) -> list[Broker]:
    """Culex with 1 and 2 workers; durability "none" so storage does not dominate."""
    return [culex_broker(work, f"Culex ({count} worker{'s' if count > 1 else ''})", "none",
                         count, placement=SHARED) for count in WORKER_COUNTS]


def baseline_name(tree: Path) -> str:
    revision = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=False).stdout.strip()
    return f"Culex at {revision or tree}"


def make_brokers(work: Path, baseline: Path | None = None) -> list[Broker]:
    mosquitto = ensure_mosquitto()
    brokers = [culex_broker(work, "Culex", "sync")]
    if baseline is not None:
        brokers.append(culex_broker(work, baseline_name(baseline), "sync", baseline=baseline))
    for name, extra in (("Mosquitto (default)", ""),
                        ("Mosquitto (TCP_NODELAY)", "set_tcp_nodelay true\n")):
        directory = work / name.split()[1].strip("()").lower()
        directory.mkdir()
        port = free_port()
        (directory / "mosquitto.conf").write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n"
            f"{extra}")
        brokers.append(Broker(name, [mosquitto, "-c", "mosquitto.conf"], directory, port,
                              kind="other"))
    return brokers


def start(broker: Broker) -> None:
    broker.proc = subprocess.Popen(["taskset", "-c", broker.placement.cores, *broker.command],
                                   cwd=broker.cwd, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL,
                                   env={**os.environ, **broker.env} if broker.env else None)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", broker.port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{broker.name} did not start")


def stop(broker: Broker) -> None:
    if broker.proc is not None and broker.proc.poll() is None:
        broker.proc.send_signal(signal.SIGTERM)
        try:
            broker.proc.wait(10)
        except subprocess.TimeoutExpired:
            broker.proc.kill()
            broker.proc.wait()


def result_path(broker: Broker, scenario: Scenario) -> Path:
    slug = broker.name.lower().replace(" ", "-").replace("(", "").replace(")", "")
    return RESULTS / f"{scenario.name}-{slug}.json"


def load_result(broker: Broker, scenario: Scenario) -> dict[str, Any]:
    return dict(json.loads(result_path(broker, scenario).read_text())["results"][0])


def bench_args(broker: Broker, scenario: Scenario, duration: float) -> list[str]:
    """`culex bench`'s arguments for one run but the port, pid and output file: what the
    report shows so a reader can repeat a run."""
    return [*scenario.args, *broker.placement.bench_args, "--duration", f"{duration:g}"]


def cbench_args(scenario: Scenario, duration: float) -> list[str]:
    """cbench's arguments for one run but the port."""
    return [*scenario.args, "--duration", f"{duration:g}", "--warmup", "1"]


def generator_command(broker: Broker, scenario: Scenario, duration: float) -> str:
    """The load generator's command line for one run, as the report shows it."""
    cores = broker.placement.bench_cores
    if scenario.generator == "cbench":
        return f"taskset -c {cores} cbench {' '.join(cbench_args(scenario, duration))} --port PORT"
    return (f"taskset -c {cores} culex bench {' '.join(bench_args(broker, scenario, duration))} "
            "--broker-pid PID")


def run_scenario(broker: Broker, scenario: Scenario, duration: float,
                 cbench: Path | None = None) -> dict[str, Any]:
    assert broker.proc is not None
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = result_path(broker, scenario)
    if scenario.generator == "cbench":
        assert cbench is not None
        return run_cbench(cbench, broker, scenario, duration, out)
    command = ["taskset", "-c", broker.placement.bench_cores, sys.executable, "-m", "culex",
               "bench", *bench_args(broker, scenario, duration), "--port", str(broker.port),
               "--broker-pid", str(broker.proc.pid), "--json", str(out)]
    print(f"  {scenario.name:12} {broker.name}", flush=True)
    result = subprocess.run(command, capture_output=True, text=True, check=False,
                            timeout=duration * 4 + 120)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return dict(json.loads(out.read_text())["results"][0])


def build_cbench(work: Path) -> Path:
    binary = work / "cbench"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", str(binary),
                    str(CBENCH_SOURCE)], check=True)
    return binary


def run_cbench(cbench: Path, broker: Broker, scenario: Scenario, duration: float,
               out: Path) -> dict[str, Any]:
    """One cbench run, its JSON line turned into `culex bench`'s result shape (the broker's
    CPU sampled from /proc around the whole run, warm-up included)."""
    assert broker.proc is not None
    print(f"  {scenario.name:12} {broker.name}", flush=True)
    sampler = ProcessSampler(broker.proc.pid)
    before = sampler.read()
    result = subprocess.run(["taskset", "-c", broker.placement.bench_cores, str(cbench),
                             *cbench_args(scenario, duration), "--port", str(broker.port)],
                            capture_output=True, text=True, check=False,
                            timeout=duration * 4 + 60)
    after = sampler.read()
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    raw = json.loads(result.stdout)
    elapsed = (after.monotonic_ns - before.monotonic_ns) / 1e9
    converted = {
        "delivery_rate": raw["delivery_rate"], "latency_us": raw["latency_us"],
        "loss": raw["lost"], "generator_cpu_percent": raw["cpu_percent"]["process"],
        "broker": {"cpu_percent": 100 * (after.cpu_seconds - before.cpu_seconds) / elapsed,
                   "cpu_wait_percent": 100 * (after.wait_seconds - before.wait_seconds)
                   / elapsed},
        "cbench": raw,
    }
    out.write_text(json.dumps({"results": [converted]}, indent=1))
    return converted


def figure(result: dict[str, Any], scenario: Scenario) -> float | None:
    if "error" in result:
        return None
    if scenario.figure == "p99":
        return float(result["latency_us"]["p99"])
    if scenario.figure == "rss":
        return float(result["broker"]["rss_mb"])
    return float(result["delivery_rate"])


def cell(result: dict[str, Any], scenario: Scenario) -> str:
    if "error" in result:
        return f"error: {result['error']}"
    broker = result.get("broker") or {}
    cpu = broker.get("cpu_percent")
    rss = broker.get("rss_mb")
    if scenario.figure == "rss":
        return (f"{rss:,.0f} MB RSS ({result.get('broker_kb_per_connection', 0):.1f} KB per "
                f"connection), all connected in {result.get('seconds_to_all_connected', 0):.1f} s"
                if rss is not None else "?")
    latency = result["latency_us"]
    loss = result.get("loss", 0)
    generator = result.get("generator_cpu_percent")
    return (f"{result['delivery_rate']:,.0f} msg/s, p50 {latency['p50']:,.0f} us, "
            f"p99 {latency['p99']:,.0f} us, not delivered {loss:,}, broker cpu {cpu or 0:.0f}% "
            f"(+{broker.get('cpu_wait_percent') or 0:.0f}% waiting for a core)"
            + ("" if generator is None else f", cbench cpu {generator:.0f}%"))


def ratio(culex: float | None, best: float | None, scenario: Scenario) -> str:
    if not culex or not best:
        return "-"
    value = best / culex if scenario.figure in ("p99", "rss") else culex / best
    return f"{value:.2f} x"
