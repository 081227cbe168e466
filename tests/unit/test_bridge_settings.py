"""`[[bridges]]`: Mosquitto's topic semantics (pattern, direction, prefixes), the checks that
name the bridge and the key, and `culex check-config` on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from culex.bridge.settings import BridgeSettingsError, BridgeTopic, parse_bridge, split_address
from culex.cli import main
from culex.config import ConfigError, parse_config
from tests.conftest import render_config


def bridge(**settings: Any) -> dict[str, Any]:
    return {"name": "cloud", "address": "broker.example.com:8883",
            "topics": [{"pattern": "sensors/#"}], **settings}


def test_the_issue_example_reads_as_written() -> None:
    config = parse_config({"bridges": [bridge(
        protocol_version="5", client_id="site-17", keepalive=60, topics=[
            {"pattern": "sensors/#", "direction": "out", "qos": 1, "local_prefix": "",
             "remote_prefix": "site17/"},
            {"pattern": "commands/#", "direction": "in", "qos": 1, "local_prefix": "remote/",
             "remote_prefix": ""}])]}, "culex.toml")
    [settings] = config.bridges
    assert settings.endpoints() == [("broker.example.com", 8883)]
    assert settings.remote_client_id() == "site-17"
    out, incoming = settings.topics
    assert (out.local_filter, out.remote_filter) == ("sensors/#", "site17/sensors/#")
    assert out.to_remote("sensors/kitchen/t") == "site17/sensors/kitchen/t"
    assert (incoming.local_filter, incoming.remote_filter) == ("remote/commands/#", "commands/#")
    assert incoming.to_local("commands/open") == "remote/commands/open"
    assert settings.outgoing_topic("sensors/a") is out
    assert settings.outgoing_topic("commands/a") is None
    assert settings.incoming_topic("commands/a") is incoming
    assert settings.incoming_topic("site17/sensors/a") is None
    assert settings.max_buffered_bytes == 1024 ** 3


def test_defaults_and_mosquitto_forms() -> None:
    settings = parse_bridge(bridge(address=["a", "b:1884", "[::1]:1885", "::1"], tls=True),
                            "f")
    assert settings.endpoints() == [("a", 8883), ("b", 1884), ("::1", 1885), ("::1", 8883)]
    assert settings.remote_client_id().endswith(".cloud")
    [topic] = settings.topics
    assert (topic.direction, topic.qos) == ("out", 1)
    # An empty pattern maps one topic to another, both ways.
    one = BridgeTopic("", "both", 1, "here/state", "there/state")
    assert one.problems() == []
    assert (one.local_filter, one.to_remote("here/state"), one.to_local("there/state")) == (
        "here/state", "there/state", "here/state")
    # Several `out` topics: the first that matches decides, as in Mosquitto.
    first = parse_bridge(bridge(topics=[{"pattern": "a/#", "remote_prefix": "x/"},
                                        {"pattern": "a/b", "remote_prefix": "y/"}]), "f")
    assert first.outgoing_topic("a/b") is first.topics[0]


@pytest.mark.parametrize(("settings", "error"), [
    (bridge(name="a b"), "bridges[0].name: 'a b' must be"),
    (bridge(name="x/y"), "bridges[0].name: 'x/y' must be"),
    (bridge(address=[]), "bridges[0].address: at least one"),
    (bridge(address="host:0"), "bridges[0].address: 'host:0': '0' is not a TCP port"),
    (bridge(address=3), "bridges[0].address: expected"),
    (bridge(protocol_version="3.1"), "bridges[0].protocol_version: '3.1' is not one of"),
    (bridge(keepalive=True), "bridges[0].keepalive: expected int, got bool"),
    (bridge(colour="red"), "bridges[0].colour: unknown key"),
    (bridge(topics=[]), "bridges[0].topics: at least one topic"),
    (bridge(topics="s/#"), "bridges[0].topics: expected an array of tables"),
    (bridge(topics=[{"direction": "in"}]), "bridges[0].topics[0].pattern: required"),
    (bridge(topics=[{"pattern": "s/#", "direction": "sideways"}]),
     "bridges[0].topics[0].direction: 'sideways' is not one of out, in, both"),
    (bridge(topics=[{"pattern": "s/#", "qos": 3}]), "bridges[0].topics[0].qos: 3 is not"),
    (bridge(topics=[{"pattern": "s/#", "remote_prefix": "a/+/"}]),
     "bridges[0].topics[0].remote_prefix: 'a/+/' may not hold wildcards"),
    (bridge(topics=[{"pattern": "#", "local_prefix": "a"}]),
     "bridges[0].topics[0].pattern: the local filter 'a#' is invalid"),
    (bridge(topics=[{"pattern": "", "local_prefix": "a"}]),
     "bridges[0].topics[0].pattern: empty, which needs both"),
    (bridge(password_file="/nonexistent/pw"),
     "bridges[0].password_file: /nonexistent/pw: no such file"),
    (bridge(keyfile="/nonexistent/key"), "bridges[0].keyfile: set without certfile"),
    (bridge(max_buffered_bytes=0), "bridges[0].max_buffered_bytes: must be positive"),
    (bridge(reconnect_delay=5.0, reconnect_delay_max=1.0),
     "bridges[0].reconnect_delay: must be positive and at most reconnect_delay_max"),
])
def test_every_problem_names_the_bridge_and_the_key(settings: dict[str, Any],
                                                    error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"bridges": [settings]}, "culex.toml")
    assert str(raised.value).startswith(f"culex.toml: {error}"), raised.value


def test_names_are_unique() -> None:
    with pytest.raises(ConfigError, match=r"bridges\[1\]\.name: 'cloud' is used by another"):
        parse_config({"bridges": [bridge(), bridge()]}, "culex.toml")


def test_addresses() -> None:
    assert split_address("h", 1883) == ("h", 1883)
    for bad in ("", ":1883", "[::1", "[::1]x", "h:port"):
        with pytest.raises(ValueError):
            split_address(bad, 1883)
    with pytest.raises(BridgeSettingsError):
        parse_bridge(bridge(address="a b:1"), "f")


def test_check_config_checks_bridges_and_their_files(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "culex.toml"
    path.write_text(render_config({"bridges": [bridge()]}))
    assert main(["check-config", str(path)]) == 0
    assert "1 bridge(s)" in capsys.readouterr().out
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    path.write_text(render_config({"bridges": [bridge(cafile=str(bad))]}))
    assert main(["check-config", str(path)]) == 1
    assert "bridges 'cloud': cannot load TLS files" in capsys.readouterr().err
