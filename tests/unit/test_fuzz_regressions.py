"""The fuzz harnesses (fuzz/) kept working in CI, and every fuzz finding as a regression test.

CI has no atheris: the harnesses' one-input functions run here over the seed corpus built from
the golden tables (fuzz/corpus_seed.py), with the pure-Python data provider, in about a second.
Findings are written out as plain API calls on the smallest input that shows them, each asserting
the correct behaviour; see fuzz/README.md for how they were found.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from culex.core.access import AuthDone, AuthRequest
from culex.core.limits import Limits
from culex.protocol.packets import Connack, ConnackCode
from fuzz import corpus_seed, fuzz_connection, fuzz_decoder
from tests import packets_table as table
from tests.unit.core_helpers import Harness


@pytest.fixture
def strict_logging() -> Iterator[None]:
    """culex's log calls must format (the fuzzer runs with the same strict handler)."""
    with fuzz_connection.strict_logging():
        yield


# -- the harnesses over the seed corpus ---------------------------------------------------------

def test_decoder_harness_over_the_seed_corpus() -> None:
    seeds = corpus_seed.decoder_seeds()
    assert len(seeds) > 1000
    for name, data in seeds.items():
        try:
            fuzz_decoder.one_input(data)
        except Exception as exc:  # name the seed: the traceback alone does not
            raise AssertionError(f"decoder seed {name}: {exc!r}") from exc


def test_connection_harness_over_the_seed_corpus(strict_logging: None) -> None:
    seeds = corpus_seed.connection_seeds()
    assert len(seeds) > 500
    for name, data in seeds.items():
        try:
            fuzz_connection.one_input(data)
        except Exception as exc:
            raise AssertionError(f"connection seed {name}: {exc!r}") from exc


def test_harnesses_take_any_bytes(strict_logging: None) -> None:
    """Short random inputs, as the fuzzer starts with: no harness-side error on any of them."""
    rng = random.Random(7)
    for _ in range(300):
        data = rng.randbytes(rng.randrange(0, 64))
        fuzz_decoder.one_input(data)
        fuzz_connection.one_input(data)


def test_decoder_input_layout() -> None:
    stream = bytes(range(40))
    data = fuzz_decoder.encode_input(stream, 5, [3, 7])
    fdp = fuzz_decoder.Provider(data)
    assert fdp.ConsumeIntInRange(0, 255) == 5
    chunks = fuzz_decoder.consume_chunks(fdp)
    assert [len(chunk) for chunk in chunks] == [3, 7, 3, 7, 3, 7, 3, 7]
    assert b"".join(chunks) == stream
    whole = fuzz_decoder.Provider(fuzz_decoder.encode_input(stream))
    assert whole.ConsumeIntInRange(0, 255) == 0
    assert fuzz_decoder.consume_chunks(whole) == [stream]


def test_connection_input_layout() -> None:
    """A script plays back as written: the seeds really are the scenarios they are named after."""
    ops = fuzz_connection
    data = ops.encode_input([(ops.op(ops.OP_DATA, 1), b"x" * 300), (ops.op(ops.OP_TIME, 0, 9),
                                                                     None)], 0x12, 0x34, 0x56)
    fdp = fuzz_decoder.Provider(data)
    assert [fdp.ConsumeIntInRange(0, 255) for _ in range(3)] == [0x12, 0x34, 0x56]
    assert fdp.ConsumeIntInRange(0, 255) == ops.op(ops.OP_DATA, 1)
    assert fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 255)) == b"x" * 255
    assert fdp.ConsumeIntInRange(0, 255) == ops.op(ops.OP_DATA, 1)
    assert fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 255)) == b"x" * 45
    assert fdp.ConsumeIntInRange(0, 255) == ops.op(ops.OP_TIME, 0, 9)
    assert fdp.remaining_bytes() == 0


def test_python_provider_matches_atheris() -> None:
    """Crash files written by atheris replay identically without it."""
    import atheris  # noqa: PLC0415 - a test dependency, imported where it is needed
    rng = random.Random(1)
    for _ in range(3000):
        data = rng.randbytes(rng.randrange(0, 12))
        theirs, ours = atheris.FuzzedDataProvider(data), fuzz_decoder.Provider(data)
        for _ in range(6):
            kind = rng.randrange(3)
            if kind == 0:
                low = rng.randrange(-5, 300)
                high = low + rng.choice([0, 1, 2, 255, 256, 65535, 65536, 2**32, 2**64 - 1])
                assert theirs.ConsumeIntInRange(low, high) == ours.ConsumeIntInRange(low, high)
            elif kind == 1:
                count = rng.randrange(0, 6)
                assert theirs.ConsumeBytes(count) == ours.ConsumeBytes(count)
            else:
                assert theirs.remaining_bytes() == ours.remaining_bytes()


# -- findings -------------------------------------------------------------------------------------

class _LaterAuthenticator:
    """Answers when the test says, as the real one does from its thread (scrypt)."""

    def __init__(self) -> None:
        self.pending: list[AuthDone] = []

    def authenticate(self, request: AuthRequest, done: AuthDone) -> None:
        self.pending.append(done)


def test_max_connections_holds_while_connects_are_authenticated() -> None:
    """fuzz_connection, invariant `clients_connected <= max_connections`.

    `Connection._connect_refusal` compares `clients_connected` with `max_connections` when the
    CONNECT arrives, but with an authenticator the client is accepted only when the (threaded)
    password check answers, and `Broker.accept` does not look again. Every client whose CONNECT
    arrives while others are still being authenticated passes the check: with max_connections
    1, two clients connecting at once are both accepted (n at once: n accepted). The limit is a
    resource bound, so the second must get CONNACK 0x03 (server unavailable) like any other
    client over the limit.
    """
    harness = Harness(Limits(max_connections=1))
    authenticator = _LaterAuthenticator()
    harness.broker.access.authenticator = authenticator
    first, second = harness.client(), harness.client()
    first.send(table.connect("first"))
    second.send(table.connect("second"))
    for done in authenticator.pending:
        done(0)
    assert first.received_packets() == [Connack(False, ConnackCode.ACCEPTED)]
    assert second.received_packets() == [Connack(False, ConnackCode.SERVER_UNAVAILABLE)]
    assert second.closed
    assert harness.broker.stats.clients_connected == 1
