"""Culex nodes clustered on Redis: the sans-I/O part (settings, records, routes, what goes to
which node). The Redis I/O lives in the server layer (culex/server/cluster_*.py)."""
