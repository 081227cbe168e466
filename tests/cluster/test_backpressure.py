"""Back-pressure across Redis (server/stream_backlog.py): a QoS 0 flood published on node A
for a subscriber on node B that does not read fills B's stream only up to a bound, then the
publisher is no longer read (as on one node); once the subscriber reads, it goes on."""

from __future__ import annotations

import threading
import time

from culex.cluster import keys
from culex.server.stream_backlog import HIGH_BYTES
from tests.cluster.conftest import NodeFactory
from tests.cluster.redis_servers import RedisServer
from tests.integration.clients import Clients, publish_packet

BURST = 16


def test_a_flood_for_a_stalled_subscriber_on_another_node_is_bounded(
        redis_server: RedisServer, cluster_nodes: NodeFactory) -> None:
    # The subscriber is not given up on as a stalled reader (which would drop its QoS 0
    # messages and let everything flow) while the test watches.
    first, second = cluster_nodes([redis_server.url], names=("node-a", "node-b"),
                                  limits={"stalled_reader_timeout": 120})
    redis = redis_server.client()
    with Clients(first) as a, Clients(second) as b:
        stalled = b.raw("stalled")
        assert stalled.subscribe([("flood/#", 0)]) == [0]  # and then it reads nothing
        flooder = a.raw("flooder")
        frames = publish_packet("flood/x", b"x" * 4096, qos=0) * BURST
        flooder.sock.settimeout(0.2)
        sent = [0]
        stop = threading.Event()

        def flood() -> None:
            while not stop.is_set():
                try:
                    flooder.sock.sendall(frames)
                    sent[0] += len(frames)
                except TimeoutError:
                    continue  # node A stopped reading us: what back-pressure looks like
                except OSError:
                    return

        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        try:
            first.wait_for_log("cluster: node-b's stream takes", timeout=60)
            time.sleep(1.0)
            before = sent[0]
            time.sleep(2.0)
            # At most what the socket buffers and node A's own queue take, no stream's worth.
            assert sent[0] - before < 16 * 1024 * 1024, "the publisher is still read"
            size = redis.memory_usage(keys.stream_key("node-b")) or 0
            assert size < 2 * HIGH_BYTES, f"node-b's stream takes {size >> 20} MB"

            # The subscriber reads again: the stream drains and the publisher is read again.
            reading = threading.Event()

            def read() -> None:
                stalled.sock.settimeout(0.2)
                while not reading.is_set():
                    try:
                        if not stalled.sock.recv(1 << 20):
                            return
                    except TimeoutError:
                        continue
                    except OSError:
                        return

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            first.wait_for_log("cluster: node-b has caught up", timeout=60)
            resumed = sent[0]
            time.sleep(1.0)
            assert sent[0] > resumed, "the publisher stays paused after the backlog is gone"
            reading.set()
            reader.join(5)
        finally:
            stop.set()
            thread.join(5)
