"""culex.toml parsing: every bad value is refused with the file and key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from culex.config import (
    Config,
    ConfigError,
    Listener,
    anonymous_allowed,
    check_exposure,
    load_config,
    parse_config,
)
from culex.core.limits import Limits
from culex.core.options import Mqtt5Options

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_example_is_the_defaults() -> None:
    assert load_config(ROOT / "culex.toml") == Config()


def test_no_file_means_defaults() -> None:
    config = load_config(None)
    assert config.listeners == (Listener("127.0.0.1", 1883),)
    assert config.limits.max_inflight_messages == 20
    assert config.limits.max_queued_messages == 1000
    assert config.limits.connect_timeout == 10.0
    assert config.sys_interval == 10.0


def test_full_config() -> None:
    config = parse_config({
        "sys_interval": 5,
        "listeners": [{"host": "127.0.0.1", "port": 1884}, {"host": "::1", "port": 1885}],
        "limits": {"max_packet_size": 2048, "max_inflight_messages": 5, "connect_timeout": 2},
        "logging": {"level": "debug", "format": "json"},
        "mqtt5": {"topic_alias_out": "none", "response_information": "re/",
                  "server_reference": "b:1883", "server_moved": True},
    }, "x.toml")
    assert config.mqtt5 == Mqtt5Options("none", "re/", "b:1883", True)
    assert config.sys_interval == 5.0
    assert config.listeners[1] == Listener("::1", 1885)
    assert config.limits == Limits(max_packet_size=2048, max_inflight_messages=5,
                                   connect_timeout=2.0)
    assert (config.logging.level, config.logging.format) == ("debug", "json")


@pytest.mark.parametrize(("data", "message"), [
    ({"bogus": 1}, "x.toml: bogus: unknown key"),
    ({"limits": {"max_inflight": 5}}, "x.toml: limits.max_inflight: unknown key"),
    ({"limits": {"max_packet_size": "big"}}, "x.toml: limits.max_packet_size: expected int"),
    ({"limits": {"max_packet_size": True}}, "x.toml: limits.max_packet_size: expected int"),
    ({"limits": {"max_packet_size": 1}}, "max_packet_size must be between"),
    ({"limits": {"max_inflight_messages": 0}}, "max_inflight_messages must be between"),
    ({"limits": {"max_connections": 0}}, "max_connections must be -1"),
    ({"limits": {"connect_timeout": 0}}, "connect_timeout must be positive"),
    ({"limits": {"max_keepalive": 70000}}, "max_keepalive must be between"),
    ({"limits": {"shared_subscription_strategy": "fair"}},
     "shared_subscription_strategy must be one of round_robin, random, sticky, hash"),
    ({"logging": {"level": "loud"}}, "logging.level: 'loud' is not one of"),
    ({"logging": {"format": "xml"}}, "logging.format: 'xml' is not one of"),
    ({"listeners": []}, "listeners: expected one or more"),
    ({"listeners": [{"port": 99999}]}, "listeners[0].port: 99999 is not a TCP port"),
    ({"listeners": [{"port": "1883"}]}, "listeners[0].port: expected int"),
    ({"listeners": [{"max_connections": 0}]}, "listeners[0].max_connections: must be -1"),
    ({"listeners": [{"protocol": "ws"}]}, "listeners[0].protocol: 'ws' is not one of mqtt"),
    ({"listeners": [{"protocol": "websocket", "path": "mqtt"}]},
     "listeners[0].path: 'mqtt' must start with /"),
    ({"listeners": [{"path": "/ws"}]}, "listeners[0].path/allowed_origins: only for protocol"),
    ({"listeners": [{"allowed_origins": ["https://a"]}]}, "path/allowed_origins: only for"),
    ({"listeners": [{"protocol": "websocket", "allowed_origins": "https://a"}]},
     "listeners[0].allowed_origins: expected an array of strings"),
    ({"listeners": [{"proxy_protocol": "yes"}]}, "listeners[0].proxy_protocol: expected bool"),
    ({"listeners": [{"unix": "culex.sock"}]}, "unix: 'culex.sock' must be an absolute path"),
    ({"listeners": [{"unix": "/" + "x" * 107}]}, "unix: longer than 107 bytes"),
    ({"listeners": [{"unix": "/run/c.sock", "mode": "0999"}]}, "mode: '0999' is not an octal"),
    ({"listeners": [{"unix": "/run/c.sock", "mode": "7777"}]}, "mode: '7777' is not an octal"),
    ({"listeners": [{"unix": "/run/c.sock", "mode": ""}]}, "mode: '' is not an octal"),
    ({"listeners": [{"unix": "/run/c.sock", "mode": 660}]}, "listeners[0].mode: expected str"),
    ({"sys_interval": -1}, "sys_interval: must be 0 (off) or positive"),
    ({"limits": 3}, "limits: expected a table"),
    ({"limits": {"max_topic_alias": 65536}}, "max_topic_alias must be between 0 and 65535"),
    ({"mqtt5": {"topic_alias_out": "lru"}}, "mqtt5: topic_alias_out must be one of none, first"),
    ({"mqtt5": {"server_moved": True}}, "mqtt5: server_moved needs server_reference"),
    ({"mqtt5": {"server": "x"}}, "x.toml: mqtt5.server: unknown key"),
])
def test_bad_values_are_named(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "x.toml")
    assert message in str(caught.value)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[limits\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: invalid TOML"):
        load_config(broken)
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        load_config(tmp_path / "nope.toml")


def test_enhanced_methods(tmp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    passwords.write_text("")
    config = parse_config({"auth": {"password_file": str(passwords),
                                    "enhanced_methods": ["SCRAM-SHA-256"]}}, "x.toml")
    assert config.auth.enhanced_methods == ("SCRAM-SHA-256",)
    assert Config().auth.enhanced_methods == ()
    for methods, message in [
            (["PLAIN"], "x.toml: auth.enhanced_methods: 'PLAIN' is not supported"),
            ([1], "x.toml: auth.enhanced_methods: expected an array of strings"),
            ("SCRAM-SHA-256", "x.toml: auth.enhanced_methods: expected an array of strings")]:
        with pytest.raises(ConfigError) as caught:
            parse_config({"auth": {"password_file": str(passwords),
                                   "enhanced_methods": methods}}, "x.toml")
        assert message in str(caught.value)


def test_listener_kinds() -> None:
    config = parse_config({"listeners": [
        {"port": 8083, "protocol": "websocket", "path": "/ws",
         "allowed_origins": ["https://app.example"], "proxy_protocol": True},
        {"unix": "/run/culex/culex.sock", "mode": "0600"},
    ]}, "x.toml")
    websocket, unix = config.listeners
    assert websocket.websocket and websocket.proxy_protocol and websocket.path == "/ws"
    assert websocket.allowed_origins == ("https://app.example",)
    assert websocket.address == "127.0.0.1:8083"
    assert (unix.address, unix.file_mode(), unix.local) == ("unix:/run/culex/culex.sock",
                                                            0o600, True)
    assert Listener().path == "/mqtt" and Listener().mode == "0660"
    assert not Listener().websocket and not Listener().proxy_protocol


def test_a_unix_listener_is_not_exposed() -> None:
    config = parse_config({"listeners": [{"unix": "/run/c.sock", "host": "0.0.0.0"}]}, "x.toml")
    check_exposure(config, "x.toml")  # a Unix socket is reached from this host only
    assert anonymous_allowed(config)
