"""Build the fuzzers' seed corpus from the project's golden tables.

    PYTHONPATH=. .venv/bin/python fuzz/corpus_seed.py fuzz/corpus

writes `fuzz/corpus/decoder/` and `fuzz/corpus/connection/` (gitignored), one file per seed,
named after the table row it comes from. The rows are imported, not copied, from

- tests/unit/test_codec.py     GOLDEN and BAD (MQTT 3.1 / 3.1.1 codec)
- tests/unit/test_codec_v5.py  GOLDEN and BAD (MQTT 5 codec)
- tests/packets_table.py       CASES (hostile inputs after a valid CONNECT, or as the first packet)

and put into each harness's input layout with its own `encode_input`, so a table change reaches
the fuzzers on the next `make fuzz`. The connection corpus also has a few scripted scenarios
(persistent sessions and storage, takeovers, deferred authentication, keep-alive, back-pressure,
ACLs, $SYS) that byte tables alone do not reach.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz import fuzz_connection, fuzz_decoder
from fuzz.fuzz_connection import (
    OP_DATA,
    OP_FLUSH,
    OP_SERVICE,
    OP_TIME,
    OP_TRANSPORT,
    TIME_STEPS,
    Step,
    op,
)
from tests import packets_table as table
from tests.unit import test_codec as v3
from tests.unit import test_codec_v5 as v5

# Streams up to this size are also seeded one byte per chunk (each byte costs one more byte).
BYTEWISE_MAX = 48


def _streams() -> Iterator[tuple[str, bytes]]:
    """(name, bytes a client could send) from every table."""
    for golden in v3.GOLDEN:
        yield f"v3-golden-{golden.name}", golden.raw
    for bad in v3.BAD:
        yield f"v3-bad-{bad.name}", bad.raw
    for golden5 in v5.GOLDEN:
        yield f"v5-golden-{golden5.name}", golden5.raw
    for bad5 in v5.BAD:
        yield f"v5-bad-{bad5.name}", bad5.raw
    for case in table.CASES:
        yield f"table-{case.name}", (case.connect or b"") + case.data
    yield "v3-next-packet", v3.NEXT_PACKET
    yield "v5-next-packet", v5.NEXT_PACKET
    # One stream with a CONNECT and then every other golden packet: multi-frame framing.
    yield "v3-session", table.CONNECT_311 + b"".join(
        golden.raw for golden in v3.GOLDEN if golden.raw[0] >> 4 != 1)
    yield "v5-session", b"".join(golden5.raw for golden5 in v5.GOLDEN)


def decoder_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    for name, stream in _streams():
        seeds[f"{name}-whole"] = fuzz_decoder.encode_input(stream)
        # Options 3: a 64-byte framer limit; 8: at most one User Property per block... etc.
        seeds[f"{name}-small-limits"] = fuzz_decoder.encode_input(stream, 3 | 2 << 3, [3, 7])
        if len(stream) <= BYTEWISE_MAX:
            seeds[f"{name}-bytewise"] = fuzz_decoder.encode_input(stream, 0, [1])
    return seeds


# -- connection scenarios ----------------------------------------------------------------------

def _data(stream: bytes, slot: int = 0) -> Step:
    return op(OP_DATA, slot), stream


FLUSH: Step = (op(OP_FLUSH), None)


def _time(seconds: float) -> Step:
    return op(OP_TIME, 0, TIME_STEPS.index(seconds)), None


def _transport(slot: int, arg: int) -> Step:
    return op(OP_TRANSPORT, slot, arg), None


def _service(slot: int, arg: int) -> Step:
    return op(OP_SERVICE, slot, arg), None


LOST, PAUSE, RESUME, REOPEN = 0, 4, 8, 12
AUTH_OK, AUTH_BAD, AUTH_DENIED, COMMIT_OK, COMMIT_FAIL = 0, 1, 2, 6, 10
# Broker setup values (see fuzz_connection.Setup.from_values).
DEFERRED_AUTH, AUTH_BY_USER, ACL, SYS, STORAGE, NOT_DURABLE = 2, 1, 0x04, 0x08, 0x40, 0x80
# More limits: max_publish_rate 2/s, 3 subscriptions, 2 retained messages, 64 queued bytes and
# 15-character client ids.
RATE_2, SUBSCRIPTIONS_3, RETAINED_2, QUEUED_64_BYTES, CLIENT_ID_15 = 3, 0x08, 0x20, 0x40, 0x80


def _scenarios() -> Iterator[tuple[str, list[Step], int, int, int]]:
    """(name, steps, limits value, broker value, more limits value)."""
    connect, publish, subscribe = table.connect, table.publish, table.subscribe
    persistent = (connect("h1", clean=False) + subscribe(1, [("probe/#", 2), ("h/#", 1)])
                  + publish("h/x", b"q2", qos=2, mid=7) + publish("probe/r", b"kept", retain=True))
    for broker_value in (STORAGE, STORAGE | NOT_DURABLE, 0):
        yield (f"persistent-session-{broker_value:#x}", [
            _data(persistent), FLUSH, _service(0, COMMIT_OK),
            _data(publish("h/x", b"q1", qos=1, mid=8), 1), _transport(0, LOST),
            _data(connect("h2") + publish("h/y", b"queued", qos=1, mid=1), 1),
            _service(0, COMMIT_FAIL), _time(2.0),
            _data(connect("h1", clean=False) + table.ack(0x62, 7) + table.ack(0x50, 1)),
            _service(0, COMMIT_OK), FLUSH,
        ], 0x04 | 0x10, broker_value, 0)
    yield ("takeover-observer", [_data(connect(fuzz_connection.OBSERVER_ID, clean=False)), FLUSH],
           0, 0, 0)
    # The probe publisher takes this client over; its will then fills the observer's one-message
    # window (max_inflight 1, max_queued 0), which the probe must allow for.
    yield ("takeover-probe-publisher", [_data(connect(
        fuzz_connection.PUBLISHER_ID, will=(b"probe/will", b"bye"), will_qos=1)), FLUSH],
        0x04 | 0x10, 0, 0)
    yield ("takeover-between-hostiles", [
        _data(connect("same", will=(b"probe/will", b"bye"), will_qos=1)),
        _data(connect("same", clean=False), 1), FLUSH,
        _data(publish("probe/x", b"from-1", qos=2, mid=3), 1)], 0, STORAGE, 0)
    for mode, name in ((DEFERRED_AUTH, "deferred-auth"), (AUTH_BY_USER, "auth-by-user")):
        yield (name, [
            _data(connect("a1", username=b"bad", password=b"pw") + table.PINGREQ),
            _data(connect("a2", username=b"alice") + subscribe(1, [("alice/#", 1)])
                  + publish("alice/private/x", b"p", qos=1), 1),
            _service(1, AUTH_OK), _service(0, AUTH_BAD), _time(10.0), _service(1, AUTH_DENIED),
        ], 0, mode | ACL, 0)
    yield ("keepalive-will", [
        _data(connect("k", keepalive=1, will=(b"probe/will", b"gone"), will_retain=True)),
        _time(1.0), _time(0.5), _time(0.001), _time(1.0)], 0, 0, 0)
    yield ("connect-timeout", [_data(connect("slow")[:5]), _time(9.9), _time(0.1)], 0, 0x20, 0)
    yield ("back-pressure", [
        _data(connect("p") + subscribe(1, [("probe/#", 0), ("$SYS/#", 0)])),
        _transport(0, PAUSE), _data(connect("q") + publish("probe/z", b"z") * 3, 1),
        _time(2.0), _data(publish("probe/z", b"zz"), 1), _transport(0, RESUME), _time(1.0),
    ], 0, SYS, 0)
    yield ("acl-patterns", [
        _data(connect("c1") + subscribe(1, [("clients/c1/#", 1), ("denied/c1/x", 0), ("#", 0)])
              + publish("clients/c1/a", b"ok", qos=1) + publish("w/secret", b"no")
              + publish("$SYS/x", b"no", retain=True)),
        _data(connect("+", username=b"#") + subscribe(1, [("clients/+/#", 0)]), 1)],
        0, ACL, 0)
    yield ("small-limits", [
        _data(connect("s", clean=False) + subscribe(1, [("a/b/c/d", 1), ("probe/+", 2)])
              + publish("a/b/c/d/e", b"deep") + publish("probe/big", bytes(200), qos=1)),
        _data(connect("t") + publish("probe/s", b"1", qos=2) * 4, 1), _transport(0, REOPEN)],
        0xFF, STORAGE, 0)
    yield ("rate-and-quotas", [
        _data(connect("r", clean=False) + subscribe(1, [("r/1", 1), ("r/2", 1), ("r/3", 1)])
              + publish("r/1", b"retained", retain=True) * 2 + publish("r/2", b"x", retain=True)
              + publish("r/3", b"y" * 70, qos=1) * 8),
        _time(0.5), _data(connect("a-client-id-longer-than-15"), 1), _time(1.0), FLUSH],
        0, STORAGE, RATE_2 | SUBSCRIPTIONS_3 | RETAINED_2 | QUEUED_64_BYTES | CLIENT_ID_15)


def connection_seeds() -> dict[str, bytes]:
    encode = fuzz_connection.encode_input
    seeds: dict[str, bytes] = {}
    for case in table.CASES:
        stream = (case.connect or b"") + case.data
        seeds[f"table-{case.name}-whole"] = encode([_data(stream), FLUSH])
        if len(stream) <= 2 * BYTEWISE_MAX:
            seeds[f"table-{case.name}-bytewise"] = encode(
                [_data(stream[i:i + 1]) for i in range(len(stream))])
    for golden in v3.GOLDEN:
        first = table.CONNECT_311 if golden.raw[0] >> 4 != 1 else b""
        seeds[f"v3-golden-{golden.name}"] = encode([_data(first + golden.raw), FLUSH])
    for bad in v3.BAD:
        first = table.CONNECT_311 if bad.raw[0] >> 4 != 1 else b""
        seeds[f"v3-bad-{bad.name}"] = encode([_data(first + bad.raw), FLUSH])
    for name, steps, limits_value, broker_value, more_limits in _scenarios():
        seeds[f"scenario-{name}"] = encode(steps, limits_value, broker_value, more_limits)
    return seeds


def _file_name(name: str, data: bytes) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]
    return f"{clean}-{hashlib.sha1(data).hexdigest()[:10]}"


def write_corpus(root: Path) -> dict[str, int]:
    """Write both seed corpora under `root`; returns the number of files per harness."""
    counts: dict[str, int] = {}
    for harness, seeds in (("decoder", decoder_seeds()), ("connection", connection_seeds())):
        directory = root / harness
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (directory / _file_name(name, data)).write_bytes(data)
        counts[harness] = len(seeds)
    return counts


def main(argv: list[str]) -> None:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "corpus"
    for harness, count in write_corpus(root).items():
        print(f"{root / harness}: {count} seeds")


if __name__ == "__main__":
    main(sys.argv)
