"""The admin listener's HTTP side: aiohttp on the broker's own event loop, serving the socket
bound at start-up (startup.py), with the routes of api.py, `/metrics`, the OpenAPI document and
the explorer's files.

Who may ask: with `[admin] token_file`, every request for `/metrics` or `/api/` carries
`Authorization: Bearer TOKEN`, compared in constant time (`hmac.compare_digest`); the
explorer's static files hold no data and are public (the page asks for the token). Without a
token (loopback only, see config.py) anyone on this host may ask, and two browser attacks
are closed: a request whose Host header is not a loopback name is refused (DNS rebinding would
otherwise let a web page read the API as same-origin), and a state-changing request from
another origin is refused (a page elsewhere could otherwise POST to 127.0.0.1).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ...config import AdminConfig
from .api import ApiError, routes
from .metrics import exposition
from .token import BearerToken
from .view import BrokerView, WorkerFailed

log = logging.getLogger("culex")

HERE = Path(__file__).parent
STATIC = HERE / "static"
OPENAPI = HERE / "openapi.json"
PUBLIC = ("/", "/static/")
# How long a stopping broker lets running requests (a trace stream) finish.
SHUTDOWN_SECONDS = 1.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _loopback_name(host: str) -> bool:
    if host in ("localhost", "[::1]"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guard(admin: AdminConfig, token: BearerToken) -> Callable[..., Awaitable[Any]]:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        public = request.path == "/" or request.path.startswith("/static/")
        if token.value is not None:  # the one in force now: SIGHUP may have replaced it
            expected = f"Bearer {token.value}".encode()
            given = request.headers.get("Authorization", "").encode()
            if not public and not hmac.compare_digest(given, expected):
                return _error(401, "a bearer token is required (Authorization: Bearer "
                              "TOKEN, the token in [admin] token_file)" if not given
                              else "wrong token", **{"WWW-Authenticate": 'Bearer realm="culex"'})
        else:
            host = urlsplit(f"//{request.host}").hostname or ""
            if not (_loopback_name(host) or host == admin.host):
                return _error(403, f"Host {request.host!r} is not this broker's loopback "
                              "address (set [admin] token_file to serve other names)")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc != request.host:
                return _error(403, f"cross-origin {request.method} from {origin} refused")
        return await handler(request)

    return guard


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as JSON with a status that says whose fault it is."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.message)
    except WorkerFailed as exc:
        log.warning("admin API %s %s: %s", request.method, request.path, exc)
        return _error(504, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)


def build_app(view: BrokerView, admin: AdminConfig, token: BearerToken,
              max_body: int) -> web.Application:
    app = web.Application(middlewares=[_errors, _guard(admin, token)],
                          client_max_size=max_body)
    openapi = OPENAPI.read_bytes()

    async def metrics(request: web.Request) -> web.Response:
        body = exposition(await view.metrics())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi_document(request: web.Request) -> web.Response:
        return web.Response(body=openapi, content_type="application/json")

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
            "X-Content-Type-Options": "nosniff"})

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/openapi.json", openapi_document)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    app.add_routes(routes(view))
    return app


class AdminServer:
    """The running HTTP side; `stop` ends it (and its trace streams) at shutdown."""

    def __init__(self, runner: web.AppRunner, view: BrokerView) -> None:
        self._runner = runner
        self._view = view

    async def stop(self) -> None:
        self._view.close()
        await self._runner.cleanup()


async def start_http(view: BrokerView, sock: Any, admin: AdminConfig, token: BearerToken,
                     max_body: int) -> AdminServer:
    """Serve the bound admin socket `sock` on the running loop."""
    runner = web.AppRunner(build_app(view, admin, token, max_body), access_log=None,
                           handle_signals=False, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return AdminServer(runner, view)


