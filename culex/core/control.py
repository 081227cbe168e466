"""`$CONTROL/...`: requests to the broker's own APIs, never routed to subscribers.

Mosquitto's plugins are driven this way (dynamic security: `mosquitto_ctrl` publishes JSON to
`$CONTROL/dynamic-security/v1` and reads the answer on `.../v1/response`). The requests carry
passwords, so no subscriber ever sees one, whatever it subscribed to: a PUBLISH to a
`$CONTROL/` topic goes to the `ControlApi` that serves the topic when the client's ACL lets it
write there, and nowhere otherwise (MQTT 5: 0x87). An API's answers are the broker's own
publications, routed and checked for read access like any other.

The handlers meet such a PUBLISH only off their shortcuts: the router never caches a `$CONTROL`
topic name (routing.py), so MQTT 5's forwarding shortcut never takes one.
"""

from __future__ import annotations

import logging

from ..auth.acl import Access
from ..protocol.reasons import ReasonCode
from .access import CONTROL_PREFIX
from .connection import Connection

__all__ = ["CONTROL_PREFIX", "control_publish"]

log = logging.getLogger("culex")


def control_publish(connection: Connection, topic: str, payload: bytes) -> int:
    """Hand a `$CONTROL` request to its API: 0, or why not (0x87, logged)."""
    api = connection.core.access.control
    acl = connection.acl
    if api is None or not api.serves(topic):
        problem = "no API is served on this $CONTROL topic"
    elif acl is None or not acl.allowed(topic, Access.WRITE):
        # No ACL grants nothing here: an API that changes who may do what is never open.
        problem = "denied by the ACL"
    else:
        api.request(topic, payload, connection.client_id, connection.username)
        return ReasonCode.SUCCESS
    log.info("client %s (%s) publish to %r dropped: %s", connection.client_id,
             connection.address, topic, problem)
    return ReasonCode.NOT_AUTHORIZED
