"""Password files written by mosquitto_passwd: `$6$` (one salted SHA-512) and `$7$` (PBKDF2-
HMAC-SHA512) verify as in Mosquitto, are kept byte for byte on save, count as weak, and
`rehash` replaces them only with the right password. The vectors were written by Debian's
mosquitto_passwd 2.0.11 (-I 1000, -H sha512, and the default)."""

from __future__ import annotations

import pytest

from culex.auth.passwords import (
    MosquittoPbkdf2Params,
    MosquittoSha512Params,
    PasswordFile,
    PasswordFileError,
    PasswordHash,
    ScryptParams,
)

FILE = (
    b"alice:$7$1000$68aPCF2l5jxuUMJ9$mjtrhhLRGMlCmbcHfDGNfEMZSWZkhJtTFNcFg1bvzWE3nbbXL2AOxiv9g"
    b"jb2QIyDio2SSHWnxFFIhT/OFntyjQ==\n"
    b"bob:$6$721zweqGFxlozSmC$g/6YA7Q7XQMRteB8TecsxlXNZOMVpV6iVjnVqDuFqGzq7q3+EwgdjWKKV9kPTQ9YV"
    b"Z9yS5bkCWae9gjy/X8M/w==\n"
    b"carol:$7$101$An1QVsgxNv+3H5hX$YWLPM7Q1/4d9j7FzB/XrnckZy7XU1uFvJYVrah5UWZinJAr2apLvzvcQo96"
    b"V4fquOKXnT3gQzdWvpHpBTRIcoA==\n"
)
PASSWORDS = {"alice": b"secret", "bob": b"pw", "carol": b"p:w d"}


def test_mosquitto_passwd_hashes_verify() -> None:
    passwords = PasswordFile.parse(FILE)
    for user, password in PASSWORDS.items():
        assert passwords.verify(user, password), user
        assert not passwords.verify(user, password + b"x"), user
        assert not passwords.verify(user, password[:-1]), user
    assert not passwords.verify("nobody", b"secret")


def test_parsed_forms_and_save_unchanged() -> None:
    passwords = PasswordFile.parse(FILE)
    assert passwords.dumps() == FILE
    assert PasswordHash.parse(FILE.split(b"\n")[1].decode().split(":", 1)[1]).params == \
        MosquittoSha512Params()
    assert PasswordHash.parse(FILE.split(b"\n")[0].decode().split(":", 1)[1]).params == \
        MosquittoPbkdf2Params(1000)


def test_weak_users() -> None:
    assert PasswordFile.parse(FILE).weak_users() == [
        ("alice", "PBKDF2-SHA512 with 1000 iterations"), ("bob", "one salted SHA-512 ($6$)"),
        ("carol", "PBKDF2-SHA512 with 101 iterations")]


def test_rehash_needs_the_current_password() -> None:
    passwords = PasswordFile.parse(FILE)
    assert not passwords.rehash("bob", b"wrong")
    assert not passwords.rehash("nobody", b"pw")
    assert passwords.dumps() == FILE
    assert passwords.rehash("bob", b"pw", ScryptParams(n=1024))
    assert passwords.verify("bob", b"pw")
    assert [user for user, _ in passwords.weak_users()] == ["alice", "carol"]
    assert "bob:$scrypt$n=1024," in passwords.dumps().decode()


@pytest.mark.parametrize(("line", "problem"), [
    ("u:$6$c2FsdA==$aGFzaA==", "needs a 12-byte salt and a 64-byte hash, not 4 and 4"),
    ("u:$7$0$68aPCF2l5jxuUMJ9$" + "A" * 88, "pbkdf2 iterations=0 out of range"),
    ("u:$7$x$68aPCF2l5jxuUMJ9$" + "A" * 88, "$7$ iterations 'x' is not a decimal number"),
    ("u:$6$68aPCF2l5jxuUMJ9", "is not $6$salt$hash or $7$iterations$salt$hash"),
    ("u:$6$68aPCF2l5jxuUMJ9$not*base64", "hash is not valid base64"),
    ("u:$5$a$b$c", "unknown hash scheme '5'"),
])
def test_bad_mosquitto_entries_name_the_line(line: str, problem: str) -> None:
    with pytest.raises(PasswordFileError) as caught:
        PasswordFile.parse(b"# users\n" + line.encode() + b"\n", "pw")
    assert str(caught.value).startswith("pw:2: user 'u': ")
    assert problem in str(caught.value)
