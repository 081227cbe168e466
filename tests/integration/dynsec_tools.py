"""Debian's `mosquitto_ctrl` and its dynamic-security files, for the tests that drive Culex (and
Mosquitto) with it."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion

from tests.integration.clients import Broker, Clients, PahoClient

ADMIN, ADMIN_PASSWORD = "admin", "admin pw:1"
REQUEST_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = REQUEST_TOPIC + "/response"
# mosquitto_ctrl waits 10 s for its answer.
ANSWER_TIMEOUT = 9.5
# Printed by mosquitto_ctrl before every command sent without TLS.
NO_TLS_WARNING = ("Warning: You are running mosquitto_ctrl without encryption.\nThis means "
                  "all of the configuration changes you are making are visible on the network, "
                  "including passwords.\n\n")


def mosquitto_ctrl() -> str:
    tool = shutil.which("mosquitto_ctrl")
    assert tool is not None, "mosquitto_ctrl is missing: `make system-deps` installs " \
                             "mosquitto-clients"
    return tool


def plugin() -> str:
    """Debian's build of Mosquitto's dynamic-security plugin (in the mosquitto package)."""
    found = sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))
    assert found, "mosquitto_dynamic_security.so is missing: `make system-deps` installs " \
                  "mosquitto"
    return str(found[0])


def dynsec_init(path: Path) -> Path:
    """`mosquitto_ctrl dynsec init FILE admin PASSWORD`: the file Mosquitto's docs start with."""
    result = subprocess.run([mosquitto_ctrl(), "dynsec", "init", str(path), ADMIN,
                             ADMIN_PASSWORD], capture_output=True, text=True, timeout=10,
                            check=False)
    assert f"The client '{ADMIN}' has been created" in result.stdout, result
    return path


@dataclass(frozen=True)
class Output:
    stdout: str
    stderr: str


@dataclass
class Ctrl:
    """`mosquitto_ctrl dynsec ...` against one broker, as the admin client `client_id`."""

    broker: Broker
    client_id: str = "ctrl"

    def __call__(self, *args: str) -> Output:
        started = time.monotonic()
        result = subprocess.run(
            [mosquitto_ctrl(), "-h", self.broker.host, "-p", str(self.broker.port),
             "-u", ADMIN, "-P", ADMIN_PASSWORD, "-i", self.client_id, "dynsec", *args],
            capture_output=True, text=True, timeout=20, check=False)
        assert result.returncode == 0, result
        # Without an answer mosquitto_ctrl gives up after 10 s, silently and with status 0:
        # only the time tells that apart from a command that succeeds and prints nothing.
        assert time.monotonic() - started < ANSWER_TIMEOUT, f"no answer to {args}: {result}"
        assert result.stderr.startswith(NO_TLS_WARNING), result.stderr
        return Output(result.stdout, result.stderr[len(NO_TLS_WARNING):])

    def ok(self, *args: str) -> str:
        """A command that must succeed: its output, and nothing on stderr."""
        output = self(*args)
        assert output.stderr == "", (args, output)
        return output.stdout

    def error(self, *args: str) -> str:
        """A command that must fail: the error mosquitto_ctrl prints."""
        output = self(*args)
        assert output.stdout == "", (args, output)
        return output.stderr.strip()


def login(clients: Clients, username: str | None, password: str | None, client_id: str = "",
          protocol: MQTTProtocolVersion = mqtt.MQTTv311,
          expect_rc: int | None = 0) -> PahoClient:
    """A paho client with these credentials, connected (and CONNACK `expect_rc` asserted)."""
    client = clients.paho(client_id, protocol=protocol, connect=False)
    if username is not None:
        client.client.username_pw_set(username, password)
    client.connect(expect_rc=expect_rc)
    return client
