"""The admin API's bearer token, read from `[admin] token_file` at start-up."""

from __future__ import annotations

from pathlib import Path

from ...config import AdminConfig, ConfigError

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
