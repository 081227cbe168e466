"""The admin API's bearer token, read from `[admin] token_file` at start-up and again on
SIGHUP (a token is rotated without a restart)."""

from __future__ import annotations

import logging
from pathlib import Path

from ...config import AdminConfig, ConfigError

log = logging.getLogger("culex")

# Shorter tokens are guessable: the API is an open door to every client's traffic.
MIN_TOKEN_LENGTH = 16


def read_token(admin: AdminConfig) -> str | None:
    """The token (the file's first line, without surrounding white space), or None when
    no file is configured. Raises ConfigError naming the file and the problem."""
    if not admin.token_file:
        return None
    try:
        text = Path(admin.token_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"admin.token_file: {admin.token_file}: cannot read: {exc}") from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"admin.token_file: {admin.token_file}: the token must be at least "
                          f"{MIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex 32`)")
    return token


class BearerToken:
    """The token in force: the HTTP side asks it for every request, SIGHUP reads the file
    again. A file that has become unreadable or too short keeps the token in force, as a bad
    password file keeps the old one (a failed reload must not open the API)."""

    def __init__(self, admin: AdminConfig, value: str | None) -> None:
        self._admin = admin
        self.value = value

    def reload(self) -> None:
        if self.value is None:
            return  # no token_file: loopback only, nothing to re-read
        try:
            token = read_token(self._admin)
        except ConfigError as exc:
            log.error("admin token reload refused, the previous token stays in force: %s", exc)
            return
        if token != self.value:
            self.value = token
            log.info("admin API: the bearer token in %s is now in force",
                     self._admin.token_file)
