"""The named interfaces where the core meets its neighbours, and where its parts meet.

    server (asyncio)  ──Sink, Host──▶  core  ◀──Storage (storage/base.py)──  SQLite, memory
                                        │
        Publisher ──▶ routing ──▶ DeliveryTarget      (a client connection, a worker link,
                                                        a bridge's link to its remote)

- `Sink`: where one client connection's bytes go (an asyncio transport, a WebSocket adapter,
  a list in tests). The core writes to it once per loop tick at most.
- `Host`: what the server provides the core: a wake-up later in the same loop tick (so every
  frame of the tick leaves in one write per connection), a lingering close, one timer for the
  core's next deadline, and the wall clock (retained stamps must agree across processes).
- `Publisher`: a source of routed messages that back-pressure pauses: its reading stops while a
  target it feeds is full, and what it had already read waits (`process_deferred`).
- `DeliveryTarget`: a destination whose fullness pauses the publishers feeding it.
- `ClientLink`: a client's live connection as sessions, routing and flow control use it; the
  concrete `Connection` implements it, and nothing below `connection.py` imports that.
- `LinkDeliveries`: what another worker's link hands to routing.
- `SessionDirectory`: where a cluster records which member owns each client id (the server
  keeps it in Redis); `session_moves.py` asks it at every CONNECT.

Every part depends on these protocols, never on the class behind them, so the imports inside
`culex/core/` point one way (tests/unit/test_imports.py checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..storage.base import TakenSession
from .access import ClientAccess
from .message import Message
from .states import State


class Sink(Protocol):
    def writelines(self, list_of_data: list[bytes]) -> None: ...

    def close(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Host(Protocol):
    def wake(self) -> None:
        """Call `Broker.flush()` once, later in this loop tick."""
        ...

    def close_sink(self, sink: Sink) -> None:
        """Close `sink` once its last frames are written."""
        ...

    def set_timer(self, when: float) -> None:
        """Call `Broker.tick()` no later than `when` (the clock of `Clock.now`)."""
        ...

    def wall_time(self) -> float:
        """Seconds since the epoch."""
        ...


class Publisher(Protocol):
    # Who, for logs and for shared subscriptions' "hash" strategy.
    client_id: str
    # The protocol family of the frame being forwarded from it.
    v5: bool
    # CONNECTED while it may still be read; anything else drops what it holds back.
    state: State
    # How many full targets it is paused for.
    throttled_by: int
    last_activity: float
    # `WorkerLinks.sends` when its last message went to another worker: its acks wait for
    # the workers to have applied that much.
    link_sends: int

    def update_reading(self) -> None:
        """Read again, or stop, as what holds it back now says."""
        ...

    def process_deferred(self) -> None:
        """Handle what was read but held back while a target was full."""
        ...


class DeliveryTarget(Protocol):
    # Over its high-water mark: what is sent to it now pauses its publishers.
    write_paused: bool
    paused_since: float


class ClientLink(Publisher, DeliveryTarget, Protocol):
    address: str
    # What the client may read and write, as the ACL in force says.
    acl: ClientAccess | None
    # What it has sent (folded into `Stats` when it closes).
    bytes_sent: int
    packets_sent: int
    publishes_sent: int

    def send_publish(self, frames: list[bytes]) -> None:
        """Queue one PUBLISH (in pieces: head, packet id, properties, payload)."""
        ...

    def send_publish_when_durable(self, frames: list[bytes]) -> None:
        """Queue a PUBLISH once what was changed so far is committed (QoS 2, exactly once)."""
        ...

    def send_pubrel(self, packet_id: int) -> None: ...

    def too_large(self, frames: list[bytes]) -> bool:
        """Whether the PUBLISH exceeds the client's Maximum Packet Size (then it is dropped)."""
        ...

    def queue_drained(self) -> None:
        """The session's queue fell below its low-water mark: resume what it paused."""
        ...

    def close(self, publish_will: bool, reason: int | None = None) -> None: ...

    def drop_will(self) -> bool:
        """Forget the will this connection would publish (another cluster member published
        it while this one was presumed down); whether it had one."""
        ...

    def flush(self) -> None:
        """Hand this tick's frames to the sink in one write."""
        ...


class LinkDeliveries(Protocol):
    """What the link from another worker hands to routing."""

    def forwarded(self, frame: bytes, link: Publisher) -> None:
        """A QoS 0 PUBLISH frame, as its publisher sent it, for the local subscribers."""
        ...

    def publish_from_link(self, message: Message, stamp: int, link: Publisher) -> None:
        """A message for the local subscribers (and, retained, for the retained store)."""
        ...

    def deliver_to_group(self, message: Message, group: tuple[str, str],
                         link: Publisher) -> None:
        """A shared group's message that the publishing worker gave to this one."""
        ...


@dataclass(frozen=True, slots=True)
class Claim:
    """This member now owns a client id: under `token` (cluster-wide, increasing with every
    claim, so the last claimant wins any race; 0: not recorded, Redis was unavailable), taken
    from member `previous` (None: nobody held it, this member did, or the holder is down and
    cannot hand its session over)."""

    token: int
    previous: int | None = None
    # The previous holder's name, for log lines ("" when nobody held it).
    previous_name: str = ""
    # What a holder that is down had stored for the session, taken from its store in Redis
    # (`[storage] backend = "redis"`); None: nothing, or not stored where others can reach it.
    taken: TakenSession | None = None
    # The number of a holder that is down (its stream reaches it when it is back); None: no
    # such holder, or not linked.
    down: int | None = None


class SessionDirectory(Protocol):
    """Which cluster member owns each client id (one record per id, in Redis)."""

    def claim(self, client_id: str, done: Callable[[Claim], None]) -> None:
        """Make this member the owner of `client_id`; `done` follows on the loop. When the
        record cannot be written (Redis unavailable) the claim is token 0 and names nobody:
        local clients keep connecting through an outage."""
        ...

    def take(self, client_id: str, holder: str,
             done: Callable[[TakenSession | None], None]
             ) -> None:
        """`holder` did not hand the session over in time: what it stored for it, taken from
        its store where other members reach it (Redis), or None; `done` follows on the loop."""
        ...

    def release(self, client_id: str, token: int) -> None:
        """The session ended here: its record goes, if it still holds this member's claim
        `token` (a later claim, here or elsewhere, keeps it)."""
        ...

    def held_elsewhere(self, client_id: str,
                       done: Callable[[dict[str, int | None]], None]) -> None:
        """`done({client_id: member})` when another member holds the latest claim of
        `client_id` (its number; None when that member is not linked), `done({})` when not;
        no call when the directory cannot be read (Redis unavailable)."""
        ...

    def unapplied(self, holder: str, read: Callable[[list[bytes], bool], None]) -> None:
        """The records in the stream of `holder` (down, or silent) that it has not applied
        (what it committed as applied excluded), entry by entry, in order:
        `read(chunk, last)` on the loop for each chunk of entries, `last` True for the last
        one (an empty one when the stream cannot be read or is not kept where others reach
        it)."""
        ...
