"""Read a `mosquitto.conf` into the nested dict a `culex.toml` loads into.

The format, as Mosquitto 2.0 reads it (src/conf.c): one `key value` per line, a line whose
first character is `#` is a comment, string values run to the end of the line, `include_dir`
(main file only) reads a directory's `*.conf` files in Mosquitto's order. Listener keys apply to
the latest `listener` line, or, before the first one in a file, to the "default listener" that
`port` and `bind_address` configure. Mosquitto 2's defaults that differ from Culex's are written
out: with no `listener`, `port` or `bind_address` it listens on localhost only and lets anonymous
clients in; otherwise `allow_anonymous` defaults to false; a listener without an address listens
on every interface, IPv4 and IPv6; persistence is off unless `persistence true`.
A `connection` line starts a bridge section, whose keys follow it in the same file (`bridges`).

What cannot be honoured is never dropped in silence: an unknown key or a bad value is an error
(as in Mosquitto), a key Culex cannot honour is a refusal, and a key that only tunes Mosquitto's
own machinery is a warning (see `keys`). Loading stops at the first refusal; `culex
convert-config` writes every refusal and warning as a comment instead. Every message names the
file, the line and the key.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from .bridges import BRIDGE_HANDLERS, build_bridges
from .handlers import HANDLERS
from .keys import Fate, entry_name, lookup
from .model import (
    ListenerDraft,
    MosquittoConf,
    MosquittoConfError,
    Setting,
    State,
    Where,
    integer,
    put,
    text_line,
    words,
)

LOCAL_ONLY = "Mosquitto 2 without a listener, port or bind_address: localhost only"
LOG_LEVELS = {"debug": "debug", "all": "debug", "information": "info", "notice": "info",
              "warning": "warning", "error": "error"}
LOG_ORDER = ("debug", "info", "warning", "error")


def _include_order(name: str) -> list[tuple[str, str]]:
    """Mosquitto's include_dir order: case-insensitively, then upper case before lower."""
    return [(char.upper(), char) for char in name]


class Reader(State):
    """Mosquitto's reading rules, line by line, then `build` into a MosquittoConf."""

    def __init__(self) -> None:
        super().__init__()
        self.main: Path | None = None
        self.files: list[str] = []

    # Reading.

    def read(self, path: Path, level: int = 0) -> None:
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise MosquittoConfError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            number = text_line(exc.object, exc.start)
            raise MosquittoConfError(f"{path}:{number}: not valid UTF-8") from None
        if self.main is None:
            self.main = path
        self.files.append(str(path))
        # Per file, as in Mosquitto: an included file starts with the default listener and no
        # bridge, and the file that includes it goes on with its own afterwards.
        current, outer_bridge, self.bridge = self.default, self.bridge, None
        for number, raw in enumerate(text.split("\n"), start=1):
            line = raw.rstrip("\r")
            stripped = line.lstrip(" ")
            if not stripped or stripped.startswith("#") or not stripped.strip():
                continue
            key, _, rest = stripped.partition(" ")
            where = Where(str(path), number, key)
            current = self.line(where, rest, current, level)
        self.bridge = outer_bridge

    def line(self, where: Where, rest: str, current: ListenerDraft, level: int) -> ListenerDraft:
        entry = lookup(where.key)
        if entry is None:
            raise MosquittoConfError(f"{where}: unknown key (Mosquitto does not know it either)")
        value = rest.strip(" \t")
        if entry.bridge and self.bridge is None and where.key != "connection":
            raise MosquittoConfError(f"{where}: a bridge key needs a `connection` line before "
                                     "it in the same file, as in Mosquitto")
        if entry.fate is Fate.REFUSED:
            self.refuse(where, value, f"not supported: {entry.culex}")
        elif entry.fate is Fate.WARNED:
            self.warn(where, value, where.key, entry.culex)
        elif where.key == "include_dir":
            self.include(where, value, level)
        elif where.key == "listener":
            return self.listener(where, value)
        else:
            handler = (BRIDGE_HANDLERS if entry.bridge else HANDLERS)[entry_name(where.key)]
            if not value:
                raise MosquittoConfError(f"{where}: empty value")
            handler(self, where, value, current)
        return current

    def include(self, where: Where, value: str, level: int) -> None:
        if level > 0:
            self.warn(where, value, "include_dir nested", "Mosquitto reads include_dir only "
                      "from the main configuration file, and ignores it here")
            return
        if not value:
            raise MosquittoConfError(f"{where}: empty value")
        directory = Path(value)
        try:
            names = [entry.name for entry in directory.iterdir()
                     if len(entry.name) > 5 and entry.name.endswith(".conf")]
        except OSError as exc:
            raise MosquittoConfError(f"{where}: cannot read directory {value}: "
                                     f"{exc.strerror or exc}") from None
        for name in sorted(names, key=_include_order):
            path = directory / name
            if self.main is not None and path.resolve() == self.main.resolve():
                raise MosquittoConfError(f"{where}: {value} contains the main configuration "
                                         "file itself")
            self.read(path, level + 1)

    def listener(self, where: Where, value: str) -> ListenerDraft:
        self.local_only = False
        tokens = words(value)
        if not tokens:
            raise MosquittoConfError(f"{where}: empty value")
        port = integer(where, tokens[0], 0, 65535)
        address = tokens[1] if len(tokens) > 1 and not tokens[1].startswith("#") else None
        if port == 0 and address is None:
            raise MosquittoConfError(f"{where}: a listener with port 0 must give a Unix socket "
                                     "path")
        if port != 0 and address is not None and address.startswith("/"):
            self.refuse(where, value, "a Unix socket listener is written `listener 0 PATH`")
        listener = ListenerDraft(where, port, address)
        self.listeners.append(listener)
        return listener

    # Building.

    def build(self) -> MosquittoConf:
        conf = MosquittoConf({})
        drafts = self._drafts(conf)
        self._build_listeners(conf, drafts)
        self._build_auth(conf, drafts)
        self._build_limits(conf, drafts)
        build_bridges(self, conf)
        self._build_storage(conf)
        self._build_logging(conf)
        for path, (value, where) in self.globals.items():
            put(conf, path, value, where)
        # In the order of the lines, files in the order they were read.
        files = {name: index for index, name in enumerate(self.files)}
        conf.warnings = sorted(self.warnings, key=lambda note: (files[note.where.file],
                                                                 note.where.line))
        conf.refusals = sorted(self.refusals, key=lambda note: (files[note.where.file],
                                                                 note.where.line))
        return conf

    def _drafts(self, conf: MosquittoConf) -> list[ListenerDraft]:
        default = self.default
        if self.local_only:
            if default.touched is not None:
                self.refuse(default.touched, "", "applies to the default listener, which "
                            "Mosquitto 2 does not open without a `listener`, `port` or "
                            "`bind_address` line (it listens on localhost only and ignores "
                            "this key); add a `listener` line")
            return []
        if default.touched is not None and default.opened_by is None:
            self.refuse(default.touched, "", "applies to the default listener, which is not "
                        "opened (no `port` or `bind_address`): Mosquitto ignores it; move it "
                        "after a `listener` line")
        return self.listeners + ([default] if default.opened_by is not None else [])

    def _build_listeners(self, conf: MosquittoConf, drafts: list[ListenerDraft]) -> None:
        tables: list[dict[str, Any]] = []
        if not drafts:
            for host in ("127.0.0.1", "::1"):
                conf.defaults[f"listeners[{len(tables)}].host"] = LOCAL_ONLY
                tables.append({"host": host, "port": 1883})
        for draft in drafts:
            where = draft.where or draft.opened_by
            assert where is not None
            port, port_where = draft.settings.pop(
                "port", (draft.port if draft.port is not None else 1883, where))
            host = draft.settings.pop("host", (draft.address, where))[0]
            if port == 0:
                targets: list[tuple[str, Any]] = [("unix", host)]
            else:
                targets = [("host", address) for address in self._hosts(draft, host, where)]
            for name, target in targets:
                index = len(tables)
                table: dict[str, Any] = {name: target}
                conf.origins[f"listeners[{index}].{name}"] = where
                if name == "host":
                    table["port"] = port
                    conf.origins[f"listeners[{index}].port"] = port_where
                    if host is None:
                        conf.defaults[f"listeners[{index}].host"] = (
                            "no address: Mosquitto listens on every interface")
                for key, (value, setting_where) in draft.settings.items():
                    table[key] = value
                    conf.origins[f"listeners[{index}].{key}"] = setting_where
                tables.append(table)
        conf.data["listeners"] = tables

    def _hosts(self, draft: ListenerDraft, host: str | None, where: Where) -> list[str]:
        domain, domain_where = draft.domain if draft.domain is not None else (None, where)
        if host is None:
            return {None: ["0.0.0.0", "::"], "ipv4": ["0.0.0.0"], "ipv6": ["::"]}[domain]
        if domain is None:
            return [host]
        if host == "localhost":
            return ["127.0.0.1" if domain == "ipv4" else "::1"]
        try:
            version = ipaddress.ip_address(host).version
        except ValueError:
            self.refuse(domain_where, domain, f"with the host name {host!r}: Culex listens on "
                        "every address a name resolves to; give the IPv4 or IPv6 address")
            return [host]
        if version != (4 if domain == "ipv4" else 6):
            raise MosquittoConfError(f"{domain_where}: {domain} does not match the "
                                     f"listener's address {host}")
        return [host]

    def _build_auth(self, conf: MosquittoConf, drafts: list[ListenerDraft]) -> None:
        security = self.security
        if self.per_listener is not None and self.per_listener[0] and drafts:
            security = self._common(drafts, "security", {"allow_anonymous": False})
        auth: dict[str, Any] = {}
        for name in ("password_file", "acl_file", "dynamic_security"):
            if name in security:
                value, where = security[name]
                auth[name] = value
                conf.origins[f"auth.{name}"] = where
        conf.data["auth"] = auth
        if self.plugin is not None and self.plugin[0] and "dynamic_security" not in auth:
            self.warn(self.plugin[1], "", "plugin", "without plugin_opt_config_file Mosquitto "
                      "does not activate the dynamic-security plugin either")
        if "allow_anonymous" in security:
            value, where = security["allow_anonymous"]
            if self.local_only and not value:
                self.refuse(where, "false", "has no effect in Mosquitto's local-only mode (no "
                            "`listener`, `port` or `bind_address`): Mosquitto lets anonymous "
                            "clients on localhost in anyway; add a `listener` line or remove "
                            "it")
            auth["allow_anonymous"] = value
            conf.origins["auth.allow_anonymous"] = where
        else:
            auth["allow_anonymous"] = self.local_only
            conf.defaults["auth.allow_anonymous"] = (
                "Mosquitto 2's default: anonymous clients only in local-only mode"
                if self.local_only else "Mosquitto 2's default once a listener is configured")

    def _common(self, drafts: list[ListenerDraft], part: str,
                defaults: dict[str, Any]) -> dict[str, Setting]:
        """The settings every listener shares; a difference is refused (Culex's are global)."""
        tables: list[dict[str, Setting]] = [getattr(draft, part) for draft in drafts]
        common: dict[str, Setting] = {}
        for name in sorted({name for table in tables for name in table}):
            present = [table[name] for table in tables if name in table]
            values = {value for value, _ in present}
            if len(present) < len(tables) and name in defaults:
                values.add(defaults[name])
            if len(values) > 1 or (len(present) < len(tables) and name not in defaults):
                value, where = present[0]
                shown = str(value).lower() if isinstance(value, bool) else str(value)
                self.refuse(where, shown, "differs between listeners (or is not "
                            "set on every one): in Culex it applies to every listener")
            common[name] = present[0]
        return common

    def _build_limits(self, conf: MosquittoConf, drafts: list[ListenerDraft]) -> None:
        for name, (value, where) in self._common(drafts, "limits", {"max_qos": 2,
                                                                    "max_topic_alias": 10}).items():
            self.globals[f"limits.{name}"] = (value, where)

    def _build_storage(self, conf: MosquittoConf) -> None:
        persistence = self.globals.pop("storage.durability", None)
        location = self.globals.pop("storage.location", None)
        filename = self.globals.pop("storage.file", None)
        if persistence is None:
            conf.data["storage"] = {"durability": "none"}
            conf.defaults["storage.durability"] = (
                "Mosquitto's default (persistence false): nothing survives a restart")
        else:
            put(conf, "storage.durability", *persistence)
        source = filename or location or persistence
        if source is not None and (source is not persistence or source[0] == "sync"):
            name = filename[0] if filename else "culex.db"
            path = f"{location[0].rstrip('/')}/{name}" if location else name
            put(conf, "storage.path", path, source[1])

    def _build_logging(self, conf: MosquittoConf) -> None:
        files = [(dest[len("file"):].strip(" \t"), where) for dest, where in self.log_dests
                 if words(dest)[0] == "file"]
        for path, where in files:
            if not path:
                raise MosquittoConfError(f"{where}: empty log_dest file value")
            if "logging.file" in conf.origins:
                first = conf.origins["logging.file"]
                raise MosquittoConfError(f"{where}: duplicate log_dest file (first at "
                                         f"{first.file}:{first.line}), as Mosquitto refuses")
            put(conf, "logging.file", path, where)
        for dest, where in self.log_dests:
            if dest in ("stdout", "stderr") and files:
                self.warn(where, dest, f"log_dest {dest}", "Culex logs to one destination: "
                          f"the file {files[0][0]}")
            elif dest == "stdout":
                self.warn(where, dest, "log_dest stdout", "Culex logs to standard error")
            elif dest != "stderr" and not dest.startswith("file"):
                self.refuse(where, dest, "not supported: Culex logs to standard error or to "
                            "a file (under systemd, the journal keeps standard error)")
        levels = []
        for kind, where in self.log_types:
            if kind == "none":
                self.refuse(where, kind, "not supported: Culex always logs errors")
            elif kind in LOG_LEVELS:
                levels.append((LOG_ORDER.index(LOG_LEVELS[kind]), where))
            else:
                self.warn(where, kind, f"log_type {kind}", f"Culex has no separate {kind} log; "
                          "debug level shows everything")
        if levels:
            rank, where = min(levels, key=lambda pair: pair[0])
            put(conf, "logging.level", LOG_ORDER[rank], where)


def read_mosquitto_conf(path: Path) -> MosquittoConf:
    """Read `path` (and its include_dir files); MosquittoConfError on what Mosquitto refuses
    too. Refusals and warnings are in the result: the caller decides (serve stops at a
    refusal, convert-config comments on it)."""
    reader = Reader()
    reader.read(path)
    return reader.build()
