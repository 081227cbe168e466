"""Debian's mosquitto_pub / mosquitto_sub as real peers: QoS, retained (-r), will (killed with
SIGKILL), persistent sessions (-c) with offline messages, both protocol versions (-V)."""

from __future__ import annotations

import signal

import pytest

from tests.conftest import BrokerProcess
from tests.integration.clients import CLI_PROTOCOLS, Clients, mosquitto_pub


@pytest.mark.parametrize("version", CLI_PROTOCOLS.values(), ids=CLI_PROTOCOLS)
def test_pub_sub_each_qos(broker: BrokerProcess, clients: Clients, version: str) -> None:
    """mosquitto_sub at each QoS receives mosquitto_pub messages of each QoS at the lower."""
    subs = {
        sub_qos: clients.mosquitto_sub("-t", "cli/qos", "-q", str(sub_qos), "-C", "3",
                                       version=version)
        for sub_qos in (0, 1, 2)
    }
    for sub in subs.values():
        sub.wait_subscribed()
    for pub_qos in (0, 1, 2):
        mosquitto_pub(
            broker, "-t", "cli/qos", "-q", str(pub_qos), "-m", f"hello {pub_qos}",
            version=version,
        )
    for sub_qos, sub in subs.items():
        got = [sub.next_message() for _ in range(3)]
        assert [(m.topic, m.payload, m.qos, m.retain) for m in got] == [
            ("cli/qos", f"hello {pub_qos}".encode(), min(pub_qos, sub_qos), False)
            for pub_qos in (0, 1, 2)
        ], f"subscribed at QoS {sub_qos}"
        assert sub.wait_exit() == 0


@pytest.mark.parametrize("version", CLI_PROTOCOLS.values(), ids=CLI_PROTOCOLS)
def test_paho_to_mosquitto_sub_and_back(
    broker: BrokerProcess, clients: Clients, version: str
) -> None:
    sub = clients.mosquitto_sub("-t", "mix/+", "-q", "2", version=version)
    sub.wait_subscribed()
    clients.paho().publish("mix/a", b"from paho", qos=2)
    message = sub.next_message()
    assert (message.topic, message.payload, message.qos) == ("mix/a", b"from paho", 2)
    watcher = clients.subscriber("mix/b", 1)
    mosquitto_pub(broker, "-t", "mix/b", "-q", "1", "-m", "from cli", version=version)
    message = watcher.get()
    assert (message.topic, message.payload, message.qos) == ("mix/b", b"from cli", 1)


@pytest.mark.parametrize("version", CLI_PROTOCOLS.values(), ids=CLI_PROTOCOLS)
def test_retained_set_replace_clear(broker: BrokerProcess, clients: Clients, version: str) -> None:
    mosquitto_pub(broker, "-t", "cli/ret", "-r", "-q", "1", "-m", "first", version=version)
    mosquitto_pub(broker, "-t", "cli/ret", "-r", "-q", "1", "-m", "second", version=version)
    sub = clients.mosquitto_sub("-t", "cli/ret", "-q", "1", version=version)
    sub.wait_subscribed()
    message = sub.next_message()
    assert (message.payload, message.retain, message.qos) == (b"second", True, 1)
    sub.assert_no_message()
    # A live retained publish reaches the existing subscriber with retain 0.
    mosquitto_pub(broker, "-t", "cli/ret", "-r", "-m", "third", version=version)
    message = sub.next_message()
    assert (message.payload, message.retain) == (b"third", False)
    # Clear it with a zero-length retained message (-n).
    mosquitto_pub(broker, "-t", "cli/ret", "-r", "-n", version=version)
    late = clients.mosquitto_sub("-t", "cli/ret", version=version)
    late.wait_subscribed()
    late.assert_no_message()


@pytest.mark.parametrize("will_retain", [False, True], ids=["plain", "retained"])
@pytest.mark.parametrize("version", CLI_PROTOCOLS.values(), ids=CLI_PROTOCOLS)
def test_will_published_when_mosquitto_sub_is_killed(
    clients: Clients, version: str, will_retain: bool
) -> None:
    watcher = clients.subscriber("cli/will", 2)
    args = [
        "-t", "cli/other", "-i", "cli-will",
        "--will-topic", "cli/will", "--will-payload", "sub died", "--will-qos", "2",
    ]
    if will_retain:
        args.append("--will-retain")
    doomed = clients.mosquitto_sub(*args, version=version)
    doomed.wait_subscribed()
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.wait_exit()
    message = watcher.get()
    assert (message.topic, message.payload, message.qos, message.retain) == (
        "cli/will", b"sub died", 2, False
    )
    late = clients.mosquitto_sub("-t", "cli/will", "-q", "2", version=version)
    late.wait_subscribed()
    if will_retain:
        stored = late.next_message()
        assert (stored.payload, stored.retain, stored.qos) == (b"sub died", True, 2)
    else:
        late.assert_no_message()


@pytest.mark.parametrize("version", CLI_PROTOCOLS.values(), ids=CLI_PROTOCOLS)
def test_no_will_when_mosquitto_sub_exits_normally(
    broker: BrokerProcess, clients: Clients, version: str
) -> None:
    watcher = clients.subscriber("cli/will", 1)
    polite = clients.mosquitto_sub(
        "-t", "cli/bye", "-C", "1", "--will-topic", "cli/will", "--will-payload", "x",
        version=version,
    )
    polite.wait_subscribed()
    mosquitto_pub(broker, "-t", "cli/bye", "-m", "last", version=version)
    assert polite.next_message().payload == b"last"
    assert polite.wait_exit() == 0  # -C 1: DISCONNECT and exit
    watcher.assert_no_message()


@pytest.mark.parametrize("kill", [False, True], ids=["disconnect", "sigkill"])
@pytest.mark.parametrize("version", CLI_PROTOCOLS.values(), ids=CLI_PROTOCOLS)
def test_persistent_session_receives_offline_messages(
    broker: BrokerProcess, clients: Clients, version: str, kill: bool
) -> None:
    session = ["-c", "-i", f"cli-persistent-{version}", "-q", "1", "-t", "cli/offline"]
    first = clients.mosquitto_sub(*session, "-C", "1", version=version)
    first.wait_subscribed()
    if kill:
        first.proc.send_signal(signal.SIGKILL)
    else:
        mosquitto_pub(broker, "-t", "cli/offline", "-q", "1", "-m", "online", version=version)
        assert first.next_message().payload == b"online"
    first.wait_exit()
    # While the subscriber is away: QoS 1 and 2 are queued for it, QoS 0 is not.
    mosquitto_pub(broker, "-t", "cli/offline", "-q", "1", "-m", "queued 1", version=version)
    mosquitto_pub(broker, "-t", "cli/offline", "-q", "0", "-m", "not queued", version=version)
    mosquitto_pub(broker, "-t", "cli/offline", "-q", "2", "-m", "queued 2", version=version)
    second = clients.mosquitto_sub(*session, "-C", "2", version=version)
    got = [second.next_message() for _ in range(2)]
    assert [(m.payload, m.qos) for m in got] == [(b"queued 1", 1), (b"queued 2", 1)]
    assert second.wait_exit() == 0


def test_clean_mosquitto_sub_gets_no_offline_messages(
    broker: BrokerProcess, clients: Clients
) -> None:
    first = clients.mosquitto_sub("-c", "-i", "cli-then-clean", "-q", "1", "-t", "cli/c")
    first.wait_subscribed()
    first.proc.send_signal(signal.SIGKILL)
    first.wait_exit()
    mosquitto_pub(broker, "-t", "cli/c", "-q", "1", "-m", "for the old session")
    # Same id without -c: clean session discards the persistent one.
    second = clients.mosquitto_sub("-i", "cli-then-clean", "-q", "1", "-t", "cli/other")
    second.wait_subscribed()
    second.assert_no_message()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_many_lines_arrive_in_order(broker: BrokerProcess, clients: Clients, qos: int) -> None:
    count = 200
    sub = clients.mosquitto_sub("-t", "cli/lines", "-q", "2", "-C", str(count))
    sub.wait_subscribed()
    lines = "".join(f"line {i}\n" for i in range(count))
    mosquitto_pub(broker, "-t", "cli/lines", "-q", str(qos), "-l", input_text=lines)
    got = [sub.next_message().payload for _ in range(count)]
    assert got == [f"line {i}".encode() for i in range(count)]
    assert sub.wait_exit() == 0


def test_large_payload_from_stdin(broker: BrokerProcess, clients: Clients) -> None:
    payload = "".join(chr(ord("a") + i % 26) for i in range(200_000))
    sub = clients.mosquitto_sub("-t", "cli/big", "-q", "1", "-C", "1")
    sub.wait_subscribed()
    mosquitto_pub(broker, "-t", "cli/big", "-q", "1", "-s", input_text=payload)
    assert sub.next_message().payload == payload.encode()


def test_long_client_id(broker: BrokerProcess, clients: Clients) -> None:
    long_id = "mosquitto-sub-with-an-id-longer-than-23-bytes-" + "z" * 30
    sub = clients.mosquitto_sub("-i", long_id, "-t", "cli/long", "-C", "1")
    sub.wait_subscribed()
    mosquitto_pub(broker, "-i", long_id + "-pub", "-t", "cli/long", "-m", "ok")
    assert sub.next_message().payload == b"ok"
