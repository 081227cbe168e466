"""`culex bench`: a load generator that drives any MQTT 3.1.1 broker and reports its figures.

It lives beside the broker, not inside it, and imports only the protocol codec's encoders: the
point is to measure Culex and Mosquitto the same way. The modules, in the order data flows:

* `plan`: scenarios as topologies (who publishes where, who subscribes to what).
* `wire`: pre-built frames and ack tables; the 16-byte stamp every payload starts with.
* `clients`: raw asyncio Protocols with frame-only parsing and flow control.
* `worker`: one load-generator process (in-process for --procs 1, spawned otherwise).
* `runner`: the coordinator: clock, progress, drain, merging histograms.
* `histogram`, `procstat`, `report`: measurement, /proc sampling, table / JSON / plot.

Nothing here is imported by `culex serve`.
"""
