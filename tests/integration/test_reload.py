"""SIGHUP reload of the password file and the ACL, end to end: new users and rules take effect
without dropping anyone, and a bad new file is refused with the old rules kept in force
(CVE-2017-7652: a failed reload must not open the broker)."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import BrokerFactory, BrokerProcess
from tests.integration.clients import Clients, PahoClient
from tests.integration.test_auth import (
    BAD_USERNAME_OR_PASSWORD,
    PASSWORDS,
    add_user,
    auth_settings,
    culex,
    login,
    make_password_file,
)

DENIED = 0x80
RELOADED = "reloaded: password file"
REFUSED = "reload refused"
CAROL = "car0l pw"


@pytest.fixture(scope="module")
def base_passwords(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_password_file(tmp_path_factory.mktemp("reload") / "passwd", PASSWORDS)


@pytest.fixture
def password_file(base_passwords: Path, tmp_path: Path) -> Path:
    """A copy of alice and bob's file that this test may change."""
    path = tmp_path / "passwd"
    shutil.copy(base_passwords, path)
    return path


def reload(broker: BrokerProcess, needle: str, timeout: float = 5.0) -> str:
    """SIGHUP the broker and return the next log line that contains `needle`, once every
    worker process has logged it (each reloads on its own)."""
    before = broker.log_text().count(needle)
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in broker.log_text().splitlines() if needle in line]
        if len(lines) >= before + broker.workers:
            return lines[before]
        time.sleep(0.02)
    pytest.fail(f"{needle!r} not logged after SIGHUP:\n{broker.log_text()}")


def still_connected(client: PahoClient) -> bool:
    return not client.disconnected.is_set()


def alice(clients: Clients, client_id: str = "alice-1") -> PahoClient:
    return login(clients, client_id, "alice", PASSWORDS["alice"])


def bob(clients: Clients, client_id: str = "bob-1") -> PahoClient:
    return login(clients, client_id, "bob", PASSWORDS["bob"])


ACL_BEFORE = """\
user alice
topic write a/#
user bob
topic read #
"""

ACL_AFTER = """\
user alice
topic write b/#
topic read b/#
user bob
topic read a/#
topic read b/#
user carol
topic readwrite c/#
"""


def test_reload_adds_a_user_and_applies_the_new_acl_to_connected_clients(
        broker_factory: BrokerFactory, tmp_path: Path, password_file: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text(ACL_BEFORE)
    broker = broker_factory(auth=auth_settings(password_file, acl, allow_anonymous=False))
    with Clients(broker) as clients:
        login(clients, "carol-0", "carol", CAROL, expect_rc=BAD_USERNAME_OR_PASSWORD)
        writer = alice(clients)
        watcher = bob(clients)
        assert watcher.subscribe("#", 1) == [1]
        writer.publish("b/1", b"b1", qos=1)
        writer.publish("a/1", b"a1", qos=1)
        assert watcher.get().topic == "a/1"
        assert writer.subscribe("b/#", 1) == [DENIED]

        add_user(password_file, "carol", CAROL)
        acl.write_text(ACL_AFTER)
        line = reload(broker, RELOADED)
        assert str(password_file) in line and str(acl) in line

        # The new user can log in (and only with her password).
        carol = login(clients, "carol-1", "carol", CAROL)
        login(clients, "carol-2", "carol", PASSWORDS["alice"],
              expect_rc=BAD_USERNAME_OR_PASSWORD)
        # The connected clients were not dropped ...
        assert still_connected(writer) and still_connected(watcher)
        # ... and their new rules apply: alice may now write b/ and no longer a/; bob's
        # subscription to # no longer delivers c/ (carol's message comes first).
        carol.publish("c/1", b"c1", qos=1)
        writer.publish("a/2", b"a2", qos=1)
        writer.publish("b/2", b"b2", qos=1)
        got = watcher.get()
        assert (got.topic, got.payload) == ("b/2", b"b2")
        watcher.assert_no_message()
        assert writer.subscribe("b/#", 1) == [1]
        writer.publish("b/3", b"b3", qos=1)
        assert writer.get().topic == "b/3"
        assert watcher.get().topic == "b/3"
        # Clients that connect after the reload get the new rules too.
        assert alice(clients, "alice-2").subscribe([("b/#", 1), ("a/#", 1)]) == [1, DENIED]
    assert "Traceback" not in broker.log_text()


def test_reload_removes_a_user_without_dropping_their_connection(
        broker_factory: BrokerFactory, password_file: Path) -> None:
    broker = broker_factory(auth=auth_settings(password_file, allow_anonymous=False))
    with Clients(broker) as clients:
        connected = bob(clients)
        assert connected.subscribe("t", 1) == [1]
        result = culex("passwd", "-D", str(password_file), "bob")
        assert result.returncode == 0, result.stderr
        reload(broker, RELOADED)
        login(clients, "bob-2", "bob", PASSWORDS["bob"], expect_rc=BAD_USERNAME_OR_PASSWORD)
        alice(clients).publish("t", b"still here", qos=1)
        assert connected.get().payload == b"still here"
        assert still_connected(connected)


ACL_IN_FORCE = """\
user alice
topic readwrite a/#
topic deny a/secret
user bob
topic read #
"""

# Each broken file first grants alice everything: applying any part of it would show.
BROKEN_ACLS: dict[str, tuple[str | None, int]] = {
    "misspelt-access": ("user alice\ntopic readwrite #\ntopic reed a b\n", 3),
    "invalid-filter": ("user alice\ntopic readwrite #\n\ntopic read a/#/b\n", 4),
    "unknown-keyword": ("user alice\ntopic readwrite #\nallow all\n", 3),
    "invalid-utf8": ("user alice\ntopic readwrite #\nuser \udcff\n", 3),
    "missing": (None, 0),
}


def write_broken(path: Path, text: str | None) -> None:
    if text is None:
        path.unlink()
    else:
        path.write_bytes(text.encode("utf-8", "surrogateescape"))


def check_old_rules(clients: Clients, writer: PahoClient, watcher: PahoClient) -> None:
    """alice may use a/# except a/secret and nothing else; bob reads it all."""
    writer.publish("b/x", b"denied", qos=1)
    writer.publish("a/secret", b"denied", qos=1)
    writer.publish("a/x", b"allowed", qos=1)
    got = watcher.get()
    assert (got.topic, got.payload) == ("a/x", b"allowed")
    watcher.assert_no_message()
    assert writer.subscribe([("a/#", 1), ("b/#", 1), ("#", 1)]) == [1, DENIED, DENIED]


@pytest.mark.parametrize("broken", BROKEN_ACLS.values(), ids=BROKEN_ACLS)
def test_broken_acl_on_reload_is_refused_and_the_old_rules_stay(
        broker_factory: BrokerFactory, tmp_path: Path, password_file: Path,
        broken: tuple[str | None, int]) -> None:
    text, line_number = broken
    acl = tmp_path / "acl"
    acl.write_text(ACL_IN_FORCE)
    broker = broker_factory(auth=auth_settings(password_file, acl))
    with Clients(broker) as clients:
        writer = alice(clients)
        watcher = bob(clients)
        assert watcher.subscribe("#", 1) == [1]
        check_old_rules(clients, writer, watcher)

        write_broken(acl, text)
        line = reload(broker, REFUSED)
        where = f"{acl}:{line_number}:" if line_number else f"{acl}:"
        assert where in line, line
        assert len(line.splitlines()) == 1
        assert RELOADED not in broker.log_text()

        assert still_connected(writer) and still_connected(watcher)
        check_old_rules(clients, writer, watcher)
        # A client that connects now gets the old rules too, and passwords still work.
        check_old_rules(clients, alice(clients, "alice-2"), watcher)
        login(clients, "bad", "alice", "wrong", expect_rc=BAD_USERNAME_OR_PASSWORD)

        # Once the file is fixed, the next SIGHUP applies it.
        acl.write_text("user alice\ntopic readwrite #\nuser bob\ntopic read #\n")
        reload(broker, RELOADED)
        assert writer.subscribe("b/#", 1) == [1]


def test_broken_password_file_on_reload_is_refused_and_the_old_users_stay(
        broker_factory: BrokerFactory, password_file: Path) -> None:
    broker = broker_factory(auth=auth_settings(password_file, allow_anonymous=False))
    with Clients(broker) as clients:
        connected = bob(clients)
        add_user(password_file, "carol", CAROL)
        lines = password_file.read_text().splitlines()
        # carol added, alice removed, and a last line with no hash: none of it may take effect.
        lines = [line for line in lines if not line.startswith("alice:")]
        lines.append("dave")
        password_file.write_text("\n".join(lines) + "\n")
        line = reload(broker, REFUSED)
        assert f"{password_file}:{len(lines)}:" in line

        login(clients, "carol-1", "carol", CAROL, expect_rc=BAD_USERNAME_OR_PASSWORD)
        alice(clients)
        assert still_connected(connected)
        bob(clients, "bob-2")


def test_reload_with_identical_files_keeps_everything(broker_factory: BrokerFactory,
                                                     tmp_path: Path,
                                                     password_file: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text(ACL_IN_FORCE)
    broker = broker_factory(auth=auth_settings(password_file, acl))
    with Clients(broker) as clients:
        writer = alice(clients)
        watcher = bob(clients)
        assert watcher.subscribe("#", 1) == [1]
        check_old_rules(clients, writer, watcher)
        for _ in range(3):
            reload(broker, RELOADED)
        check_old_rules(clients, writer, watcher)
        assert still_connected(writer) and still_connected(watcher)


def test_reload_applies_to_offline_persistent_sessions(
        broker_factory: BrokerFactory, tmp_path: Path, password_file: Path) -> None:
    """A persistent session whose client is offline during the reload gets the new rules for
    what is published while it is offline: a revoked READ is not delivered on reconnect, and a
    newly granted one is (so it must have been queued)."""
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic write #\nuser bob\ntopic read #\ntopic deny granted/#\n")
    broker = broker_factory(auth=auth_settings(password_file, acl))
    with Clients(broker) as clients:
        offline = clients.paho("bob-persistent", clean_session=False, connect=False)
        offline.client.username_pw_set("bob", PASSWORDS["bob"])
        offline.connect()
        assert offline.subscribe("#", 1) == [1]
        offline.disconnect()

        acl.write_text("user alice\ntopic write #\nuser bob\ntopic read #\ntopic deny secret/#\n")
        reload(broker, RELOADED)
        writer = alice(clients)
        writer.publish("secret/x", b"revoked", qos=1)
        writer.publish("granted/x", b"granted", qos=1)

        back = clients.paho("bob-persistent", clean_session=False, connect=False)
        back.client.username_pw_set("bob", PASSWORDS["bob"])
        assert back.connect().session_present
        got = back.get()
        assert (got.topic, got.payload) == ("granted/x", b"granted"), got
        back.assert_no_message()


def test_reload_keeps_the_rights_of_a_session_restored_from_storage(
        broker_factory: BrokerFactory, tmp_path: Path, password_file: Path) -> None:
    """bob's persistent session survives a restart; a SIGHUP before bob reconnects must not
    resolve that session's ACL as if it were anonymous (dropping what bob may read)."""
    acl = tmp_path / "acl"
    acl.write_text("topic read public/#\nuser alice\ntopic write #\nuser bob\ntopic read #\n")
    broker = broker_factory(auth=auth_settings(password_file, acl))
    with Clients(broker) as clients:
        offline = clients.paho("bob-persistent", clean_session=False, connect=False)
        offline.client.username_pw_set("bob", PASSWORDS["bob"])
        offline.connect()
        assert offline.subscribe("#", 1) == [1]
        offline.disconnect()
    assert broker.stop() == 0
    broker.start()
    with Clients(broker) as clients:
        writer = alice(clients)  # also makes sure the broker is up and handles signals
        reload(broker, RELOADED)
        writer.publish("bob/x", b"for bob", qos=1)
        writer.publish("public/x", b"for anyone", qos=1)

        back = clients.paho("bob-persistent", clean_session=False, connect=False)
        back.client.username_pw_set("bob", PASSWORDS["bob"])
        assert back.connect().session_present
        assert sorted(m.topic for m in back.get_many(2, timeout=2)) == ["bob/x", "public/x"]
        back.assert_no_message()
