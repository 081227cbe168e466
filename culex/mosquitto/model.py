"""The pieces a Mosquitto configuration is read into: where each value was written, the notes
on keys without an equivalent, the state of the reading (listeners, global and security
settings), and the parsers of Mosquitto's value syntax, strict where Mosquitto's atoi() is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class MosquittoConfError(Exception):
    """The file cannot be read as a Mosquitto configuration; the message names file and line."""


@dataclass(frozen=True, slots=True)
class Where:
    """Where a value was written: the file, the 1-based line and the key."""

    file: str
    line: int
    key: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}"


@dataclass(frozen=True, slots=True)
class Note:
    """A key that has no equivalent: refused, or accepted with a warning; `text` says why."""

    where: Where
    value: str
    text: str

    def __str__(self) -> str:
        shown = f" {self.value}" if self.value else ""
        return f"{self.where}{shown}: {self.text}"


@dataclass
class MosquittoConf:
    """The result: `data` for `culex.config.parse_config`, and where each value came from."""

    data: dict[str, Any]
    # Dotted culex.toml paths ("limits.max_qos", "listeners[0].port") -> where they were set.
    origins: dict[str, Where] = field(default_factory=dict)
    # culex.toml paths whose value is a Mosquitto default rather than a line of the file.
    defaults: dict[str, str] = field(default_factory=dict)
    warnings: list[Note] = field(default_factory=list)
    refusals: list[Note] = field(default_factory=list)
    # Bridge name -> the password its section gives inline, kept out of `data`: culex.toml
    # takes a bridge's password from a file (password_file), so `culex serve` passes it on in
    # memory and `culex convert-config` says where it goes instead of writing it.
    passwords: dict[str, Setting] = field(default_factory=dict)

    def checks(self) -> Iterator[tuple[dict[str, Any], str]]:
        """(partial data, source) pairs to validate one by one, so that a bad value is
        reported with the line it came from: every top-level value alone, each listener
        whole (its keys depend on each other: keyfile needs certfile), each bridge whole with
        its `connection` line."""
        for index, listener in enumerate(self.data.get("listeners", ())):
            where = self.origins.get(f"listeners[{index}].port") \
                or self.origins.get(f"listeners[{index}].unix")
            if where is not None:
                yield {"listeners": [listener]}, str(where)
        for index, bridge in enumerate(self.data.get("bridges", ())):
            yield {"bridges": [bridge]}, str(self.origins[f"bridges[{index}].name"])
        for path, where in self.origins.items():
            if path.startswith(("listeners[", "bridges[")):
                continue
            section, _, name = path.partition(".")
            value = self.data[section][name] if name else self.data[section]
            yield ({section: {name: value}} if name else {section: value}), str(where)


Setting = tuple[Any, Where]

TRUE_WORDS = ("true", "1")
FALSE_WORDS = ("false", "0")
# Keys that, set before any `listener` line, make Mosquitto open the default listener
# (config__parse_args in src/conf.c); other keys there configure it without opening it.
OPENS_DEFAULT = frozenset({
    "port", "bind_address", "socket_domain", "protocol", "max_connections", "max_qos",
    "maximum_qos", "cafile", "certfile", "keyfile", "ciphers", "require_certificate",
    "use_identity_as_username", "password_file",
})
class ListenerDraft:
    """One `listener` line (or the default listener) and the keys that follow it."""

    def __init__(self, where: Where | None, port: int | None = None,
                 address: str | None = None) -> None:
        self.where = where
        self.port = port
        self.address = address
        self.settings: dict[str, Setting] = {}
        self.security: dict[str, Setting] = {}
        self.limits: dict[str, Setting] = {}
        self.domain: Setting | None = None
        self.opened_by: Where | None = None
        self.touched: Where | None = None

class BridgeDraft:
    """One `connection` line and the bridge keys after it in the same file."""

    def __init__(self, where: Where, name: str) -> None:
        self.where = where
        self.name = name
        # [[bridges]] key -> (value, the line that set it).
        self.settings: dict[str, Setting] = {}
        # (a `topics` entry, its `topic` line), in the order of the lines.
        self.topics: list[Setting] = []
        self.password: Setting | None = None
        self.notifications: Setting | None = None


class State:
    """What the lines read so far have set; `conf.Reader` reads, `handlers` fill this in."""

    def __init__(self) -> None:
        self.default = ListenerDraft(None)
        self.listeners: list[ListenerDraft] = []
        self.local_only = True
        self.per_listener: Setting | None = None
        self.security_seen: Where | None = None
        self.security: dict[str, Setting] = {}
        self.globals: dict[str, Setting] = {}
        # The latest `plugin` line: whether it is the dynamic-security plugin, and where.
        self.plugin: tuple[bool, Where] | None = None
        self.log_dests: list[tuple[str, Where]] = []
        self.log_types: list[tuple[str, Where]] = []
        self.bridges: list[BridgeDraft] = []
        # The latest `connection` of the file being read: its keys apply to it.
        self.bridge: BridgeDraft | None = None
        self.warnings: list[Note] = []
        self.refusals: list[Note] = []
        self._warned: set[str] = set()

    def refuse(self, where: Where, value: str, text: str) -> None:
        self.refusals.append(Note(where, value, text))

    def warn(self, where: Where, value: str, topic: str, text: str) -> None:
        """One warning per topic (a key, or a key and value), naming its first line."""
        if topic not in self._warned:
            self._warned.add(topic)
            self.warnings.append(Note(where, value, f"accepted without effect: {text}"))


def put(conf: MosquittoConf, path: str, value: Any, where: Where) -> None:
    section, _, name = path.partition(".")
    if name:
        conf.data.setdefault(section, {})[name] = value
    else:
        conf.data[section] = value
    conf.origins[path] = where


def text_line(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def words(value: str) -> list[str]:
    return [word for word in value.split(" ") if word]


def single(where: Where, value: str) -> str:
    """A one-word value; a trailing `# comment` is allowed, other trailing words are not."""
    tokens = words(value)
    if len(tokens) > 1 and not tokens[1].startswith("#"):
        raise MosquittoConfError(f"{where}: unexpected text after the value: "
                                 f"{' '.join(tokens[1:])!r}")
    return tokens[0]


_INTEGER = re.compile(r"-?[0-9]+")


def integer(where: Where, value: str, low: int | None = None, high: int | None = None) -> int:
    word = single(where, value)
    if not _INTEGER.fullmatch(word):
        raise MosquittoConfError(f"{where}: {word!r} is not a whole number")
    number = int(word)
    if (low is not None and number < low) or (high is not None and number > high):
        raise MosquittoConfError(f"{where}: {number} is out of range {low}..{high}")
    return number


def boolean(where: Where, value: str) -> bool:
    word = single(where, value)
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise MosquittoConfError(f"{where}: {word!r} is not true or false")


def choice(where: Where, value: str, choices: tuple[str, ...]) -> str:
    word = single(where, value)
    if word not in choices:
        raise MosquittoConfError(f"{where}: {word!r} is not one of {', '.join(choices)}")
    return word
