"""A `mosquitto.conf`'s bridge sections, read into `[[bridges]]` tables.

`connection NAME` starts a bridge, and the bridge keys after it in the same file configure it
(Mosquitto's rule: a bridge key with no `connection` line before it in its file is an error).
Each key is parsed with Mosquitto's syntax and recorded with its line; `build_bridges` then
writes one table per section, with Mosquitto's defaults written out where Culex's differ: MQTT
3.1.1, topics at QoS 0, port 1883 with TLS too, a reconnect delay of 5 to 30 seconds, and the
global `max_queued_messages` (1000 unless set) and `max_inflight_messages` (20 unless set),
which bound Mosquitto's bridges as they bound every client.

A password given inline (`remote_password`) is not part of the tables: culex.toml reads a
bridge's password from a file. `culex serve` passes it to the bridge in memory
(`with_passwords`); `culex convert-config` says which file to put it in.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from ..bridge.settings import DIRECTIONS, NAME, BridgeSettings, BridgeTopic, join_address
from .handlers import Handler, only, tls_version
from .model import (
    BridgeDraft,
    ListenerDraft,
    MosquittoConf,
    MosquittoConfError,
    Setting,
    State,
    Where,
    boolean,
    choice,
    integer,
    single,
    words,
)

# Mosquitto's defaults that differ from Culex's, written out: (value, why).
DEFAULTS: dict[str, tuple[Any, str]] = {
    "protocol_version": ("3.1.1", "Mosquitto's default bridge_protocol_version, mqttv311"),
    "reconnect_delay": (5.0, "Mosquitto's default restart_timeout, 5 30"),
    "reconnect_delay_max": (30.0, "Mosquitto's default restart_timeout, 5 30"),
}
# Global limits that bound Mosquitto's bridges too: culex.toml path -> [[bridges]] key, and
# Mosquitto's default when the file does not set it.
LIMITS: dict[str, tuple[str, int | None]] = {
    "limits.max_queued_messages": ("max_buffered_messages", 1000),
    "limits.max_queued_bytes": ("max_buffered_bytes", None),
    "limits.max_inflight_messages": ("max_inflight", 20),
}


def _bridge(state: State) -> BridgeDraft:
    """The section a bridge key belongs to (`conf.Reader.line` checked there is one)."""
    assert state.bridge is not None
    return state.bridge


def _set(state: State, where: Where, name: str, value: Any) -> None:
    settings = _bridge(state).settings
    if name in settings and isinstance(value, str):
        first = settings[name][1]
        raise MosquittoConfError(f"{where}: given twice for one bridge (first at "
                                 f"{first.file}:{first.line}), as Mosquitto refuses")
    settings[name] = (value, where)


def _string(name: str) -> Handler:
    def handle(state: State, where: Where, value: str, current: ListenerDraft) -> None:
        _set(state, where, name, value)
    return handle


def _connection(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    name = single(where, value)
    for other in state.bridges:
        if other.name == name:
            raise MosquittoConfError(f"{where}: a second bridge named {name!r} (first at "
                                     f"{other.where.file}:{other.where.line}), as Mosquitto "
                                     "refuses")
    if not NAME.fullmatch(name):
        state.refuse(where, name, "not supported: a Culex bridge's name is 1-64 letters, "
                     "digits, '_', '.' or '-' (it is part of its $SYS topics and of its "
                     "session here, $bridge/<name>)")
    state.bridge = BridgeDraft(where, name)
    state.bridges.append(state.bridge)


def _host_port(where: Where, token: str) -> str:
    """Mosquitto's `host[:port]`: the port after the last ':' (an IPv6 address needs one),
    1883 when there is no ':', with TLS too."""
    host, colon, port = token.rpartition(":")
    if not colon:
        return join_address(token, 1883)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise MosquittoConfError(f"{where}: {token!r} is not host[:port] with a port "
                                 "1..65535")
    return join_address(host, int(port))


def _before_comment(tokens: list[str]) -> list[str]:
    """The words before a `# comment`, which Mosquitto allows after a list of words."""
    return list(itertools.takewhile(lambda token: not token.startswith("#"), tokens))


def _address(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    if "address" in _bridge(state).settings:
        first = _bridge(state).settings["address"][1]
        raise MosquittoConfError(f"{where}: one address line per bridge (first at "
                                 f"{first.file}:{first.line}), as Mosquitto requires; list "
                                 "several addresses on it, separated by spaces")
    tokens = _before_comment(words(value))
    if not tokens:
        raise MosquittoConfError(f"{where}: empty value")
    _set(state, where, "address", [_host_port(where, token) for token in tokens])


def _prefix(token: str) -> str:
    return "" if token == '""' else token


def _topic(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    """`topic PATTERN [[[out | in | both] QOS] LOCAL_PREFIX REMOTE_PREFIX]`; `""` is empty."""
    pattern, *words_after = words(value)
    rest = _before_comment(words_after)
    if len(rest) > 4:
        raise MosquittoConfError(f"{where}: unexpected text after the remote prefix: "
                                 f"{' '.join(rest[4:])!r}")
    direction = rest[0].lower() if rest else "out"
    if direction not in DIRECTIONS:
        raise MosquittoConfError(f"{where}: {rest[0]!r} is not a direction (out, in or both)")
    topic = BridgeTopic(_prefix(pattern), direction,
                        integer(where, rest[1], 0, 2) if len(rest) > 1 else 0,
                        _prefix(rest[2]) if len(rest) > 2 else "",
                        _prefix(rest[3]) if len(rest) > 3 else "")
    problems = topic.problems()
    if problems:
        raise MosquittoConfError(f"{where}: {problems[0]}")
    table: dict[str, Any] = {"pattern": topic.pattern, "direction": topic.direction,
                             "qos": topic.qos}
    for name in ("local_prefix", "remote_prefix"):
        if getattr(topic, name):
            table[name] = getattr(topic, name)
    _bridge(state).topics.append((table, where))


def _protocol_version(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    word = choice(where, value, ("mqttv31", "mqttv311", "mqttv50"))
    if word == "mqttv31":
        state.refuse(where, word, "not supported: Culex's bridge speaks MQTT 3.1.1 (mqttv311) "
                     "and 5 (mqttv50)")
        return
    _set(state, where, "protocol_version", "3.1.1" if word == "mqttv311" else "5")


def _password(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    bridge = _bridge(state)
    if bridge.password is not None:
        first = bridge.password[1]
        raise MosquittoConfError(f"{where}: given twice for one bridge (first at "
                                 f"{first.file}:{first.line}), as Mosquitto refuses")
    bridge.password = (value, where)


def _tls_version(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    version = tls_version(state, where, value)
    if version is not None:
        _set(state, where, "tls_version", version)


def _keepalive(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    seconds = integer(where, value)
    if seconds > 65535:
        raise MosquittoConfError(f"{where}: {seconds} is more than 65535")
    _set(state, where, "keepalive", max(seconds, 5))  # Mosquitto's floor


def _try_private(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    _set(state, where, "try_private", boolean(where, value))


def _restart_timeout(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    """`restart_timeout BASE [CAP]`: a backoff from BASE to CAP seconds, or one fixed delay."""
    tokens = _before_comment(words(value))
    if len(tokens) > 2:
        raise MosquittoConfError(f"{where}: unexpected text after the cap: "
                                 f"{' '.join(tokens[2:])!r}")
    if not tokens:
        raise MosquittoConfError(f"{where}: empty value")
    base = max(integer(where, tokens[0]), 1)
    cap = integer(where, tokens[1]) if len(tokens) > 1 else base
    if cap < base:
        raise MosquittoConfError(f"{where}: the cap {cap} is lower than the base {base}")
    _set(state, where, "reconnect_delay", float(base))
    _set(state, where, "reconnect_delay_max", float(cap))


def _start_type(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    word = choice(where, value, ("automatic", "lazy", "once", "manual"))
    if word == "manual":
        raise MosquittoConfError(f"{where}: manual is not a start type Mosquitto supports")
    if word != "automatic":
        state.refuse(where, word, "not supported: a Culex bridge connects at start-up and "
                     "connects again whenever its connection ends (start_type automatic)")


def _notifications(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    _bridge(state).notifications = (boolean(where, value), where)


def _attempt_unsubscribe(state: State, where: Where, value: str,
                         current: ListenerDraft) -> None:
    if boolean(where, value):
        state.warn(where, value, where.key, "Culex's bridge never unsubscribes on the remote "
                   "(it subscribes there to its in and both topics only)")


BRIDGE_HANDLERS: dict[str, Handler] = {
    "connection": _connection,
    "address": _address,
    "addresses": _address,
    "topic": _topic,
    "bridge_protocol_version": _protocol_version,
    "remote_clientid": _string("client_id"),
    "clientid": _string("client_id"),
    "remote_username": _string("username"),
    "username": _string("username"),
    "remote_password": _password,
    "password": _password,
    "cleansession": only(False, "Culex's bridge keeps its session on the remote (clean "
                         "session 0), so the remote keeps what it has for the bridge while the "
                         "connection is down; write cleansession false"),
    "local_cleansession": only(False, "Culex's bridge keeps its session here, so what it is "
                               "to forward waits for the remote; write local_cleansession "
                               "false"),
    "bridge_cafile": _string("cafile"),
    "bridge_certfile": _string("certfile"),
    "bridge_keyfile": _string("keyfile"),
    "bridge_tls_version": _tls_version,
    "bridge_insecure": only(False, "Culex always checks that the remote's certificate names "
                            "the host it connects to"),
    "bridge_require_ocsp": only(False, "OCSP is not supported"),
    "bridge_outgoing_retain": only(True, "Culex's bridge keeps the RETAIN flag of the "
                                   "messages it forwards"),
    "keepalive_interval": _keepalive,
    "try_private": _try_private,
    "restart_timeout": _restart_timeout,
    "local_username": _string("local_username"),
    "start_type": _start_type,
    "round_robin": only(False, "after a failure Culex's bridge tries the next address, and "
                        "goes back to the first one when a connection ends (round_robin "
                        "false)"),
    "notifications": _notifications,
    "bridge_attempt_unsubscribe": _attempt_unsubscribe,
}


# Building.

def build_bridges(state: State, conf: MosquittoConf) -> None:
    """One `[[bridges]]` table per `connection` section, in the order of the lines."""
    tables = [_table(state, conf, index, bridge) for index, bridge in enumerate(state.bridges)]
    if tables:
        conf.data["bridges"] = tables


def _table(state: State, conf: MosquittoConf, index: int, bridge: BridgeDraft) -> dict[str, Any]:
    path = f"bridges[{index}]"
    for needed, missing in (("address", "address" not in bridge.settings),
                            ("topic", not bridge.topics)):
        if missing:
            raise MosquittoConfError(f"{bridge.where}: the bridge {bridge.name} has no "
                                     f"`{needed}` line (Mosquitto refuses it too)")
    _check_tls(state, bridge)
    _check_password(bridge)
    _warn_notifications(state, bridge)
    if bridge.password is not None:
        conf.passwords[bridge.name] = bridge.password
    table: dict[str, Any] = {"name": bridge.name}
    conf.origins[f"{path}.name"] = bridge.where
    for name, (value, where) in bridge.settings.items():
        table[name] = value
        conf.origins[f"{path}.{name}"] = where
    for name, (value, why) in DEFAULTS.items():
        if name not in table:
            table[name] = value
            conf.defaults[f"{path}.{name}"] = why
    for limit, (name, default) in LIMITS.items():
        setting: Setting | None = state.globals.get(limit)
        if setting is not None and setting[0] > 0:
            table[name] = setting[0]
            conf.origins[f"{path}.{name}"] = setting[1]
        elif setting is None and default is not None:
            table[name] = default
            conf.defaults[f"{path}.{name}"] = (f"Mosquitto's default {limit.split('.')[1]}, "
                                               "which bounds its bridges too")
    table["topics"] = [topic for topic, _ in bridge.topics]
    for number, (_, where) in enumerate(bridge.topics):
        conf.origins[f"{path}.topics[{number}]"] = where
    return table


def _check_tls(state: State, bridge: BridgeDraft) -> None:
    """Mosquitto uses TLS on a bridge only with bridge_cafile (or bridge_capath, refused);
    Culex would with a client certificate alone, trusting the system's CAs."""
    if "cafile" in bridge.settings:
        return
    for name in ("certfile", "keyfile"):
        if name in bridge.settings:
            where = bridge.settings[name][1]
            state.refuse(where, bridge.settings[name][0], "not supported without "
                         "bridge_cafile: Mosquitto then connects without TLS, Culex would use "
                         "TLS; add bridge_cafile, or remove the key")
            return


def _warn_notifications(state: State, bridge: BridgeDraft) -> None:
    """Notifications are on unless `notifications false`: warn on that line, or on the
    `connection` line when the section leaves them at Mosquitto's default."""
    if bridge.notifications is None:
        where, value = bridge.where, bridge.name
    elif bridge.notifications[0]:
        where, value = bridge.notifications[1], "true"
    else:
        return
    state.warn(where, value, f"notifications {bridge.name}", "Culex's bridges publish no "
               "$SYS/broker/connection/<client id>/state notifications, which Mosquitto's "
               "send unless `notifications false`; this bridge's state is in "
               f"$SYS/broker/bridges/{bridge.name}/")


def _check_password(bridge: BridgeDraft) -> None:
    if bridge.password is None or "username" in bridge.settings:
        return
    if bridge.settings.get("protocol_version", ("3.1.1",))[0] == "3.1.1":
        raise MosquittoConfError(f"{bridge.password[1]}: MQTT 3.1.1 sends a password only "
                                 "with a user name: add remote_username")


def with_passwords(bridges: tuple[BridgeSettings, ...],
                   passwords: dict[str, Setting]) -> tuple[BridgeSettings, ...]:
    """The bridges, each with the password its section gives inline (if any)."""
    return tuple(dataclasses.replace(bridge, inline_password=passwords[bridge.name][0])
                 if bridge.name in passwords else bridge for bridge in bridges)
