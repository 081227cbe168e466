"""Coming from Mosquitto: the same mosquitto.conf, password file (written by Debian's
mosquitto_passwd) and ACL file start Culex and Debian's Mosquitto (/usr/sbin/mosquitto), and
both behave alike: anonymous clients refused, right passwords accepted and wrong ones refused
in every mosquitto_passwd format, the ACL applied, limits applied. Where the two answer with
different codes, each broker's own code is asserted, so the difference stays visible."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import ROOT, BrokerFactory, BrokerProcess
from tests.integration.clients import (
    CONNACK,
    PUBACK,
    PUBREC,
    Clients,
    PahoClient,
    RawClient,
    Will,
    connect_packet,
    mqtt_str,
    packet,
    publish_packet,
    wait_until,
)
from tests.integration.test_auth import culex

MOSQUITTO = "/usr/sbin/mosquitto"
PROGRAMS = ("culex", "mosquitto")
# mosquitto_passwd's formats: its default ($7$, 101 iterations), -I, and -H sha512 ($6$).
USERS = {"alice": ("alice-pw", []), "bob": ("bob-pw", ["-I", "5000"]),
         "carol": ("carol pw:x", ["-H", "sha512"])}
ACL = """\
user alice
topic readwrite alice/#
user bob
topic read alice/#
topic readwrite bob/#
user carol
topic read bob/#
"""


def mosquitto_passwd(path: Path, user: str, password: str, options: list[str]) -> None:
    """Debian's mosquitto_passwd in batch mode (-b), which must succeed."""
    tool = shutil.which("mosquitto_passwd")
    assert tool is not None, "mosquitto_passwd is missing: `make system-deps` installs mosquitto"
    create = [] if path.exists() else ["-c"]
    subprocess.run([tool, *options, *create, "-b", str(path), user, password], check=True,
                   capture_output=True, timeout=10)


class ConfBroker(BrokerProcess):
    """Culex or Mosquitto on one mosquitto.conf text; `{port}` in it becomes a free port."""

    def __init__(self, tmp: Path, text: str, program: str) -> None:
        super().__init__(tmp, {})
        self.text = text
        self.program = program

    def command(self) -> list[str]:
        self.config_path = self.tmp / "mosquitto.conf"
        self.config_path.write_text(self.text.replace("{port}", str(self.port)))
        if self.program == "mosquitto":
            assert Path(MOSQUITTO).exists(), "no /usr/sbin/mosquitto: `make system-deps`"
            return [MOSQUITTO, "-c", str(self.config_path)]
        # Brokers run side by side here: none takes the admin API's one default port.
        return [sys.executable, "-m", "culex", "serve", "--config", str(self.config_path),
                "--admin", "off"]


Start = Callable[[str, str], ConfBroker]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start `program` on a mosquitto.conf text; each must stop cleanly at the end."""
    started: list[ConfBroker] = []

    def run(program: str, text: str) -> ConfBroker:
        work = tmp_path / f"{program}{len(started)}"
        work.mkdir()
        broker = ConfBroker(work, text, program).start()
        started.append(broker)
        return broker

    yield run
    for broker in started:
        assert broker.stop() == 0, broker.log_text()
        assert "Traceback" not in broker.log_text()


@pytest.fixture(scope="module")
def auth_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("mosquitto-auth")
    passwords = directory / "passwd"
    for user, (password, options) in USERS.items():
        mosquitto_passwd(passwords, user, password, options)
    acl = directory / "acl"
    acl.write_text(ACL)
    return passwords, acl


def auth_conf(passwords: Path, acl: Path) -> str:
    # `user root`: Mosquitto run as root otherwise becomes user mosquitto, who cannot read the
    # test's private directory (Culex accepts the key with a warning: it never changes user).
    return (f"listener {{port}} 127.0.0.1\npassword_file {passwords}\nacl_file {acl}\n"
            "user root\n")


def v3_connack(broker: BrokerProcess, username: str | None = None,
               password: str | None = None) -> bytes:
    """The exact CONNACK a 3.1.1 CONNECT with these credentials gets."""
    raw = RawClient(broker)
    try:
        raw.send(connect_packet(f"c-{uuid.uuid4().hex[:8]}", username=username,
                                password=None if password is None else password.encode()))
        return raw.expect(CONNACK).raw
    finally:
        raw.close()


def v5_login(clients: Clients, username: str | None, password: str | None) -> int:
    """The CONNACK reason code paho's MQTT 5 client gets."""
    client = clients.paho(protocol=mqtt.MQTTv5, connect=False)
    if username is not None:
        client.client.username_pw_set(username, password)
    return client.connect(expect_rc=None).return_code


def logged_in(clients: Clients, username: str) -> PahoClient:
    client = clients.paho(connect=False)
    client.client.username_pw_set(username, USERS[username][0])
    client.connect()
    return client


@pytest.mark.parametrize("program", PROGRAMS)
def test_password_file_from_mosquitto_passwd(start: Start, auth_files: tuple[Path, Path],
                                             program: str) -> None:
    broker = start(program, auth_conf(*auth_files))
    # Refusals: Mosquitto 2.0 says 5 (not authorised) to a 3.1.1 client with a wrong password
    # and 0x87 to an MQTT 5 one; Culex says 4 (bad user name or password) and 0x86.
    wrong_v3, wrong_v5 = (5, 0x87) if program == "mosquitto" else (4, 0x86)
    assert v3_connack(broker) == b"\x20\x02\x00\x05"  # anonymous: allow_anonymous false
    with Clients(broker) as clients:
        for user, (password, _options) in USERS.items():
            assert v3_connack(broker, user, password) == b"\x20\x02\x00\x00", user
            assert v3_connack(broker, user, password + "x") == bytes((0x20, 2, 0, wrong_v3))
            assert v5_login(clients, user, password) == 0, user
            assert v5_login(clients, user, password[:-1]) == wrong_v5, user
        assert v3_connack(broker, "nobody", "alice-pw")[3] == wrong_v3
        assert v5_login(clients, None, None) == 0x87


@pytest.mark.parametrize("program", PROGRAMS)
def test_acl_file_applies(start: Start, auth_files: tuple[Path, Path], program: str) -> None:
    broker = start(program, auth_conf(*auth_files))
    with Clients(broker) as clients:
        alice, bob, carol = (logged_in(clients, user) for user in USERS)
        # A filter the ACL does not let its subscriber read: Culex says so in the SUBACK
        # (0x80); Mosquitto 2.0 grants it and delivers nothing. Either way nothing arrives.
        denied = 0x80 if program == "culex" else 1
        assert bob.subscribe("alice/#", 1) == [1]
        assert carol.subscribe("alice/#", 1) == [denied]
        assert alice.subscribe("bob/#", 1) == [denied]
        assert carol.subscribe("bob/#", 1) == [1]
        bob.publish("alice/from-bob", b"denied", qos=1)  # acknowledged, dropped
        bob.publish("bob/news", b"hello carol", qos=1)
        alice.publish("alice/status", b"hello bob", qos=1)
        message = carol.get()
        assert (message.topic, message.payload) == ("bob/news", b"hello carol")
        message = bob.get()
        assert (message.topic, message.payload) == ("alice/status", b"hello bob")
        for client in (alice, bob, carol):
            client.assert_no_message()


@pytest.mark.parametrize("program", PROGRAMS)
def test_limits_apply(start: Start, program: str) -> None:
    broker = start(program, "listener {port} 127.0.0.1\nallow_anonymous true\n"
                            "max_packet_size 1000\nmax_keepalive 30\n")
    with Clients(broker) as clients:
        # MQTT 5: a longer keep-alive is answered with Server Keep Alive = max_keepalive.
        v5 = clients.paho(protocol=mqtt.MQTTv5, keepalive=60)
        assert v5.connack_properties.ServerKeepAlive == 30
        # MQTT 3.1.1: Culex refuses a longer keep-alive with CONNACK 2, as Mosquitto does
        # since 2.0.12 (CVE-2020-13849); Debian's 2.0.11 still lets it in.
        long_keepalive = clients.paho(keepalive=60, connect=False)
        assert long_keepalive.connect(expect_rc=None).return_code == (
            2 if program == "culex" else 0)
        subscriber = clients.paho(keepalive=30)
        assert subscriber.subscribe("limits/#", 1) == [1]
        publisher = clients.raw("limits-publisher", keepalive=20)
        publisher.send(publish_packet("limits/small", b"s" * 500, qos=0))
        assert subscriber.get().payload == b"s" * 500
        # A packet over max_packet_size closes its sender's connection and goes nowhere.
        publisher.send(publish_packet("limits/large", b"L" * 2000, qos=0))
        publisher.wait_closed()
        subscriber.assert_no_message()


@pytest.mark.parametrize("program", PROGRAMS)
def test_anonymous_clients_refused_by_default(start: Start, program: str) -> None:
    """With a listener and no allow_anonymous, Mosquitto 2 refuses clients without a user
    name; Culex reads the same default out of the file (and, with nothing to log in with,
    Culex's loopback listener still starts)."""
    broker = start(program, "listener {port} 127.0.0.1\n")
    assert v3_connack(broker) == b"\x20\x02\x00\x05"


def test_warnings_logged_once_at_start(start: Start) -> None:
    broker = start("culex", "listener {port} 127.0.0.1\nallow_anonymous true\n"
                            "autosave_interval 60\nautosave_interval 90\nset_tcp_nodelay true\n")
    text = broker.wait_for_log("set_tcp_nodelay")
    assert text.count("accepted without effect") == 2
    assert "mosquitto.conf:3: autosave_interval 60: accepted without effect: Culex commits" \
        in text


def v5_connect(broker: BrokerProcess, client_id: str) -> RawClient:
    """An MQTT 5 connection spoken byte by byte: paho closes the connection on a PUBACK
    reason code the spec does not allow, which is what Mosquitto sends below."""
    raw = RawClient(broker)
    raw.send(packet(0x10, mqtt_str("MQTT") + b"\x05\x02\x00\x3c\x00" + mqtt_str(client_id)))
    assert raw.expect(CONNACK).body[:2] == b"\x00\x00"
    return raw


@pytest.mark.parametrize("program", PROGRAMS)
def test_message_size_limit_drops_larger_payloads(start: Start, program: str) -> None:
    """Mosquitto's message_size_limit: a larger payload is dropped and the connection stays;
    QoS 1 and 2 are acknowledged all the same, and a CONNECT whose will payload is larger is
    refused. MQTT 5 acks say why: Culex with 0x83 (implementation specific error), as
    Mosquitto's documentation says; Mosquitto 2.0.11 sends 0x95, which the spec allows in
    CONNACK and DISCONNECT only."""
    broker = start(program, "listener {port} 127.0.0.1\nallow_anonymous true\n"
                            "message_size_limit 100\n")
    with Clients(broker) as clients:
        subscriber = clients.subscriber("size/#")
        v3 = clients.paho()
        v5 = clients.paho(protocol=mqtt.MQTTv5)
        raw5 = v5_connect(broker, "size-raw5")
        for qos in (0, 1, 2):
            assert v3.publish("size/v3", b"x" * 101, qos=qos) == 0
            assert v3.publish("size/v3", b"x" * 100, qos=qos) == 0
            assert v5.publish("size/v5", b"y" * 100, qos=qos) == 0
        raw5.send(packet(0x30, mqtt_str("size/raw") + b"\x00" + b"z" * 101))
        for qos, ack in ((1, PUBACK), (2, PUBREC)):
            raw5.send(packet(0x30 | qos << 1, mqtt_str("size/raw") + bytes((0, qos, 0))
                             + b"z" * 101))
            reply = raw5.expect(ack)
            assert (reply.packet_id, reply.body[2]) == (
                qos, 0x83 if program == "culex" else 0x95)
        received = subscriber.get_many(6)
        assert sorted((m.topic, len(m.payload), m.qos) for m in received) == sorted(
            (topic, 100, qos) for qos in (0, 1, 2) for topic in ("size/v3", "size/v5"))
        subscriber.assert_no_message()
        assert raw5.is_open()
        big_will = Will("size/will", b"w" * 101)
        assert clients.paho(will=big_will, connect=False).connect(
            expect_rc=None).return_code == 5
        assert clients.paho(protocol=mqtt.MQTTv5, will=big_will, connect=False).connect(
            expect_rc=None).return_code == 0x95


def test_debians_default_configuration_serves(tmp_path: Path) -> None:
    """/etc/mosquitto/mosquitto.conf as Debian ships it (its paths moved into the test's
    directory), with a listener in conf.d as its comment invites: Culex logs to its log file,
    keeps its state in persistence_location, and serves."""
    text = (ROOT / "tests" / "fixtures" / "mosquitto" / "debian-mosquitto.conf").read_text()
    for path, moved in (("/run/mosquitto", "run"), ("/var/lib/mosquitto", "lib"),
                        ("/var/log/mosquitto", "log"), ("/etc/mosquitto/conf.d", "conf.d")):
        (tmp_path / moved).mkdir()
        text = text.replace(path, str(tmp_path / moved))
    broker = ConfBroker(tmp_path, text, "culex")
    (tmp_path / "conf.d" / "local.conf").write_text(
        f"listener {broker.port} 127.0.0.1\nallow_anonymous true\n")
    broker.start()
    try:
        with Clients(broker) as clients:
            subscriber = clients.subscriber("debian/#", 1)
            clients.paho().publish("debian/conf", b"served", qos=1)
            assert subscriber.get().payload == b"served"
        log = tmp_path / "log" / "mosquitto.log"
        assert wait_until(lambda: "serving: listeners 127.0.0.1" in log.read_text())
        assert (tmp_path / "lib" / "culex.db").exists()
        assert "serving" not in broker.log_text()  # the log file has it, not stderr
    finally:
        assert broker.stop() == 0
    assert "accepted without effect: Culex writes no pid file" in log.read_text()
    assert "Traceback" not in log.read_text()


def test_refused_key_stops_the_broker_naming_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "mosquitto.conf"
    path.write_text("listener 1883 127.0.0.1\nallow_anonymous true\nmemory_limit 10\n")
    result = culex("serve", "--config", str(path), timeout=20)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"culex: configuration error: {path}:3: memory_limit 10: not supported: Culex has no "
        "global heap limit; it bounds each client instead (max_queued_messages, "
        "max_queued_bytes, max_write_buffer)")


def test_convert_config_and_check_config(tmp_path: Path, auth_files: tuple[Path, Path]) -> None:
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(auth_conf(*auth_files).replace("{port}", "18999") + "autosave_interval 5\n")
    checked = culex("check-config", str(conf))
    assert checked.returncode == 0, checked.stderr
    assert "OK (1 listener(s), 3 user(s), ACL on, durability none)" in checked.stdout
    assert checked.stderr.count("culex: warning:") == 2  # user, autosave_interval
    converted = culex("convert-config", str(conf))
    assert converted.returncode == 0, converted.stderr
    toml = tmp_path / "culex.toml"
    toml.write_text(converted.stdout)
    again = culex("check-config", str(toml))
    assert again.returncode == 0, again.stderr
    assert "OK (1 listener(s), 3 user(s), ACL on, durability none)" in again.stdout
    assert f"# {conf}:4: user root: accepted without effect" in converted.stdout


# --- weak hashes: logged once, and culex passwd --rehash ---


def test_weak_hashes_logged_once_then_rehashed(broker_factory: BrokerFactory,
                                               tmp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    for user, (password, options) in USERS.items():
        mosquitto_passwd(passwords, user, password, options)
    broker = broker_factory(auth={"password_file": str(passwords)})
    line = "user(s) with weak password hashes"
    text = broker.wait_for_log(line)
    assert text.count(line) == 1  # once, whatever the number of workers
    assert ("3 user(s) with weak password hashes: alice (PBKDF2-SHA512 with 101 iterations), "
            "bob (PBKDF2-SHA512 with 5000 iterations), carol (one salted SHA-512 ($6$))") in text
    result = culex("passwd", "--rehash", "--password-stdin", str(passwords), "alice",
                   stdin="not-alice\n")
    assert result.returncode == 1
    assert "not the current password of 'alice'" in result.stderr
    result = culex("passwd", "--rehash", "--password-stdin", str(passwords), "alice",
                   stdin="alice-pw\n")
    assert result.returncode == 0, result.stderr
    assert passwords.read_text().startswith("alice:$scrypt$")
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGHUP)
    text = broker.wait_for_log("2 user(s) with weak password hashes: bob")
    assert text.count(line) == 2
    with Clients(broker) as clients:
        alice = clients.paho(connect=False)
        alice.client.username_pw_set("alice", "alice-pw")
        alice.connect()
