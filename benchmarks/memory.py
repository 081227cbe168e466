"""Where an idle connection's memory goes: RSS per connection and a tracemalloc diff.

    python benchmarks/memory.py [--clients 10000] [--trace] [--depth 1]

The broker runs in this process (uvloop, the real listener and transport, no admin listener,
no storage), so that tracemalloc sees its allocations; the clients are plain sockets in a
subprocess that each send one CONNECT and wait. RSS is read from /proc before the clients
connect and once they all have their CONNACK, after a garbage collection. With `--trace`,
the allocations Python made meanwhile are grouped by source line (`--depth N`: by the N
innermost frames) and shown per connection. What tracemalloc cannot see (uvloop's and the
kernel's own memory: libuv handles, the transport objects' C parts) is RSS less the traced
total.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import uvloop

from culex.config import Listener
from culex.core.broker import Broker
from culex.server.host import LoopHost
from culex.server.listeners import protocol_factory
from culex.server.transport import ListenerGate

ROOT = Path(__file__).resolve().parent.parent

CLIENTS = r"""
import socket, sys
from culex.protocol.codec import encode_connect
from culex.protocol.packets import Connect
port, count = int(sys.argv[1]), int(sys.argv[2])
sockets = []
for number in range(count):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(encode_connect(Connect(f"idle-{number}", "MQTT", 4, True, 0)))
    sockets.append(sock)
for sock in sockets:
    sock.recv(4)
print("ready", flush=True)
sys.stdin.read()
"""


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


async def measure(clients: int, trace: bool, depth: int) -> None:
    loop = asyncio.get_running_loop()
    host = LoopHost(loop)
    broker = Broker(host=host, now=loop.time())
    host.serve(broker)
    host.start_timers()
    gate = ListenerGate(Listener(host="127.0.0.1", port=0))
    server = await loop.create_server(protocol_factory(broker, loop, gate, None), "127.0.0.1",
                                      0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    await asyncio.sleep(0.2)
    gc.collect()
    before = rss_kb()
    if trace:
        tracemalloc.start(depth)
    first = tracemalloc.take_snapshot() if trace else None
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENTS, str(port), str(clients), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout is not None and process.stdin is not None
    line = await process.stdout.readline()
    if line.strip() != b"ready":
        sys.exit(f"memory: the clients did not all connect ({line!r})")
    await asyncio.sleep(0.5)
    gc.collect()
    after = rss_kb()
    print(f"{len(broker.connections):,} connections: RSS {before / 1024:.1f} -> "
          f"{after / 1024:.1f} MB, {(after - before) * 1024 / clients:,.0f} B per connection")
    if first is not None:
        stats = tracemalloc.take_snapshot().compare_to(first, "traceback" if depth > 1
                                                       else "lineno")
        traced = sum(stat.size_diff for stat in stats)
        print(f"traced by Python: {traced / clients:,.0f} B per connection; the rest of the "
              "RSS is uvloop's and the allocator's")
        for stat in stats[:20]:
            where = " <- ".join(frame.strip() for frame in stat.traceback.format()[::2][:depth])
            print(f"  {stat.size_diff / clients:7.1f} B  {stat.count_diff / clients:5.2f} "
                  f"blocks  {where}")
    process.stdin.close()
    await process.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--trace", action="store_true", help="tracemalloc diff by source line")
    parser.add_argument("--depth", type=int, default=1, help="frames per allocation site")
    args = parser.parse_args()
    uvloop.run(measure(args.clients, args.trace, args.depth))


if __name__ == "__main__":
    main()
