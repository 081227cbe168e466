"""`[[bridges]]` in culex.toml: one table per bridge, read and checked here.

    [[bridges]]
    name = "cloud"
    address = "broker.example.com:8883"        # or a list, tried in order (failover)
    protocol_version = "5"                     # "3.1.1" or "5"
    client_id = "site-17"                      # its persistent session on the remote
    topics = [
      { pattern = "sensors/#", direction = "out", qos = 1, remote_prefix = "site17/" },
      { pattern = "commands/#", direction = "in", qos = 1, local_prefix = "remote/" },
    ]

A topic follows Mosquitto's `topic` line: `pattern` is a filter; the local side of it is
`local_prefix + pattern`, the remote side `remote_prefix + pattern`; a message crossing the
bridge loses one prefix and gains the other. `direction` "out" forwards local messages to the
remote, "in" remote messages here, "both" each way. An empty pattern with both prefixes set
maps one topic to another (`local_prefix` <-> `remote_prefix`).

Every problem is an error naming the bridge and the key, like the rest of culex.toml; files
(password, certificates) must exist when the configuration is loaded.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..protocol.errors import MalformedPacket, ProtocolError
from ..protocol.topics import check_topic_name, filter_problem, topic_matches

DIRECTIONS = ("out", "in", "both")
PROTOCOL_VERSIONS = ("3.1.1", "5")
TLS_VERSIONS = ("1.2", "1.3")
# A name is part of a client id and of $SYS topics: no '/', '+', '#' or spaces.
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class BridgeSettingsError(Exception):
    """A `[[bridges]]` table cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class BridgeTopic:
    pattern: str
    direction: str = "out"
    # The subscription's QoS on the side it is made: messages cross at most at this QoS.
    # 1 by default (Mosquitto's is 0): a QoS 0 message is never buffered while the remote is
    # away, so a bridge that must lose nothing forwards at 1 or 2.
    qos: int = 1
    local_prefix: str = ""
    remote_prefix: str = ""

    @property
    def local_filter(self) -> str:
        return self.local_prefix + self.pattern

    @property
    def remote_filter(self) -> str:
        return self.remote_prefix + self.pattern

    @property
    def outgoing(self) -> bool:
        return self.direction in ("out", "both")

    @property
    def incoming(self) -> bool:
        return self.direction in ("in", "both")

    def to_remote(self, topic: str) -> str:
        """A local topic this topic's local filter matches, as the remote names it."""
        return self.remote_prefix + topic[len(self.local_prefix):]

    def to_local(self, topic: str) -> str:
        """A remote topic this topic's remote filter matches, as it is named here."""
        return self.local_prefix + topic[len(self.remote_prefix):]

    def problems(self) -> list[str]:
        found = []
        if self.direction not in DIRECTIONS:
            found.append(f"direction: {self.direction!r} is not one of {', '.join(DIRECTIONS)}")
        if not 0 <= self.qos <= 2:
            found.append(f"qos: {self.qos} is not 0, 1 or 2")
        for name in ("local_prefix", "remote_prefix"):
            prefix = getattr(self, name)
            if "+" in prefix or "#" in prefix:
                found.append(f"{name}: {prefix!r} may not hold wildcards")
        if not self.pattern:
            if not (self.local_prefix and self.remote_prefix):
                found.append("pattern: empty, which needs both local_prefix and remote_prefix "
                             "(they then name one topic on each side)")
            else:
                found += [f"{side}: {problem}" for side, problem in (
                    ("local_prefix", _topic_problem(self.local_prefix)),
                    ("remote_prefix", _topic_problem(self.remote_prefix))) if problem]
        else:
            for side, topic_filter in (("local", self.local_filter),
                                       ("remote", self.remote_filter)):
                problem = filter_problem(topic_filter)
                if problem is not None:
                    found.append(f"pattern: the {side} filter {topic_filter!r} is invalid: "
                                 f"{problem}")
        return found


def _topic_problem(topic: str) -> str | None:
    try:
        check_topic_name(topic)
    except (MalformedPacket, ProtocolError) as exc:
        return str(exc)
    return None


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    name: str
    # "host:port" (port 1883, or 8883 with TLS, when left out), or several, tried in order.
    address: tuple[str, ...]
    topics: tuple[BridgeTopic, ...]
    protocol_version: str = "5"
    # Its persistent session on the remote; "<hostname>.<name>" by default, as Mosquitto's.
    client_id: str = ""
    username: str = ""
    # A file holding the password (its first line), kept out of culex.toml.
    password_file: str = ""
    # A password a mosquitto.conf gives inline (`remote_password`), held in memory only: no
    # culex.toml key sets it.
    inline_password: str = field(default="", repr=False)
    # TLS to the remote: on with `tls = true` (the system's CA certificates) or with `cafile`
    # (that CA bundle); `certfile`/`keyfile` add a client certificate.
    tls: bool = False
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""
    tls_version: str = "1.2"
    keepalive: int = 60
    # Payload bytes and messages buffered for the remote (queued and in flight); past either,
    # new QoS 1/2 messages for the bridge are refused as for a full persistent session.
    max_buffered_bytes: int = 1024 * 1024 * 1024
    max_buffered_messages: int = 1_000_000
    # QoS 1/2 messages sent to the remote and not yet acknowledged; an MQTT 5 remote's
    # smaller Receive Maximum wins.
    max_inflight: int = 100
    # Whose ACL rules apply to the bridge here (it reads what it forwards out and writes what
    # it publishes in): the bridge is the client `$bridge/<name>` with this user name.
    local_username: str = ""
    # 3.1.1: tell the remote that this client is a bridge (protocol level | 0x80), so it does
    # not send back what the bridge published. A remote that refuses it (CONNACK 0x01) is
    # connected to again without it.
    try_private: bool = True
    # Seconds: the first wait before connecting again after a failure, doubled after each
    # failure up to the second, each wait drawn at random from its lower half to its whole.
    reconnect_delay: float = 1.0
    reconnect_delay_max: float = 60.0
    # Seconds to connect (TCP, TLS) and get CONNACK.
    connect_timeout: float = 10.0

    @property
    def tls_enabled(self) -> bool:
        return self.tls or bool(self.cafile or self.certfile)

    def remote_client_id(self) -> str:
        return self.client_id or f"{socket.gethostname()}.{self.name}"

    def endpoints(self) -> list[tuple[str, int]]:
        """(host, port) of each address, in order."""
        default = 8883 if self.tls_enabled else 1883
        return [split_address(address, default) for address in self.address]

    def password(self) -> bytes | None:
        """The password file's first line (or the inline password), or None; raises OSError
        if the file cannot be read."""
        if self.inline_password:
            return self.inline_password.encode()
        if not self.password_file:
            return None
        text = Path(self.password_file).read_bytes()
        return text.splitlines()[0] if text.strip() else b""

    def problems(self) -> list[str]:
        found = []
        if not NAME.fullmatch(self.name):
            found.append(f"name: {self.name!r} must be 1-64 letters, digits, '_', '.' or '-'")
        if not self.address:
            found.append("address: at least one \"host:port\" is needed")
        for address in self.address:
            try:
                split_address(address, 1883)
            except ValueError as exc:
                found.append(f"address: {exc}")
        if self.protocol_version not in PROTOCOL_VERSIONS:
            found.append(f"protocol_version: {self.protocol_version!r} is not one of "
                         f"{', '.join(PROTOCOL_VERSIONS)}")
        if self.tls_version not in TLS_VERSIONS:
            found.append(f"tls_version: {self.tls_version!r} is not one of "
                         f"{', '.join(TLS_VERSIONS)}")
        if self.keyfile and not self.certfile:
            found.append("keyfile: set without certfile")
        for name in ("password_file", "cafile", "certfile", "keyfile"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                found.append(f"{name}: {value}: no such file")
        if self.password_file and not self.username and self.protocol_version != "5":
            found.append("password_file: MQTT 3.1.1 sends a password only with a username")
        if not 0 <= self.keepalive <= 65535:
            found.append(f"keepalive: {self.keepalive} is not 0..65535")
        for name in ("max_buffered_bytes", "max_buffered_messages"):
            if getattr(self, name) < 1:
                found.append(f"{name}: must be positive")
        if not 1 <= self.max_inflight <= 65535:
            found.append(f"max_inflight: {self.max_inflight} is not 1..65535")
        if not 0 < self.reconnect_delay <= self.reconnect_delay_max:
            found.append("reconnect_delay: must be positive and at most reconnect_delay_max")
        if self.connect_timeout <= 0:
            found.append("connect_timeout: must be positive")
        if len(self.remote_client_id().encode()) > 65535:
            found.append("client_id: longer than an MQTT string")
        if not self.topics:
            found.append("topics: at least one topic is needed")
        for index, topic in enumerate(self.topics):
            found += [f"topics[{index}].{problem}" for problem in topic.problems()]
        return found

    def outgoing_topic(self, topic: str) -> BridgeTopic | None:
        """The first `out`/`both` topic whose local filter matches a local topic (Mosquitto's
        rule when several do)."""
        for entry in self.topics:
            if entry.outgoing and topic_matches(entry.local_filter, topic):
                return entry
        return None

    def incoming_topic(self, topic: str) -> BridgeTopic | None:
        """The first `in`/`both` topic whose remote filter matches a remote topic."""
        for entry in self.topics:
            if entry.incoming and topic_matches(entry.remote_filter, topic):
                return entry
        return None


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """"host:port", "host", "[v6::addr]:port" or "v6::addr" -> (host, port)."""
    host, port = address, default_port
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket:
            raise ValueError(f"{address!r} has no closing ']'")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{address!r} is not host:port")
            port = _port(address, rest[1:])
    elif address.count(":") == 1:
        host, text = address.split(":")
        port = _port(address, text)
    if not host or " " in host:
        raise ValueError(f"{address!r} has no host")
    return host, port


def join_address(host: str, port: int) -> str:
    """(host, port) as logs write it: "host:port", "[v6::addr]:port"."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port(address: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise ValueError(f"{address!r}: {text!r} is not a TCP port")
    return int(text)


# -- reading the TOML tables ----------------------------------------------------------------

_TOPIC_KEYS = {"pattern": str, "direction": str, "qos": int, "local_prefix": str,
               "remote_prefix": str}
_KEYS: dict[str, type] = {
    "name": str, "protocol_version": str, "client_id": str, "username": str,
    "password_file": str, "tls": bool, "cafile": str, "certfile": str, "keyfile": str,
    "tls_version": str, "keepalive": int, "max_buffered_bytes": int,
    "max_buffered_messages": int, "max_inflight": int, "local_username": str,
    "try_private": bool, "reconnect_delay": float, "reconnect_delay_max": float,
    "connect_timeout": float,
}


def _value(value: Any, kind: type, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BridgeSettingsError(f"{where}: expected {kind.__name__}, got "
                                  f"{type(value).__name__} {value!r}")
    return value


def _table(table: Any, keys: dict[str, type], required: tuple[str, ...],
           where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise BridgeSettingsError(f"{where}: expected a table")
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise BridgeSettingsError(f"{where}.{unknown[0]}: unknown key (known: "
                                  f"{', '.join(keys)})")
    missing = [key for key in required if key not in table]
    if missing:
        raise BridgeSettingsError(f"{where}.{missing[0]}: required")
    return {key: _value(value, keys[key], f"{where}.{key}") for key, value in table.items()}


def parse_bridge(table: Any, where: str) -> BridgeSettings:
    """One `[[bridges]]` table; raises BridgeSettingsError naming `where` and the key."""
    if not isinstance(table, dict):
        raise BridgeSettingsError(f"{where}: expected a table")
    rest = {key: value for key, value in table.items() if key not in ("address", "topics")}
    values = _table(rest, _KEYS, ("name",), where)
    address = table.get("address")
    if isinstance(address, str):
        address = [address]
    if not isinstance(address, list) or not all(isinstance(item, str) for item in address):
        raise BridgeSettingsError(f"{where}.address: expected \"host:port\" or an array of them")
    topics = table.get("topics")
    if not isinstance(topics, list):
        raise BridgeSettingsError(f"{where}.topics: expected an array of tables "
                                  "({ pattern = ..., direction = ..., ... })")
    settings = BridgeSettings(
        address=tuple(address),
        topics=tuple(BridgeTopic(**_table(topic, _TOPIC_KEYS, ("pattern",),
                                          f"{where}.topics[{index}]"))
                     for index, topic in enumerate(topics)),
        **values)
    problems = settings.problems()
    if problems:
        raise BridgeSettingsError(f"{where}.{problems[0]}")
    return settings


def parse_bridges(tables: Any, source: str) -> tuple[BridgeSettings, ...]:
    if not isinstance(tables, list):
        raise BridgeSettingsError(f"{source}: bridges: expected [[bridges]] tables")
    bridges = tuple(parse_bridge(table, f"{source}: bridges[{index}]")
                    for index, table in enumerate(tables))
    names = [bridge.name for bridge in bridges]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise BridgeSettingsError(f"{source}: bridges[{index}].name: {name!r} is used by "
                                      "another bridge")
    return bridges

