"""Start-up in the order that lets a failed start change nothing.

1. The configuration is checked (`cli.py`), with the files it names: TLS certificates, the
   password file and the ACL (`app.check_files`). A problem is a configuration error, exit 2.
2. Every listening socket is bound (`listeners.ListeningSockets`: TCP, IPv6, Unix sockets;
   then the admin API's, `bind_admin`), all of them or none: if one fails, those already
   bound are closed.
3. The state is locked (`service.StateLock`, beside the database), so no other broker is
   using it.
4. The pid file is written (`--pid-file`).
5. Only then is the database opened, migrated and read back (wills of clients that were
   connected when the broker stopped are published now), and the bound sockets start being
   served. Clients that connect between 2 and 5 wait in the listen backlog.

Steps 2 to 4 fail with one line and exit code 1, before anything is written to the state: a
second broker on a busy port, or on a state another broker holds, leaves the database as it
found it (and a fresh directory without a database).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..config import AdminConfig, Config, Listener, anonymous_allowed
from .listeners import LISTEN_BACKLOG, ListeningSockets, describe
from .service import PidFile, StateLock
from .transport import ListenError


@dataclass(frozen=True, slots=True)
class BoundListener:
    """A configured listener with its bound, listening socket and its TLS context: what every
    process that serves it (the single one, or each worker) is given."""

    listener: Listener
    sock: socket.socket
    tls: ssl.SSLContext | None

    # `host:port (kinds)` with the port actually bound: the socket itself is closed in the
    # supervisor once the workers have it.
    name: str


def bind_listeners(listeners: tuple[Listener, ...], contexts: list[ssl.SSLContext | None]
                   ) -> tuple[ListeningSockets, list[BoundListener]]:
    """Bind every listener, or none: a `ListenError` closes the ones already bound."""
    sockets = ListeningSockets(listeners)
    return sockets, [BoundListener(listener, sock, context, describe(listener, sock))
                     for listener, sock, context
                     in zip(listeners, sockets.sockets, contexts, strict=True)]


@dataclass
class Started:
    """What a successful start holds until the broker stops: the bound sockets, the state
    lock and the pid file, released in the reverse order."""

    sockets: ListeningSockets
    listening: list[BoundListener]
    lock: StateLock | None = None
    pid_file: PidFile | None = None
    # The admin API's listening socket ([admin]) and its URL, as bound (the socket itself is
    # closed in the supervisor once the workers have it); None and "off" when it is off.
    admin: socket.socket | None = None
    admin_url: str = "off"
    open_files: int = 0
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.pid_file is not None:
            self.pid_file.remove()
        for sock in [bound.sock for bound in self.listening] + [self.admin]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self.sockets.remove_files()
        if self.lock is not None:
            self.lock.release()


def start(config: Config, contexts: list[ssl.SSLContext | None], pid_file: Path | None,
          open_files: int) -> Started:
    """Steps 2 to 4 above. Raises `ListenError`, `LockError` or `PidFileError`, having
    released whatever it had taken."""
    started = Started(*bind_listeners(config.listeners, contexts), open_files=open_files)
    try:
        if config.admin.enabled:
            started.admin = bind_admin(config.admin)
            host, port = started.admin.getsockname()[:2]
            started.admin_url = (f"http://[{host}]:{port}/" if ":" in host
                                 else f"http://{host}:{port}/")
        if config.storage.durability != "none":
            # With "none" there is no file to protect: two such brokers share nothing.
            started.lock = StateLock.acquire(Path(config.storage.path))
        if pid_file is not None:
            started.pid_file = PidFile(pid_file)
            started.pid_file.write()
    except BaseException:
        started.close()
        raise
    return started


def bind_admin(admin: AdminConfig) -> socket.socket:
    """The admin API's listening socket; a `ListenError` naming it if it cannot be had."""
    try:
        sock = socket.create_server((admin.host, admin.port), backlog=LISTEN_BACKLOG,
                                    family=socket.AF_INET6 if ":" in admin.host
                                    else socket.AF_INET)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ListenError(f"cannot listen on {admin.address} ([admin], the admin API): "
                          f"{reason}") from None
    sock.setblocking(False)
    return sock


def summary(config: Config, started: Started) -> str:
    """The one line an operator reads to know what is running: listeners, workers, state,
    who may connect and what they may do."""
    listeners = ", ".join(bound.name for bound in started.listening)
    workers = config.worker_count()
    settings = config.storage
    if settings.durability == "none":
        state = "durability none (memory only)"
    else:
        state = f"durability {settings.durability}, state {settings.path} (locked)"
    auth = config.auth
    methods = ", ".join(auth.enhanced_methods) or "none"
    access = (f"dynamic security {auth.dynamic_security}" if auth.dynamic_security else
              f"password file {auth.password_file or 'none'}, enhanced methods {methods}; "
              f"ACL {auth.acl_file or 'off'}")
    return (f"culex {__version__} serving: listeners {listeners}; "
            f"{workers} worker{'s' if workers > 1 else ''} (pid {os.getpid()}); {state}; "
            f"auth: anonymous {'allowed' if anonymous_allowed(config) else 'refused'}, "
            f"{access}; admin API {started.admin_url}; "
            f"open-file limit {started.open_files}")


def status(config: Config, started: Started) -> str:
    """The short form for `systemctl status` (the notify protocol's STATUS=)."""
    workers = config.worker_count()
    listeners = ", ".join(bound.name for bound in started.listening)
    return f"serving on {listeners}" + (f" with {workers} workers" if workers > 1 else "")
