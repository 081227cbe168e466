"""Log output: one line per event, as text or JSON, on stderr or in a log file, tagged with the
worker index when there are worker processes.

A log file (`[logging] file`, `--log-file`) is opened in append mode by every process that
logs (the supervisor and each worker: O_APPEND keeps their lines whole) and reopened by name on
SIGUSR1, so logrotate can move it away and signal the broker instead of copying and truncating
it (`copytruncate` loses the lines written in between).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TextIO

from .config import Config

log = logging.getLogger("culex")


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


def _open_append(path: Path) -> TextIO:
    return path.open("a", encoding="utf-8")


class LogFile(logging.StreamHandler[TextIO]):
    """A log file that `reopen()` opens again by name (after logrotate renamed it)."""

    def __init__(self, path: Path) -> None:
        super().__init__(_open_append(path))  # OSError: the caller names the setting
        self.path = path

    def reopen(self) -> None:
        try:
            stream = _open_append(self.path)
        except OSError as exc:
            log.error("cannot reopen the log file %s (%s); still writing to the previous one",
                      self.path, exc.strerror)
            return
        previous = self.setStream(stream)  # flushes it, under the handler's lock
        if previous is not None:
            previous.close()
        log.info("log file %s reopened", self.path)

    def close(self) -> None:
        self.acquire()
        try:
            self.stream.close()
        finally:
            self.release()
        super().close()


def log_file_of(config: Config) -> Path | None:
    return Path(config.logging.file) if config.logging.file else None


def setup_logging(level: str, fmt: str, worker: int | None = None,
                  file: Path | None = None) -> None:
    """Send every log line to `file` (opened here: OSError if it cannot be) or stderr."""
    handler: logging.StreamHandler[TextIO] = (LogFile(file) if file is not None
                                              else logging.StreamHandler(sys.stderr))
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        tag = "" if worker is None else f"[worker {worker}] "
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {tag}%(message)s"))
    root = logging.getLogger()
    for previous in root.handlers:
        if isinstance(previous, LogFile):  # a worker's copy of the supervisor's file
            previous.close()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def reopen_log_files() -> None:
    """SIGUSR1: reopen the log file by name, if there is one."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LogFile):
            handler.reopen()


def fatal(message: str) -> None:
    """A start-up failure: one error line in the log and, when the log is a file, on stderr
    too, where whoever started the broker is looking."""
    log.error("%s", message)
    if any(isinstance(handler, LogFile) for handler in logging.getLogger().handlers):
        print(f"culex: {message}", file=sys.stderr)
