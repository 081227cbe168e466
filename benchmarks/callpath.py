"""The Python calls one PUBLISH takes through the core, from `data_received` to `writelines`.

    python benchmarks/callpath.py

Counts with `sys.setprofile` (every Python function call in culex/, in order) for:

* QoS 0, 1 -> 1: the publisher's `Connection.data_received` until the subscriber's frame
  reaches its sink's `writelines`;
* QoS 1 with `durability = "sync"` to a persistent subscriber (topic seen before): the
  PUBLISH's arrival until its PUBACK is written after the commit (SQLite, a real file).

The server's own two frames (the transport's `data_received`, the loop's flush callback) come
on top of both. ARCHITECTURE.md quotes these figures.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from culex.core.broker import Broker, InertHost
from culex.protocol.codec import encode_connect, encode_publish, encode_subscribe
from culex.protocol.packets import Connect, Publish, Subscribe
from culex.storage.sqlite import SqliteStorage


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.data += chunk

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def trace(action: Callable[[], None]) -> list[str]:
    calls: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and "/culex/" in frame.f_code.co_filename:
            where = frame.f_code.co_filename.split("/culex/")[-1]
            calls.append(f"{where}:{frame.f_code.co_name}")
        elif event == "c_call" and getattr(arg, "__name__", "") == "writelines":
            calls.append("<writelines>")

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return calls


def report(title: str, calls: list[str]) -> None:
    python_calls = [call for call in calls if call != "<writelines>"]
    files = {call.split(":")[0] for call in python_calls}
    print(f"{title}: {len(python_calls)} Python calls in {len(files)} files")
    for call in calls:
        print(f"    {call}")


def qos0() -> list[str]:
    broker = Broker()
    publisher, subscriber = Sink(), Sink()
    pub = broker.open_connection(publisher, "pub", 0.0)
    sub = broker.open_connection(subscriber, "sub", 0.0)
    pub.data_received(encode_connect(Connect("pub", "MQTT", 4, True, 0)), 0.0)
    sub.data_received(encode_connect(Connect("sub", "MQTT", 4, True, 0)), 0.0)
    sub.data_received(encode_subscribe(Subscribe(1, [("t/a", 0)])), 0.0)
    frame = encode_publish(Publish("t/a", b"hello", 0, False, False, 0))
    pub.data_received(frame, 0.0)  # the topic is validated once, then cached
    broker.flush()

    def one() -> None:
        pub.data_received(frame, 1.0)
        broker.flush()

    return trace(one)


class LoopHost(InertHost):
    def __init__(self, loop: asyncio.AbstractEventLoop, broker: list[Broker]) -> None:
        super().__init__()
        self.loop = loop
        self.broker = broker

    def wake(self) -> None:
        self.loop.call_soon(self.broker[0].flush)


def qos1_sync() -> list[str]:
    loop = asyncio.new_event_loop()
    path = Path(tempfile.mkdtemp()) / "callpath.db"
    storage = SqliteStorage(path, durable=True, call_soon_threadsafe=loop.call_soon_threadsafe)
    storage.prepare(lambda key: 0)
    holder: list[Broker] = []
    broker = Broker(storage=storage, host=LoopHost(loop, holder))
    holder.append(broker)
    broker.restore()
    publisher, subscriber = Sink(), Sink()
    pub = broker.open_connection(publisher, "pub", 0.0)
    sub = broker.open_connection(subscriber, "sub", 0.0)

    def settle() -> None:
        loop.run_until_complete(asyncio.sleep(0.3))

    pub.data_received(encode_connect(Connect("pub", "MQTT", 4, True, 0)), 0.0)
    sub.data_received(encode_connect(Connect("sub", "MQTT", 4, False, 0)), 0.0)
    sub.data_received(encode_subscribe(Subscribe(1, [("q/a", 1)])), 0.0)
    settle()
    pub.data_received(encode_publish(Publish("q/a", b"first", 1, False, False, 6)), 0.0)
    settle()
    frame = encode_publish(Publish("q/a", b"hello", 1, False, False, 7))
    before = len(publisher.data)

    def one() -> None:
        pub.data_received(frame, 1.0)
        settle()

    calls = trace(one)
    assert bytes(publisher.data[before:]) == b"\x40\x02\x00\x07", "no PUBACK"
    storage.close()
    loop.close()
    return [call for call in calls if not call.startswith("asyncio")]


if __name__ == "__main__":
    report("QoS 0, 1 -> 1", qos0())
    report("QoS 1, durability sync, to a persistent subscriber", qos1_sync())
