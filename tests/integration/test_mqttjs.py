"""MQTT.js (the `mqtt` npm package, pinned in tests/interop/mqttjs/package.json) as a real peer:
each test runs one scenario of tests/interop/mqttjs/scenario.js with Node.js against a fresh
broker and asserts the JSON line it prints. `make test` installs Node.js and the package; a
missing `node` or `npm ci` fails these tests, it does not skip them.

They run against Mosquitto too (CULEX_TEST_AGAINST=mosquitto), except the two MQTT 5 ones that
assert what the spec leaves to the broker (marked CULEX_ONLY)."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from tests.conftest import AGAINST, ROOT, BrokerProcess

MQTTJS = ROOT / "tests" / "interop" / "mqttjs"
SCRIPT = MQTTJS / "scenario.js"
# scenario.js bounds each scenario at 10 s itself; this only catches a hung node.
TIMEOUT = 30

V311 = pytest.param(4, id="v311")
V5 = pytest.param(5, id="v5")
BOTH = [V311, V5]


def culex_only(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(AGAINST != "culex", reason=reason)

ALL_BYTES = bytes(range(256))


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with the pinned MQTT.js installed: a failure, never a skip."""
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not installed: run `make test` (installs nodejs and npm)")
    pinned = json.loads((MQTTJS / "package.json").read_text())["dependencies"]["mqtt"]
    installed = MQTTJS / "node_modules" / "mqtt" / "package.json"
    if not installed.exists():
        pytest.fail(f"MQTT.js is not installed: run `npm ci` in {MQTTJS} (or `make test`)")
    version = json.loads(installed.read_text())["version"]
    if version != pinned:
        pytest.fail(f"MQTT.js {version} installed, {pinned} pinned: run `npm ci` in {MQTTJS}")
    return path


def run(node: str, broker: BrokerProcess, scenario: str, protocol: int) -> dict[str, Any]:
    """Run one scenario; return what it observed (without its scenario and protocol keys)."""
    # A broker reached another way (MQTT over WebSocket, test_websocket.py) says how.
    where = broker.mqttjs_args() if hasattr(broker, "mqttjs_args") \
        else ["--host", broker.host, "--port", str(broker.port)]
    command = [node, str(SCRIPT), *where, "--protocol", str(protocol), scenario]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, cwd=MQTTJS,
                          check=False)
    assert done.returncode == 0, (
        f"{' '.join(command)} exited {done.returncode}\nstdout: {done.stdout}\n"
        f"stderr: {done.stderr}\nbroker log:\n{broker.log_text()}"
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"expected one JSON line, got: {done.stdout!r}"
    observed: dict[str, Any] = json.loads(lines[0])
    assert (observed.pop("scenario"), observed.pop("protocol")) == (scenario, protocol)
    return observed


def msg(topic: str, payload: bytes, qos: int, retain: bool = False) -> dict[str, Any]:
    """A message as scenario.js reports it (payload in hex)."""
    return {"topic": topic, "payload": payload.hex(), "qos": qos, "retain": retain}


# -- 3.1.1 and 5 ------------------------------------------------------------------------------


def test_session_present(node: str, broker: BrokerProcess) -> None:
    observed = run(node, broker, "session", 4)
    assert [(c["session_present"], c["code"]) for c in observed["connacks"]] == [
        (False, 0),  # clean session 0, first time
        (True, 0),   # clean session 0 again: the session (and its subscription) is there
        (False, 0),  # clean session 1 discards it
        (False, 0),  # ... so clean session 0 after it starts afresh
    ]


@pytest.mark.parametrize("protocol", [V5])
def test_session_present_with_session_expiry(
    node: str, broker: BrokerProcess, protocol: int
) -> None:
    observed = run(node, broker, "session", protocol)
    assert [(c["step"], c["session_present"], c["code"]) for c in observed["connacks"]] == [
        ("clean start 0, expiry 60", False, 0),
        ("clean start 0, expiry 60", True, 0),
        ("clean start 1, expiry 60", False, 0),
        # The session of the previous connection (expiry 60) is resumed; this one sets 0 ...
        ("clean start 0, expiry 0", True, 0),
        # ... so it ended with that connection.
        ("clean start 0, expiry 60", False, 0),
    ]


@pytest.mark.parametrize("protocol", BOTH)
def test_each_qos_exact_payloads(node: str, broker: BrokerProcess, protocol: int) -> None:
    observed = run(node, broker, "qos", protocol)
    assert observed["granted"] == {"0": [0], "1": [1], "2": [2]}
    payloads = [b"hello MQTT.js", ALL_BYTES, b""]
    for sub_qos in (0, 1, 2):
        assert observed["received"][str(sub_qos)] == [
            msg(f"qos/{pub_qos}", payload, min(pub_qos, sub_qos))
            for pub_qos in (0, 1, 2) for payload in payloads
        ], f"subscribed at QoS {sub_qos}"


@pytest.mark.parametrize("protocol", BOTH)
def test_retained_delivered_then_cleared(node: str, broker: BrokerProcess, protocol: int) -> None:
    observed = run(node, broker, "retained", protocol)
    assert observed["early"] == [
        msg("retained/t", b"kept", 1, retain=True),   # stored before the SUBSCRIBE
        msg("retained/t", b"live", 1),                # live: retain 0 to current subscribers
        msg("retained/t", b"", 1),                    # the clearing publish is delivered too
        msg("retained/sentinel", b"end", 1),
    ]
    assert observed["late"] == [msg("retained/sentinel", b"end", 1)]


@pytest.mark.parametrize("protocol", BOTH)
def test_wildcards(node: str, broker: BrokerProcess, protocol: int) -> None:
    observed = run(node, broker, "wildcards", protocol)
    assert observed["received"] == {
        "wild/+/temp": ["wild/kitchen/temp", "wild/sentinel/temp"],
        "wild/#": ["wild/kitchen/temp", "wild/kitchen/humidity", "wild/a/b/temp", "wild",
                   "wild/sentinel/temp"],
        "+/+/+": ["wild/kitchen/temp", "wild/kitchen/humidity", "other/kitchen/temp",
                  "wild/sentinel/temp"],
    }


@pytest.mark.parametrize("protocol", BOTH)
def test_unsubscribe_stops_delivery(node: str, broker: BrokerProcess, protocol: int) -> None:
    observed = run(node, broker, "unsubscribe", protocol)
    assert observed.pop("received") == [msg("unsub/a", b"before", 1),
                                         msg("unsub/b", b"sentinel", 1)]
    if protocol == 5:
        # UNSUBACK 0x00, and 0x11 No subscription existed for a filter never subscribed.
        assert observed == {"unsuback": [0x00], "unsuback_never_subscribed": [0x11]}
    else:
        assert observed == {}


@pytest.mark.parametrize("protocol", BOTH)
def test_will_on_destroyed_socket_not_on_end(
    node: str, broker: BrokerProcess, protocol: int
) -> None:
    observed = run(node, broker, "will", protocol)
    expected = msg("will/crashed", b"crashed is gone", 1)
    if protocol == 5:
        expected |= {"content_type": "text/plain", "user_properties": {"who": "crashed"}}
    # Only the destroyed client's will: js-polite ended with DISCONNECT first.
    assert observed["received"] == [expected]


@pytest.mark.parametrize("protocol", BOTH)
def test_offline_messages_for_persistent_session(
    node: str, broker: BrokerProcess, protocol: int
) -> None:
    observed = run(node, broker, "offline", protocol)
    assert observed == {
        "granted": [2],
        "session_present": True,
        "code": 0,
        "received": [
            msg("offline/t", b"away qos1", 1),
            msg("offline/t", b"away qos2", 2),
            msg("offline/t", b"live", 1),
        ],
    }


# -- MQTT 5 only ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [V5])
def test_publish_properties(node: str, broker: BrokerProcess, protocol: int) -> None:
    first, bare = run(node, broker, "properties", protocol)["received"]
    properties = first.pop("properties")
    # Reduced by the (sub-second) time it waited in the broker.
    assert properties.pop("messageExpiryInterval") in (119, 120)
    assert first == msg("props/t", b'{"t": 21.5}', 1)
    assert properties == {
        "payloadFormatIndicator": True,
        "contentType": "application/json",
        "responseTopic": "props/reply",
        "correlationData": bytes([0, 1, 2, 0xFE, 0xFF]).hex(),
        "userProperties": {"unit": "celsius", "tag": ["a", "b"]},
    }
    assert bare == msg("props/t", b"bare", 1) | {"properties": {}}


@pytest.mark.parametrize("protocol", [V5])
def test_request_response(node: str, broker: BrokerProcess, protocol: int) -> None:
    observed = run(node, broker, "request-response", protocol)
    assert observed["replies"] == [
        msg("service/reply/js-requester", f"re: ping {n}".encode(), 1)
        | {"correlation_data": f"req-{n}"}
        for n in (1, 2)
    ]


@pytest.mark.parametrize("protocol", [V5])
def test_message_expiry_while_offline(node: str, broker: BrokerProcess, protocol: int) -> None:
    observed = run(node, broker, "message-expiry", protocol)
    assert observed["session_present"] is True
    (kept, sentinel) = observed["received"]
    # "short" (1 s) expired during the 2.2 s away; "long" (60 s) waited at least 2 s of it.
    assert (kept["topic"], kept["payload"]) == ("expiry/t", "long")
    assert 50 <= kept["message_expiry_interval"] <= 58
    assert sentinel == {"topic": "expiry/sentinel", "payload": "end",
                        "message_expiry_interval": None}


@culex_only("Culex's outgoing alias policy (topic_alias_out); Mosquitto sends none")
@pytest.mark.parametrize("protocol", [V5])
def test_topic_aliases_both_ways(node: str, broker: BrokerProcess, protocol: int) -> None:
    observed = run(node, broker, "topic-alias", protocol)
    assert observed["broker_topic_alias_maximum"] == 10  # [limits] max_topic_alias default
    # What MQTT.js sent: topic + alias once, then the alias alone.
    assert observed["assigner_sent"] == [
        {"topic": "alias/auto", "topic_alias": 1},
        {"topic": "", "topic_alias": 1},
        {"topic": "", "topic_alias": 1},
    ]
    assert observed["user_sent"] == [
        {"topic": "alias/use", "topic_alias": 4},
        {"topic": "", "topic_alias": 4},
        {"topic": "", "topic_alias": 4},
    ]
    # What Culex sent the subscriber (topic_alias_out = "first"): its own aliases 1 and 2 in
    # order of first use, which MQTT.js resolved back to the topics.
    assert observed["received"] == [
        {"topic": topic, "payload": f"{kind} {n}",
         "wire": {"topic": topic if n == 1 else "", "topic_alias": alias}}
        for topic, kind, alias in [("alias/auto", "auto", 1), ("alias/use", "use", 2)]
        for n in (1, 2, 3)
    ]


@pytest.mark.parametrize("protocol", [V5])
def test_subscription_identifiers(node: str, broker: BrokerProcess, protocol: int) -> None:
    observed = run(node, broker, "subscription-identifier", protocol)
    assert observed["received"] == [
        {"topic": "sid/a/x", "subscription_identifier": 7},
        {"topic": "sid/b/y/z", "subscription_identifier": 300_000},
        {"topic": "sid/c", "subscription_identifier": None},
    ]


@pytest.mark.parametrize("protocol", [V5])
def test_no_local(node: str, broker: BrokerProcess, protocol: int) -> None:
    observed = run(node, broker, "no-local", protocol)
    # Not "mine": its own publish on the No Local subscription.
    assert observed["received"] == [["nolocal/echo", "echo"], ["nolocal/t", "theirs"]]


@pytest.mark.parametrize("protocol", [V5])
def test_retain_as_published(node: str, broker: BrokerProcess, protocol: int) -> None:
    observed = run(node, broker, "retain-as-published", protocol)
    assert observed == {
        "rap": [["stored", True], ["live retained", True], ["live plain", False]],
        "no_rap": [["stored", True], ["live retained", False], ["live plain", False]],
    }


@pytest.mark.parametrize("protocol", [V5])
def test_retain_handling(node: str, broker: BrokerProcess, protocol: int) -> None:
    observed = run(node, broker, "retain-handling", protocol)
    assert observed["received"] == {
        "0": [["stored", True], ["stored", True], ["live", False]],  # on every SUBSCRIBE
        "1": [["stored", True], ["live", False]],                   # only on the new one
        "2": [["live", False]],                                     # never
    }


@pytest.mark.parametrize("protocol", [V5])
def test_shared_subscription(node: str, broker: BrokerProcess, protocol: int) -> None:
    observed = run(node, broker, "shared", protocol)
    # Each message exactly once across the group, alternating (round_robin, the default) ...
    assert observed["members"] == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]
    assert observed["topics"] == ["shared/t"]
    # ... and every one to an ordinary subscriber of the same topic.
    assert observed["plain"] == list(range(10))


@culex_only("Mosquitto closes the connection on a/#/b instead of SUBACK 0x8F")
@pytest.mark.parametrize("protocol", [V5])
def test_reason_codes(node: str, broker: BrokerProcess, protocol: int) -> None:
    observed = run(node, broker, "reason-codes", protocol)
    assert observed == {
        "granted": [1],
        "acks": [
            {"cmd": "puback", "reason_code": 0x10},  # No matching subscribers
            {"cmd": "pubrec", "reason_code": 0x10},
            {"cmd": "pubcomp", "reason_code": 0x00},
            {"cmd": "suback", "granted": [1]},
            {"cmd": "puback", "reason_code": 0x00},
            {"cmd": "suback", "granted": [1, 0x8F]},  # a/#/b: Topic Filter invalid
            {"cmd": "puback", "reason_code": 0x00},
        ],
        "received": [["rc/ok", "q1"], ["rc/valid", "still connected"]],
    }
