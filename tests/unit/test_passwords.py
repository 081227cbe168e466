"""The password file: both hash schemes, the file format, malformed lines, atomic 0600 save."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from culex.auth.passwords import (
    PasswordFile,
    PasswordFileError,
    PasswordHash,
    Pbkdf2Params,
    ScryptParams,
)

# Cheap parameters keep the format tests fast; the default costs get their own tests.
FAST_SCRYPT = ScryptParams(n=1024, r=8, p=1)
FAST_PBKDF2 = Pbkdf2Params(iterations=1000)
B64 = r"[A-Za-z0-9+/]+={0,2}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def scrypt_line(user: str, password: bytes, salt: bytes = b"0123456789abcdef") -> str:
    """A hash computed here, independently of the module: the file format is the contract."""
    key = hashlib.scrypt(password, salt=salt, n=1024, r=8, p=1, dklen=32)
    return f"{user}:$scrypt$n=1024,r=8,p=1${b64(salt)}${b64(key)}"


def pbkdf2_line(user: str, password: bytes, salt: bytes = b"0123456789abcdef") -> str:
    key = hashlib.pbkdf2_hmac("sha512", password, salt, 1000, 64)
    return f"{user}:$pbkdf2-sha512$1000${b64(salt)}${b64(key)}"


def test_default_scheme_is_scrypt_with_the_documented_format() -> None:
    pw = PasswordFile()
    pw.set("alice", b"s3cret")
    line = pw.dumps().decode()
    match = re.fullmatch(rf"alice:\$scrypt\$n=16384,r=8,p=1\$({B64})\$({B64})\n", line)
    assert match, line
    assert len(base64.b64decode(match[1])) == 16
    assert len(base64.b64decode(match[2])) == 32
    assert pw.verify("alice", b"s3cret")
    assert not pw.verify("alice", b"s3cret ")
    assert not pw.verify("alice", b"")


def test_pbkdf2_default_format_and_verification() -> None:
    pw = PasswordFile()
    pw.set("bob", b"hunter2", Pbkdf2Params())
    line = pw.dumps().decode()
    assert re.fullmatch(rf"bob:\$pbkdf2-sha512\$210000\${B64}\${B64}\n", line), line
    reloaded = PasswordFile.parse(pw.dumps())
    assert reloaded.verify("bob", b"hunter2")
    assert not reloaded.verify("bob", b"hunter3")


@pytest.mark.parametrize("make_line", [scrypt_line, pbkdf2_line])
def test_a_hash_computed_elsewhere_verifies(make_line: Callable[[str, bytes], str]) -> None:
    pw = PasswordFile.parse(make_line("carol", b"pa:ss word").encode())
    assert pw.verify("carol", b"pa:ss word")
    assert not pw.verify("carol", b"pa:ss wore")
    assert not pw.verify("Carol", b"pa:ss word")


def test_binary_passwords_are_hashed_as_bytes() -> None:
    # MQTT passwords are binary data, not text.
    pw = PasswordFile()
    pw.set("dev", b"\xff\x00\xfe", FAST_SCRYPT)
    assert pw.verify("dev", b"\xff\x00\xfe")
    assert not pw.verify("dev", b"\xff\x00")


def test_unknown_user_fails_with_and_without_users() -> None:
    assert not PasswordFile().verify("nobody", b"")
    pw = PasswordFile.parse(scrypt_line("alice", b"pw").encode())
    assert not pw.verify("nobody", b"pw")


def test_each_set_draws_a_fresh_salt() -> None:
    pw = PasswordFile()
    pw.set("a", b"same", FAST_SCRYPT)
    pw.set("b", b"same", FAST_SCRYPT)
    a, b = (line.split("$")[3] for line in pw.dumps().decode().splitlines())
    assert a != b


def test_round_trip_keeps_comments_order_and_updates_in_place() -> None:
    text = "\n".join([
        "# managed by ops",
        scrypt_line("alice", b"a"),
        "",
        "  # indented comment",
        pbkdf2_line("bob", b"b"),
    ]) + "\n"
    pw = PasswordFile.parse(text.encode())
    assert pw.users() == ["alice", "bob"]
    pw.set("alice", b"new", FAST_PBKDF2)
    pw.set("zed", b"z", FAST_SCRYPT)
    lines = pw.dumps().decode().splitlines()
    assert lines[0] == "# managed by ops"
    assert lines[1].startswith("alice:$pbkdf2-sha512$1000$")
    assert lines[2:4] == ["", "  # indented comment"]
    assert lines[4] == pbkdf2_line("bob", b"b")
    assert lines[5].startswith("zed:$scrypt$")
    reloaded = PasswordFile.parse(pw.dumps())
    assert reloaded.verify("alice", b"new") and not reloaded.verify("alice", b"a")
    assert reloaded.verify("bob", b"b") and reloaded.verify("zed", b"z")


def test_delete() -> None:
    pw = PasswordFile.parse((scrypt_line("a", b"1") + "\n" + scrypt_line("b", b"2")).encode())
    assert pw.delete("a")
    assert not pw.delete("a")
    assert "a" not in pw and len(pw) == 1
    assert not pw.verify("a", b"1")
    assert pw.dumps().decode() == scrypt_line("b", b"2") + "\n"


@pytest.mark.parametrize("name", ["jörg", "John Smith", "a#b", "x\u2028y", "x\x1cy", "x\ry",
                                  " padded ", "$user", "用户"])
def test_any_utf8_user_name_round_trips(tmp_path: Path, name: str) -> None:
    # \u2028 and \x1c are line breaks to str.splitlines(); the file must split on \n only.
    pw = PasswordFile()
    pw.set(name, b"pw", FAST_SCRYPT)
    pw.set("other", b"pw2", FAST_SCRYPT)
    pw.save(tmp_path / "pw")
    reloaded = PasswordFile.load(tmp_path / "pw")
    assert reloaded.users() == [name, "other"]
    assert reloaded.verify(name, b"pw")


@pytest.mark.parametrize("name", ["", "a:b", "a\nb", "#x", "  #x"])
def test_names_that_cannot_round_trip_are_refused(name: str) -> None:
    pw = PasswordFile()
    with pytest.raises(ValueError):
        pw.set(name, b"pw", FAST_SCRYPT)
    assert len(pw) == 0


def test_crlf_file_parses() -> None:
    text = scrypt_line("a", b"1") + "\r\n# c\r\n" + scrypt_line("b", b"2") + "\r\n"
    pw = PasswordFile.parse(text.encode())
    assert pw.verify("a", b"1") and pw.verify("b", b"2")


GOOD = scrypt_line("good", b"pw")
SALT = b64(b"0123456789abcdef")
KEY = b64(bytes(32))

MALFORMED = [
    ("no colon at all", "expected user:hash"),
    (":" + GOOD.split(":", 1)[1], "empty user name"),
    ("u:", "not of the form"),
    ("u:scrypt$n=1024,r=8,p=1$x$y", "not of the form"),
    (f"u:$md5${SALT}${KEY}", "not of the form"),
    (f"u:$md5$1${SALT}${KEY}", "unknown hash scheme 'md5'"),
    (f"u:$scrypt$n=1000,r=8,p=1${SALT}${KEY}", "not a power of two"),
    (f"u:$scrypt$n=1024,r=8${SALT}${KEY}", "not n=..,r=..,p=.."),
    (f"u:$scrypt$n=1024,r=8,p=1,x=2${SALT}${KEY}", "not n=..,r=..,p=.."),
    (f"u:$scrypt$n=1024,n=8,p=1${SALT}${KEY}", "not n=..,r=..,p=.."),
    (f"u:$scrypt$n=1048576,r=8,p=1${SALT}${KEY}", "MiB per verification"),
    (f"u:$scrypt$n=1024,r=0,p=1${SALT}${KEY}", "out of range"),
    (f"u:$pbkdf2-sha512$0${SALT}${KEY}", "out of range"),
    (f"u:$pbkdf2-sha512$2100000000${SALT}${KEY}", "out of range"),
    (f"u:$pbkdf2-sha512$+1000${SALT}${KEY}", "not a decimal number"),
    (f"u:$pbkdf2-sha512$1000$not*base64${KEY}", "salt is not valid base64"),
    (f"u:$pbkdf2-sha512$1000${SALT}$@@@@", "hash is not valid base64"),
    (f"u:$pbkdf2-sha512$1000${b64(b'short')}${KEY}", "salt is 5 bytes"),
    (f"u:$pbkdf2-sha512$1000${SALT}${b64(bytes(8))}", "hash is 8 bytes"),
    (GOOD, "user 'good' appears twice"),
]


@pytest.mark.parametrize(("bad", "problem"), MALFORMED)
def test_malformed_line_names_file_and_line(tmp_path: Path, bad: str, problem: str) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"# header\n{GOOD}\n\n{bad}\n" + scrypt_line("after", b"x") + "\n")
    with pytest.raises(PasswordFileError) as info:
        PasswordFile.load(path)
    assert info.value.line == 4
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}:4: ")
    assert problem in str(info.value)


def test_invalid_utf8_names_the_line() -> None:
    data = GOOD.encode() + b"\n\xff\xfeuser:" + GOOD.split(":", 1)[1].encode() + b"\n"
    with pytest.raises(PasswordFileError, match=r"^pw:2: not valid UTF-8$"):
        PasswordFile.parse(data, "pw")


def test_missing_file_is_a_password_file_error(tmp_path: Path) -> None:
    with pytest.raises(PasswordFileError) as info:
        PasswordFile.load(tmp_path / "absent")
    assert info.value.line == 0
    assert str(tmp_path / "absent") in str(info.value)


def test_create_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="power of two"):
        PasswordHash.create(b"pw", ScryptParams(n=1000))
    with pytest.raises(ValueError, match="out of range"):
        PasswordHash.create(b"pw", Pbkdf2Params(iterations=0))


def test_parse_and_encode_are_inverse() -> None:
    text = scrypt_line("u", b"pw").split(":", 1)[1]
    assert PasswordHash.parse(text).encode() == text
    text = pbkdf2_line("u", b"pw").split(":", 1)[1]
    assert PasswordHash.parse(text).encode() == text


def test_save_is_0600_even_over_a_world_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("old\n")
    path.chmod(0o644)
    old_umask = os.umask(0)
    try:
        pw = PasswordFile()
        pw.set("a", b"pw", FAST_SCRYPT)
        pw.save(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PasswordFile.load(path).verify("a", b"pw")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwd"]  # no temp file left


def test_save_writes_a_synced_temp_file_then_renames(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "passwd"
    path.write_text(GOOD + "\n")
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(src: str, dst: os.PathLike[str]) -> None:
        assert Path(src).parent == tmp_path, "temp file must be in the same directory"
        assert stat.S_IMODE(os.stat(src).st_mode) == 0o600
        assert PasswordFile.load(src).verify("b", b"new")  # complete before the rename
        assert path.read_text() == GOOD + "\n"  # target untouched until the rename
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    pw = PasswordFile.load(path)
    pw.set("b", b"new", FAST_SCRYPT)
    pw.save(path)
    assert events[:2] == ["fsync", "replace"]
    assert events[2:] == ["fsync"]  # the directory, so the rename survives a crash
    assert PasswordFile.load(path).users() == ["good", "b"]


def test_failed_save_leaves_the_old_file_and_no_temp(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "passwd"
    path.write_text(GOOD + "\n")

    def replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)
    pw = PasswordFile()
    pw.set("other", b"x", FAST_SCRYPT)
    with pytest.raises(OSError, match="No space"):
        pw.save(path)
    assert path.read_text() == GOOD + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwd"]


def median_time(pw: PasswordFile, user: str, password: bytes, rounds: int = 5) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        pw.verify(user, password)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


@pytest.mark.parametrize("params", [ScryptParams(), Pbkdf2Params()], ids=["scrypt", "pbkdf2"])
def test_unknown_user_costs_about_what_a_known_user_costs(params: ScryptParams | Pbkdf2Params,
                                                         ) -> None:
    # The dummy derivation must use the file's parameters: an unknown user answered in
    # microseconds would tell an attacker which user names exist.
    pw = PasswordFile()
    pw.set("alice", b"right", params)
    known = median_time(pw, "alice", b"wrong")
    unknown = median_time(pw, "mallory", b"wrong")
    ratio = unknown / known
    print(f"known {known * 1000:.1f} ms, unknown {unknown * 1000:.1f} ms, ratio {ratio:.2f}")
    assert known > 0.005, "default cost should make verification deliberately slow"
    assert 0.1 < ratio < 10
