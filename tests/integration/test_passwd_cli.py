"""`culex passwd` end to end: a real subprocess writes the file, the library reads it back."""

from __future__ import annotations

import os
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

from culex.auth.passwords import PasswordFile


def passwd(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "culex", "passwd", *args], input=stdin,
                            capture_output=True, timeout=30, check=False)
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(), result.stderr.decode())


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("culex passwd: ")
    return lines[0]


def test_create_then_verify(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    result = passwd("-c", "--password-stdin", str(path), "alice", stdin=b"s3cret\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("alice:$scrypt$n=16384,r=8,p=1$")
    users = PasswordFile.load(path)
    assert users.verify("alice", b"s3cret")
    assert not users.verify("alice", b"s3cret\n")
    assert not users.verify("alice", b"wrong")


def test_add_change_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    assert passwd("-c", "--password-stdin", str(path), "alice", stdin=b"a1\n").returncode == 0
    assert passwd("--password-stdin", str(path), "bob", stdin=b"b1\r\n").returncode == 0
    users = PasswordFile.load(path)
    assert users.users() == ["alice", "bob"]
    assert users.verify("alice", b"a1") and users.verify("bob", b"b1")

    assert passwd("--password-stdin", str(path), "alice", stdin=b"a2\n").returncode == 0
    users = PasswordFile.load(path)
    assert users.users() == ["alice", "bob"]
    assert users.verify("alice", b"a2") and not users.verify("alice", b"a1")

    result = passwd("-D", str(path), "alice")
    assert result.returncode == 0, result.stderr
    users = PasswordFile.load(path)
    assert users.users() == ["bob"]
    assert not users.verify("alice", b"a2")


def test_c_overwrites_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    assert passwd("-c", "--password-stdin", str(path), "old", stdin=b"x\n").returncode == 0
    assert passwd("-c", "--password-stdin", str(path), "new", stdin=b"y\n").returncode == 0
    assert PasswordFile.load(path).users() == ["new"]


def test_pbkdf2_scheme(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    result = passwd("-c", "--scheme", "pbkdf2-sha512", "--password-stdin", str(path), "u",
                    stdin=b"pw\n")
    assert result.returncode == 0, result.stderr
    assert path.read_text().startswith("u:$pbkdf2-sha512$210000$")
    assert PasswordFile.load(path).verify("u", b"pw")


def test_non_ascii_user_and_binary_password(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    result = passwd("-c", "--password-stdin", str(path), "jörg smith", stdin=b"\xff\xfe pw\n")
    assert result.returncode == 0, result.stderr
    assert PasswordFile.load(path).verify("jörg smith", b"\xff\xfe pw")


def test_missing_file_without_c(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    line = one_line_error(passwd("--password-stdin", str(path), "u", stdin=b"pw\n"))
    assert str(path) in line and "use -c" in line
    assert not path.exists()


def test_delete_unknown_user(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    assert passwd("-c", "--password-stdin", str(path), "alice", stdin=b"a\n").returncode == 0
    before = path.read_bytes()
    line = one_line_error(passwd("-D", str(path), "mallory"))
    assert "'mallory' not found" in line
    assert path.read_bytes() == before


def test_malformed_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("# users\nalice:$scrypt$garbage\n")
    line = one_line_error(passwd("--password-stdin", str(path), "bob", stdin=b"pw\n"))
    assert f"{path}:2:" in line
    assert path.read_text() == "# users\nalice:$scrypt$garbage\n"


def test_bad_input_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    assert "no password" in one_line_error(
        passwd("-c", "--password-stdin", str(path), "u", stdin=b"\n"))
    assert "no password" in one_line_error(
        passwd("-c", "--password-stdin", str(path), "u", stdin=b""))
    assert "':'" in one_line_error(
        passwd("-c", "--password-stdin", str(path), "a:b", stdin=b"pw\n"))
    assert "cannot be combined" in one_line_error(passwd("-c", "-D", str(path), "u"))
    assert not path.exists()


def test_unwritable_directory(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "passwd"
    line = one_line_error(passwd("-c", "--password-stdin", str(path), "u", stdin=b"pw\n"))
    assert f"cannot write {path}" in line


def run_on_terminal(args: list[str], answers: list[bytes]) -> tuple[int, str]:
    """Run culex passwd on a pseudo-terminal, answering each prompt; return (code, output)."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "culex", "passwd", *args], stdin=slave,
                            stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 30
    pending = list(answers)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
                # Answer each prompt once it is shown: getpass flushes typed-ahead input when
                # it turns echo off, so an answer sent before its prompt would be lost.
                if pending and output.count(b"assword: ") > len(answers) - len(pending):
                    os.write(master, pending.pop(0) + b"\n")
            elif proc.poll() is not None:
                break
        code = proc.wait(10)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, output.decode(errors="replace")


def test_interactive_prompt_twice(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    code, output = run_on_terminal(["-c", str(path), "alice"], [b"typed pw", b"typed pw"])
    assert code == 0, output
    assert "Password:" in output and "Reenter password:" in output
    assert "typed pw" not in output  # echo is off
    assert PasswordFile.load(path).verify("alice", b"typed pw")


def test_interactive_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    code, output = run_on_terminal(["-c", str(path), "alice"], [b"one", b"two"])
    assert code == 1
    assert "passwords do not match" in output and "Traceback" not in output
    assert not path.exists()


def test_scram_entry_with_iterations(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    result = passwd("-c", "--scram", "--scram-iterations", "4096", "--password-stdin",
                    str(path), "user", stdin=b"pencil\n")
    assert result.returncode == 0, result.stderr
    users = PasswordFile.load(path)
    assert users.verify("user", b"pencil")
    credential = users.scram("user")
    assert credential is not None and credential.iterations == 4096
    # Changing the password without --scram drops the SCRAM entry made from the old one.
    assert passwd("--password-stdin", str(path), "user", stdin=b"new\n").returncode == 0
    assert PasswordFile.load(path).scram("user") is None


def test_scram_options_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    assert "--scram-iterations needs --scram" in one_line_error(
        passwd("-c", "--scram-iterations", "5000", "--password-stdin", str(path), "u",
               stdin=b"x\n"))
    assert "SCRAM iterations=10 out of range" in one_line_error(
        passwd("-c", "--scram", "--scram-iterations", "10", "--password-stdin", str(path), "u",
               stdin=b"x\n"))
    assert not path.exists()
