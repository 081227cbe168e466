"""`[cluster]`: which Redis the nodes share, this node's name, and its lease.

```toml
[cluster]
redis = ["redis://127.0.0.1:6379"]   # one Redis, or several seeds of a Redis Cluster
node = "node-a"                      # unique, stable name of this node
lease = 5                            # seconds a node is presumed alive without a heartbeat
replicas = 0                         # Redis replicas that must have an entry (WAIT) first
```

Without the table nothing changes: one node, SQLite, no Redis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# Node names go into Redis keys, stream names and log lines: a short, plain word.
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
URL_SCHEMES = ("redis", "rediss", "unix")
# Below a second a garbage-collection pause or a busy Redis would pass for a death.
MIN_LEASE = 1.0
MAX_REPLICAS = 16


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    redis: tuple[str, ...] = ()
    node: str = ""
    lease: float = 5.0
    # Replicas of the (one) Redis primary that must have confirmed a stream entry carrying
    # QoS 1/2 messages (WAIT) before what depends on it alone is acknowledged: a message for
    # a node that is down, which the stream keeps until it is back.
    replicas: int = 0

    def problems(self) -> list[str]:
        found = []
        if not self.redis:
            found.append("redis: at least one redis://host:port URL is needed")
        for url in self.redis:
            problem = url_problem(url)
            if problem is not None:
                found.append(f"redis: {url!r}: {problem}")
        if len(set(self.redis)) != len(self.redis):
            found.append("redis: a URL is listed twice")
        if not NODE_NAME.fullmatch(self.node):
            found.append(f"node: {self.node!r} must be 1-63 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit (it names Redis keys)")
        if not 0 <= self.replicas <= MAX_REPLICAS:
            found.append(f"replicas: {self.replicas} must be between 0 and {MAX_REPLICAS}")
        if not MIN_LEASE <= self.lease <= 3600:
            found.append(f"lease: {self.lease:g} s must be between {MIN_LEASE:g} and 3600")
        return found

    @property
    def is_redis_cluster(self) -> bool:
        """Several seeds mean a Redis Cluster; one URL is asked at connect time."""
        return len(self.redis) > 1


def url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in URL_SCHEMES:
        return f"the scheme must be one of {', '.join(s + '://' for s in URL_SCHEMES)}"
    if parts.scheme == "unix":
        return None if parts.path.startswith("/") else "a unix:// URL needs an absolute path"
    if not parts.hostname:
        return "no host"
    if port is not None and not 0 < port < 65536:
        return f"port {port} is not a TCP port"
    return None


class ClusterError(Exception):
    """The node cannot join its cluster (Redis unreachable, no member number left). Here,
    beside the settings, so that the server can catch it without importing redis-py."""
