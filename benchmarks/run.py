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
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bridge_bench
from cluster_nodes import cluster_section
from common import (
    CBENCH_SCENARIOS,
    DURABILITY_MODES,
    DURABILITY_SCENARIOS,
    OVER_WEBSOCKET,
    RESULTS,
    ROOT,
    SCENARIOS,
    WORKER_SCENARIOS,
    Broker,
    Scenario,
    build_cbench,
    cell,
    culex_broker,
    ensure_mosquitto,
    figure,
    free_port,
    generator_command,
    load_result,
    make_brokers,
    ratio,
    run_scenario,
    start,
    stop,
    worker_brokers,
)

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
    # What measured the figures: a rewrite from the results is not a way to make them.
    command = " ".join(["python benchmarks/run.py",
                        *(arg for arg in sys.argv[1:] if arg != "--from-results")])
    write_report(brokers, durable=durable, workers=workers, websocket=websocket, admin=admin,
                 bridges=bridges, cluster=cluster, duration=args.duration, path=args.out,
                 command=command)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
