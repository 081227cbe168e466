"""Write a read `mosquitto.conf` out as `culex.toml` text (`culex convert-config`).

Each value carries a comment saying which line of which file it came from, or which Mosquitto
default it writes out; every key with no equivalent (refused, or accepted with a warning) is
listed at the end as a comment with the reason, so nothing of the original goes missing.
"""

from __future__ import annotations

import json
from typing import Any

from .model import MosquittoConf


def toml_value(value: Any) -> str:
    """A TOML literal: JSON's string escapes are TOML's, and so are its numbers."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) \
            + " }"
    raise TypeError(f"no TOML form for {value!r}")


def _line(conf: MosquittoConf, path: str, name: str, value: Any) -> str:
    return _noted(conf, path, f"{name} = {toml_value(value)}")


def _noted(conf: MosquittoConf, path: str, text: str) -> str:
    where = conf.origins.get(path)
    note = f"{where.file}:{where.line}: {where.key}" if where is not None \
        else conf.defaults.get(path)
    return f"{text}  # {note}" if note else text


def _bridge(conf: MosquittoConf, index: int, table: dict[str, Any]) -> list[str]:
    """A `[[bridges]]` table, its topics one per line, and where an inline password goes."""
    path = f"bridges[{index}]"
    lines = ["", "[[bridges]]"]
    lines += [_line(conf, f"{path}.{key}", key, value) for key, value in table.items()
              if key != "topics"]
    if table["name"] in conf.passwords:
        where = conf.passwords[table["name"]][1]
        lines += [f"# {where.file}:{where.line}: {where.key}: culex.toml reads a bridge's "
                  "password from a file (its first line, mode 0600): write it to one and name "
                  "it here:",
                  f'# password_file = "/etc/culex/{table["name"]}.password"']
    lines.append("topics = [")
    lines += [_noted(conf, f"{path}.topics[{number}]", f"  {toml_value(topic)},")
              for number, topic in enumerate(table["topics"])]
    return [*lines, "]"]


def dumps(conf: MosquittoConf, source: str) -> str:
    lines = [f"# culex.toml converted from {source} by `culex convert-config`.",
             "# Comments name the Mosquitto line each value comes from, or the Mosquitto",
             "# default it writes out where Culex's own default differs."]
    tables = {name: value for name, value in conf.data.items() if isinstance(value, dict)}
    scalars = [_line(conf, name, name, value) for name, value in conf.data.items()
               if not isinstance(value, dict | list)]
    if scalars:
        lines += ["", *scalars]
    for index, listener in enumerate(conf.data.get("listeners", ())):
        lines += ["", "[[listeners]]"]
        lines += [_line(conf, f"listeners[{index}].{key}", key, value)
                  for key, value in listener.items()]
    for name, table in tables.items():
        if not table:
            continue
        lines += ["", f"[{name}]"]
        lines += [_line(conf, f"{name}.{key}", key, value) for key, value in table.items()]
    for index, bridge in enumerate(conf.data.get("bridges", ())):
        lines += _bridge(conf, index, bridge)
    if conf.refusals or conf.warnings:
        lines += ["", "# Mosquitto keys with no equivalent in Culex:"]
        notes = sorted([*conf.refusals, *conf.warnings],
                       key=lambda note: (note.where.file, note.where.line))
        lines += [f"# {note}" for note in notes]
    return "\n".join(lines) + "\n"
