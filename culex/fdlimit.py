"""The process's open-file limit, shared by the broker and the load generator."""

from __future__ import annotations

import resource


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
