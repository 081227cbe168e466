"""Bridges: store-and-forward links from this broker to other MQTT brokers (see README.md)."""
