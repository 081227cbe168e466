"""What each mapped `mosquitto.conf` key does to the reading `State`: one handler per key,
found in HANDLERS. A handler parses the value with Mosquitto's syntax and records it with the
line it came from, or records a refusal when Culex can honour only some of its values.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from .keys import DYNSEC_PLUGIN
from .model import (
    OPENS_DEFAULT,
    ListenerDraft,
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

TLS_VERSIONS = {"tlsv1.2": "1.2", "tlsv1.3": "1.3"}


Handler = Callable[[State, Where, str, ListenerDraft], None]


def _on_listener(state: State, where: Where, current: ListenerDraft, value: Any, *, part: str,
                 name: str, opens: bool = True) -> None:
    """Set a listener-scoped value on the current listener (the default one before any)."""
    table: dict[str, Setting] = getattr(current, part)
    if isinstance(value, str) and name in table and where.key != "protocol":
        raise MosquittoConfError(f"{where}: given twice for one listener (first at "
                                 f"{table[name][1].file}:{table[name][1].line})")
    table[name] = (value, where)
    _touch(state, where, current, opens)


def _touch(state: State, where: Where, current: ListenerDraft, opens: bool = True) -> None:
    """Note that a key configured the default listener, and whether that opens it (a value
    other than Mosquitto's default, for a key in OPENS_DEFAULT)."""
    if current is state.default:
        current.touched = current.touched or where
        if opens and where.key in OPENS_DEFAULT:
            current.opened_by = current.opened_by or where


def _listener_string(name: str) -> Handler:
    def handle(state: State, where: Where, value: str, current: ListenerDraft) -> None:
        _on_listener(state, where, current, value, part="settings", name=name)
    return handle


def _listener_bool(name: str) -> Handler:
    def handle(state: State, where: Where, value: str, current: ListenerDraft) -> None:
        _on_listener(state, where, current, boolean(where, value), part="settings", name=name)
    return handle


def _port(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    state.local_only = False
    _on_listener(state, where, state.default, integer(where, value, 1, 65535),
                 part="settings", name="port")


def _bind_address(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    state.local_only = False
    _on_listener(state, where, state.default, value, part="settings", name="host")


def _socket_domain(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    current.domain = (choice(where, value, ("ipv4", "ipv6")), where)
    _touch(state, where, current)


def _protocol(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    if choice(where, value, ("mqtt", "websockets")) == "websockets":
        _on_listener(state, where, current, "websocket", part="settings", name="protocol")
    else:
        current.settings.pop("protocol", None)


def _max_connections(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    number = integer(where, value)
    _on_listener(state, where, current, number if number > 0 else -1, part="settings",
                 name="max_connections", opens=number > 0)


def _listener_limit(name: str, low: int, high: int) -> Handler:
    def handle(state: State, where: Where, value: str, current: ListenerDraft) -> None:
        number = integer(where, value, low, high)
        _on_listener(state, where, current, number,
                     opens=name != "max_qos" or number != 2, part="limits", name=name)
    return handle


def tls_version(state: State, where: Where, value: str) -> str | None:
    """Mosquitto's TLS version name as Culex's ("1.2", "1.3"); None, refused, for tlsv1.1."""
    word = choice(where, value, ("tlsv1.1", "tlsv1.2", "tlsv1.3"))
    if word not in TLS_VERSIONS:
        state.refuse(where, word, "not supported: Culex needs TLS 1.2 or later")
        return None
    return TLS_VERSIONS[word]


def _tls_version(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    version = tls_version(state, where, value)
    if version is not None:
        _on_listener(state, where, current, version, part="settings", name="min_tls_version")


def _tls_keyform(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    if choice(where, value, ("pem", "engine")) == "engine":
        state.refuse(where, value, "not supported: OpenSSL engines are not supported")


def _security(name: str, parse: Callable[[Where, str], Any]) -> Handler:
    def handle(state: State, where: Where, value: str, current: ListenerDraft) -> None:
        state.security_seen = state.security_seen or where
        parsed = parse(where, value)
        if state.per_listener is not None and state.per_listener[0]:
            _on_listener(state, where, current, parsed, part="security", name=name)
            return
        if isinstance(parsed, str) and name in state.security:
            first = state.security[name][1]
            raise MosquittoConfError(f"{where}: given twice (first at {first.file}:"
                                     f"{first.line})")
        state.security[name] = (parsed, where)
    return handle


def _plugin(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    state.security_seen = state.security_seen or where
    dynsec = PurePosixPath(value).name == DYNSEC_PLUGIN
    if not dynsec:
        state.refuse(where, value, "not supported: Culex loads no plugins; Mosquitto's "
                     f"dynamic-security plugin ({DYNSEC_PLUGIN}) is the one built in")
    elif state.plugin is not None and state.plugin[0]:
        first = state.plugin[1]
        raise MosquittoConfError(f"{where}: the dynamic-security plugin is loaded twice (first "
                                 f"at {first.file}:{first.line})")
    state.plugin = (dynsec, where)


def _plugin_option(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    """`plugin_opt_NAME VALUE`: an option of the plugin on the latest `plugin` line."""
    if state.plugin is None:
        raise MosquittoConfError(f"{where}: a plugin option must come after a `plugin` line, "
                                 "as Mosquitto requires")
    if not state.plugin[0]:
        return  # an option of a refused plugin: the refusal says it all
    if where.key.split("_opt_", 1)[1] != "config_file":
        state.warn(where, value, where.key, "the dynamic-security plugin has no such option "
                   "(Mosquitto ignores it too)")
        return
    _dynamic_security(state, where, value, current)


def _per_listener_settings(state: State, where: Where, value: str,
                           current: ListenerDraft) -> None:
    enabled = boolean(where, value)
    if enabled and state.security_seen is not None:
        raise MosquittoConfError(f"{where}: must come before any other security setting "
                                 f"(first at {state.security_seen.file}:"
                                 f"{state.security_seen.line}), as Mosquitto requires")
    state.per_listener = (enabled, where)


def only(expected: bool, why: str) -> Handler:
    """A boolean Culex honours with one value only (its own behaviour)."""
    def handle(state: State, where: Where, value: str, current: ListenerDraft) -> None:
        if boolean(where, value) != expected:
            state.refuse(where, value, f"not supported: {why}")
    return handle


def _global_int(path: str, low: int, high: int, zero: int | None = None) -> Handler:
    def handle(state: State, where: Where, value: str, current: ListenerDraft) -> None:
        number = integer(where, value, low, high)
        state.globals[path] = (zero if number == 0 and zero is not None else number, where)
    return handle


def _max_queued_messages(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    number = integer(where, value)
    if number <= 0:
        state.refuse(where, value, "not supported: 0 (no maximum); Culex bounds every queue")
        return
    state.globals["limits.max_queued_messages"] = (number, where)


def _max_inflight_bytes(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    if integer(where, value) > 0:
        state.refuse(where, value, "not supported: Culex bounds messages in flight by count "
                      "(max_inflight_messages), not by bytes")


def _persistence(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    state.globals["storage.durability"] = ("sync" if boolean(where, value) else "none", where)


def _storage_string(name: str) -> Handler:
    def handle(state: State, where: Where, value: str, current: ListenerDraft) -> None:
        path = f"storage.{name}"
        if path in state.globals:
            raise MosquittoConfError(f"{where}: given twice")
        state.globals[path] = (value, where)
    return handle


def _log_dest(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    dest = words(value)[0]
    if dest not in ("stdout", "stderr", "file", "syslog", "topic", "dlt", "none"):
        raise MosquittoConfError(f"{where}: {dest!r} is not a log destination")
    state.log_dests.append((value if dest == "file" else single(where, value), where))


def _log_type(state: State, where: Where, value: str, current: ListenerDraft) -> None:
    kinds = ("debug", "error", "warning", "notice", "information", "subscribe",
             "unsubscribe", "websockets", "internal", "none", "all")
    state.log_types.append((choice(where, value, kinds), where))


_dynamic_security = _security("dynamic_security", lambda where, value: value)

HANDLERS: dict[str, Handler] = {
    "port": _port,
    "bind_address": _bind_address,
    "socket_domain": _socket_domain,
    "protocol": _protocol,
    "max_connections": _max_connections,
    "max_qos": _listener_limit("max_qos", 0, 2),
    "maximum_qos": _listener_limit("max_qos", 0, 2),
    "max_topic_alias": _listener_limit("max_topic_alias", 0, 65535),
    "cafile": _listener_string("cafile"),
    "certfile": _listener_string("certfile"),
    "keyfile": _listener_string("keyfile"),
    "ciphers": _listener_string("ciphers"),
    "require_certificate": _listener_bool("require_certificate"),
    "use_identity_as_username": _listener_bool("use_identity_as_username"),
    "tls_version": _tls_version,
    "tls_keyform": _tls_keyform,
    "allow_anonymous": _security("allow_anonymous", boolean),
    "password_file": _security("password_file", lambda where, value: value),
    "acl_file": _security("acl_file", lambda where, value: value),
    "plugin": _plugin,
    "auth_plugin": _plugin,
    "plugin_opt_*": _plugin_option,
    "auth_opt_*": _plugin_option,
    "per_listener_settings": _per_listener_settings,
    "allow_zero_length_clientid": only(True, "Culex assigns an id to a client that sends "
                                       "an empty one with a clean session, as MQTT allows"),
    "check_retain_source": only(False, "Culex checks the subscriber's read access to a "
                                "retained message, not its publisher's current write access"),
    "retain_available": only(True, "Culex always supports retained messages"),
    "queue_qos0_messages": only(False, "Culex does not queue QoS 0 messages for offline "
                                "clients (MQTT 3.1.1 says not to)"),
    "upgrade_outgoing_qos": only(False, "Culex never upgrades a message's QoS (MQTT says "
                                 "not to)"),
    "max_inflight_messages": _global_int("limits.max_inflight_messages", 0, 65535, 65535),
    "max_inflight_bytes": _max_inflight_bytes,
    "max_queued_messages": _max_queued_messages,
    "max_queued_bytes": _global_int("limits.max_queued_bytes", 0, 2**63 - 1),
    "max_packet_size": _global_int("limits.max_packet_size", 20, 268_435_460),
    "message_size_limit": _global_int("limits.message_size_limit", 0, 268_435_455),
    "max_keepalive": _global_int("limits.max_keepalive", 0, 65535, 65535),
    "sys_interval": _global_int("sys_interval", 0, 65535),
    "persistence": _persistence,
    "retained_persistence": _persistence,
    "persistence_location": _storage_string("location"),
    "persistence_file": _storage_string("file"),
    "log_dest": _log_dest,
    "log_type": _log_type,
}
