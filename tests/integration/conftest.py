"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import BrokerProcess
from tests.integration.clients import Clients


@pytest.fixture
def clients(broker: BrokerProcess) -> Iterator[Clients]:
    """Every client a test opens, closed at its end (before the broker fixture stops it)."""
    with Clients(broker) as opened:
        yield opened
