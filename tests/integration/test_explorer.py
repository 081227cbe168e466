"""The explorer page at the admin listener's `/`, in headless Chromium (Debian's `chromium`
driven by Playwright, as in test_browser.py): it loads without a console error, shows a client
the test connected and a topic it published, traces and disconnects that client, and deleting
a retained message in the page removes it from the broker. Screenshots go to the test's
temporary folder."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests.conftest import BrokerFactory
from tests.integration import test_browser
from tests.integration.admin_client import AdminClient, admin_url, wait_until
from tests.integration.clients import Clients

browser = test_browser.browser  # its Chromium fixture (Debian's, with its launch flags)

ADMIN = {"host": "127.0.0.1", "port": 0}
SECONDS = 10_000  # Playwright's waits, in milliseconds
# Waits use Playwright's selectors, never evaluated JavaScript: the page's Content-Security-Policy
# (default-src 'self') forbids eval, and the test runs under it as a person's browser would.


def watch_console(page: Page) -> list[str]:
    """Console errors and uncaught exceptions of `page`, as they come."""
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def test_the_explorer_shows_traces_and_steers_the_broker(
        broker_factory: BrokerFactory, browser: Browser, tmp_path: Path) -> None:
    broker = broker_factory(admin=ADMIN, sys_interval=0)
    base = admin_url(broker)
    admin = AdminClient(base)
    with Clients(broker) as clients:
        probe = clients.paho("explorer-probe")
        assert probe.subscribe("explorer/#", 1) == [1]
        probe.publish("explorer/kitchen/temp", "21.5 degrees", 1, retain=True)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        errors = watch_console(page)
        try:
            page.goto(base + "/")
            expect(page.locator("#stat-clients")).to_have_text("1", timeout=SECONDS)
            # Two polls make a rate: the chart has points to draw.
            expect(page.locator("#stat-in")).not_to_have_text("-", timeout=SECONDS)
            page.screenshot(path=str(tmp_path / "overview.png"))

            page.click("nav button[data-tab=clients]")
            row = '#clients-table tr[data-client-id="explorer-probe"]'
            page.wait_for_selector(row, timeout=SECONDS)
            assert page.text_content(f"{row} td:nth-child(5)") == "3.1.1"
            page.click(row)
            page.wait_for_selector("#client-subscriptions li", timeout=SECONDS)
            assert page.text_content("#client-subscriptions") == "explorer/# (QoS 1)"
            # Its trace, live: the probe's next packets appear in order.
            page.click("#client-trace")
            page.wait_for_selector("#client-trace-events li", timeout=SECONDS)
            probe.publish("explorer/ping", "traced", 1)
            page.locator("#client-trace-events li.out", has_text="PUBACK").first.wait_for(
                timeout=SECONDS)
            lines = [line.split()[1:3] for line in
                     page.locator("#client-trace-events li").all_text_contents()]
            # Its PUBLISH in, its own copy out (it subscribes to explorer/#), the PUBACK out.
            assert lines[0] == ["event", "trace"]
            assert lines.index(["in", "PUBLISH"]) < lines.index(["out", "PUBACK"]), lines
            page.screenshot(path=str(tmp_path / "client.png"))

            page.click("nav button[data-tab=topics]")
            topic = '#topic-tree li[data-topic="explorer/kitchen/temp"]'
            page.wait_for_selector(f"{topic} .preview", timeout=SECONDS)
            assert page.text_content(f"{topic} .preview") == "21.5 degrees"
            page.screenshot(path=str(tmp_path / "topics.png"))
            page.click(f"{topic} button.delete-retained")  # arms it
            page.click(f"{topic} button.delete-retained")  # confirms
            page.wait_for_selector(f"{topic} .preview", state="detached", timeout=SECONDS)
            assert admin.get("/api/v1/retained", filter="explorer/#")["entries"] == []
            late = clients.subscriber("explorer/#", 1)
            late.assert_no_message()

            page.click("nav button[data-tab=clients]")
            page.click(row)
            page.wait_for_selector("#client-detail:not([hidden])", timeout=SECONDS)
            page.click("#client-kick")
            page.click("#client-kick")
            assert probe.disconnected.wait(5)
            wait_until(lambda: admin.call("GET", "/api/v1/clients/explorer-probe",
                                          expect=None).status == 404)
        finally:
            page.close()
        assert errors == []
    assert all((tmp_path / name).stat().st_size > 0
               for name in ("overview.png", "client.png", "topics.png"))


def test_the_explorer_asks_for_the_token(broker_factory: BrokerFactory, browser: Browser,
                                         tmp_path: Path) -> None:
    token = "explorer-token-0123456789"
    token_file = tmp_path / "token"
    token_file.write_text(token)
    broker = broker_factory(admin={**ADMIN, "token_file": str(token_file)})
    page = browser.new_page()
    errors = watch_console(page)
    try:
        page.goto(admin_url(broker) + "/")
        expect(page.locator("#token-form")).to_be_visible(timeout=SECONDS)
        expect(page.locator("#status")).to_have_text("the admin API needs a token")
        page.fill("#token", token)
        page.click("#token-form button")
        expect(page.locator("#token-form")).to_be_hidden(timeout=SECONDS)
        expect(page.locator("#stat-clients")).to_have_text("0", timeout=SECONDS)
    finally:
        page.close()
    # The browser reports each refused request (401) as a failed resource, and nothing else.
    assert errors and all("401" in error for error in errors), errors
