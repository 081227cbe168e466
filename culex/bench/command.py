"""`culex bench`: arguments, validation, and the exit codes.

Exit codes: 0 when the run completed (the figures may still show loss: that is a result, not a
failure), 1 for a one-line error about the broker or the environment (unreachable, CONNACK
refused, connections lost, a --broker-pid that is not running, some `conns` clients refused),
2 for options that make no sense (argparse's own code for usage errors). No traceback reaches
the user for any of these.
"""

from __future__ import annotations

import argparse
import resource
import secrets
import sys
from pathlib import Path

from .broadcast import BROADCAST_TIMEOUT
from .clients import BenchError
from .endpoint import (
    MAX_SOURCES,
    Endpoint,
    ephemeral_ports,
    is_ipv4_loopback,
    loopback_sources,
)
from .plan import SCENARIOS, Plan, PlanError, build_plans, split_clients
from .wire import STAMP_SIZE

# Descriptors a load-generator process needs besides its clients: the interpreter, the event
# loop, the pipe to the coordinator.
RESERVED_FILES = 64

EPILOG = """scenarios:
""" + "\n".join(f"  {name:<8} {text}" for name, text in SCENARIOS.items()) + """

conns is usually run with --clients 100, 1000 and 10000; it holds the connections open for
--duration seconds to let the broker's memory settle. Pin broker and bench to different cores
(taskset -c 0 broker..., taskset -c 1 culex bench ...) so they do not steal each other's CPU.

100,000 connections on one host: each load-generator process stays under its open-file limit
(--procs), and each source address under its ephemeral ports (--sources), e.g.
  culex bench conns --clients 100000 --procs 8 --sources 8 --broadcast
conns --broadcast fails the run (exit 1) if the broadcast has not reached every client
--broadcast-timeout seconds after it was published.
"""


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `culex bench` (called by culex.cli when building its parser)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("scenario", choices=list(SCENARIOS), metavar="SCENARIO",
                        help="one of: " + ", ".join(SCENARIOS))
    parser.add_argument("--host", default="127.0.0.1", help="broker address (127.0.0.1)")
    parser.add_argument("--port", type=int, default=1883, help="broker port (1883)")
    parser.add_argument("--subscriber-port", type=int, metavar="PORT",
                        help="subscribers connect to this port of --host instead: a path "
                        "through two brokers (a bridge, or two nodes of a cluster)")
    parser.add_argument("--unix", metavar="PATH",
                        help="connect to the broker's Unix socket at PATH instead of host:port")
    parser.add_argument("--ws", action="store_true",
                        help="MQTT over WebSocket (ws://HOST:PORT/mqtt, subprotocol mqtt)")
    parser.add_argument("--ws-path", default="/mqtt", metavar="PATH",
                        help="the WebSocket listener's HTTP path (/mqtt)")
    parser.add_argument("--qos", type=int, choices=(0, 1, 2), default=0,
                        help="QoS of publishes and subscriptions (0)")
    parser.add_argument("--payload", type=int, metavar="BYTES",
                        help=f"payload size, at least {STAMP_SIZE} (100)")
    parser.add_argument("--duration", type=positive_float, default=10.0, metavar="SECONDS",
                        help="measured time (10)")
    parser.add_argument("--warmup", type=non_negative_float, default=1.0, metavar="SECONDS",
                        help="traffic before measuring, excluded from the figures (1)")
    parser.add_argument("--drain", type=non_negative_float, default=2.0, metavar="SECONDS",
                        help="after publishing stops, wait for in-flight messages until none "
                             "has arrived for this long (2)")
    parser.add_argument("--rate", type=non_negative_float, default=0.0, metavar="MSGS_PER_S",
                        help="total offered publish rate; 0 = as fast as the broker takes (0)")
    parser.add_argument("--inflight", type=int, default=20,
                        help="unacknowledged QoS 1/2 messages per publisher; with --mqtt5 at most "
                        "the broker's Receive Maximum (20)")
    parser.add_argument("--publishers", type=int, help="publishers (fanin, pairs, hot, spread)")
    parser.add_argument("--subscribers", type=int, help="subscribers (fanout, pairs, hot, "
                        "spread)")
    parser.add_argument("--clients", type=int, help="idle connections for conns (1000)")
    parser.add_argument("--procs", type=int, default=1,
                        help="load-generator processes; clients are split between them (1)")
    parser.add_argument("--sources", type=int, metavar="N",
                        help="connect from local addresses 127.0.0.1 .. 127.0.0.N, dealt "
                        "round-robin over the clients: each has its own ephemeral ports "
                        "(TCP to a broker on an IPv4 loopback address only)")
    parser.add_argument("--broadcast", action="store_true",
                        help="conns: every client also subscribes (QoS 0) to one topic; once "
                        "all are connected one message is published there, and the run reports "
                        "how many clients got it and when the last did")
    parser.add_argument("--broadcast-timeout", type=positive_float,
                        metavar="SECONDS", help="conns --broadcast: the run fails unless every "
                        "client has the broadcast this long after it was sent "
                        f"({BROADCAST_TIMEOUT:g})")
    parser.add_argument("--broker-pid", type=int, metavar="PID",
                        help="sample the CPU and RSS of this process and its children (summed) "
                        "from /proc during the run")
    parser.add_argument("--persistent", action="store_true",
                        help="subscribers connect with clean session 0 (MQTT 5: clean start 0 "
                        "and a session that never expires), so a broker keeps (and with durable "
                        "storage writes) every QoS 1/2 message for them")
    parser.add_argument("--mqtt5", action="store_true",
                        help="every client speaks MQTT 5 (protocol level 5; PUBLISH with an empty "
                        "property block) instead of 3.1.1")
    parser.add_argument("--username", help="MQTT user name for every client")
    parser.add_argument("--password", help="MQTT password for every client")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the raw figures")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="draw latency percentiles and throughput over time "
                        "(needs matplotlib: pip install 'culex[bench-plot]')")


def check(args: argparse.Namespace) -> str | None:
    """The first problem with option values argparse cannot see, or None."""
    if args.payload is not None and not STAMP_SIZE <= args.payload <= 16 * 1024 * 1024:
        return (f"--payload must be between {STAMP_SIZE} (the timestamp, publisher and "
                "sequence stamp) and 16777216 bytes")
    if not 1 <= args.inflight <= 65535:
        return "--inflight must be between 1 and 65535"
    if not 1 <= args.procs <= 256:
        return "--procs must be between 1 and 256"
    if not 0 < args.port < 65536:
        return "--port must be between 1 and 65535"
    if args.subscriber_port is not None and not 0 < args.subscriber_port < 65536:
        return "--subscriber-port must be between 1 and 65535"
    if not args.ws_path.startswith("/"):
        return "--ws-path must start with /"
    if args.password is not None and args.username is None and not args.mqtt5:
        return "--password needs --username (MQTT 3.1.1 3.1.2.9; MQTT 5 allows it)"
    if args.broadcast and args.scenario != "conns":
        return "--broadcast is for the conns scenario"
    if args.broadcast_timeout is not None and not args.broadcast:
        return "--broadcast-timeout needs --broadcast"
    if args.sources is not None:
        if not 1 <= args.sources <= MAX_SOURCES:
            return f"--sources must be between 1 and {MAX_SOURCES}"
        if args.unix:
            return "--sources binds TCP connections to 127.0.0.x; it does not apply to --unix"
        if not is_ipv4_loopback(args.host):
            return ("--sources needs a broker on an IPv4 loopback address (--host 127.x.x.x), "
                    f"not {args.host}")
    return None


def capacity_problem(plans: list[Plan], args: argparse.Namespace) -> str | None:
    """Connections that this host cannot open as asked: more per load-generator process than
    its open-file limit, or more per source address than the ephemeral port range."""
    clients = max(len(plan.publishers) + len(plan.subscribers) + plan.idle_clients
                  for plan in plans)
    per_process = max(len(pubs) + len(subs) + idle for plan in plans
                      for pubs, subs, idle in split_clients(plan, args.procs))
    hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard_limit != resource.RLIM_INFINITY and per_process + RESERVED_FILES > hard_limit:
        needed = -(-clients // (hard_limit - RESERVED_FILES))
        return (f"{per_process:,} connections per load-generator process is more than its "
                f"open-file limit of {hard_limit:,} allows: use --procs {needed} or more")
    ports = ephemeral_ports()
    sources = args.sources or 1
    if args.unix or ports is None or -(-clients // sources) <= ports:
        return None
    needed = -(-clients // ports)
    remedy = (f"use --sources {needed} or more" if is_ipv4_loopback(args.host)
              else "use a broker address on this host's loopback with --sources")
    return (f"{-(-clients // sources):,} connections from one source address need more local "
            f"ports than net.ipv4.ip_local_port_range has ({ports:,}): {remedy}")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by parsed `args`; return the process exit code."""
    from . import report  # noqa: PLC0415 - keeps `culex serve` from importing the bench
    from .runner import ConnsResult, Options, run_plans  # noqa: PLC0415

    def fail(message: str, code: int) -> int:
        print(f"culex bench: error: {message}", file=sys.stderr, flush=True)
        return code

    problem = check(args)
    if problem is not None:
        return fail(problem, 2)
    run_id = secrets.token_hex(3)
    try:
        plans = build_plans(args.scenario, run_id, payload=args.payload,
                            publishers=args.publishers, subscribers=args.subscribers,
                            clients=args.clients)
    except PlanError as exc:
        return fail(str(exc), 2)
    problem = capacity_problem(plans, args)
    if problem is not None:
        return fail(problem, 2)
    options = Options(
        endpoint=Endpoint(args.host, args.port, args.unix,
                          args.ws_path if args.ws else None),
        subscriber_endpoint=None if args.subscriber_port is None else Endpoint(
            args.host, args.subscriber_port, None, args.ws_path if args.ws else None),
        qos=args.qos, duration=args.duration,
        warmup=args.warmup, rate=args.rate, inflight=args.inflight, procs=args.procs,
        drain=args.drain, broker_pid=args.broker_pid, username=args.username,
        password=args.password, persistent=args.persistent, mqtt5=args.mqtt5,
        sources=loopback_sources(args.sources) if args.sources else (),
        broadcast=args.broadcast, broadcast_timeout=args.broadcast_timeout or BROADCAST_TIMEOUT)
    try:
        if args.plot is not None:
            report.load_pyplot()  # fail before a ten-second run, not after it
        results = run_plans(plans, options, run_id)
        print(report.format_table(results), flush=True)
        if args.json is not None:
            report.write_json(args.json, args.scenario, options, results)
        if args.plot is not None:
            report.write_plot(args.plot, results)
    except BenchError as exc:
        return fail(str(exc), 1)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    for result in results:
        if not isinstance(result, ConnsResult):
            continue
        if result.failed:
            first = result.error_messages[0] if result.error_messages else "see above"
            return fail(f"{result.failed} of {result.clients} connections failed ({first})", 1)
        broadcast = result.broadcast
        if broadcast is not None and not broadcast.complete:
            return fail(f"the broadcast reached {broadcast.received:,} of {broadcast.expected:,}"
                        f" clients within {options.broadcast_timeout:g} s", 1)
    return 0
