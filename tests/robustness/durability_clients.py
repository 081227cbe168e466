"""What the durability tests (restart, crash) need beyond the shared clients of
tests/integration/clients.py.

* `commit_barrier()`: returns once everything the broker changed so far is committed, using
  the durability promise itself: with `durability = "sync"` a PUBACK leaves only when nothing
  is waiting to be written, so a QoS 1 round trip after a SUBSCRIBE (whose SUBACK is not an
  acknowledgement the promise covers) proves the subscription is on disk.
* `restart()`: kill -9 and start again.

The tests' clients are the shared ones: `RawClient` for exact bytes, and `PahoClient`, whose
network loop stops at the first disconnection, so after a kill it never reconnects by itself
and takes a persistent session over behind the test's back. Durability is about sessions: the
tests ask for clean session 0 (`clean=False`, `clean_session=False`) wherever they keep one.

Nothing here reads Culex's internals: a client only knows what the wire tells it.
"""

from __future__ import annotations

from tests.conftest import BrokerProcess
from tests.integration.clients import Broker, RawClient

BARRIER_TOPIC = "durability-barrier"


def commit_barrier(broker: Broker) -> None:
    """Return once the broker has committed everything it changed before this call.

    A QoS 1 PUBLISH from a clean-session client to a topic nobody subscribes to changes no
    durable state; with `durability = "sync"` its PUBACK still waits for whatever is pending or
    being committed, and an earlier held ack, so the PUBACK means "all earlier state is on disk".
    """
    client = RawClient(broker)
    try:
        client.connect("durability-barrier", clean=True)
        client.publish(BARRIER_TOPIC, b"", qos=1, packet_id=1)
        client.disconnect()
    finally:
        client.close()


def restart(broker: BrokerProcess) -> None:
    """kill -9 the broker and start it again on the same port, data directory and log."""
    broker.kill()
    broker.start()
