"""MQTT 5 enhanced authentication end to end: a broker with `[auth] enhanced_methods =
["SCRAM-SHA-256"]` and a password file written by `culex passwd --scram`, raw MQTT 5 sockets
doing the SCRAM-SHA-256 exchange (paho has no enhanced-auth API), re-authentication, refusals,
and `culex check-config` on the new key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from culex.protocol.packets5 import (
    Auth,
    Connack5,
    Connect5,
    Disconnect5,
    Packet5,
    Publish5,
    Suback5,
    Subscribe5,
    Subscription,
)
from culex.protocol.properties import Properties
from culex.protocol.v5 import encode_auth, encode_connect5, encode_publish5, encode_subscribe5
from tests.conftest import AGAINST, BrokerFactory, BrokerProcess, render_config
from tests.integration.clients import Clients, RawClient
from tests.integration.test_auth import auth_settings, culex
from tests.integration.test_mqtt5 import read5
from tests.scram_client import ScramClient

pytestmark = pytest.mark.skipif(AGAINST != "culex", reason="Culex's enhanced authentication")

SCRAM = "SCRAM-SHA-256"
USERS = {"alice": "alice's pw:1", "bob": "b0b"}
ITERATIONS = "4096"  # the minimum: every login below repeats the derivation client-side


def passwd(path: Path, user: str, password: str, *extra: str) -> None:
    result = culex("passwd", *extra, "--password-stdin", str(path), user, stdin=password + "\n")
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice and bob with SCRAM entries, carol with a password hash only."""
    path = tmp_path_factory.mktemp("scram") / "passwd"
    scram = ("--scram", "--scram-iterations", ITERATIONS)
    passwd(path, "alice", USERS["alice"], "-c", *scram)
    passwd(path, "bob", USERS["bob"], *scram)
    passwd(path, "carol", "carol pw")
    return path


@pytest.fixture
def broker(broker_factory: BrokerFactory, password_file: Path) -> BrokerProcess:
    return broker_factory(auth=auth_settings(password_file, enhanced_methods=[SCRAM]))




def auth_props(data: bytes | None, method: str = SCRAM) -> Properties:
    return Properties(authentication_method=method, authentication_data=data)


def server_auth(raw: RawClient, reason: int) -> bytes:
    auth = read5(raw)
    assert isinstance(auth, Auth) and auth.reason_code == reason, auth
    assert auth.properties.authentication_method == SCRAM
    assert auth.properties.authentication_data is not None
    return auth.properties.authentication_data


def scram_connect(clients: Clients, user: str, password: str | None = None,
                  client_id: str = "scram") -> tuple[RawClient, Connack5]:
    """The whole exchange on a new socket; a successful CONNACK's server proof is verified."""
    raw = clients.raw()
    scram = ScramClient(user, USERS.get(user, "x").encode())
    raw.send(encode_connect5(Connect5(client_id, properties=auth_props(scram.first()))))
    server_first = server_auth(raw, 0x18)
    wrong = password.encode() if password is not None else None
    raw.send(encode_auth(0x18, auth_props(scram.final(server_first, password=wrong))))
    connack = read5(raw)
    assert isinstance(connack, Connack5), connack
    if connack.reason_code == 0:
        assert connack.properties.authentication_method == SCRAM
        assert connack.properties.authentication_data is not None
        scram.verify(connack.properties.authentication_data)
    return raw, connack


def reauthenticate(raw: RawClient, user: str, password: str) -> Packet5:
    """AUTH 0x19 ... AUTH 0x18; returns the broker's last answer (AUTH 0x00 or DISCONNECT)."""
    scram = ScramClient(user, password.encode())
    raw.send(encode_auth(0x19, auth_props(scram.first())))
    raw.send(encode_auth(0x18, auth_props(scram.final(server_auth(raw, 0x18)))))
    answer = read5(raw)
    if isinstance(answer, Auth):
        assert answer.reason_code == 0 and answer.properties.authentication_method == SCRAM
        assert answer.properties.authentication_data is not None
        scram.verify(answer.properties.authentication_data)
    return answer


def closed_after(raw: RawClient) -> None:
    assert raw.wait_closed() == []


def test_scram_login_then_messages_flow(clients: Clients, broker: BrokerProcess) -> None:
    raw = scram_login_ok(clients)
    raw.send(encode_subscribe5(Subscribe5(1, [Subscription("alice/#", 0)])))
    assert isinstance(read5(raw), Suback5)
    raw.send(encode_publish5(Publish5("alice/x", b"hello")))
    message = read5(raw)
    assert isinstance(message, Publish5) and message.payload == b"hello"
    broker.wait_for_log("client scram (127.0.0.1:")
    broker.wait_for_log("authenticated as 'alice' with SCRAM-SHA-256")


def scram_login_ok(clients: Clients) -> RawClient:
    raw, connack = scram_connect(clients, "alice")
    assert connack.reason_code == 0, connack
    return raw


@pytest.mark.parametrize(("user", "password"), [
    ("alice", "wrong"),    # wrong password
    ("mallory", None),     # no such user: the same answer, after the same exchange
    ("carol", None),       # a user without a SCRAM entry cannot use SCRAM
])
def test_bad_credentials_connack_0x86(clients: Clients, user: str,
                                      password: str | None) -> None:
    raw, connack = scram_connect(clients, user, password)
    assert connack.reason_code == 0x86
    closed_after(raw)


def test_password_login_still_works_for_a_scram_user(clients: Clients) -> None:
    raw = clients.raw()
    raw.send(encode_connect5(Connect5("pw", username="alice",
                                      password=USERS["alice"].encode())))
    connack = read5(raw)
    assert isinstance(connack, Connack5) and connack.reason_code == 0
    assert connack.properties.authentication_method is None  # [MQTT-4.12.0-6]


def test_unsupported_method_connack_0x8c(clients: Clients) -> None:
    raw = clients.raw()
    raw.send(encode_connect5(Connect5("k", properties=auth_props(b"token", "GS2-KRB5"))))
    connack = read5(raw)
    assert isinstance(connack, Connack5) and connack.reason_code == 0x8C
    closed_after(raw)


def test_scram_not_offered_unless_configured(broker_factory: BrokerFactory,
                                             password_file: Path) -> None:
    with Clients(broker_factory(auth=auth_settings(password_file))) as opened:
        raw = opened.raw()
        scram = ScramClient("alice", USERS["alice"].encode())
        raw.send(encode_connect5(Connect5("s", properties=auth_props(scram.first()))))
        connack = read5(raw)
        assert isinstance(connack, Connack5) and connack.reason_code == 0x8C


def test_publish_during_the_exchange_is_a_protocol_error(clients: Clients) -> None:
    raw = clients.raw()
    scram = ScramClient("alice", USERS["alice"].encode())
    raw.send(encode_connect5(Connect5("early", properties=auth_props(scram.first()))))
    server_auth(raw, 0x18)
    raw.send(encode_publish5(Publish5("t", b"x")))
    connack = read5(raw)
    assert isinstance(connack, Connack5) and connack.reason_code == 0x82
    closed_after(raw)


def test_connect_timeout_during_the_exchange(broker_factory: BrokerFactory,
                                             password_file: Path) -> None:
    broker = broker_factory(auth=auth_settings(password_file, enhanced_methods=[SCRAM]),
                            limits={"connect_timeout": 1})
    with Clients(broker) as opened:
        raw = opened.raw()
        scram = ScramClient("alice", USERS["alice"].encode())
        raw.send(encode_connect5(Connect5("slow", properties=auth_props(scram.first()))))
        server_auth(raw, 0x18)
        closed_after(raw)  # no client-final: closed within the timeout (wait_closed: 5 s)
        broker.wait_for_log("not authenticated within 1 s")


def test_reauthentication_success_and_failure(clients: Clients, broker: BrokerProcess) -> None:
    raw = scram_login_ok(clients)
    assert isinstance(reauthenticate(raw, "alice", USERS["alice"]), Auth)
    assert isinstance(reauthenticate(raw, "alice", USERS["alice"]), Auth)
    answer = reauthenticate(raw, "alice", "not the password")
    assert isinstance(answer, Disconnect5) and answer.reason_code == 0x87
    closed_after(raw)
    broker.wait_for_log("re-authentication failed, DISCONNECT 0x87")


def test_reauthentication_as_another_user_is_refused(clients: Clients) -> None:
    raw = scram_login_ok(clients)
    answer = reauthenticate(raw, "bob", USERS["bob"])
    assert isinstance(answer, Disconnect5) and answer.reason_code == 0x87


def test_reauthentication_with_another_method_is_a_protocol_error(clients: Clients) -> None:
    raw = scram_login_ok(clients)
    raw.send(encode_auth(0x19, auth_props(b"n,,n=alice,r=abc", "SCRAM-SHA-1")))
    answer = read5(raw)
    assert isinstance(answer, Disconnect5) and answer.reason_code == 0x82
    closed_after(raw)


# -- culex check-config ------------------------------------------------------------------------

def check_config(tmp_path: Path, auth: dict[str, object]) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "culex.toml"
    config.write_text(render_config({"auth": auth}))
    return culex("check-config", str(config), cwd=tmp_path, timeout=10)


def test_check_config_counts_scram_users(tmp_path: Path, password_file: Path) -> None:
    result = check_config(tmp_path, auth_settings(password_file, enhanced_methods=[SCRAM]))
    assert result.returncode == 0, result.stderr
    assert "3 user(s), enhanced auth SCRAM-SHA-256 (2 SCRAM user(s))" in result.stdout
    assert result.stderr == ""


def test_check_config_warns_without_scram_entries(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    passwd(plain, "carol", "carol pw", "-c")
    result = check_config(tmp_path, auth_settings(plain, enhanced_methods=[SCRAM]))
    assert result.returncode == 0, result.stderr
    assert "(0 SCRAM user(s))" in result.stdout
    assert "has no SCRAM entries" in result.stderr


@pytest.mark.parametrize(("methods", "problem"), [
    (["SCRAM-SHA-1"], "auth.enhanced_methods: 'SCRAM-SHA-1' is not supported"),
    ([SCRAM, SCRAM], "auth.enhanced_methods: a method is listed twice"),
    (SCRAM, "auth.enhanced_methods: expected an array of strings"),
])
def test_check_config_refuses_bad_methods(tmp_path: Path, password_file: Path,
                                          methods: object, problem: str) -> None:
    result = check_config(tmp_path, auth_settings(password_file, enhanced_methods=methods))
    assert result.returncode == 1
    assert problem in result.stderr, result.stderr


def test_check_config_scram_needs_a_password_file(tmp_path: Path) -> None:
    result = check_config(tmp_path, {"enhanced_methods": [SCRAM]})
    assert result.returncode == 1
    assert "auth.enhanced_methods: SCRAM-SHA-256 needs password_file" in result.stderr
