"""Durable broker state: the interface the core writes through, and the SQLite backend."""
