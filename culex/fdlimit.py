"""The process's open-file limit, shared by the broker and the load generator."""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Sized

log = logging.getLogger("culex")


def raise_open_file_limit() -> int:
    """Lift the soft open-file limit to the hard one and return it: every client is a
    descriptor (in the broker and in `culex bench conns`), and the usual soft default of 1024
    would cap either near 1,000 clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit: the broker still warns near it
    return soft


class OpenFileWatch:
    """Warn before the process runs out of file descriptors.

    At the limit the kernel's accept fails with EMFILE; libuv then accepts and closes the
    waiting connections itself (its reserve-descriptor trick), so the broker keeps serving but
    nothing would say why clients are refused. This says it, once per episode. The count is
    estimated (descriptors open at start-up plus one per connection) because listing
    /proc/self/fd at every accept would cost O(connections).
    """

    WARN_AT = 0.95
    CLEAR_AT = 0.90

    def __init__(self, connections: Sized) -> None:
        self.connections = connections
        self.baseline = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") \
            else 16
        self.warned = False

    def check(self) -> None:
        """After each accept and close: one getrlimit (an operator may change the limit of a
        running broker with prlimit) and two comparisons."""
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if limit == resource.RLIM_INFINITY:
            return
        used = self.baseline + len(self.connections)
        if not self.warned and used >= limit * self.WARN_AT:
            self.warned = True
            log.warning("open files: about %d of the limit %d in use; beyond it new connections "
                        "are closed on accept (raise the limit: ulimit -n / LimitNOFILE)",
                        used, limit)
        elif self.warned and used < limit * self.CLEAR_AT:
            self.warned = False
            log.info("open files: about %d of the limit %d in use again", used, limit)
