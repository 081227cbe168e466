"""`culex trace`: the packets of one client, or the messages on a topic filter, as they happen,
in the terminal.

    culex trace --client ID     [--seconds N] [--full] [--json] [--url URL | --config FILE]
    culex trace --topic FILTER  ...                              [--token-file FILE]

It reads the admin API's trace stream (`GET /api/v1/trace`, server-sent events) of a running
broker: `--url` (default http://127.0.0.1:18083), or the `[admin]` host and port of `--config`.
The bearer token comes from `--token-file`, else `$CULEX_ADMIN_TOKEN`, else the config's
`token_file`. One line per packet:

    20:14:07.463 +0.343s  in PUBLISH client_id="c1" topic="a/b" qos=1 packet_id=1 payload="2"

`--json` prints the events as the API gives them, one JSON object per line. Exit codes: 0 when
the trace's time is up (or on Ctrl-C), 1 when the API cannot be reached or refuses (one line on
stderr), 2 for unusable options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import ConfigError, load_config

PROG = "culex trace"
DEFAULT_URL = "http://127.0.0.1:18083"
TOKEN_VARIABLE = "CULEX_ADMIN_TOKEN"
# The stream sends a keep-alive every 15 s: a read that waits much longer has lost the broker.
READ_TIMEOUT = 60.0
# Shown on every line already, or only noise there.
_OMITTED = {"time", "elapsed", "direction", "type", "size", "truncated", "payload_size"}


class TraceError(Exception):
    """Printed as the one line on stderr."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--client", metavar="ID", help="every packet of this client id")
    what.add_argument("--topic", metavar="FILTER",
                      help="every message routed to this topic filter")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="how long to trace (default %(default)g, at most 3600)")
    parser.add_argument("--full", action="store_true", help="whole payloads, not a preview")
    parser.add_argument("--json", action="store_true", help="one JSON event per line")
    parser.add_argument("--url", help=f"the admin API (default {DEFAULT_URL})")
    parser.add_argument("--config", type=Path,
                        help="take the admin API's address and token file from this culex.toml")
    parser.add_argument("--token-file", type=Path,
                        help=f"the bearer token (else ${TOKEN_VARIABLE}, else the config's)")


def run(args: argparse.Namespace) -> int:
    try:
        url, token = _where(args)
        query = {"seconds": args.seconds, **({"client_id": args.client} if args.client
                                             else {"topic": args.topic})}
        if args.full:
            query["full"] = "true"
        for event in _events(f"{url}/api/v1/trace?{urllib.parse.urlencode(query)}", token):
            print(json.dumps(event) if args.json else format_event(event), flush=True)
    except TraceError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _where(args: argparse.Namespace) -> tuple[str, str | None]:
    """The admin API's URL and the token, from the options, the environment and the config."""
    url = args.url
    token_file: Path | None = args.token_file
    if args.config is not None:
        try:
            admin = load_config(args.config).admin
        except ConfigError as exc:
            raise TraceError(str(exc)) from None
        if not admin.enabled:
            raise TraceError(f"{args.config}: the admin API is off (admin.host is empty)")
        host = "127.0.0.1" if admin.host in ("0.0.0.0", "::") else admin.host
        url = url or f"http://{f'[{host}]' if ':' in host else host}:{admin.port}"
        if token_file is None and TOKEN_VARIABLE not in os.environ and admin.token_file:
            token_file = Path(admin.token_file)
    token = os.environ.get(TOKEN_VARIABLE)
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise TraceError(f"{token_file}: cannot read the token: {exc.strerror}") from None
    return (url or DEFAULT_URL).rstrip("/"), token or None


def _events(url: str, token: str | None) -> Iterator[dict[str, Any]]:
    headers = {"Accept": "text/event-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=READ_TIMEOUT)
    except urllib.error.HTTPError as exc:
        raise TraceError(f"{exc.code} {_error_of(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TraceError(f"cannot reach the admin API at {url.partition('/api/')[0]}: "
                         f"{reason}") from None
    with response:
        ending = False
        for raw in response:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line == "event: end":
                ending = True
            elif line.startswith("data: ") and not ending:
                yield json.loads(line[6:])
            elif not line and ending:
                return


def _error_of(error: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(error.read())["error"]
    except (ValueError, KeyError, TypeError):
        return str(error.reason)
    return str(message)


def format_event(event: dict[str, Any]) -> str:
    """One line: wall-clock time, time since the trace began, direction, type, fields."""
    clock = time.strftime("%H:%M:%S", time.localtime(event["time"]))
    millis = int(event["time"] * 1000) % 1000
    parts = [f"{clock}.{millis:03d}", f"+{event['elapsed']:.3f}s", f"{event['direction']:>3}",
             str(event["type"])]
    for name, value in event.items():
        if name in _OMITTED or value is None or value is False:
            continue
        parts.append(f"{name}={value if isinstance(value, int) else json.dumps(value)}")
    if event.get("truncated"):
        parts.append(f"(payload {event['payload_size']} B, cut)")
    if "size" in event:
        parts.append(f"({event['size']} B)")
    return " ".join(parts)
