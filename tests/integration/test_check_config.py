"""`culex check-config FILE`: validates a configuration and the password and ACL files it names
without starting anything; exit 0 and "OK", or exit 1 and one line naming the file and line."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import free_port, render_config
from tests.integration.dynsec_tools import dynsec_init
from tests.integration.test_auth import PASSWORDS, culex, make_password_file

GOOD_ACL = """\
# comment
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret
pattern readwrite devices/%c/#
pattern read users/%u/#
"""


@pytest.fixture(scope="module")
def password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_password_file(tmp_path_factory.mktemp("check") / "passwd", PASSWORDS)


def write_config(tmp_path: Path, **settings: object) -> Path:
    path = tmp_path / "culex.toml"
    path.write_text(render_config(settings))
    return path


def check(config: Path) -> subprocess.CompletedProcess[str]:
    # cwd elsewhere: relative paths in the config must not accidentally resolve.
    return culex("check-config", str(config), cwd=config.parent, timeout=10)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert "OK" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_good_config_with_password_and_acl_files(tmp_path: Path, password_file: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text(GOOD_ACL)
    port = free_port()
    config = write_config(
        tmp_path, listeners=[{"host": "0.0.0.0", "port": port}],
        auth={"password_file": str(password_file), "acl_file": str(acl)})
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"{config}: OK")
    assert "2 user(s)" in result.stdout and "ACL on" in result.stdout
    # Nothing was started: nothing listens on the port, no database was created.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert not (tmp_path / "data").exists()


def test_good_config_without_auth_on_loopback(tmp_path: Path) -> None:
    config = write_config(tmp_path, sys_interval=5)
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{config}: OK")
    assert "0 user(s)" in result.stdout and "ACL off" in result.stdout


MALFORMED_ACLS = {
    "misspelt access": ("user alice\ntopic reed alice/#\n", 2),
    "access without filter": ("\n\n\ntopic read\n", 4),
    "unknown keyword": ("# fine\nuser alice\ntopic read a/#\npermit all\n", 4),
    "invalid filter": ("user alice\ntopic read a/#/b\n", 2),
    "invalid pattern": ("pattern readwrite devices/%c/#/x\n", 1),
    "user without name": ("topic read a\nuser\n", 2),
}


@pytest.mark.parametrize("acl_text, line", MALFORMED_ACLS.values(), ids=MALFORMED_ACLS)
def test_malformed_acl_line(tmp_path: Path, password_file: Path, acl_text: str,
                            line: int) -> None:
    acl = tmp_path / "acl"
    acl.write_text(acl_text)
    config = write_config(tmp_path, auth={"password_file": str(password_file),
                                          "acl_file": str(acl)})
    error = one_line_error(check(config))
    assert f"{acl}:{line}:" in error


# (what to append to a good two-user file, or how to replace it; the line at fault)
MALFORMED_PASSWORD_FILES = {
    "no hash": (lambda good: good + "carol\n", 3),
    "empty hash": (lambda good: good + "carol:\n", 3),
    "empty user": (lambda good: good + ":" + good.splitlines()[0].split(":", 1)[1] + "\n", 3),
    "unknown scheme": (
        lambda good: good + "carol:$md5$1$c2FsdHNhbHQ=$a2V5a2V5a2V5a2V5a2V5a2V5\n", 3),
    "bad base64": (lambda good: "# users\n" + good.splitlines()[0][:-4] + "!!!!\n", 2),
    "huge scrypt cost": (
        lambda good: good.replace("n=16384", "n=16777216", 1), 1),
    "user twice": (lambda good: good + good.splitlines()[0] + "\n", 3),
}


@pytest.mark.parametrize("make, line", MALFORMED_PASSWORD_FILES.values(),
                         ids=MALFORMED_PASSWORD_FILES)
def test_malformed_password_file_line(tmp_path: Path, password_file: Path,
                                      make: Callable[[str], str], line: int) -> None:
    broken = tmp_path / "passwd"
    broken.write_text(make(password_file.read_text()))
    config = write_config(tmp_path, auth={"password_file": str(broken)})
    error = one_line_error(check(config))
    assert f"{broken}:{line}:" in error, error


def test_missing_acl_file(tmp_path: Path, password_file: Path) -> None:
    missing = tmp_path / "no-such-acl"
    config = write_config(tmp_path, auth={"password_file": str(password_file),
                                          "acl_file": str(missing)})
    error = one_line_error(check(config))
    assert str(config) in error and "auth.acl_file" in error and str(missing) in error


def test_missing_password_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-passwd"
    config = write_config(tmp_path, auth={"password_file": str(missing)})
    error = one_line_error(check(config))
    assert str(config) in error and "auth.password_file" in error and str(missing) in error


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_listener_beyond_loopback_without_auth(tmp_path: Path, host: str) -> None:
    port = free_port()
    config = write_config(tmp_path, listeners=[{"host": "127.0.0.1", "port": free_port()},
                                               {"host": host, "port": port}])
    error = one_line_error(check(config))
    assert str(config) in error and f"{host}:{port}" in error
    assert "password_file" in error and "allow_anonymous" in error


def test_listener_beyond_loopback_with_anonymous_or_passwords_is_ok(
        tmp_path: Path, password_file: Path) -> None:
    listeners = [{"host": "0.0.0.0", "port": free_port()}]
    for auth in ({"allow_anonymous": True}, {"password_file": str(password_file)}):
        config = write_config(tmp_path, listeners=listeners, auth=auth)
        result = check(config)
        assert result.returncode == 0, result.stderr
        assert "OK" in result.stdout


def test_dynamic_security_file_checked(tmp_path: Path) -> None:
    path = dynsec_init(tmp_path / "dynsec.json")
    config = write_config(tmp_path, listeners=[{"host": "0.0.0.0", "port": free_port()}],
                          auth={"dynamic_security": str(path)})
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"{config}: OK (1 listener(s), dynamic security: 1 "
                                      "client(s), 0 group(s), 1 role(s), durability sync)")
    path.write_text('{"clients": [{"username": "a", "roles": [{"rolename": "r"}]}]}')
    assert one_line_error(check(config)) == (
        f"culex: {path}: clients[0] (a): roles[0]: rolename 'r' does not exist")
