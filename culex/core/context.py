"""What a client connection works with: the parts of the core it calls, each by name.

The broker builds one `CoreServices` and gives it to every connection, so a connection's
dependencies are this list rather than the whole broker, and each is a part with a small,
named job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .access import AccessPolicy
from .commit import CommitGate
from .flow import FlowControl
from .limits import Limits
from .options import Mqtt5Options
from .output import OutputScheduler
from .ports import Host
from .routing import Router
from .session_moves import SessionMoves
from .sessions import SessionManager
from .stats import Stats
from .timers import Clock, Deadlines
from .worker_links import WorkerLinks


class Timed(Protocol):
    def on_deadline(self, now: float) -> float | None:
        """A deadline of this connection passed: act, and say when it is next due."""
        ...


@dataclass(frozen=True, slots=True)
class CoreServices:
    limits: Limits
    mqtt5: Mqtt5Options
    clock: Clock
    stats: Stats
    host: Host
    output: OutputScheduler
    flow: FlowControl
    gate: CommitGate
    router: Router
    sessions: SessionManager
    deadlines: Deadlines[Timed]
    access: AccessPolicy
    # Worker processes: None in one process.
    links: WorkerLinks | None
    # A cluster's claims of client ids, and sessions moving between nodes: None without.
    moves: SessionMoves | None = None
