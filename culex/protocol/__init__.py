"""Sans-I/O MQTT codec: bytes in, packet objects out, and back. No sockets, asyncio or broker."""
