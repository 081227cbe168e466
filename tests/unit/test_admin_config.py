"""`[admin]`: its defaults, its checks, the exposure rule, `--admin` and the token file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from culex.cli import admin_address, apply_overrides, build_parser
from culex.config import AdminConfig, Config, ConfigError, check_exposure, parse_config
from culex.server.admin.token import read_token


def test_on_by_default_on_loopback() -> None:
    admin = Config().admin
    assert (admin.enabled, admin.host, admin.port, admin.token_file) == \
        (True, "127.0.0.1", 18083, "")
    check_exposure(Config(), "culex.toml")  # loopback without a token is fine


@pytest.mark.parametrize(("table", "message"), [
    ({"port": 70000}, "admin.port: 70000 is not a TCP port"),
    ({"token_file": "/nonexistent/token"}, "admin.token_file: /nonexistent/token: no such file"),
    ({"hots": "x"}, "admin.hots: unknown key"),
    ({"port": "80"}, "admin.port: expected int"),
])
def test_bad_values_are_named(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"admin": table}, "culex.toml")


def test_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    exposed = parse_config({"admin": {"host": "0.0.0.0"}}, "culex.toml")
    with pytest.raises(ConfigError, match=r"culex.toml: admin.host: the admin listener "
                       r"0.0.0.0:18083 is reachable beyond loopback and no admin.token_file"):
        check_exposure(exposed, "culex.toml")
    token = tmp_path / "token"
    token.write_text("x" * 32)
    check_exposure(parse_config({"admin": {"host": "0.0.0.0", "token_file": str(token)}},
                                "culex.toml"), "culex.toml")
    check_exposure(parse_config({"admin": {"host": ""}}, "culex.toml"), "culex.toml")  # off


def test_admin_on_the_command_line() -> None:
    assert admin_address("off") == ("", 0)
    assert admin_address("[::1]:9000") == ("::1", 9000)
    for bad in ("18083", "host:", "host:99999"):
        with pytest.raises(argparse.ArgumentTypeError):
            admin_address(bad)
    args = build_parser().parse_args(["serve", "--admin", "127.0.0.1:0"])
    config = apply_overrides(Config(), args)
    assert (config.admin.host, config.admin.port) == ("127.0.0.1", 0)
    assert not apply_overrides(Config(), build_parser().parse_args(
        ["serve", "--admin", "off"])).admin.enabled


def test_the_token_file(tmp_path: Path) -> None:
    assert read_token(AdminConfig()) is None
    token = tmp_path / "token"
    token.write_text("  0123456789abcdef0123  \nignored\n")
    assert read_token(AdminConfig(token_file=str(token))) == "0123456789abcdef0123"
    token.write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        read_token(AdminConfig(token_file=str(token)))
    token.write_text("")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        read_token(AdminConfig(token_file=str(token)))
