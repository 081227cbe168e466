"""culex.toml: load, type-check and validate, or fail naming the file, the key and the problem.

Nothing starts on a bad configuration: an unknown key is an error (a typo must not silently
fall back to a default), and so is a value of the wrong type or out of range.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .auth.scram import METHOD as SCRAM_SHA_256
from .bridge.settings import BridgeSettings, BridgeSettingsError, parse_bridges
from .cluster.settings import ClusterConfig
from .core.limits import Limits
from .core.options import Mqtt5Options
from .core.retained import MAX_WORKERS
from .mosquitto.bridges import with_passwords
from .mosquitto.conf import read_mosquitto_conf
from .mosquitto.model import MosquittoConfError

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


TLS_VERSIONS = ("1.2", "1.3")
PROTOCOLS = ("mqtt", "websocket")
# sun_path holds 108 bytes with its terminating NUL.
UNIX_PATH_MAX = 107


@dataclass(frozen=True, slots=True)
class Listener:
    host: str = "127.0.0.1"
    port: int = 1883
    # TLS: a listener with a certificate speaks MQTT over TLS only.
    certfile: str = ""
    keyfile: str = ""
    # CA bundle that client certificates must chain to (mutual TLS).
    cafile: str = ""
    require_certificate: bool = False
    # The client certificate's subject CN becomes the user name (mTLS instead of passwords).
    use_identity_as_username: bool = False
    min_tls_version: str = "1.2"
    # OpenSSL cipher list for TLS 1.2; empty keeps Python's secure default.
    ciphers: str = ""
    # Open sockets on this listener at once, CONNECTed or not (-1: unlimited). Beyond it a new
    # socket is closed on accept, before it costs a parser or a TLS handshake: this bounds what
    # one exposed port can hold even when [limits] max_connections counts only logged-in clients.
    max_connections: int = -1
    # "mqtt": MQTT straight over the socket. "websocket": MQTT over WebSocket (RFC 6455, the
    # `mqtt` subprotocol), as browsers connect; with a certificate, wss.
    protocol: str = "mqtt"
    # WebSocket only: the HTTP path of the handshake; any other path gets 404.
    path: str = "/mqtt"
    # WebSocket only: the Origin headers accepted (a browser page's scheme://host[:port]);
    # empty accepts any. A request without Origin is not from a browser and is accepted: the
    # check stops other sites' pages (cross-site WebSocket hijacking), and any other client
    # could send whatever Origin it liked.
    allowed_origins: tuple[str, ...] = ()
    # Every connection starts with a PROXY protocol v1 or v2 header (HAProxy, nginx, cloud load
    # balancers): its source address is the client's. Without a valid one it is closed.
    proxy_protocol: bool = False
    # A Unix socket path to listen on instead of host and port, created with `mode` (octal).
    unix: str = ""
    mode: str = "0660"

    @property
    def tls(self) -> bool:
        return bool(self.certfile)

    @property
    def websocket(self) -> bool:
        return self.protocol == "websocket"

    @property
    def local(self) -> bool:
        """Reachable from this host only: a Unix socket or a loopback address."""
        return bool(self.unix) or is_loopback(self.host)

    @property
    def address(self) -> str:
        """Where it listens, as logs and errors name it."""
        return f"unix:{self.unix}" if self.unix else f"{self.host}:{self.port}"

    def file_mode(self) -> int:
        return int(self.mode, 8)

    def problems(self) -> list[str]:
        found = []
        if not 0 <= self.port <= 65535:
            found.append(f"port: {self.port} is not a TCP port")
        if self.keyfile and not self.certfile:
            found.append("keyfile: set without certfile")
        if (self.require_certificate or self.use_identity_as_username) and not self.cafile:
            found.append("require_certificate/use_identity_as_username need cafile")
        if self.use_identity_as_username and not self.require_certificate:
            found.append("use_identity_as_username needs require_certificate = true")
        if (self.cafile or self.require_certificate) and not self.certfile:
            found.append("cafile/require_certificate need certfile (a TLS listener)")
        if self.max_connections < -1 or self.max_connections == 0:
            found.append("max_connections: must be -1 (unlimited) or positive")
        if self.min_tls_version not in TLS_VERSIONS:
            found.append(f"min_tls_version: {self.min_tls_version!r} is not one of "
                         f"{', '.join(TLS_VERSIONS)}")
        for name in ("certfile", "keyfile", "cafile"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                found.append(f"{name}: {value}: no such file")
        return found + self._transport_problems()

    def _transport_problems(self) -> list[str]:
        found = []
        if self.protocol not in PROTOCOLS:
            found.append(f"protocol: {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if not self.path.startswith("/"):
            found.append(f"path: {self.path!r} must start with /")
        if not self.websocket and (self.path != "/mqtt" or self.allowed_origins):
            found.append("path/allowed_origins: only for protocol = \"websocket\"")
        if not (1 <= len(self.mode) <= 4 and set(self.mode) <= set("01234567")
                and int(self.mode, 8) <= 0o777):
            found.append(f"mode: {self.mode!r} is not an octal file mode such as \"0660\"")
        if self.unix and not os.path.isabs(self.unix):
            found.append(f"unix: {self.unix!r} must be an absolute path")
        if len(os.fsencode(self.unix)) > UNIX_PATH_MAX:
            found.append(f"unix: longer than {UNIX_PATH_MAX} bytes (the kernel's limit)")
        return found


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"
    format: str = "text"
    # A file to log to instead of stderr, reopened on SIGUSR1 (logrotate); empty: stderr.
    file: str = ""


DURABILITY_MODES = ("sync", "batch", "none")
# Where the state is kept: a SQLite file, or (clustered only) Redis, beside the member's stream,
# where another node can take a session over from a member that is down.
BACKENDS = ("sqlite", "redis")


@dataclass(frozen=True, slots=True)
class StorageConfig:
    # sync: PUBACK/PUBREC/PUBCOMP only after the state they cover is committed (fsynced).
    # batch: commit every `batch_interval` seconds, ack at once (loses that window on a crash).
    # none: memory only; nothing survives a restart.
    durability: str = "sync"
    path: str = "data/culex.db"
    batch_interval: float = 0.05
    # "sqlite" or "redis"; unset: "redis" with `[cluster]`, "sqlite" without.
    backend: str = ""


@dataclass(frozen=True, slots=True)
class AuthConfig:
    # Clients without credentials. Unset: allowed only when every listener is on loopback and
    # no password file is set (Mosquitto 2's rule: a broker reachable from the network needs
    # authentication, and configuring passwords means wanting them).
    allow_anonymous: bool | None = None
    # `culex passwd` file: user names and salted scrypt/PBKDF2 hashes.
    password_file: str = ""
    # Mosquitto-style ACL file; when set, what it does not grant is denied.
    acl_file: str = ""
    # MQTT 5 enhanced authentication methods offered (§4.12). Empty: none, and a CONNECT with an
    # Authentication Method gets CONNACK 0x8C. "SCRAM-SHA-256" checks the password file's SCRAM
    # entries (`culex passwd --scram`), so it needs password_file.
    enhanced_methods: tuple[str, ...] = ()
    # Mosquitto's dynamic-security JSON file (`mosquitto_ctrl dynsec init FILE admin` makes
    # one): its clients, groups and roles say who may connect and what they may do, and
    # `$CONTROL/dynamic-security/v1` changes them at run time. It replaces password_file and
    # acl_file, so it goes with neither.
    dynamic_security: str = ""

    def problems(self) -> list[str]:
        found = self._dynamic_security_problems()
        for name in ("password_file", "acl_file"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                found.append(f"{name}: {value}: no such file")
        for method in self.enhanced_methods:
            if method not in ENHANCED_METHODS:
                found.append(f"enhanced_methods: {method!r} is not supported (supported: "
                             f"{', '.join(ENHANCED_METHODS)})")
        if len(set(self.enhanced_methods)) != len(self.enhanced_methods):
            found.append("enhanced_methods: a method is listed twice")
        if SCRAM_SHA_256 in self.enhanced_methods and not self.password_file:
            found.append(f"enhanced_methods: {SCRAM_SHA_256} needs password_file (its SCRAM "
                         "entries are made by `culex passwd --scram`)")
        return found

    def _dynamic_security_problems(self) -> list[str]:
        path = self.dynamic_security
        if not path:
            return []
        if self.password_file or self.acl_file:
            return ["dynamic_security: cannot be combined with password_file or acl_file: its "
                    "file holds the clients, their passwords and their access (create the "
                    "users there with `mosquitto_ctrl dynsec createClient`)"]
        if self.enhanced_methods:
            return ["enhanced_methods: not available with dynamic_security (its clients have "
                    "PBKDF2-SHA512 hashes, not SCRAM credentials)"]
        if not Path(path).is_file():
            return [f"dynamic_security: {path}: no such file (`mosquitto_ctrl dynsec init "
                    f"{path} admin` creates one with an admin client)"]
        if not os.access(Path(path).parent, os.W_OK):
            return [f"dynamic_security: {path}: its directory is not writable, so no change "
                    "could be saved"]
        return []


ENHANCED_METHODS = (SCRAM_SHA_256,)


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin HTTP listener: /metrics, /api/v1/... and the explorer page (README, "Admin
    API"). On by default, on loopback only."""

    # "" turns it off.
    host: str = "127.0.0.1"
    port: int = 18083
    # A file holding the bearer token every request must carry; required beyond loopback.
    token_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.host)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def problems(self) -> list[str]:
        found = []
        if not 0 <= self.port <= 65535:
            found.append(f"port: {self.port} is not a TCP port")
        if self.token_file and not Path(self.token_file).is_file():
            found.append(f"token_file: {self.token_file}: no such file")
        return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Config:
    listeners: tuple[Listener, ...] = (Listener(),)
    limits: Limits = field(default_factory=Limits)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    mqtt5: Mqtt5Options = field(default_factory=Mqtt5Options)
    admin: AdminConfig = field(default_factory=AdminConfig)
    # Seconds between $SYS/broker publications; 0 turns $SYS off.
    sys_interval: float = 10.0
    # Worker processes, one event loop (one core) each; 0 = one per CPU this process may use.
    workers: int = 1
    # Nodes clustered on Redis (`[cluster]`); None: one node on its own.
    cluster: ClusterConfig | None = None
    # What loading noticed but accepted (a mosquitto.conf key without effect in Culex), logged
    # once at start-up.
    warnings: tuple[str, ...] = ()
    # Store-and-forward links to other brokers (culex/bridge/settings.py).
    bridges: tuple[BridgeSettings, ...] = ()

    def worker_count(self) -> int:
        return self.workers or len(os.sched_getaffinity(0))

    def state_in_redis(self) -> bool:
        """Whether the durable state is kept in the cluster's Redis rather than a file."""
        return (self.cluster is not None and self.storage.durability != "none"
                and self.storage.backend != "sqlite")


# Field annotations are strings (postponed evaluation); TOML has no null, so an optional field
# can only be given its non-None type.
_KINDS: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool,
                           "bool | None": bool, "tuple[str, ...]": list}


def _typed(value: Any, expected: str, where: str) -> Any:
    kind = _KINDS[expected]
    if kind is list:  # a TOML array of strings, kept as an immutable tuple
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{where}: expected an array of strings, got {value!r}")
        return tuple(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {type(value).__name__} "
                          f"{value!r}")
    return value


def _build(cls: Any, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(fields)})")
    return cls(**{name: _typed(value, str(fields[name].type), f"{where}.{name}")
                  for name, value in table.items()})


def parse_config(data: dict[str, Any], source: str) -> Config:
    known = {"admin", "auth", "bridges", "cluster", "listeners", "limits", "logging", "mqtt5",
             "storage", "sys_interval", "workers"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: {unknown[0]}: unknown key "
                          f"(known: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = {}
    if "listeners" in data:
        tables = data["listeners"]
        if not isinstance(tables, list) or not tables:
            raise ConfigError(f"{source}: listeners: expected one or more [[listeners]] tables")
        listeners = tuple(_build(Listener, table, f"{source}: listeners[{index}]")
                          for index, table in enumerate(tables))
        for index, listener in enumerate(listeners):
            problems = listener.problems()
            if problems:
                raise ConfigError(f"{source}: listeners[{index}].{problems[0]}")
        kwargs["listeners"] = listeners
    for name, kind in (("limits", Limits), ("mqtt5", Mqtt5Options)):
        if name in data:
            section = _build(kind, data[name], f"{source}: {name}")
            problems = section.problems()
            if problems:
                raise ConfigError(f"{source}: {name}: {problems[0]}")
            kwargs[name] = section
    if "logging" in data:
        logging_config = _build(LoggingConfig, data["logging"], f"{source}: logging")
        if logging_config.level not in LOG_LEVELS:
            raise ConfigError(f"{source}: logging.level: {logging_config.level!r} is not one of "
                              f"{', '.join(LOG_LEVELS)}")
        if logging_config.format not in LOG_FORMATS:
            raise ConfigError(f"{source}: logging.format: {logging_config.format!r} is not one "
                              f"of {', '.join(LOG_FORMATS)}")
        kwargs["logging"] = logging_config
    if "storage" in data:
        storage = _build(StorageConfig, data["storage"], f"{source}: storage")
        if storage.durability not in DURABILITY_MODES:
            raise ConfigError(f"{source}: storage.durability: {storage.durability!r} is not one "
                              f"of {', '.join(DURABILITY_MODES)}")
        if storage.batch_interval <= 0:
            raise ConfigError(f"{source}: storage.batch_interval: must be positive")
        if storage.backend and storage.backend not in BACKENDS:
            raise ConfigError(f"{source}: storage.backend: {storage.backend!r} is not one of "
                              f"{', '.join(BACKENDS)}")
        if storage.backend == "redis" and "cluster" not in data:
            raise ConfigError(f"{source}: storage.backend: \"redis\" keeps the state in the "
                              "cluster's Redis, and needs a [cluster] section")
        kwargs["storage"] = storage
    if "auth" in data:
        auth = _build(AuthConfig, data["auth"], f"{source}: auth")
        problems = auth.problems()
        if problems:
            raise ConfigError(f"{source}: auth.{problems[0]}")
        kwargs["auth"] = auth
    if "admin" in data:
        admin = _build(AdminConfig, data["admin"], f"{source}: admin")
        problems = admin.problems()
        if problems:
            raise ConfigError(f"{source}: admin.{problems[0]}")
        kwargs["admin"] = admin
    if "sys_interval" in data:
        interval = _typed(data["sys_interval"], "float", f"{source}: sys_interval")
        if interval < 0:
            raise ConfigError(f"{source}: sys_interval: must be 0 (off) or positive")
        kwargs["sys_interval"] = interval
    if "bridges" in data:
        try:
            kwargs["bridges"] = parse_bridges(data["bridges"], source)
        except BridgeSettingsError as exc:
            raise ConfigError(str(exc)) from None
    if "workers" in data:
        workers = _typed(data["workers"], "int", f"{source}: workers")
        if not 0 <= workers <= MAX_WORKERS:
            raise ConfigError(f"{source}: workers: must be 0 (one per CPU) to {MAX_WORKERS}")
        kwargs["workers"] = workers
    if "cluster" in data:
        cluster = _build(ClusterConfig, data["cluster"], f"{source}: cluster")
        problems = cluster.problems()
        if problems:
            raise ConfigError(f"{source}: cluster.{problems[0]}")
        kwargs["cluster"] = cluster
    return Config(**kwargs)


def check_exposure(config: Config, source: str, listeners_from: str | None = None) -> None:
    """Refuse to listen beyond loopback with nobody checked (the Mosquitto 2 rule), for MQTT
    and for the admin API alike.

    `source` names the configuration; `listeners_from` the command-line options that replaced
    its listeners, if any: the error blames whichever set the exposed listener."""
    exposed = [(index, listener) for index, listener in enumerate(config.listeners)
               if not listener.local]
    if exposed and not anonymous_allowed(config) and not config.auth.password_file \
            and not config.auth.dynamic_security \
            and not any(listener.use_identity_as_username for listener in config.listeners):
        index, listener = exposed[0]
        where = listeners_from or f"{source}: listeners[{index}]"
        raise ConfigError(
            f"{where}: listener {listener.address} is reachable beyond loopback "
            "and no authentication is configured: set auth.password_file (see `culex passwd`) "
            "or use_identity_as_username on a TLS listener, or auth.allow_anonymous = true to "
            "accept anyone")
    admin = config.admin
    if admin.enabled and not is_loopback(admin.host) and not admin.token_file:
        raise ConfigError(
            f"{source}: admin.host: the admin listener {admin.address} is reachable beyond "
            "loopback and no admin.token_file is set: set one (a file holding a bearer token) "
            'or host = "127.0.0.1"')


def anonymous_allowed(config: Config) -> bool:
    """The effective allow_anonymous: as set, else only when every listener is loopback and no
    password file (or dynamic-security file) is configured."""
    if config.auth.allow_anonymous is not None:
        return config.auth.allow_anonymous
    return not config.auth.password_file and not config.auth.dynamic_security \
        and all(listener.local for listener in config.listeners)


def load_config(path: Path | None) -> Config:
    """culex.toml, or Mosquitto's format when the file name ends in `.conf`."""
    if path is None:
        return Config()
    if path.suffix == ".conf":
        return load_mosquitto_config(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_config(data, str(path))


def load_mosquitto_config(path: Path) -> Config:
    """A mosquitto.conf, read into culex.toml's shape; each value passes the same checks as
    in TOML, first alone with the line it came from, then all together."""
    try:
        conf = read_mosquitto_conf(path)
    except MosquittoConfError as exc:
        raise ConfigError(str(exc)) from None
    if conf.refusals:
        more = len(conf.refusals) - 1
        raise ConfigError(f"{conf.refusals[0]}" + (
            f" (and {more} more: `culex convert-config {path}` lists them)" if more else ""))
    for data, source in conf.checks():
        parse_config(data, source)
    config = parse_config(conf.data, str(path))
    return dataclasses.replace(config, warnings=tuple(str(note) for note in conf.warnings),
                               bridges=with_passwords(config.bridges, conf.passwords))
