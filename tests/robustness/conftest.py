"""Fixtures shared by the hostile-input tables (test_bad_input.py for 3.1 / 3.1.1,
test_bad_input_v5.py for MQTT 5)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import BrokerProcess

SHARED_MAX_PACKET = 2 * 1024 * 1024  # explicit, so Mosquitto (unlimited by default) caps too


def module_broker(tmp_path_factory: pytest.TempPathFactory, name: str,
                  settings: dict[str, Any]) -> Iterator[BrokerProcess]:
    """A broker for a whole module (a table of cases); at the end it must stop cleanly and
    not have logged a traceback."""
    broker = BrokerProcess(tmp_path_factory.mktemp(name), settings).start()
    yield broker
    code = broker.stop()
    text = broker.log_text()
    assert "Traceback" not in text, f"broker logged a traceback:\n{text}"
    assert code == 0, f"broker exit code {code}:\n{text}"


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker per table module; every case still uses fresh connections and watchers.

    Per module rather than per session so that a broker wedged by one table cannot fail the
    other, and each table's log is its own."""
    # Receive Maximum 20 (Mosquitto's default), so the table's item 36 row overruns it cheaply.
    # A CONNECT of 100,000 User Properties sent one byte per send() takes seconds, more while
    # the kill -9 suites load both cores: no row is about connect_timeout (test_bad_input.py
    # tests that on a broker of its own), so it must not cut one short.
    yield from module_broker(tmp_path_factory, "bad-input-broker", {
        "limits": {"max_packet_size": SHARED_MAX_PACKET, "receive_maximum": 20,
                   "connect_timeout": 60}})
