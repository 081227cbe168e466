"""Bridges (`benchmarks/run.py --only bridge`): Culex -> Mosquitto against Mosquitto ->
Mosquitto, in the same run.

Two brokers each time: a "remote" Mosquitto (default configuration) that the subscribers use,
and a local broker that the publishers use and that bridges `culex-bench/#` out to the remote
(QoS 1 topic, both bridges with 100 messages in flight, MQTT 3.1.1, Mosquitto's default bridge
protocol): Culex with `durability = "sync"` (every QoS 1 message for the bridge is committed
before its PUBACK, as the bridge promises), and Mosquitto with a `connection` section (in
memory). The local broker runs on core 0; the remote and the load generator share core 1.

- Throughput: `culex bench pubsub --qos 0|1 --subscriber-port REMOTE`, publisher on the local
  broker, subscriber on the remote.
- Drain: the remote is stopped, 100,000 QoS 1 messages of 100 B are published to the local
  broker and acknowledged, the remote starts again with a subscriber: messages/s from the first
  to the last one that subscriber gets. Meanwhile a local client measures the round trip of a
  QoS 0 message through the local broker every 20 ms, before the drain (idle) and during it:
  whether the drain starves the local broker's own traffic.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import free_port

from culex.protocol.codec import encode_connect, encode_publish, encode_subscribe
from culex.protocol.packets import Connect, Publish, Subscribe
from culex.protocol.reader import FrameReader

BACKLOG = 100_000
PAYLOAD = 100
WINDOW = 100  # messages in flight on each bridge
TITLES = {0: "1 -> 1 through a bridge, QoS 0, 100 B", 1: "1 -> 1 through a bridge, QoS 1, 100 B"}


class Process:
    """A broker started with `taskset -c cores`, on a port, in its own directory."""

    def __init__(self, name: str, command: list[str], cwd: Path, port: int, cores: str) -> None:
        self.name, self.command, self.cwd, self.port, self.cores = name, command, cwd, port, cores
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.stop()  # never two of it at once
        with (self.cwd / "broker.log").open("ab") as log:
            self.proc = subprocess.Popen(["taskset", "-c", self.cores, *self.command],
                                         cwd=self.cwd, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        log_text = (self.cwd / "broker.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.name} did not start:\n{log_text}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def setups(work: Path, mosquitto: str) -> tuple[Process, list[Process]]:
    """The remote Mosquitto, and the local brokers that bridge to it."""
    remote_port = free_port()
    remote_dir = work / "bridge-remote"
    remote_dir.mkdir()
    (remote_dir / "mosquitto.conf").write_text(
        f"listener {remote_port} 127.0.0.1\nallow_anonymous true\n"
        f"max_queued_messages {2 * BACKLOG}\n")
    remote = Process("Mosquitto (remote)", [mosquitto, "-c", "mosquitto.conf"], remote_dir,
                     remote_port, "1")
    culex_dir = work / "bridge-culex"
    culex_dir.mkdir()
    culex_port = free_port()
    (culex_dir / "culex.toml").write_text(
        '[storage]\ndurability = "sync"\n[[bridges]]\nname = "bench"\n'
        f'address = "127.0.0.1:{remote_port}"\nprotocol_version = "3.1.1"\n'
        f"max_inflight = {WINDOW}\nreconnect_delay = 0.5\nreconnect_delay_max = 1.0\n"
        'topics = [{ pattern = "culex-bench/#", direction = "out", qos = 1 }]\n')
    culex = Process("Culex (sync) -> Mosquitto",
                    [sys.executable, "-m", "culex", "serve", "--config", "culex.toml",
                     "--port", str(culex_port), "--log-level", "warning"],
                    culex_dir, culex_port, "0")
    mosquitto_dir = work / "bridge-mosquitto"
    mosquitto_dir.mkdir()
    mosquitto_port = free_port()
    (mosquitto_dir / "mosquitto.conf").write_text(
        f"listener {mosquitto_port} 127.0.0.1\nallow_anonymous true\n"
        f"max_inflight_messages {WINDOW}\nmax_queued_messages {2 * BACKLOG}\n"
        f"connection bench\naddress 127.0.0.1:{remote_port}\ncleansession false\n"
        "restart_timeout 1\ntopic culex-bench/# out 1\n")
    local_mosquitto = Process("Mosquitto -> Mosquitto", [mosquitto, "-c", "mosquitto.conf"],
                              mosquitto_dir, mosquitto_port, "0")
    return remote, [culex, local_mosquitto]


# -- throughput ---------------------------------------------------------------------------

def throughput(local: Process, remote: Process, qos: int, duration: float,
               results: Path) -> dict[str, Any]:
    out = results / f"bridge-qos{qos}-{local.name.split()[0].lower()}.json"
    command = ["taskset", "-c", "1", sys.executable, "-m", "culex", "bench", "pubsub",
               "--qos", str(qos), "--duration", f"{duration:g}", "--port", str(local.port),
               "--subscriber-port", str(remote.port), "--json", str(out)]
    assert local.proc is not None
    command += ["--broker-pid", str(local.proc.pid)]
    print(f"  bridge-qos{qos}  {local.name}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          timeout=duration * 4 + 120)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return dict(json.loads(out.read_text())["results"][0])


# -- the drain ----------------------------------------------------------------------------

def connected(port: int, client_id: str, clean: bool = True) -> tuple[socket.socket,
                                                                      FrameReader]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(encode_connect(Connect(client_id, clean_session=clean, keepalive=600)))
    reader = FrameReader(1 << 20, connect_only=False)
    frames: list[Any] = []
    while not frames:
        frames = reader.feed(sock.recv(4096))
    assert frames[0][1][3] == 0, f"CONNACK {frames[0][1]!r}"
    return sock, reader


def publish_backlog(port: int) -> None:
    """BACKLOG QoS 1 messages, pipelined, every one acknowledged."""
    sock, reader = connected(port, "bridge-bench-publisher")
    payload = bytes(PAYLOAD)
    sent = acked = 0
    while acked < BACKLOG:
        burst = []
        while sent < BACKLOG and sent - acked < 1000:
            burst.append(encode_publish(Publish("culex-bench/drain", payload, 1,
                                                packet_id=sent % 65535 + 1)))
            sent += 1
        if burst:
            sock.sendall(b"".join(burst))
        acked += sum(1 for first, _, _ in reader.feed(sock.recv(65536)) if first >> 4 == 4)
    sock.close()


def receive(port: int, count: int, started: list[float], finished: list[float]) -> None:
    """Subscribe on the remote and take `count` messages; note the first and last times."""
    sock, reader = connected(port, "bridge-bench-subscriber")
    sock.sendall(encode_subscribe(Subscribe(1, [("culex-bench/#", 1)])))
    got = 0
    while got < count:
        acks = []
        for first, frame, offset in reader.feed(sock.recv(1 << 20)):
            if first >> 4 == 3:
                if not started:
                    started.append(time.monotonic())
                got += 1
                position = offset + 2 + int.from_bytes(frame[offset:offset + 2], "big")
                acks.append(b"\x40\x02" + frame[position:position + 2])
        if acks:
            sock.sendall(b"".join(acks))
    finished.append(time.monotonic())
    sock.close()


def round_trips(port: int, stop: threading.Event, samples: list[float]) -> None:
    """A QoS 0 message to itself every 20 ms through the local broker; round trips in ms."""
    sock, reader = connected(port, "bridge-bench-probe")
    sock.sendall(encode_subscribe(Subscribe(1, [("probe", 0)])))
    reader.feed(sock.recv(100))  # SUBACK
    frame = encode_publish(Publish("probe", b"p"))
    while not stop.is_set():
        began = time.monotonic()
        sock.sendall(frame)
        while not any(first >> 4 == 3 for first, _, _ in reader.feed(sock.recv(4096))):
            pass
        samples.append((time.monotonic() - began) * 1000)
        stop.wait(0.02)
    sock.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def drain(local: Process, remote: Process) -> dict[str, Any]:
    print(f"  bridge-drain  {local.name}", flush=True)
    remote.stop()
    shutil.rmtree(local.cwd / "data", ignore_errors=True)  # what throughput runs left
    local.start()
    try:
        publish_backlog(local.port)
        idle: list[float] = []
        stop = threading.Event()
        probe = threading.Thread(target=round_trips, args=(local.port, stop, idle))
        probe.start()
        time.sleep(2)
        stop.set()
        probe.join()
        during: list[float] = []
        stop = threading.Event()
        probe = threading.Thread(target=round_trips, args=(local.port, stop, during))
        started: list[float] = []
        finished: list[float] = []
        remote.start()
        receiver = threading.Thread(target=receive, args=(remote.port, BACKLOG, started,
                                                          finished))
        receiver.start()
        probe.start()
        receiver.join(600)
        stop.set()
        probe.join()
        if not finished:
            return {"error": "the backlog did not arrive within 600 s"}
        seconds = finished[0] - started[0]
        return {"messages": BACKLOG, "seconds": seconds, "rate": BACKLOG / seconds,
                "idle_ms": [percentile(idle, 0.5), percentile(idle, 0.99), max(idle)],
                "during_ms": [percentile(during, 0.5), percentile(during, 0.99),
                              max(during, default=0.0)]}
    finally:
        local.stop()


# -- the section --------------------------------------------------------------------------

def run(work: Path, mosquitto: str, duration: float, results: Path) -> dict[str, Any]:
    remote, locals_ = setups(work, mosquitto)
    figures: dict[str, Any] = {}
    remote.start()
    try:
        for local in locals_:
            for qos in (0, 1):
                local.start()
                try:
                    figures[f"{local.name}/qos{qos}"] = throughput(local, remote, qos,
                                                                   duration, results)
                finally:
                    local.stop()
        for local in locals_:
            try:
                figures[f"{local.name}/drain"] = drain(local, remote)
            except (OSError, RuntimeError, AssertionError) as exc:
                figures[f"{local.name}/drain"] = {"error": f"{type(exc).__name__}: {exc}"}
            remote.stop()
            remote.start()
    finally:
        for broker in (remote, *locals_):
            broker.stop()
    (results / "bridge.json").write_text(json.dumps(figures, indent=1))
    return figures


def collect(work: Path, args: argparse.Namespace, mosquitto: Callable[[], str],
            results: Path) -> dict[str, Any]:
    """This section's figures: measured (unless `--only` leaves it out), or with
    `--from-results` as the last run left them."""
    saved = results / "bridge.json"
    if args.from_results:
        return dict(json.loads(saved.read_text())) if saved.exists() else {}
    if args.only and "bridge" not in args.only:
        return {}
    results.mkdir(parents=True, exist_ok=True)
    return run(work, mosquitto(), args.duration, results)


def section(figures: dict[str, Any], cell: Any, ratio: Any, figure: Any,
            scenario: Any) -> list[str]:
    """The BENCHMARKS.md lines; `cell`, `ratio`, `figure` and `scenario` are run.py's."""
    names = ["Culex (sync) -> Mosquitto", "Mosquitto -> Mosquitto"]
    lines = ["## Bridges", "",
             "Publishers on a local broker that bridges `culex-bench/#` out (QoS 1 topic, "
             "MQTT 3.1.1, 100 messages in flight) to a remote Mosquitto (default "
             "configuration), subscribers on the remote: Culex with `durability = \"sync\"` "
             "(a QoS 1 message is committed in the bridge's queue before its PUBACK) against "
             "Mosquitto with a `connection` section (in memory). The local broker runs on "
             "core 0, the remote and the load generator share core 1. Throughput: "
             "`taskset -c 1 culex bench pubsub --qos N --port LOCAL --subscriber-port REMOTE`. "
             f"Drain: the remote stopped, {BACKLOG:,} QoS 1 messages published to the local "
             "broker and acknowledged, the remote started again with a subscriber; the rate is "
             "from the first to the last message it gets. Meanwhile a local client sends a QoS "
             "0 message to itself through the local broker every 20 ms: its round trip before "
             "the drain and during it shows whether the drain starves local traffic.", ""]
    for qos, title in TITLES.items():
        lines += [f"### {title}", "", "| local broker | result |", "|---|---|"]
        for name in names:
            lines.append(f"| {name} | {cell(figures[f'{name}/qos{qos}'], scenario)} |")
        culex, other = (figure(figures[f"{name}/qos{qos}"], scenario) for name in names)
        lines += ["", f"Culex / Mosquitto: **{ratio(culex, other, scenario)}**", ""]
    lines += [f"### Drain of a {BACKLOG:,}-message backlog (QoS 1, 100 B)", "",
              "| local broker | drain | local QoS 0 round trip, idle (p50 / p99 / max) | "
              "during the drain |", "|---|---|---|---|"]
    for name in names:
        result = figures[f"{name}/drain"]
        if "error" in result:
            lines.append(f"| {name} | error: {result['error']} | | |")
            continue
        idle, during = result["idle_ms"], result["during_ms"]
        lines.append(f"| {name} | {result['rate']:,.0f} msg/s ({result['seconds']:.1f} s) | "
                     + " / ".join(f"{value:.1f}" for value in idle) + " ms | "
                     + " / ".join(f"{value:.1f}" for value in during) + " ms |")
    return [*lines, ""]
