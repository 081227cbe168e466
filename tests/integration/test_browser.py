"""A real page in headless Chromium (Debian's `chromium`, driven by Playwright; no browser is
downloaded) loads MQTT.js's browser bundle from tests/browser/, connects to Culex over
WebSocket, subscribes and publishes; a paho client over TCP talks to it, and the test reads the
page back. The page is served over HTTP so the WebSocket handshake carries a real Origin, which
the listener's `allowed_origins` checks."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.conftest import ROOT, BrokerFactory, free_port
from tests.integration.clients import Clients

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PAGES = ROOT / "tests" / "browser"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def page_server() -> Iterator[str]:
    """tests/browser/ over HTTP on 127.0.0.1; its origin."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", free_port()), functools.partial(QuietHandler, directory=str(PAGES)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("chromium is not installed: run `make system-deps` (apt-get install "
                    "chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.mark.parametrize("protocol", [4, 5], ids=["v311", "v5"])
def test_page_subscribes_and_publishes(broker_factory: BrokerFactory, page_server: str,
                                       browser: Browser, protocol: int) -> None:
    broker = broker_factory(listeners=[{}, {"host": "127.0.0.1", "port": 0,
                                            "protocol": "websocket",
                                            "allowed_origins": [page_server]}])
    host, port = broker.listening_on("WebSocket")
    with Clients(broker) as clients:
        peer = clients.paho("tcp-peer", protocol=mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311)
        assert peer.subscribe("browser/from-page", 1) == [1]
        assert peer.subscribe("browser/echo", 1) == [1]
        page = browser.new_page()
        try:
            page.goto(f"{page_server}/page.html?url=ws://{host}:{port}/mqtt"
                      f"&protocol={protocol}&id=chromium-{protocol}")
            page.wait_for_function("document.getElementById('state').textContent === 'ready'",
                                   timeout=10_000)
            hello = peer.get()
            assert hello.topic == "browser/from-page"
            assert b"HeadlessChrome" in hello.payload or b"Chrome" in hello.payload
            peer.publish("browser/to-page", "ping from paho", 1)
            echo = peer.get()
            assert (echo.topic, echo.payload) == ("browser/echo", b"echo: ping from paho")
            assert page.text_content("#received") == "browser/to-page: ping from paho"
        finally:
            page.close()
    broker.wait_for_log(f"client chromium-{protocol} connected from 127.0.0.1:")
    assert f"origin {page_server})" in broker.log_text()


def test_page_from_another_origin_is_refused(broker_factory: BrokerFactory, page_server: str,
                                            browser: Browser) -> None:
    broker = broker_factory(listeners=[{}, {"host": "127.0.0.1", "port": 0,
                                            "protocol": "websocket",
                                            "allowed_origins": ["https://app.example"]}])
    host, port = broker.listening_on("WebSocket")
    page = browser.new_page()
    try:
        page.goto(f"{page_server}/page.html?url=ws://{host}:{port}/mqtt&id=elsewhere")
        page.wait_for_function("document.getElementById('state').textContent !== 'loading'",
                               timeout=10_000)
        assert page.text_content("#state") != "ready"
    finally:
        page.close()
    broker.wait_for_log(f"HTTP 403 Forbidden: invalid Origin header: {page_server}")
