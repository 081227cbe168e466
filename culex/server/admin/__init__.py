"""The admin HTTP listener: Prometheus `/metrics`, the JSON API under `/api/v1/`, the packet
trace stream and the explorer page (README, "Admin API").

It runs on the broker's own event loop with aiohttp, off the MQTT path: nothing it offers is
counted or prepared per message, and its parts exist only once somebody asks (an observer
for topic rates, a trace). With worker processes only worker 0 serves it, and asks the other
workers over their links (core/worker_queries.py) for what only they know; every worker
answers such questions (`peer.AdminPeer`). This package's own import is light: aiohttp and
prometheus-client are imported by the one process that serves HTTP, when it starts to.
"""
