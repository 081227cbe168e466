"""Every `mosquitto.conf` key Culex knows, and what becomes of it.

Three fates, and nothing is ignored in silence:

- MAPPED: the value becomes a `culex.toml` value (`culex` says which). Some are mapped only for
  the values Culex can honour; the text says which, and any other value is refused.
- WARNED: the key only tunes Mosquitto's own machinery (its autosave timer, libwebsockets, its
  log timestamps, ...); it is accepted and logged once at start-up, with the reason.
- REFUSED: Culex cannot do what the key asks; loading stops with the file, line and key.

A bridge section's keys (`bridge`: they apply to the latest `connection` line of the same
file) have the same fates; their MAPPED values become a `[[bridges]]` table (see `bridges`).

The table in README.md ("Coming from Mosquitto") is this catalogue in prose; a unit test checks
that the two name the same keys.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Fate(enum.Enum):
    MAPPED = "mapped"
    WARNED = "warned"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Key:
    fate: Fate
    # MAPPED: the culex.toml key(s) and any condition; otherwise the reason, as printed.
    culex: str
    # A key of a bridge section, which needs a `connection` line before it.
    bridge: bool = False

# Mosquitto's authentication and authorization plugins, and their options (prefix keys). Of
# the plugins, Culex has the dynamic-security one, built in.
PLUGIN_PREFIXES = ("auth_opt_", "plugin_opt_")
DYNSEC_PLUGIN = "mosquitto_dynamic_security.so"
PLUGIN = (f"[auth] dynamic_security, for Mosquitto's dynamic-security plugin ({DYNSEC_PLUGIN}, "
          "in any directory) with plugin_opt_config_file; any other plugin is refused: Culex "
          "loads no plugins")
PLUGIN_OPTION = ("plugin_opt_config_file: [auth] dynamic_security; the dynamic-security "
                 "plugin has no other option (warned)")

_M, _W, _R = Fate.MAPPED, Fate.WARNED, Fate.REFUSED

CATALOGUE: dict[str, Key] = {
    # Listeners.
    "listener": Key(_M, "[[listeners]] port and host; without an address, two listeners "
                        "(0.0.0.0 and ::); port 0 with a path: unix"),
    "port": Key(_M, "[[listeners]] port of the default listener"),
    "bind_address": Key(_M, "[[listeners]] host of the default listener"),
    "socket_domain": Key(_M, "[[listeners]] host: ipv4 gives 0.0.0.0, ipv6 gives :: (or checks "
                             "the listener's address)"),
    "protocol": Key(_M, "mqtt: nothing to set; websockets: [[listeners]] protocol = "
                        "\"websocket\""),
    "max_connections": Key(_M, "[[listeners]] max_connections (0 or negative: -1)"),
    "max_qos": Key(_M, "[limits] max_qos, when every listener has the same"),
    "maximum_qos": Key(_M, "[limits] max_qos (an older name of max_qos)"),
    "max_topic_alias": Key(_M, "[limits] max_topic_alias, when every listener has the same"),
    "bind_interface": Key(_R, "binding to an interface is not supported: give the interface's "
                              "address to `listener`"),
    "mount_point": Key(_R, "mount points are not supported"),
    "http_dir": Key(_R, "Culex serves no HTTP files"),
    "use_username_as_clientid": Key(_R, "replacing the client id by the user name is not "
                                        "supported"),
    "websockets_log_level": Key(_W, "libwebsockets' own logging; Culex does not use "
                                    "libwebsockets"),
    "websockets_headers_size": Key(_W, "a libwebsockets buffer size; Culex does not use "
                                       "libwebsockets"),
    # TLS.
    "cafile": Key(_M, "[[listeners]] cafile"),
    "certfile": Key(_M, "[[listeners]] certfile"),
    "keyfile": Key(_M, "[[listeners]] keyfile"),
    "ciphers": Key(_M, "[[listeners]] ciphers"),
    "require_certificate": Key(_M, "[[listeners]] require_certificate"),
    "use_identity_as_username": Key(_M, "[[listeners]] use_identity_as_username"),
    "tls_version": Key(_M, "[[listeners]] min_tls_version: tlsv1.2 gives \"1.2\", tlsv1.3 "
                           "\"1.3\"; tlsv1.1 is refused (Culex needs TLS 1.2 or later)"),
    "tls_keyform": Key(_M, "pem only, the default (nothing to set); engine is refused"),
    "capath": Key(_R, "Culex takes one CA bundle: concatenate the certificates into one file "
                      "and name it with cafile"),
    "ciphers_tls1.3": Key(_R, "Python's ssl module cannot restrict TLS 1.3 cipher suites"),
    "crlfile": Key(_R, "certificate revocation lists are not supported"),
    "dhparamfile": Key(_W, "Culex's TLS uses ECDHE key exchange, which needs no DH "
                           "parameters"),
    "psk_hint": Key(_R, "TLS-PSK is not supported"),
    "psk_file": Key(_R, "TLS-PSK is not supported"),
    "tls_engine": Key(_R, "OpenSSL engines are not supported"),
    "tls_engine_kpass_sha1": Key(_R, "OpenSSL engines are not supported"),
    "use_subject_as_username": Key(_R, "only the certificate's CN can be the user name "
                                       "(use_identity_as_username)"),
    # Authentication and access control.
    "allow_anonymous": Key(_M, "[auth] allow_anonymous, always written out: Mosquitto 2's "
                               "default is false once a listener is configured"),
    "password_file": Key(_M, "[auth] password_file; mosquitto_passwd's $6$ and $7$ hashes "
                             "verify"),
    "acl_file": Key(_M, "[auth] acl_file (the same format)"),
    "per_listener_settings": Key(_M, "false: nothing to set; true: only when every listener "
                                     "ends up with the same authentication settings (Culex's "
                                     "are global)"),
    "allow_zero_length_clientid": Key(_M, "true only, Culex's behaviour (nothing to set); "
                                          "false is refused"),
    "auto_id_prefix": Key(_W, "Culex names the client ids it assigns culex-..."),
    "check_retain_source": Key(_M, "false only, Culex's behaviour (nothing to set); true is "
                                   "refused: Culex checks the subscriber's read access to a "
                                   "retained message, not its publisher's current write "
                                   "access"),
    "clientid_prefixes": Key(_R, "client id prefixes are not supported; use an ACL"),
    "auth_plugin": Key(_M, PLUGIN + " (an older name of plugin)"),
    "plugin": Key(_M, PLUGIN),
    "auth_opt_*": Key(_M, PLUGIN_OPTION + " (an older name of plugin_opt_*)"),
    "plugin_opt_*": Key(_M, PLUGIN_OPTION),
    "auth_plugin_deny_special_chars": Key(_W, "applies to old-style (version 2 to 4) "
                                              "authentication plugins, which Culex does not "
                                              "load"),
    # Limits and message handling.
    "max_inflight_messages": Key(_M, "[limits] max_inflight_messages (0: 65535)"),
    "max_inflight_bytes": Key(_M, "0 only, Culex's behaviour (nothing to set); a byte bound on "
                                  "messages in flight is refused"),
    "max_queued_messages": Key(_M, "[limits] max_queued_messages; 0 (unbounded) is refused: "
                                   "Culex bounds every queue"),
    "max_queued_bytes": Key(_M, "[limits] max_queued_bytes (0: unbounded, as in Mosquitto)"),
    "max_packet_size": Key(_M, "[limits] max_packet_size"),
    "max_keepalive": Key(_M, "[limits] max_keepalive (0: 65535)"),
    "message_size_limit": Key(_M, "[limits] message_size_limit: a larger PUBLISH payload is "
                                  "dropped, QoS 1/2 acknowledged (MQTT 5: 0x83), a larger will "
                                  "refused"),
    "memory_limit": Key(_R, "Culex has no global heap limit; it bounds each client instead "
                            "(max_queued_messages, max_queued_bytes, max_write_buffer)"),
    "retain_available": Key(_M, "true only, Culex's behaviour (nothing to set); false is "
                                "refused"),
    "queue_qos0_messages": Key(_M, "false only, Culex's behaviour (nothing to set); true is "
                                   "refused: Culex does not queue QoS 0 messages for offline "
                                   "clients"),
    "upgrade_outgoing_qos": Key(_M, "false only, the spec's behaviour (nothing to set); true "
                                    "is refused"),
    "allow_duplicate_messages": Key(_W, "deprecated in Mosquitto; Culex delivers a message "
                                        "once per client, as MQTT requires"),
    "persistent_client_expiration": Key(_R, "persistent sessions of MQTT 3.1/3.1.1 clients do "
                                            "not expire in Culex (MQTT 5 clients set a Session "
                                            "Expiry Interval)"),
    "retry_interval": Key(_W, "removed in Mosquitto 2; clients' unacknowledged messages are "
                              "sent again when they reconnect"),
    "set_tcp_nodelay": Key(_W, "Culex always sets TCP_NODELAY"),
    "sys_interval": Key(_M, "sys_interval"),
    # Persistence.
    "persistence": Key(_M, "[storage] durability: true gives \"sync\" (every acknowledged "
                           "message is on disk), false or absent \"none\""),
    "retained_persistence": Key(_M, "[storage] durability (an older name of persistence)"),
    "persistence_location": Key(_M, "[storage] path: the directory of Culex's SQLite file"),
    "persistence_file": Key(_M, "[storage] path: its file name (default culex.db; Culex cannot "
                                "read Mosquitto's mosquitto.db)"),
    "autosave_interval": Key(_W, "Culex commits each message before it acknowledges it "
                                 "(durability \"sync\"): there is nothing to save later"),
    "autosave_on_changes": Key(_W, "Culex commits each message before it acknowledges it "
                                   "(durability \"sync\"): there is nothing to save later"),
    # Logging.
    "log_dest": Key(_M, "file PATH: [logging] file; stderr: nothing to set; stdout is "
                        "accepted with a warning (Culex logs to standard error); syslog, topic, "
                        "dlt and none are refused"),
    "log_type": Key(_M, "[logging] level: the most verbose type listed (debug; information or "
                        "notice: info; warning; error); subscribe, unsubscribe, websockets and "
                        "internal add nothing (warned)"),
    "log_facility": Key(_W, "a syslog facility; Culex does not log to syslog"),
    "log_timestamp": Key(_W, "Culex's text log lines always start with a timestamp"),
    "log_timestamp_format": Key(_W, "Culex's text log lines always start with a timestamp"),
    "connection_messages": Key(_W, "Culex logs connections at debug level and refusals at "
                                   "warning level"),
    # The process.
    "include_dir": Key(_M, "read: its *.conf files, in Mosquitto's order"),
    "pid_file": Key(_W, "Culex writes no pid file; a service manager tracks its process"),
    "user": Key(_W, "Culex does not change user: start it as the user it should run as"),
}

# A bridge section: `connection NAME` and the keys after it, one `[[bridges]]` table.


def _bm(text: str) -> Key:
    return Key(_M, text, bridge=True)


def _bw(text: str) -> Key:
    return Key(_W, text, bridge=True)


def _br(text: str) -> Key:
    return Key(_R, text, bridge=True)


NO_LAZY_START = "applies to lazy bridges (start_type lazy), which Culex does not have"
BRIDGE_CATALOGUE: dict[str, Key] = {
    "connection": _bm("[[bridges]] name (1-64 letters, digits, '_', '.' or '-'; another name "
                      "is refused)"),
    "address": _bm("[[bridges]] address: each host[:port] (separated by spaces), its port "
                   "written out (1883 when left out, as in Mosquitto, also with TLS)"),
    "addresses": _bm("[[bridges]] address (another name of address)"),
    "topic": _bm("[[bridges]] topics: one { pattern, direction, qos, local_prefix, "
                 "remote_prefix } per line; qos 0 when left out, as in Mosquitto"),
    "bridge_protocol_version": _bm("[[bridges]] protocol_version: mqttv311 (Mosquitto's "
                                   "default, written out) gives \"3.1.1\", mqttv50 \"5\"; "
                                   "mqttv31 is refused: Culex's bridge speaks MQTT 3.1.1 and 5"),
    "remote_clientid": _bm("[[bridges]] client_id"),
    "clientid": _bm("[[bridges]] client_id (an older name of remote_clientid)"),
    "remote_username": _bm("[[bridges]] username"),
    "username": _bm("[[bridges]] username (an older name of remote_username)"),
    "remote_password": _bm("kept in memory by culex serve (culex.toml takes it from a file: "
                           "convert-config says to write it to one for [[bridges]] "
                           "password_file)"),
    "password": _bm("as remote_password (an older name of it)"),
    "cleansession": _bm("false only, what Culex's bridge always does (nothing to set); true is "
                        "refused: Culex keeps the bridge's sessions, so nothing is lost "
                        "while the remote is away"),
    "local_cleansession": _bm("false only, what Culex's bridge always does (nothing to set); "
                              "true is refused"),
    "bridge_cafile": _bm("[[bridges]] cafile"),
    "bridge_certfile": _bm("[[bridges]] certfile (with bridge_cafile: without it Mosquitto "
                           "uses no TLS, so it is refused)"),
    "bridge_keyfile": _bm("[[bridges]] keyfile"),
    "bridge_tls_version": _bm("[[bridges]] tls_version: tlsv1.2 gives \"1.2\", tlsv1.3 "
                              "\"1.3\"; tlsv1.1 is refused (Culex needs TLS 1.2 or later)"),
    "bridge_insecure": _bm("false only, what Culex does (nothing to set); true is refused: "
                           "Culex always checks that the remote's certificate names its host"),
    "bridge_require_ocsp": _bm("false only (nothing to set); true is refused: OCSP is not "
                               "supported"),
    "bridge_outgoing_retain": _bm("true only, what Culex does (nothing to set); false is "
                                  "refused: Culex's bridge keeps RETAIN"),
    "keepalive_interval": _bm("[[bridges]] keepalive (below 5: 5, as in Mosquitto)"),
    "try_private": _bm("[[bridges]] try_private"),
    "restart_timeout": _bm("[[bridges]] reconnect_delay and reconnect_delay_max: BASE CAP, or "
                           "one value for both; Mosquitto's default (5 and 30) is written out"),
    "local_username": _bm("[[bridges]] local_username"),
    "start_type": _bm("automatic only, the default (nothing to set); lazy and once are "
                      "refused: a Culex bridge connects at start-up and stays connected"),
    "round_robin": _bm("false only, the default (nothing to set): Culex goes back to the first "
                       "address when a connection ends; true is refused"),
    "notifications": _bm("false: nothing to set; true (Mosquitto's default) is accepted with "
                         "a warning: Culex publishes no $SYS/broker/connection/<client "
                         "id>/state, its bridges' state is in $SYS/broker/bridges/<name>/"),
    "bridge_attempt_unsubscribe": _bm("false: nothing to set, Culex never unsubscribes on the "
                                      "remote; true is accepted with a warning"),
    "notification_topic": _bw("Culex publishes no connection notifications; a bridge's state "
                              "is in $SYS/broker/bridges/<name>/connected"),
    "notifications_local_only": _bw("Culex publishes no connection notifications; a bridge's "
                                    "state is in $SYS/broker/bridges/<name>/connected"),
    "local_clientid": _bw("the local side of a Culex bridge is the session $bridge/<name>"),
    "local_password": _bw("the local side of a Culex bridge is not authenticated; "
                          "local_username chooses its ACL rules"),
    "bridge_max_packet_size": _bw("Culex's bridge accepts what [limits] max_packet_size "
                                  "allows; an MQTT 5 remote's CONNACK says its own maximum"),
    "idle_timeout": _bw(NO_LAZY_START),
    "threshold": _bw(NO_LAZY_START),
    "bridge_alpn": _br("ALPN on bridges is not supported"),
    "bridge_bind_address": _br("binding a bridge to a local address is not supported"),
    "bridge_capath": _br("Culex takes one CA bundle: concatenate the certificates into one "
                         "file and name it with bridge_cafile"),
    "bridge_identity": _br("TLS-PSK is not supported"),
    "bridge_psk": _br("TLS-PSK is not supported"),
}
CATALOGUE.update(BRIDGE_CATALOGUE)


def entry_name(name: str) -> str:
    """The catalogue's name of a key as written in a file: `plugin_opt_*` for a plugin's
    option."""
    return next((prefix + "*" for prefix in PLUGIN_PREFIXES if name.startswith(prefix)), name)


def lookup(name: str) -> Key | None:
    """The catalogue entry of a key as written in a file (prefix keys included), or None."""
    return CATALOGUE.get(entry_name(name))
