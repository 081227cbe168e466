"""What the admin API changes, each through a door the core already has.

- Disconnecting a client closes its connection as the server's own decision: an MQTT 5 client
  is sent DISCONNECT 0x98 (Administrative action), a 3.1.1 client sees the socket close, and
  the will is published, as for every close that is not the client's own DISCONNECT
  [MQTT-3.1.2-8].
- Publishing routes a message of the broker's own like any other (`Router.publish`): to local
  subscribers, to the workers with matching filters, to the retained store and storage.
- Deleting retained messages publishes an empty retained message to each matching topic, what
  a client would do: storage, the other workers' stores and the `$` rule behave as for one.
- `when_done` runs once what was just published is as safe as a PUBACK says: committed (with
  `durability = "sync"`) and, with workers, applied by the workers it went to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..protocol.reasons import ReasonCode
from .broker import Broker
from .inspect import Inspector
from .message import Message

log = logging.getLogger("culex")


def disconnect(broker: Broker, client_id: str) -> bool:
    """Close the connection of `client_id`; False when it is not connected here."""
    connection = Inspector(broker).connection(client_id)
    if connection is None:
        return False
    log.info("client %s (%s) disconnected by the admin API (administrative action)",
             client_id, connection.address)
    connection.close(publish_will=True, reason=ReasonCode.ADMINISTRATIVE_ACTION)
    return True


def publish(broker: Broker, message: Message) -> int:
    """Route `message`; returns what a PUBACK would say (0x10: no matching subscribers)."""
    message.created = broker.clock.now
    return broker.router.publish(message)


def delete_retained(broker: Broker, topic_filter: str, limit: int) -> tuple[int, bool]:
    """Clear up to `limit` retained messages whose topic `topic_filter` matches: how many,
    and whether more match (a caller clearing millions yields to the loop between calls)."""
    topics: list[str] = []
    for message in broker.retained.store.match(topic_filter):
        if len(topics) == limit:
            return _clear(broker, topics), True
        topics.append(message.topic)
    return _clear(broker, topics), False


def _clear(broker: Broker, topics: list[str]) -> int:
    for topic in topics:
        publish(broker, Message(topic, b"", 0, True))
    return len(topics)


def when_done(broker: Broker, callback: Callable[[], None]) -> None:
    """Run `callback` once everything published so far is committed and, with workers,
    applied (and committed) by every worker it was sent to: the promise of a PUBACK."""
    def committed() -> None:
        broker.gate.when_durable(lambda _: callback(), None)

    links = broker.links
    if links is None or not links.when_known(committed, links.sends):
        committed()
