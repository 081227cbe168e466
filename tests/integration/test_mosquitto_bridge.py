"""A mosquitto.conf `connection` section, run by Culex and by Debian's Mosquitto: the same file
bridges each of them to a real Mosquitto (started here on a free port, with a password file)
in the same way. The remote sees the same CONNECT (client id, clean session 0, keep-alive,
user name; the password given inline gets it in), and messages cross out, in and both ways
with the section's prefixes and QoS, once, and nothing else crosses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.bridge_helpers import Mosquittos, wait_for
from tests.integration.clients import Clients
from tests.integration.test_bridges import flowing, received
from tests.integration.test_mosquitto_compat import (
    PROGRAMS,
    USERS,
    Start,
    logged_in,
    mosquitto_passwd,
    start,  # noqa: F401 (a fixture)
)

# `{port}`: the local broker's port (ConfBroker); REMOTE: the remote Mosquitto's.
BRIDGE_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
user root

connection cloud
address 127.0.0.1:REMOTE
bridge_protocol_version mqttv311
remote_clientid edge-cloud
remote_username carol
remote_password carol pw:x
cleansession false
keepalive_interval 20
restart_timeout 1 2
try_private true
notifications false
topic sensors/# out 1 "" site17/
topic commands/# in 1 remote/ ""
topic shared/# both 1
"""
# What the remote logs when the bridge connects, whichever broker runs the section: a bridge
# (try_private: the 0x80 bit), MQTT 3.1.1 (p2), the section's client id, clean session 0,
# keep-alive and user name.
CONNECTED = re.compile(r"New bridge connected from 127\.0\.0\.1:\d+ as edge-cloud "
                       r"\(p2, c0, k20, u'carol'\)")


@pytest.mark.parametrize("program", PROGRAMS)
def test_a_connection_section_bridges_alike(start: Start,  # noqa: F811
                                            mosquittos: Mosquittos, tmp_path: Path,
                                            program: str) -> None:
    passwords = tmp_path / "remote-passwd"
    mosquitto_passwd(passwords, "carol", *USERS["carol"])  # a password with a space
    # The last allow_anonymous wins in Mosquitto: only the bridge's credentials get in.
    remote = mosquittos.start(f"allow_anonymous false\npassword_file {passwords}\n")
    local = start(program, BRIDGE_CONF.replace("REMOTE", str(remote.port)))
    wait_for(lambda: CONNECTED.search(remote.log_text()) is not None,
             "the remote to log the bridge's connection")
    if program == "culex":
        # the remote may log the connection before the CONNACK reaches the bridge
        wait_for(lambda: "bridge cloud: connected to 127.0.0.1" in local.log_text(),
                 "the bridge to log its connection")
        # the one key of the file Culex does without (and no notifications warning)
        assert [line.split(": ", 1)[1] for line in local.log_text().splitlines()
                if " WARNING " in line] == ["user root: accepted without effect: Culex does "
                                            "not change user: start it as the user it should "
                                            "run as"]

    with Clients(local) as here, Clients(remote) as there:
        local_sub = here.paho()
        assert local_sub.subscribe("#", 1) == [1]
        local_pub = here.paho()
        remote_pub = logged_in(there, "carol")
        flowing(remote_pub, local_sub, "commands/probe")  # the bridge subscribed there
        remote_sub = logged_in(there, "carol")
        assert remote_sub.subscribe("#", 1) == [1]

        # out: the remote prefix added
        local_pub.publish("sensors/kitchen", b"21.5", qos=1)
        assert received(remote_sub, 1) == [("site17/sensors/kitchen", b"21.5", 1, False)]
        assert received(local_sub, 1) == [("sensors/kitchen", b"21.5", 1, False)]
        # in: the local prefix added
        remote_pub.publish("commands/open", b"now", qos=1)
        assert received(local_sub, 1) == [("remote/commands/open", b"now", 1, False)]
        assert received(remote_sub, 1) == [("commands/open", b"now", 1, False)]
        # both: each way once, never back
        local_pub.publish("shared/from-local", b"L", qos=1)
        remote_pub.publish("shared/from-remote", b"R", qos=1)
        expected = [("shared/from-local", b"L", 1, False), ("shared/from-remote", b"R", 1, False)]
        assert sorted(received(local_sub, 2)) == expected
        assert sorted(received(remote_sub, 2)) == expected
        # nothing crosses that no topic names, nor against a topic's direction
        local_pub.publish("elsewhere/x", b"no", qos=1)
        local_pub.publish("commands/local", b"no", qos=1)
        remote_pub.publish("sensors/remote", b"no", qos=1)
        assert sorted(m.topic for m in local_sub.drain(2)) == ["commands/local", "elsewhere/x"]
        assert [m.topic for m in remote_sub.drain(1)] == ["sensors/remote"]
        assert local_sub.messages.empty() and remote_sub.messages.empty()
