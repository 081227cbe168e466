"""Log output: one line per event on stderr, as text or JSON, tagged with the worker index
when there are worker processes (they share the supervisor's stderr)."""

from __future__ import annotations

import json
import logging
import sys


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = {"time": self.formatTime(record),
                                     "level": record.levelname.lower(),
                                     "logger": record.name, "message": record.getMessage()}
        if self.worker is not None:
            fields["worker"] = self.worker
        return json.dumps(fields)


def setup_logging(level: str, fmt: str, worker: int | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        tag = "" if worker is None else f"[worker {worker}] "
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {tag}%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
