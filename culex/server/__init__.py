"""The thin asyncio layer: listeners, the transport protocol, the flush and tick timers, signals."""
