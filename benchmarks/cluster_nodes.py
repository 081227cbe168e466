"""The cluster section of BENCHMARKS.md (`python benchmarks/run.py --only cluster`, or this
file alone: `python benchmarks/cluster_nodes.py [--duration 10] [--out FILE]`).

Two Culex nodes (default configuration: durability sync, one worker) clustered on one
redis-server (`appendonly yes`, `appendfsync always`), all three pinned to core 0, and
`culex bench` pinned to core 1, as in the other sections. Each scenario runs twice in the same
run: every client on node A ("same node"), then publishers on node A and subscribers on node B
(`--subscriber-port`: every message crosses nodes through Redis). The difference is what
crossing costs: latency added at a fixed rate, and delivery rate (1 -> 1 and fan-out, which
one node's core carries).

Then sessions that move: persistent sessions resumed through the node that holds them, and
through the other node, which takes them over, and through node A after node B, which held
them, was killed (`moves`). And the time a dead node's sessions
take to be served again: node B holds a persistent
session with a QoS 1 subscription and is killed (kill -9); node A keeps publishing QoS 1 (its
PUBACKs wait for node B's lease to run out); node B is started again and the session's client
reconnects through it. Reported: how long publishing waited (the lease), how long node B took
to serve again, and how long until the client had every message published meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from common import free_port
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
LEASE = 5.0
TAKEN = "taken from a dead node"


@dataclass(frozen=True)
class CrossScenario:
    name: str
    title: str
    args: tuple[str, ...]
    figure: str = "delivery_rate"  # or "p99"


CLUSTER_SCENARIOS = [
    CrossScenario("cluster-latency", "10 -> 10 at a fixed 5,000 msg/s, QoS 0 (P50/P99 latency)",
                  ("pairs", "--publishers", "10", "--rate", "5000"), figure="p99"),
    CrossScenario("cluster-latency-qos1", "10 -> 10 at a fixed 2,000 msg/s, QoS 1 "
                  "(P50/P99 latency)", ("pairs", "--publishers", "10", "--rate", "2000",
                                         "--qos", "1"), figure="p99"),
    CrossScenario("cluster-pubsub", "1 -> 1, QoS 0, 100 B", ("pubsub", "--qos", "0")),
    CrossScenario("cluster-pubsub-qos1", "1 -> 1, QoS 1, 100 B", ("pubsub", "--qos", "1")),
    CrossScenario("cluster-fanout", "1 -> 100 fan-out, QoS 0, 100 B",
                  ("fanout", "--subscribers", "100")),
]


def wait_listening(port: int, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on {port}")


class Cluster:
    """redis-server and two Culex nodes, started and stopped together."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.redis_port = free_port()
        self.ports = {"node-a": free_port(), "node-b": free_port()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        redis_dir = self.work / "redis"
        redis_dir.mkdir(exist_ok=True)
        self.procs["redis"] = subprocess.Popen(
            ["taskset", "-c", "0", "redis-server", "--port", str(self.redis_port), "--bind",
             "127.0.0.1", "--dir", str(redis_dir), "--save", "", "--appendonly", "yes",
             "--appendfsync", "always"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.redis_port, "redis-server")
        for name in self.ports:
            self.start_node(name)

    def start_node(self, name: str) -> float:
        """Start a node; the seconds until it listens (it listens once it has joined)."""
        directory = self.work / name
        directory.mkdir(exist_ok=True)
        (directory / "culex.toml").write_text(
            f'[cluster]\nredis = ["redis://127.0.0.1:{self.redis_port}"]\nnode = "{name}"\n'
            f"lease = {LEASE}\n")
        started = time.monotonic()
        self.procs[name] = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, "-m", "culex", "serve", "--config",
             "culex.toml", "--port", str(self.ports[name]), "--log-level", "warning",
             "--admin", "off"],  # two nodes on one host: not both on the admin port
            cwd=directory, stdout=subprocess.DEVNULL,
            stderr=(directory / "culex.log").open("ab"))
        wait_listening(self.ports[name], name)
        return time.monotonic() - started

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


@contextlib.contextmanager
def running(directory: Path) -> Iterator[Cluster]:
    """A cluster in `directory` (made here), stopped however the block ends."""
    cluster = Cluster(directory)
    cluster.work.mkdir()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def bench(cluster: Cluster, scenario: CrossScenario, cross: bool, duration: float
          ) -> dict[str, Any]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{scenario.name}-{'cross' if cross else 'same'}.json"
    node_a = cluster.procs["node-a"].pid
    command = ["taskset", "-c", "1", sys.executable, "-m", "culex", "bench", *scenario.args,
               "--duration", f"{duration:g}", "--port", str(cluster.ports["node-a"]),
               "--broker-pid", str(node_a), "--json", str(out)]
    if cross:
        command += ["--subscriber-port", str(cluster.ports["node-b"])]
    print(f"  {scenario.name:22} {'cross-node' if cross else 'same node'}", flush=True)
    result = subprocess.run(command, capture_output=True, text=True, check=False,
                            timeout=duration * 4 + 120)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return dict(json.loads(out.read_text())["results"][0])


def cell(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"failed: {result['error']}"
    latency = result.get("latency_us") or {}
    p50, p99 = latency.get("p50"), latency.get("p99")
    parts = [f"{result['delivery_rate']:,.0f} msg/s delivered"]
    if p50 is not None and p99 is not None:
        parts.append(f"P50 {p50 / 1000:.2f} ms, P99 {p99 / 1000:.2f} ms")
    if result.get("loss"):
        parts.append(f"loss {result['loss']}")
    return "; ".join(parts)


def recovery(cluster: Cluster, messages: int = 200) -> dict[str, float]:
    """kill -9 node B while it holds a persistent session; see the module docstring."""
    def client(client_id: str, port: int, clean: bool) -> mqtt.Client:
        made = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                           clean_session=clean)
        made.connect("127.0.0.1", port)
        made.loop_start()
        return made

    received: list[bytes] = []
    subscriber = client("recovery-sub", cluster.ports["node-b"], False)
    subscribed = subscriber.subscribe("recovery/#", 1)
    time.sleep(0.5)
    subscriber.loop_stop()
    subscriber.disconnect()
    del subscribed
    publisher = client("recovery-pub", cluster.ports["node-a"], True)
    cluster.kill("node-b")
    killed = time.monotonic()
    infos = [publisher.publish(f"recovery/{number}", str(number), 1)
             for number in range(messages)]
    infos[-1].wait_for_publish(LEASE * 3)
    acked = time.monotonic() - killed
    restart = cluster.start_node("node-b")
    back = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="recovery-sub",
                       clean_session=False)
    back.on_message = lambda _c, _u, message: received.append(bytes(message.payload))
    reconnected = time.monotonic()
    back.connect("127.0.0.1", cluster.ports["node-b"])
    back.loop_start()
    deadline = time.monotonic() + 30
    while len(set(received)) < messages and time.monotonic() < deadline:
        time.sleep(0.005)
    served = time.monotonic() - reconnected
    back.loop_stop()
    back.disconnect()
    publisher.loop_stop()
    publisher.disconnect()
    return {"acks_waited_s": acked, "restart_s": restart, "all_delivered_s": served,
            "delivered": float(len(set(received))), "messages": float(messages)}


def connect_frame(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT with clean session 0 (a session to keep)."""
    body = b"\x00\x04MQTT\x04\x00\x00\x3c" + len(client_id).to_bytes(2, "big") + \
        client_id.encode()
    return bytes((0x10, len(body))) + body


def read_frame(sock: socket.socket, buffer: bytearray) -> tuple[int, bytes]:
    """The next packet: (first byte, body); short packets only (remaining length < 128)."""
    while len(buffer) < 2 or len(buffer) < 2 + buffer[1]:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        buffer += data
    first, length = buffer[0], buffer[1]
    body = bytes(buffer[2:2 + length])
    del buffer[:2 + length]
    return first, body


def resume(port: int, client_id: str, queued: int) -> tuple[float, float]:
    """Reconnect `client_id` through `port`: seconds to CONNACK (Session Present asserted),
    and to the last of its `queued` QoS 1 messages (each acknowledged)."""
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray()
    sock.sendall(connect_frame(client_id))
    first, body = read_frame(sock, buffer)
    assert first == 0x20 and body == b"\x01\x00", (first, body)
    connacked = time.monotonic() - started
    for _ in range(queued):
        first, body = read_frame(sock, buffer)
        topic_length = int.from_bytes(body[:2], "big")
        packet_id = body[2 + topic_length:4 + topic_length]
        sock.sendall(b"\x40\x02" + packet_id)
    delivered = time.monotonic() - started
    sock.sendall(b"\xe0\x00")
    sock.close()
    return connacked, delivered


def sessions_on(port: int, ids: list[str]) -> None:
    """A persistent session for each of `ids` through `port`, subscribed to moves/<id>."""
    for client_id in ids:
        made = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        subscribed = threading.Event()
        made.on_subscribe = lambda *_args, done=subscribed: done.set()
        made.connect("127.0.0.1", port)
        made.loop_start()
        made.subscribe(f"moves/{client_id}", 1)
        subscribed.wait(10)
        made.disconnect()
        made.loop_stop()


def queue_and_resume(publisher: mqtt.Client, ids: list[str], port: int, *, queued: int,
                     before: Callable[[], None] = lambda: None
                     ) -> tuple[list[float], list[float]]:
    """`queued` QoS 1 messages (acknowledged) for each session, `before()`, then every
    session resumed through `port`: the CONNACK times and the last message's, sorted."""
    infos = [publisher.publish(f"moves/{client_id}", b"x" * 100, 1)
             for client_id in ids for _ in range(queued)]
    infos[-1].wait_for_publish(30)
    before()
    results = [resume(port, client_id, queued) for client_id in ids]
    return (sorted(connacked for connacked, _ in results),
            sorted(delivered for _, delivered in results))


def moves(cluster: Cluster, sessions: int = 100, queued: int = 10) -> dict[str, list[float]]:
    """Persistent sessions with `queued` QoS 1 messages each, resumed on the node that holds
    them, then through the other node (the session moves there), then back; then the same
    number on node B, which is killed: resumed through node A once B's lease has run out
    (each taken from node B's store in Redis)."""
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="moves-pub")
    publisher.connect("127.0.0.1", cluster.ports["node-a"])
    publisher.loop_start()
    ids = [f"mover-{number}" for number in range(sessions)]
    sessions_on(cluster.ports["node-a"], ids)
    figures: dict[str, list[float]] = {}
    for label, node in (("same node", "node-a"), ("moved", "node-b"), ("moved back", "node-a")):
        figures[f"{label} CONNACK"], figures[f"{label} delivered"] = queue_and_resume(
            publisher, ids, cluster.ports[node], queued=queued)
    stranded = [f"stranded-{number}" for number in range(sessions)]
    sessions_on(cluster.ports["node-b"], stranded)

    def kill_b() -> None:
        cluster.kill("node-b")
        time.sleep(LEASE + 1)  # node A sees node B down

    figures[f"{TAKEN} CONNACK"], figures[f"{TAKEN} delivered"] = queue_and_resume(
        publisher, stranded, cluster.ports["node-a"], queued=queued, before=kill_b)
    publisher.loop_stop()
    publisher.disconnect()
    return figures


def moves_line(figures: dict[str, list[float]]) -> list[str]:
    def ms(values: list[float], share: float) -> str:
        return f"{values[min(len(values) - 1, int(len(values) * share))] * 1000:.1f}"

    rows = [f"| {label} | {ms(figures[f'{label} CONNACK'], 0.5)} / "
            f"{ms(figures[f'{label} CONNACK'], 0.99)} ms | "
            f"{ms(figures[f'{label} delivered'], 0.5)} / "
            f"{ms(figures[f'{label} delivered'], 0.99)} ms |"
            for label in ("same node", "moved", "moved back", TAKEN)]
    count = len(figures["same node CONNACK"])
    return ["Sessions that move: "
            f"{count} persistent sessions on node A, each with 10 QoS 1 messages queued, "
            "resumed one after the other (a raw 3.1.1 client: CONNECT, CONNACK with Session "
            "Present 1, every message acknowledged) on node A, then through node B (each "
            "session moves there), then through node A again; then as many on node B, "
            "killed with kill -9 and each session resumed through node A once node B's lease "
            "had run out (taken from node B's store in Redis). Median / P99:", "",
            "| resumed | CONNECT to CONNACK | CONNECT to the 10th message |",
            "|---|---|---|", *rows, ""]


def cluster_section(duration: float) -> list[str]:
    """Run everything and return the BENCHMARKS.md lines."""
    if shutil.which("redis-server") is None:
        sys.exit("benchmarks: redis-server is not installed (make system-deps)")
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="culex-cluster-bench-") as work:
        for scenario in CLUSTER_SCENARIOS:
            cells = []
            for cross in (False, True):
                with running(Path(work) / f"{scenario.name}-{cross}") as cluster:
                    cells.append(cell(bench(cluster, scenario, cross, duration)))
            rows.append(f"| {scenario.title} | {cells[0]} | {cells[1]} |")
        with running(Path(work) / "recovery") as cluster:
            figures = recovery(cluster)
        with running(Path(work) / "moves") as cluster:
            moved = moves(cluster)
    return [
        "## Cluster (two nodes on one Redis)", "",
        "Two Culex nodes (default configuration, `[cluster]` with `lease = 5`) and redis-server "
        "(`appendonly yes`, `appendfsync always`) share core 0; `culex bench` runs on core 1 "
        f"for {duration:g} s per run, with every client on node A (same node), then with the "
        "subscribers on node B (`--subscriber-port`), so that every message crosses nodes "
        "through Redis. Reproduce with `python benchmarks/run.py --only cluster`.", "",
        "| scenario | same node | cross-node |", "|---|---|---|", *rows, "",
        f"A dead node's sessions: node B, holding a persistent session, killed with kill -9; "
        f"{figures['messages']:.0f} QoS 1 messages published on node A meanwhile were "
        f"acknowledged after {figures['acks_waited_s']:.2f} s (node B's lease running out); "
        f"node B started again served after {figures['restart_s']:.2f} s, and the session's "
        f"client had {figures['delivered']:.0f} of them {figures['all_delivered_s']:.2f} s "
        "after reconnecting.", "", *moves_line(moved)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--out", type=Path, help="write the section to this file")
    args = parser.parse_args()
    text = "\n".join(cluster_section(args.duration)) + "\n"
    if args.out is not None:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
