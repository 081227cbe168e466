"""Run `culex bench` against Culex and Mosquitto in the same run and write BENCHMARKS.md.

    python benchmarks/run.py [--duration 10] [--out BENCHMARKS.md] [--only NAME ...]

Each broker runs pinned to core 0 (`taskset -c 0`) and the load generator to core 1, on a free
port, one broker at a time: Culex (default configuration), Mosquitto with its default
configuration (Nagle on) and Mosquitto with `set_tcp_nodelay true`. Debian's `mosquitto` is
installed with apt-get when missing and we are root. Then Culex alone: the cost of each
durability, and 1 vs 2 worker processes (`--only workers`), where broker and load generator
(`culex bench`, then benchmarks/cbench) share cores 0 and 1. Last, MQTT over WebSocket (`--only
websocket`): Culex's WebSocket and TCP listeners and aedes's WebSocket listener, and two clustered
nodes on one Redis (`--only cluster`, benchmarks/cluster_nodes.py). Raw figures go to
benchmarks/results/ (not committed); the summary tables go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bridge_bench
from cluster_nodes import cluster_section

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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


GENERATOR_NAMES = {"culex": "culex bench", "cbench": "cbench"}


def comparison_section(brokers: list[Broker], scenarios: list[Scenario], duration: float, *,
                       heading: str, intro: list[str], column: str, summary: str) -> list[str]:
    """Culex in several configurations, one table per scenario, and `summary` formatted with
    the last configuration's figure over the first's (`{ratio}`). Where the scenarios use
    more than one load generator, each heading names its own."""
    lines = [f"## {heading}", "", *intro, ""]
    mixed = len({scenario.generator for scenario in scenarios}) > 1
    for scenario in scenarios:
        first, last = brokers[0], brokers[-1]
        generator = GENERATOR_NAMES[scenario.generator]
        lines += [f"### {scenario.title}" + (f" ({generator})" if mixed else ""), "",
                  f"`{generator_command(first, scenario, duration)}`", "",
                  f"| {column} | result |", "|---|---|"]
        for broker in brokers:
            lines.append(f"| {broker.name} | {cell(broker.results[scenario.name], scenario)} |")
        value = ratio(figure(last.results[scenario.name], scenario),
                      figure(first.results[scenario.name], scenario), scenario)
        lines += ["", summary.format(ratio=value), ""]
    return lines


def durability_section(brokers: list[Broker], duration: float) -> list[str]:
    return comparison_section(
        brokers, DURABILITY_SCENARIOS, duration, heading="Cost of durability (Culex only)",
        intro=["QoS 1 to subscribers with persistent sessions (clean session 0), so every "
               "message is stored in their session; with `sync` the PUBACK waits for the group "
               "commit."],
        column="durability",
        summary="`none` / `sync` delivery rate: **{ratio}** (target: at most 3 x)")


def workers_section(brokers: list[Broker], duration: float, command: str) -> list[str]:
    def titles(generator: str) -> str:
        return "; ".join(s.title for s in WORKER_SCENARIOS if s.generator == generator)

    intro = [
        'Culex with `durability = "none"` (so storage does not dominate) and `workers = 1`, '
        "then `workers = 2`. Unlike the tables above, the broker runs on cores 0 and 1 "
        "(`taskset -c 0,1`) and so does the load generator: on this "
        f"{os.cpu_count()}-core machine the load generator shares the cores with the broker "
        "and takes CPU the workers could otherwise use. Two load generators, named in each "
        "heading and command line: `culex bench` with `--procs 2` (two Python processes) for "
        f"{titles('culex')}; and `benchmarks/cbench` (C, one process: a publisher thread and "
        "one thread reading every subscriber connection; its own CPU is in each cell) for "
        f"{titles('cbench')}. cbench spends far less CPU per message than `culex bench`, so "
        "its tables leave more of the two cores to the workers. Broker cpu is the whole "
        "process tree (with 2 workers, the supervisor and both workers summed), so 200% is "
        "both cores. Measured with (`--only workers` runs this section alone):",
        "",
        f"    {command}",
        "",
        "What this can show: whether a second worker still pays when broker and clients "
        "compete for the same two cores, net of the routing between workers (client ids are "
        "spread over the workers by hash, so a message whose subscriber lives in the other "
        "worker crosses a socket pair). What it cannot show: how workers scale when each has "
        "a core of its own and the load generator runs elsewhere; here every cycle a worker "
        "gains is one the clients lose, and the figures move with the scheduler's placement "
        "from run to run.",
    ]
    return comparison_section(
        brokers, WORKER_SCENARIOS, duration, heading="Worker processes (Culex only)",
        intro=intro, column="broker",
        summary="2 workers / 1 worker delivery rate: **{ratio}**")


# The admin listener's cost when nobody calls it (`--only admin`): the same Culex with the
# listener off and on (its default), in the same run.
ADMIN_SCENARIOS = [s for s in SCENARIOS if s.name in ("pubsub", "fanout", "pubsub-qos1",
                                                      "conns-1000")]


def admin_brokers(work: Path) -> list[Broker]:
    return [culex_broker(work, "Culex (admin listener off)", "sync", admin=False),
            culex_broker(work, "Culex (admin listener on, idle)", "sync")]


def admin_section(brokers: list[Broker], duration: float) -> list[str]:
    return comparison_section(
        brokers, ADMIN_SCENARIOS, duration, heading="Admin listener, on and idle (Culex only)",
        intro=["The default configuration with `[admin] host = \"\"` (off) and as it ships "
               "(on, on loopback), nobody calling it: what remains is an idle HTTP socket, a "
               "0.5 s event-loop-lag timer and the memory of aiohttp and prometheus-client. "
               "Nothing is counted per message for it (`--only admin` runs this section "
               "alone)."],
        column="broker",
        summary="on / off: **{ratio}** (delivery rate; for RSS, off / on)")


# MQTT over WebSocket (`--only websocket`): ws:// against Culex's own TCP figure and another
# broker's WebSocket listener in the same run. Debian's Mosquitto is built without WebSocket
# support (its `protocol websockets` listener fails to open), so the other broker is aedes
# (Node.js) behind the `ws` package, set up as its documentation does; benchmarks/aedes/ pins
# both, and `npm ci` installs them when missing.
AEDES = ROOT / "benchmarks" / "aedes"

WEBSOCKET_SCENARIOS = [
    Scenario("ws-pubsub", "1 -> 1, QoS 0, 100 B", ("pubsub", "--qos", "0")),
    Scenario("ws-pubsub-10k", "1 -> 1, QoS 0, 10 KB", ("pubsub", "--payload", "10240")),
    Scenario("ws-fanout", "1 -> 100 fan-out, QoS 0, 100 B", ("fanout", "--subscribers", "100")),
]
# Culex over WebSocket, Culex over TCP (the same broker and configuration), aedes over WebSocket.
CULEX_WS = 0


def ensure_aedes() -> list[str]:
    """The command that starts aedes (its port appended), after `npm ci` if needed."""
    node = shutil.which("node")
    if node is None:
        sys.exit("benchmarks: node is not installed (apt-get install nodejs npm)")
    if not (AEDES / "node_modules" / "aedes").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=AEDES,
                       check=True)
    return [node, str(AEDES / "server.mjs")]


def websocket_brokers(work: Path) -> list[Broker]:
    """Culex with a TCP and a WebSocket listener (one process, measured through each), and
    aedes with a WebSocket listener."""
    directory = work / "culex-websocket"
    directory.mkdir()
    tcp, ws = free_port(), free_port()
    (directory / "culex.toml").write_text(
        f'[[listeners]]\nhost = "127.0.0.1"\nport = {tcp}\n'
        f'[[listeners]]\nhost = "127.0.0.1"\nport = {ws}\nprotocol = "websocket"\n'
        '[storage]\ndurability = "sync"\n')
    command = [sys.executable, "-m", "culex", "serve", "--config", "culex.toml",
               "--log-level", "warning"]
    aedes = work / "aedes"
    aedes.mkdir()
    other = free_port()
    return [Broker("Culex (WebSocket)", command, directory, ws, OVER_WEBSOCKET),
            Broker("Culex (TCP)", command, directory, tcp),
            Broker("aedes (WebSocket)", [*ensure_aedes(), str(other)], aedes, other,
                   OVER_WEBSOCKET, kind="other")]


def websocket_section(brokers: list[Broker], duration: float) -> list[str]:
    lines = ["## MQTT over WebSocket", "",
             "One Culex (default configuration, a TCP and a WebSocket listener) measured "
             "through each listener, and aedes (Node.js, with the `ws` package, pinned in "
             "benchmarks/aedes/) through its WebSocket listener; Debian's Mosquitto is built "
             "without WebSocket support. `culex bench --ws` drives the WebSocket listeners "
             f"(`taskset -c 1 culex bench ARGS --ws --duration {duration:g}`).", ""]
    for scenario in WEBSOCKET_SCENARIOS:
        if scenario.name not in brokers[CULEX_WS].results:
            continue
        lines += [f"### {scenario.title}", "", "| broker | result |", "|---|---|"]
        for broker in brokers:
            lines.append(f"| {broker.name} | {cell(broker.results[scenario.name], scenario)} |")
        ws, tcp, other = (figure(broker.results[scenario.name], scenario) for broker in brokers)
        lines += ["", f"Culex WebSocket / Culex TCP: **{ratio(ws, tcp, scenario)}** (target "
                  "for 100 B: at least 0.67 x, WebSocket within 1.5 x of TCP); Culex WebSocket "
                  f"/ aedes WebSocket: **{ratio(ws, other, scenario)}** (target: above 1 x)",
                  ""]
    return lines


# Everything after this line in BENCHMARKS.md is written by hand and kept across runs.
ANALYSIS_MARKER = "<!-- analysis: kept by benchmarks/run.py -->"


def broker_tables(brokers: list[Broker], scenarios: list[Scenario], level: str) -> list[str]:
    """One table per scenario run: every broker's figures and Culex / the better Mosquitto."""
    lines = []
    culex = brokers[0]
    for scenario in scenarios:
        if scenario.name not in culex.results:
            continue
        lines += [f"{level} {scenario.title}", "", "| broker | result |", "|---|---|"]
        for broker in brokers:
            lines.append(f"| {broker.name} | {cell(broker.results[scenario.name], scenario)} |")
        others = [figure(b.results[scenario.name], scenario) for b in brokers
                  if b.kind == "other"]
        valid = [value for value in others if value]
        best = (min(valid) if scenario.figure in ("p99", "rss") else max(valid)) \
            if valid else None
        mine = figure(culex.results[scenario.name], scenario)
        lines += ["", f"Culex vs the better Mosquitto: **{ratio(mine, best, scenario)}**"]
        for baseline in (b for b in brokers if b.kind == "baseline"):
            before = figure(baseline.results[scenario.name], scenario)
            lines.append(f"Culex vs {baseline.name}: {ratio(mine, before, scenario)}")
        lines.append("")
    return lines


def write_report(brokers: list[Broker], *, durable: list[Broker], workers: list[Broker],
                 websocket: list[Broker], admin: list[Broker], bridges: dict[str, Any],
                 cluster: list[str],
                 duration: float, path: Path, command: str) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}: "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, Linux {platform.release()}.",
        f"Each broker pinned to core 0, the load generator (`culex bench`, one process, or "
        f"cbench) to core 1 (except under Worker processes), {duration:g} s per scenario after "
        "a 1 s warm-up, all brokers in the same run. Reproduce with:",
        "",
        f"    {command}",
        "",
    ]
    if brokers:
        lines += ["Ratio: Culex / the better Mosquitto (delivery rate), or the better Mosquitto "
                  "/ Culex (P99 latency, RSS), so above 1 means Culex is ahead.", ""]
        lines += broker_tables(brokers, SCENARIOS, "##")
    if brokers and any(s.name in brokers[0].results for s in CBENCH_SCENARIOS):
        lines += ["## Independent load generator (benchmarks/cbench, C)", "",
                  "The 1 -> 1 rows and 1 -> 100 fan-outs (QoS 0, and QoS 1) again, driven by "
                  "`benchmarks/cbench` (plain C, see its README: one publisher connection and "
                  "one subscriber connection, or for the fan-out 100 of them read by one "
                  "thread, `--subscribers 100`) instead of `culex bench`, pinned the same way: "
                  f"`taskset -c 1 cbench --port PORT --duration {duration:g} --warmup 1 ARGS`. "
                  "Its own CPU is in each cell.", ""]
        lines += broker_tables(brokers, CBENCH_SCENARIOS, "###")
    if durable:
        lines += durability_section(durable, duration)
    if workers:
        lines += workers_section(workers, duration, command)
    if websocket:
        lines += websocket_section(websocket, duration)
    if admin:
        lines += admin_section(admin, duration)
    if bridges:
        lines += bridge_bench.section(bridges, cell, ratio, figure, Scenario("bridge", "", ()))
    lines += cluster  # benchmarks/cluster_nodes.py
    kept = path.read_text().partition(ANALYSIS_MARKER)[2] if path.exists() else ""
    path.write_text("\n".join(lines) + "\n" + ANALYSIS_MARKER + kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--only", nargs="*",
                        help="scenario names, `workers` for the worker processes section, "
                        "`websocket` for the MQTT over WebSocket one, `admin` for the admin "
                        "listener's (on and idle versus off), `bridge` for bridges, `cluster` "
                        "for two clustered nodes (benchmarks/cluster_nodes.py)")
    parser.add_argument("--from-results", action="store_true",
                        help="rewrite the report from benchmarks/results/ without running")
    parser.add_argument("--baseline", type=Path, metavar="TREE",
                        help="also run Culex from another checkout (a git worktree of an "
                        "earlier commit) in the same run, as a row beside this one")
    args = parser.parse_args()
    if args.only:
        SCENARIOS[:] = [s for s in SCENARIOS if s.name in args.only]
        CBENCH_SCENARIOS[:] = [s for s in CBENCH_SCENARIOS if s.name in args.only]
        if "websocket" not in args.only:
            WEBSOCKET_SCENARIOS[:] = [s for s in WEBSOCKET_SCENARIOS if s.name in args.only]
    # 10,000 connections need 10,000 descriptors in the broker and in the load generator.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    with tempfile.TemporaryDirectory(prefix="culex-bench-") as work:
        brokers = (make_brokers(Path(work), args.baseline) if SCENARIOS or CBENCH_SCENARIOS
                   else [])
        durable = [] if args.only else [culex_broker(Path(work), f"Culex ({mode})", mode)
                                        for mode in DURABILITY_MODES]
        workers = worker_brokers(Path(work)) if not args.only or "workers" in args.only else []
        websocket = websocket_brokers(Path(work)) if WEBSOCKET_SCENARIOS else []
        admin = admin_brokers(Path(work)) if not args.only or "admin" in args.only else []
        needs_cbench = bool(CBENCH_SCENARIOS) or (
            bool(workers) and any(s.generator == "cbench" for s in WORKER_SCENARIOS))
        cbench = build_cbench(Path(work)) if needs_cbench and not args.from_results else None
        bridges = bridge_bench.collect(Path(work), args, ensure_mosquitto, RESULTS)
        for group, scenarios in ((brokers, SCENARIOS + CBENCH_SCENARIOS),
                                 (durable, DURABILITY_SCENARIOS), (workers, WORKER_SCENARIOS),
                                 (websocket, WEBSOCKET_SCENARIOS),
                                 (admin, ADMIN_SCENARIOS)):
            for broker in group:
                print(broker.name, flush=True)
                for scenario in scenarios:
                    if args.from_results:
                        broker.results[scenario.name] = load_result(broker, scenario)
                        continue
                    start(broker)  # a fresh broker per scenario: no state carried over
                    try:
                        broker.results[scenario.name] = run_scenario(broker, scenario,
                                                                     args.duration, cbench)
                    finally:
                        stop(broker)
    cluster = cluster_section(args.duration) if not args.only or "cluster" in args.only \
        else []
    command = " ".join(["python benchmarks/run.py", *sys.argv[1:]])
    write_report(brokers, durable=durable, workers=workers, websocket=websocket, admin=admin,
                 bridges=bridges, cluster=cluster, duration=args.duration, path=args.out,
                 command=command)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
