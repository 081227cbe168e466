"""Authentication end to end: a password file made by `culex passwd`, real paho (3.1.1 and 3.1),
raw sockets and mosquitto_pub/sub; `allow_anonymous` and the refusal to listen beyond loopback
with nobody checked (the Mosquitto 2 rule).

The helpers here (password files, logging in with credentials, a broker with an `[auth]` table)
are shared by test_acl.py, test_reload.py and test_check_config.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from culex.auth.passwords import MAX_SCRYPT_P, PasswordHash, ScryptParams
from tests.conftest import BrokerFactory, BrokerProcess, free_port
from tests.integration.clients import (
    CONNACK,
    PAHO_PROTOCOLS,
    V31,
    V311,
    Clients,
    ConnectionClosedError,
    PahoClient,
    RawClient,
    Will,
    connect_packet,
    mosquitto_pub,
    publish_packet,
)

# CONNACK return codes (MQTT 3.1.1 table 3.1).
ACCEPTED = 0
BAD_USERNAME_OR_PASSWORD = 0x04
NOT_AUTHORIZED = 0x05

# Passwords with a space and a colon: neither may be cut off anywhere on the way.
PASSWORDS = {"alice": "correct horse:battery", "bob": "b0b's pw"}


# --------------------------------------------------------------------------------------------
# Helpers (also imported by the other security test modules)
# --------------------------------------------------------------------------------------------


def culex(*args: str, stdin: str | None = None, cwd: Path | None = None,
          timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run `python -m culex ARGS` and capture its output."""
    return subprocess.run([sys.executable, "-m", "culex", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd)


def add_user(path: Path, user: str, password: str, *, create: bool = False) -> None:
    """`culex passwd [-c] --password-stdin FILE USER`, which must succeed."""
    args = ["passwd", *(["-c"] if create else []), "--password-stdin", str(path), user]
    result = culex(*args, stdin=password + "\n")
    assert result.returncode == 0, result.stderr


def make_password_file(path: Path, users: dict[str, str]) -> Path:
    """A password file holding `users`, written by the real `culex passwd -c` command.

    One process per user, all at once (each writes its own file; the lines are then joined in
    order): the start-up of Python dominates, and this runs in fixtures that every test waits for.
    """
    parts = [path.with_name(f"{path.name}.{index}") for index in range(len(users))]
    running = [
        (subprocess.Popen([sys.executable, "-m", "culex", "passwd", "-c", "--password-stdin",
                           str(part), user], stdin=subprocess.PIPE, stderr=subprocess.PIPE),
         password)
        for part, (user, password) in zip(parts, users.items(), strict=True)]
    for process, password in running:
        _, stderr = process.communicate((password + "\n").encode(), timeout=20)
        assert process.returncode == 0, stderr
    path.write_bytes(b"".join(part.read_bytes() for part in parts))
    return path


def auth_settings(password_file: Path | None = None, acl_file: Path | None = None,
                  **extra: Any) -> dict[str, Any]:
    """The `[auth]` table for broker_factory."""
    table: dict[str, Any] = dict(extra)
    if password_file is not None:
        table["password_file"] = str(password_file)
    if acl_file is not None:
        table["acl_file"] = str(acl_file)
    return table


def login(clients: Clients, client_id: str, username: str | None = None,
          password: str | None = None, *, protocol: MQTTProtocolVersion = mqtt.MQTTv311,
          will: Will | None = None, expect_rc: int = ACCEPTED) -> PahoClient:
    """A paho client that CONNECTs with these credentials; the CONNACK code is asserted."""
    client = clients.paho(client_id, protocol=protocol, will=will, connect=False)
    if username is not None:
        client.client.username_pw_set(username, password)
    result = client.connect(expect_rc=None)
    assert result.return_code == expect_rc, (
        f"{client_id} as {username!r}: CONNACK {result.return_code:#04x}, "
        f"expected {expect_rc:#04x}")
    return client


def raw_login(clients: Clients, client_id: str, username: str | None = None,
              password: str | None = None, *, protocol: tuple[str, int] = V311,
              will: Will | None = None, clean: bool = True, session_present: bool = False,
              expect_rc: int = ACCEPTED) -> RawClient:
    """A raw connection that CONNECTs with these credentials.

    The CONNACK must be exactly `20 02 00 <expect_rc>`; after a refusal the broker must close the
    connection without sending anything else [MQTT-3.2.2-5].
    """
    client = clients.raw()
    client.send(connect_packet(
        client_id, clean=clean, protocol=protocol, will=will, username=username,
        password=None if password is None else password.encode()))
    reply = client.expect(CONNACK)
    expected = bytes([0x20, 2, int(session_present), expect_rc])
    assert reply.raw == expected, f"{client_id}: CONNACK {reply.raw!r}"
    if expect_rc != ACCEPTED:
        assert client.wait_closed() == [], "broker sent packets after a refusing CONNACK"
    return client


def wrong_password_lines(broker: BrokerProcess, client_id: str) -> list[str]:
    return [line for line in broker.log_text().splitlines()
            if "wrong password" in line and f"client {client_id} " in line]


@pytest.fixture(scope="module")
def password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice and bob (PASSWORDS), made by `culex passwd -c --password-stdin`."""
    return make_password_file(tmp_path_factory.mktemp("auth") / "passwd", PASSWORDS)


# --------------------------------------------------------------------------------------------
# Password file
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PAHO_PROTOCOLS.values(), ids=PAHO_PROTOCOLS)
def test_right_password_connects_and_works(broker_factory: BrokerFactory, password_file: Path,
                                           protocol: MQTTProtocolVersion) -> None:
    broker = broker_factory(auth=auth_settings(password_file, allow_anonymous=False))
    with Clients(broker) as clients:
        alice = login(clients, "alice-1", "alice", PASSWORDS["alice"], protocol=protocol)
        bob = login(clients, "bob-1", "bob", PASSWORDS["bob"], protocol=protocol)
        assert bob.subscribe("auth/t", 1) == [1]
        alice.publish("auth/t", b"hello", qos=1)
        assert bob.get().payload == b"hello"
    assert "wrong password" not in broker.log_text()


@pytest.mark.parametrize("protocol", PAHO_PROTOCOLS.values(), ids=PAHO_PROTOCOLS)
def test_wrong_password_is_refused_with_0x04_and_logged(
        broker_factory: BrokerFactory, password_file: Path,
        protocol: MQTTProtocolVersion) -> None:
    broker = broker_factory(auth=auth_settings(password_file))
    with Clients(broker) as clients:
        login(clients, "wrong-pw", "alice", "Correct horse:battery", protocol=protocol,
              expect_rc=BAD_USERNAME_OR_PASSWORD)
        # The right password with something appended, and no password at all.
        login(clients, "longer-pw", "alice", PASSWORDS["alice"] + "x", protocol=protocol,
              expect_rc=BAD_USERNAME_OR_PASSWORD)
        login(clients, "no-pw", "alice", None, protocol=protocol,
              expect_rc=BAD_USERNAME_OR_PASSWORD)
        # Another user's password.
        login(clients, "bobs-pw", "alice", PASSWORDS["bob"], protocol=protocol,
              expect_rc=BAD_USERNAME_OR_PASSWORD)
    broker.wait_for_log("client bobs-pw ")
    for client_id in ("wrong-pw", "longer-pw", "no-pw", "bobs-pw"):
        lines = wrong_password_lines(broker, client_id)
        assert len(lines) == 1, (client_id, broker.log_text())
        assert "'alice'" in lines[0]
        # Visible at the default log level (info), not only with --log-level debug.
        assert " DEBUG " not in lines[0]
    # The passwords tried are never written to the log.
    assert "orrect horse" not in broker.log_text()
    assert PASSWORDS["bob"] not in broker.log_text()


def test_wrong_password_raw_connack_bytes_and_close(broker_factory: BrokerFactory,
                                                   password_file: Path) -> None:
    broker = broker_factory(auth=auth_settings(password_file))
    with Clients(broker) as clients:
        for protocol in (V311, V31):
            raw_login(clients, "raw-wrong", "alice", "nope", protocol=protocol,
                      expect_rc=BAD_USERNAME_OR_PASSWORD)
        raw_login(clients, "raw-right", "alice", PASSWORDS["alice"])


@pytest.mark.parametrize("protocol", PAHO_PROTOCOLS.values(), ids=PAHO_PROTOCOLS)
def test_unknown_user_is_refused_with_0x04(broker_factory: BrokerFactory, password_file: Path,
                                          protocol: MQTTProtocolVersion) -> None:
    broker = broker_factory(auth=auth_settings(password_file, allow_anonymous=True))
    with Clients(broker) as clients:
        # Even with allow_anonymous: a client that names a user must be that user.
        login(clients, "mallory-1", "mallory", PASSWORDS["alice"], protocol=protocol,
              expect_rc=BAD_USERNAME_OR_PASSWORD)
        login(clients, "mallory-2", "Alice", PASSWORDS["alice"], protocol=protocol,
              expect_rc=BAD_USERNAME_OR_PASSWORD)
    lines = wrong_password_lines(broker, "mallory-1")
    assert len(lines) == 1 and "'mallory'" in lines[0], broker.log_text()


@pytest.mark.parametrize("protocol", PAHO_PROTOCOLS.values(), ids=PAHO_PROTOCOLS)
def test_no_user_name_is_refused_with_0x05_when_anonymous_is_off(
        broker_factory: BrokerFactory, password_file: Path,
        protocol: MQTTProtocolVersion) -> None:
    broker = broker_factory(auth=auth_settings(password_file, allow_anonymous=False))
    with Clients(broker) as clients:
        login(clients, "anon-1", protocol=protocol, expect_rc=NOT_AUTHORIZED)
        raw_login(clients, "anon-raw", expect_rc=NOT_AUTHORIZED)
        login(clients, "alice-1", "alice", PASSWORDS["alice"], protocol=protocol)
    assert "refused with CONNACK 0x05" in broker.log_text()


def test_no_user_name_is_accepted_with_allow_anonymous(broker_factory: BrokerFactory,
                                                      password_file: Path) -> None:
    broker = broker_factory(auth=auth_settings(password_file, allow_anonymous=True))
    with Clients(broker) as clients:
        for protocol in PAHO_PROTOCOLS.values():
            login(clients, f"anon-{protocol}", protocol=protocol)
        raw_login(clients, "anon-raw")
        # ... while a wrong password is still refused.
        login(clients, "wrong", "bob", "not bob's", expect_rc=BAD_USERNAME_OR_PASSWORD)


def test_binary_password_and_utf8_user_name(broker_factory: BrokerFactory,
                                            tmp_path: Path) -> None:
    """An MQTT password is binary data: `--password-stdin` takes the line's bytes as they are,
    and CONNECT must carry exactly those bytes."""
    path = tmp_path / "passwd"
    result = subprocess.run(
        [sys.executable, "-m", "culex", "passwd", "-c", "--password-stdin", str(path), "ålice"],
        input=b"\xff\xfe bin\x00ary\n", capture_output=True, timeout=20, check=False)
    assert result.returncode == 0, result.stderr
    broker = broker_factory(auth=auth_settings(path, allow_anonymous=False))
    with Clients(broker) as clients:
        for password, code in ((b"\xff\xfe bin\x00ary", ACCEPTED),
                               (b"\xff\xfe bin", BAD_USERNAME_OR_PASSWORD),
                               (b"", BAD_USERNAME_OR_PASSWORD)):
            raw = clients.raw()
            raw.send(connect_packet("binary", username="ålice", password=password))
            assert raw.expect(CONNACK).raw == bytes([0x20, 2, 0, code]), password
        raw = clients.raw()
        raw.send(connect_packet("binary", username="alice", password=b"\xff\xfe bin\x00ary"))
        assert raw.expect(CONNACK).raw == bytes([0x20, 2, 0, BAD_USERNAME_OR_PASSWORD])


def test_mosquitto_clients_with_user_and_password(broker_factory: BrokerFactory,
                                                 password_file: Path) -> None:
    broker = broker_factory(auth=auth_settings(password_file, allow_anonymous=False))
    with Clients(broker) as clients:
        sub = clients.mosquitto_sub("-t", "cli/auth", "-q", "1", "-u", "bob",
                                    "-P", PASSWORDS["bob"], "-i", "bob-sub")
        sub.wait_subscribed()
        mosquitto_pub(broker, "-t", "cli/auth", "-m", "from alice", "-q", "1", "-u", "alice",
                      "-P", PASSWORDS["alice"], "-i", "alice-pub")
        assert sub.next_message().payload == b"from alice"

        for version in ("mqttv311", "mqttv31"):
            refused = subprocess.run(
                ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", version,
                 "-t", "cli/auth", "-m", "intruder", "-u", "alice", "-P", "guess", "-i", "guess"],
                capture_output=True, text=True, timeout=5, check=False)
            assert refused.returncode != 0
            assert "bad user name or password" in (refused.stdout + refused.stderr).lower()
            anonymous = subprocess.run(
                ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", version,
                 "-t", "cli/auth", "-m", "anonymous", "-i", "anon"],
                capture_output=True, text=True, timeout=5, check=False)
            assert anonymous.returncode != 0
            assert "not authori" in (anonymous.stdout + anonymous.stderr).lower()
        sub.assert_no_message()


def test_mosquitto_sub_with_wrong_password_is_refused(broker_factory: BrokerFactory,
                                                     password_file: Path) -> None:
    broker = broker_factory(auth=auth_settings(password_file))
    result = subprocess.run(
        ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-t", "cli/#",
         "-u", "bob", "-P", "wrong", "-i", "bad-sub"],
        capture_output=True, text=True, timeout=5, check=False)
    assert result.returncode != 0
    assert "bad user name or password" in (result.stdout + result.stderr).lower()
    broker.wait_for_log("client bad-sub ")
    lines = wrong_password_lines(broker, "bad-sub")
    assert len(lines) == 1 and "'bob'" in lines[0], broker.log_text()


def hash_costing_at_least(password: bytes, seconds: float) -> tuple[PasswordHash, float]:
    """A scrypt hash of `password` whose verification takes at least `seconds` here.

    Raises p (sequential work, same memory) rather than N, so five checks at once stay at 64 MiB
    each whatever the machine's speed.
    """
    parallelism = 1
    while True:
        stored = PasswordHash.create(password, ScryptParams(n=2**16, p=parallelism))
        started = time.monotonic()
        assert stored.matches(password)
        took = time.monotonic() - started
        if took >= seconds or parallelism == MAX_SCRYPT_P:
            return stored, took
        parallelism = min(MAX_SCRYPT_P, parallelism * 2)


def test_password_checks_do_not_block_other_clients(broker_factory: BrokerFactory,
                                                   password_file: Path, tmp_path: Path) -> None:
    """Five clients log in at once while a subscriber keeps receiving a 100 Hz stream.

    The five use a deliberately dearer scrypt cost, scaled on this machine until one check takes
    at least twice the allowed stall: had a check run on the event loop, the stream would stall
    for that long. Scaling by measurement (rather than a fixed cost) keeps the test meaningful on
    a faster CI machine, where a fixed N=2^16 check once took less than the stall limit.
    """
    stall = 0.15  # the stream's usual largest gap is ~0.03 s
    stored, check_time = hash_costing_at_least(b"heavy pw", 2 * stall)
    heavy_file = tmp_path / "heavy-passwd"
    heavy_file.write_text(password_file.read_text()
                          + "".join(f"user{index}:{stored.encode()}\n" for index in range(5)))

    broker = broker_factory(auth=auth_settings(heavy_file, allow_anonymous=False))
    with Clients(broker) as clients:
        subscriber = raw_login(clients, "stream-sub", "alice", PASSWORDS["alice"])
        assert subscriber.subscribe([("stream", 0)]) == [0]
        publisher = raw_login(clients, "stream-pub", "bob", PASSWORDS["bob"])

        arrivals: list[tuple[float, int]] = []
        stop = threading.Event()

        def receive() -> None:
            while not stop.is_set():
                try:
                    packet = subscriber.read_packet(0.1)
                except TimeoutError:
                    continue
                except (ConnectionClosedError, OSError):
                    return
                arrivals.append((time.monotonic(), int(packet.publish().payload)))

        def publish() -> None:
            sequence = 0
            while not stop.is_set():
                publisher.send(publish_packet("stream", str(sequence).encode()))
                sequence += 1
                time.sleep(0.01)

        threads = [threading.Thread(target=receive), threading.Thread(target=publish)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.1)
            logins = [clients.raw() for _ in range(5)]
            started = time.monotonic()
            for index, raw in enumerate(logins):
                raw.send(connect_packet(f"heavy-{index}", username=f"user{index}",
                                        password=b"heavy pw"))
            for raw in logins:
                assert raw.expect(CONNACK).raw == b"\x20\x02\x00\x00"
            finished = time.monotonic()
            time.sleep(0.1)
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)

    window = [at for at, _ in arrivals if started <= at <= finished]
    gaps = [b - a for a, b in zip([started, *window], [*window, finished], strict=True)]
    sequence = [number for _, number in arrivals]
    assert sequence == list(range(sequence[0], sequence[0] + len(sequence))), \
        "the subscriber lost or reordered messages of the stream"
    # One check costs more than the stall limit, so a check run on the loop would have failed
    # the gap assertion below (else this test proves nothing) ...
    assert check_time >= stall, check_time
    # ... and the stream kept flowing all along.
    assert len(window) >= 5, window
    assert max(gaps) < stall, (f"stream stalled {max(gaps):.3f} s while {len(logins)} clients "
                               f"logged in ({finished - started:.3f} s)")


# --------------------------------------------------------------------------------------------
# allow_anonymous defaults
# --------------------------------------------------------------------------------------------


def test_loopback_only_listener_allows_anonymous_by_default(
        broker_factory: BrokerFactory) -> None:
    """allow_anonymous unset, every listener on loopback, no password file: anyone connects."""
    broker = broker_factory()
    with Clients(broker) as clients:
        login(clients, "anon-1")
        raw_login(clients, "anon-raw", protocol=V31)


def test_a_password_file_makes_anonymous_default_to_refused(broker_factory: BrokerFactory,
                                                           password_file: Path) -> None:
    """allow_anonymous unset but a password file configured: passwords are wanted, so a client
    without a user name gets 0x05 (as Mosquitto 2 does), and users are checked."""
    broker = broker_factory(auth=auth_settings(password_file))
    with Clients(broker) as clients:
        login(clients, "anon-1", expect_rc=NOT_AUTHORIZED)
        login(clients, "alice-1", "alice", PASSWORDS["alice"])
        login(clients, "bad", "alice", "bad", expect_rc=BAD_USERNAME_OR_PASSWORD)


def test_allow_anonymous_false_refuses_anonymous_with_0x05(broker_factory: BrokerFactory) -> None:
    """Without a password file nobody can log in then: anonymous clients get 0x05, and so does a
    client that names a user (there is nothing to check its password against)."""
    broker = broker_factory(auth={"allow_anonymous": False})
    with Clients(broker) as clients:
        for protocol in PAHO_PROTOCOLS.values():
            login(clients, f"anon-{protocol}", protocol=protocol, expect_rc=NOT_AUTHORIZED)
        raw_login(clients, "anon-raw", expect_rc=NOT_AUTHORIZED)
        login(clients, "named", "alice", "whatever", expect_rc=NOT_AUTHORIZED)
    assert "refused with CONNACK 0x05" in broker.log_text()


def test_refused_client_publishes_nothing_and_leaves_no_will(broker_factory: BrokerFactory,
                                                            password_file: Path) -> None:
    broker = broker_factory(auth=auth_settings(password_file, allow_anonymous=False))
    with Clients(broker) as clients:
        watcher = login(clients, "watcher", "bob", PASSWORDS["bob"])
        assert watcher.subscribe("#", 1) == [1]
        raw = clients.raw()
        # CONNECT with a will and a PUBLISH right behind it, in one write.
        raw.send(connect_packet("intruder", username="alice", password=b"wrong",
                                will=Will("intruder/will", b"will", 1, retain=True))
                 + publish_packet("intruder/data", b"sneaked in"))
        assert raw.expect(CONNACK).raw == b"\x20\x02\x00\x04"
        assert raw.wait_closed() == []
        watcher.assert_no_message()
        # Nothing was retained either.
        late = login(clients, "late", "bob", PASSWORDS["bob"])
        assert late.subscribe("intruder/#", 1) == [1]
        late.assert_no_message()


# --------------------------------------------------------------------------------------------
# Listening beyond loopback
# --------------------------------------------------------------------------------------------


def test_listener_beyond_loopback_without_auth_refuses_to_start(tmp_path: Path) -> None:
    port = free_port()
    result = culex("serve", "--host", "0.0.0.0", "--port", str(port), cwd=tmp_path, timeout=10)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"0.0.0.0:{port}" in lines[0]
    assert "password_file" in lines[0] and "allow_anonymous" in lines[0]
    # And it did not listen meanwhile.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_listener_beyond_loopback_in_config_without_auth_refuses_to_start(
        tmp_path: Path) -> None:
    config = tmp_path / "culex.toml"
    port = free_port()
    config.write_text(f'[[listeners]]\nhost = "127.0.0.1"\nport = {free_port()}\n'
                      f'[[listeners]]\nhost = "0.0.0.0"\nport = {port}\n'
                      "[auth]\nallow_anonymous = false\n")
    result = culex("serve", "--config", str(config), cwd=tmp_path, timeout=10)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(config) in lines[0] and f"0.0.0.0:{port}" in lines[0]
    assert "password_file" in lines[0] and "allow_anonymous" in lines[0]


def start_on_all_interfaces(tmp_path: Path, auth: dict[str, Any], workers: int
                            ) -> BrokerProcess:
    """A broker bound to 0.0.0.0 on a free port; clients then reach it on 127.0.0.1."""
    broker = BrokerProcess(tmp_path, {"auth": auth, "sys_interval": 1}, workers)
    broker.host = "0.0.0.0"
    broker.start()
    broker.host = "127.0.0.1"
    return broker


def test_listener_beyond_loopback_starts_with_allow_anonymous(tmp_path: Path,
                                                             broker_workers: int) -> None:
    broker = start_on_all_interfaces(tmp_path, {"allow_anonymous": True}, broker_workers)
    try:
        with Clients(broker) as clients:
            sub = login(clients, "anon-sub")
            assert sub.subscribe("open/t", 1) == [1]
            login(clients, "anon-pub", protocol=mqtt.MQTTv31).publish("open/t", b"hi", qos=1)
            assert sub.get().payload == b"hi"
        assert f"listening on 0.0.0.0:{broker.port}" in broker.log_text()
    finally:
        code = broker.stop()
    assert code == 0
    assert "Traceback" not in broker.log_text()


def test_listener_beyond_loopback_with_password_file_refuses_anonymous(
        tmp_path: Path, password_file: Path, broker_workers: int) -> None:
    """allow_anonymous unset and a listener beyond loopback: it defaults to false."""
    broker = start_on_all_interfaces(tmp_path, {"password_file": str(password_file)},
                                     broker_workers)
    try:
        with Clients(broker) as clients:
            login(clients, "anon", expect_rc=NOT_AUTHORIZED)
            raw_login(clients, "anon-raw", protocol=V31, expect_rc=NOT_AUTHORIZED)
            login(clients, "alice-1", "alice", PASSWORDS["alice"])
            clients.mosquitto_sub("-t", "x", "-u", "bob", "-P", PASSWORDS["bob"]).wait_subscribed()
    finally:
        code = broker.stop()
    assert code == 0
    assert "Traceback" not in broker.log_text()
