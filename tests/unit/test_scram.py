"""SCRAM-SHA-256: RFC 7677's published exchange byte for byte, the credential entry of the
password file, and every way a client message can be wrong."""

from __future__ import annotations

import base64

import pytest

from culex.auth.passwords import PasswordFile, PasswordFileError, ScramCredential, saslprep
from culex.auth.scram import AuthFailed, FakeCredentials, ScramServer
from tests.scram_client import ScramClient

# RFC 7677 §3: user "user", password "pencil", 4096 iterations.
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
RFC_CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

FAST = 4096  # the RFC's count, and the minimum the file accepts: keeps these tests quick


def rfc_credentials() -> dict[str, ScramCredential]:
    return {"user": ScramCredential.create(b"pencil", 4096, RFC_SALT)}


def rfc_server(users: dict[str, ScramCredential] | None = None) -> ScramServer:
    table = rfc_credentials() if users is None else users
    return ScramServer(table.get, FakeCredentials(4096), server_nonce=RFC_SERVER_NONCE)


def test_rfc_7677_exchange_byte_for_byte() -> None:
    server = rfc_server()
    assert server.step(RFC_CLIENT_FIRST) == (RFC_SERVER_FIRST, False)
    assert server.username == "user"
    assert server.step(RFC_CLIENT_FINAL) == (RFC_SERVER_FINAL, True)


def test_the_test_client_reproduces_the_rfc_messages() -> None:
    # The client used by the core and end-to-end tests is checked against the RFC as well.
    client = ScramClient("user", b"pencil", nonce=RFC_CLIENT_NONCE)
    assert client.first() == RFC_CLIENT_FIRST
    assert client.final(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    client.verify(RFC_SERVER_FINAL)
    with pytest.raises(AssertionError):
        client.verify(b"v=" + base64.b64encode(bytes(32)))


def test_wrong_password_fails_as_bad_credentials() -> None:
    server = rfc_server()
    client = ScramClient("user", b"pencil")
    server_first, _ = server.step(client.first())
    with pytest.raises(AuthFailed) as info:
        server.step(client.final(server_first, password=b"pencil!"))
    assert info.value.credentials


def test_unknown_user_looks_like_a_known_one_until_the_proof() -> None:
    fake = FakeCredentials(4096)
    users = rfc_credentials()
    first_replies = []
    for _attempt in range(2):
        server = ScramServer(users.get, fake)
        client = ScramClient("mallory", b"pencil")
        server_first, done = server.step(client.first())
        assert not done
        first_replies.append(dict(f.split("=", 1) for f in server_first.decode().split(",")))
        with pytest.raises(AuthFailed) as info:
            server.step(client.final(server_first))
        assert info.value.credentials
    # Same salt on every attempt and the iteration count real users have: nothing to compare.
    assert first_replies[0]["s"] == first_replies[1]["s"]
    assert len(base64.b64decode(first_replies[0]["s"])) == 16
    assert first_replies[0]["i"] == "4096"
    # Another process (another secret) gives another salt, and a real user's salt is theirs.
    assert ScramServer(users.get, FakeCredentials(4096)).step(
        ScramClient("mallory", b"x").first())[0] != ScramServer(users.get, fake).step(
        ScramClient("mallory", b"x").first())[0]


def test_escaped_user_names() -> None:
    users = {"a,b=c": ScramCredential.create(b"pw", FAST)}
    server = ScramServer(users.get, FakeCredentials(FAST))
    client = ScramClient("a,b=c", b"pw")
    assert b"n=a=2Cb=3Dc," in client.first()
    server_first, _ = server.step(client.first())
    assert server.username == "a,b=c"
    server_final, done = server.step(client.final(server_first))
    assert done
    client.verify(server_final)


@pytest.mark.parametrize(("message", "problem"), [
    (None, "not gs2-header"),
    (b"", "not gs2-header"),
    (b"\xff,,n=user,r=abc", "not UTF-8"),
    (b"n,,n=user", "not gs2-header"),
    (b"p=tls-unique,,n=user,r=abc", "channel binding is not supported"),
    (b"x,,n=user,r=abc", "channel-binding flag"),
    (b"n,a=admin,n=user,r=abc", "authorization identity"),
    (b"n,,m=ext,n=user,r=abc", "mandatory extension"),
    (b"n,,r=abc,n=user", "expected attribute n="),
    (b"n,,n=,r=abc", "empty user name"),
    (b"n,,n=us=er,r=abc", "=2C or =3D"),
    (b"n,,n=user,r=", "nonce is empty"),
    (b"n,,n=user,r=a\x7fb", "not printable"),
])
def test_bad_client_first(message: bytes | None, problem: str) -> None:
    with pytest.raises(AuthFailed, match=problem) as info:
        rfc_server().step(message)
    assert not info.value.credentials


@pytest.mark.parametrize(("final", "problem"), [
    (b"c=biws,r=" + RFC_SERVER_FIRST[2:52], "not c=..,r=..,p=.."),
    (b"p=" + RFC_CLIENT_FINAL.rpartition(b",p=")[2], "not c=..,r=..,p=.."),
    (RFC_CLIENT_FINAL.replace(b"c=biws", b"c=eSws"), "does not repeat the GS2 header"),
    (RFC_CLIENT_FINAL.replace(b"c=biws", b"c=bi*s"), "channel binding is not valid base64"),
    (RFC_CLIENT_FINAL.replace(b"c=biws", b"x=biws"), "expected attribute c="),
    (RFC_CLIENT_FINAL.replace(b"$k0,", b"$k1,"), "nonce is not the one"),
    (RFC_CLIENT_FINAL.replace(b",p=dHzb", b",p=dHz"), "proof is not valid base64"),
    (RFC_CLIENT_FINAL.rpartition(b",p=")[0] + b",p=" + base64.b64encode(bytes(16)),
     "proof is 16 bytes"),
])
def test_bad_client_final(final: bytes, problem: str) -> None:
    server = rfc_server()
    server.step(RFC_CLIENT_FIRST)
    with pytest.raises(AuthFailed, match=problem) as info:
        server.step(final)
    assert not info.value.credentials


def test_the_exchange_ends_after_server_final() -> None:
    server = rfc_server()
    server.step(RFC_CLIENT_FIRST)
    server.step(RFC_CLIENT_FINAL)
    with pytest.raises(AuthFailed, match="already complete"):
        server.step(RFC_CLIENT_FINAL)


# -- the SCRAM field of the password file ------------------------------------------------------

def test_scram_entry_round_trips_and_is_documented_format() -> None:
    pw = PasswordFile()
    pw.set("user", b"pencil", scram_iterations=FAST)
    line = pw.dumps().decode()
    user, password_hash, scram = line.rstrip("\n").split(":")
    assert user == "user" and password_hash.startswith("$scrypt$")
    assert scram.startswith("$scram-sha-256$i=4096$")
    again = PasswordFile.parse(line.encode())
    assert again.dumps().decode() == line
    assert again.verify("user", b"pencil")
    assert again.scram("user") == pw.scram("user")
    assert again.scram_users() == ["user"]


def test_rfc_credential_matches_a_hand_written_entry() -> None:
    # StoredKey/ServerKey of RFC 7677's user, as another tool would write them.
    credential = rfc_credentials()["user"]
    text = credential.encode()
    assert text.startswith("$scram-sha-256$i=4096$W22ZaJ0SNY7soEsUEjb6gQ==$")
    assert ScramCredential.parse(text) == credential


def test_changing_a_password_without_scram_drops_the_old_scram_entry() -> None:
    pw = PasswordFile()
    pw.set("user", b"old", scram_iterations=FAST)
    pw.set("user", b"new")
    assert pw.scram("user") is None
    assert ":$scram" not in pw.dumps().decode()
    pw.set("user", b"newer", scram_iterations=FAST)
    assert pw.delete("user")
    assert pw.scram("user") is None and pw.scram_users() == []


def test_failed_set_keeps_the_old_entry() -> None:
    pw = PasswordFile()
    pw.set("user", b"old", scram_iterations=FAST)
    before = pw.dumps()
    with pytest.raises(ValueError, match="out of range"):
        pw.set("user", b"new", scram_iterations=100)
    assert pw.dumps() == before


GOOD_SCRAM = rfc_credentials()["user"].encode()
SALT = base64.b64encode(RFC_SALT).decode()
KEY = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(("scram", "problem"), [
    ("$scram-sha-1$i=4096$" + GOOD_SCRAM.split("$", 3)[3], "not $scram-sha-256$"),
    ("$scram-sha-256$4096$" + GOOD_SCRAM.split("$", 3)[3], "not $scram-sha-256$"),
    ("$scram-sha-256$i=4096$x$y", "not $scram-sha-256$"),
    (f"$scram-sha-256$i=100${SALT}${KEY}${KEY}", "out of range 4096.."),
    (f"$scram-sha-256$i=+4096${SALT}${KEY}${KEY}", "not a decimal number"),
    (f"$scram-sha-256$i=4096$c2hvcnQ=${KEY}${KEY}", "salt is 5 bytes"),
    (f"$scram-sha-256$i=4096${SALT}$***${KEY}", "StoredKey is not valid base64"),
    (f"$scram-sha-256$i=4096${SALT}${KEY}${base64.b64encode(bytes(20)).decode()}",
     "must be 32 bytes"),
])
def test_malformed_scram_entry_names_the_line(scram: str, problem: str) -> None:
    good = PasswordFile()
    good.set("u", b"x", scram_iterations=FAST)
    password_hash = good.dumps().decode().split(":")[1]
    with pytest.raises(PasswordFileError) as info:
        PasswordFile.parse(f"# c\nu:{password_hash}:{scram}\n".encode(), "pw")
    assert info.value.line == 2
    assert problem in str(info.value)


# RFC 4013 §3's examples: input -> output, or None where SASLprep must refuse.
SASLPREP_EXAMPLES = [
    ("I\u00adX", "IX"),  # SOFT HYPHEN mapped to nothing
    ("user", "user"),
    ("USER", "USER"),  # case is kept
    ("\u00aa", "a"),  # FEMININE ORDINAL INDICATOR: NFKC
    ("\u2168", "IX"),  # ROMAN NUMERAL NINE: NFKC
    ("a\u00a0b", "a b"),  # NO-BREAK SPACE mapped to SPACE
    ("\u0007", None),  # a control character is prohibited
    ("\u0627\u0031", None),  # bidi: starts right-to-left, ends with a digit
]


@pytest.mark.parametrize(("text", "prepared"), SASLPREP_EXAMPLES)
def test_saslprep_rfc_4013_examples(text: str, prepared: str | None) -> None:
    if prepared is None:
        with pytest.raises(ValueError, match="SASLprep"):
            saslprep(text)
    else:
        assert saslprep(text) == prepared


def test_scram_keys_come_from_the_saslprepped_password() -> None:
    """A client normalizes the password before deriving its keys (RFC 5802 §2.2); the stored
    keys must be those of the normalized password, or non-ASCII passwords never match."""
    salt = b"0123456789abcdef"
    assert ScramCredential.create("I\u00adX pw".encode(), 4096, salt) \
        == ScramCredential.create(b"IX pw", 4096, salt)
    with pytest.raises(ValueError, match="SASLprep"):
        ScramCredential.create(b"bell\x07", 4096, salt)
