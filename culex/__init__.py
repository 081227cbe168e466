"""Culex: a high-performance MQTT broker."""

__version__ = "0.1.0"
