"""The web app in Firefox: log in, the yard now, and the page updating itself.

Debian's ``firefox-esr`` (headless) driven over WebDriver BiDi by
``tests/web/bidi.py`` (Playwright's Firefox cannot be downloaded here and
Debian has no geckodriver), against the same real server, Mosquitto and
InfluxDB as the Chromium tests (``web_helpers.running_yard``; the forecast
is a local Open-Meteo replaying a recorded response, the phones the generic
webhook answered here). A JavaScript error the browser logs, or a request a
page makes to any host other than the server, fails the test. The phone-size
screenshot is kept as var/screenshots/firefox-yard-alert.png (docs/webapp.md).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bidi import FIREFOX, BiDi, firefox
from web_helpers import PASSWORD, PHONE, SCREENSHOTS, Yard, running_yard

from tests.conftest import wait_until

pytestmark = pytest.mark.integration

# What the page shows within this time, or the test fails (the page polls every 5 s).
SEEN_S = 30.0


@pytest.fixture
def yard(tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str) -> Iterator[Yard]:
    with running_yard(tmp_path, mosquitto, influxdb, unique_name) as handle:
        yield handle


def page_shows(browser: BiDi, context: str, selector: str, text: str,
               what: str) -> None:
    """Poll (bounded) until the element's text is ``text`` in the page as it is now."""
    expression = (f"document.querySelector({json.dumps(selector)})?.textContent.trim() "
                  f"=== {json.dumps(text)}")
    wait_until(lambda: browser.evaluate(context, expression), timeout_s=SEEN_S, what=what)


def test_firefox_logs_in_sees_the_yard_and_the_rain_without_a_reload(
        yard: Yard, tmp_path: Path) -> None:
    if not FIREFOX.exists():
        pytest.fail(f"{FIREFOX} is missing: run scripts/setup.sh --browser (./run-tests does)")
    yard.trays_out()
    with firefox(tmp_path / "firefox-profile") as browser:
        browser.command("session.subscribe",
                        events=["log.entryAdded", "network.beforeRequestSent",
                                "browsingContext.load"])
        (top,) = browser.command("browsingContext.getTree")["contexts"]
        context = top["context"]
        browser.command("browsingContext.setViewport", context=context, viewport=PHONE)

        # Without a session the yard sends the browser to the log-in form, and back after it.
        browser.command("browsingContext.navigate", context=context, url=f"{yard.url}/yard",
                        wait="complete")
        assert browser.evaluate(context, "location.href") == f"{yard.url}/login?next=%2Fyard"
        assert browser.evaluate(context, "document.documentElement.lang") == "es"
        # Typed as a person would (real key events into the focused field), then "Ingresar".
        for name, value in (("name", "ana"), ("password", PASSWORD)):
            browser.evaluate(context, f"document.querySelector('input[name={name}]').focus()")
            browser.command("input.performActions", context=context, actions=[{
                "type": "key", "id": "keyboard", "actions": [
                    action for char in value
                    for action in ({"type": "keyDown", "value": char},
                                   {"type": "keyUp", "value": char})]}])
        assert browser.evaluate(context, "document.querySelector('input[name=name]').value") \
            == "ana"
        before = len(browser.events)
        browser.evaluate(context, "document.querySelector('button[type=submit]').click()")
        # The form posts, the server answers with the yard: its load event ends the wait.
        browser.wait_event("browsingContext.load",
                           lambda loaded: loaded["url"] == f"{yard.url}/yard", since=before)

        page_shows(browser, context, "#trays-summary", "Bandejas: 3 afuera", "three trays out")
        page_shows(browser, context, "#rain", "Sin lluvia", "no rain yet")
        page_shows(browser, context, "#alert", "Sin alerta activa.", "no alert yet")
        assert browser.evaluate(context, "document.querySelectorAll('#trays li.tray').length") \
            == 3
        # A mark on this very document: still there after the update, so no reload happened.
        browser.evaluate(context, "window.secaderoSameDocument = true")

        # A shower on the north plate: the node says so, the server raises the alert.
        yard.send("norte-1", "rain_started")
        assert yard.phones.next()["recipient"] == "Rosa"
        page_shows(browser, context, "#rain h2", "LLUEVE ahora", "the rain on the page")
        wait_until(lambda: "Lluvia" in browser.evaluate(
            context, "document.querySelector('#alert h2')?.textContent ?? ''"),
            timeout_s=SEEN_S, what="the rain alert on the page")
        assert browser.evaluate(context, "window.secaderoSameDocument === true")
        # Readable at a phone's width: nothing runs off the side.
        assert browser.evaluate(context, "document.documentElement.scrollWidth") \
            <= PHONE["width"]
        browser.screenshot(context, SCREENSHOTS / "firefox-yard-alert.png")

        # One more round trip, so the events of everything above have been read.
        browser.evaluate(context, "1")
        errors = [event["params"] for event in browser.events
                  if event["method"] == "log.entryAdded" and event["params"]["level"] == "error"]
        assert errors == [], f"the page logged JavaScript errors: {errors}"
        urls = [event["params"]["request"]["url"] for event in browser.events
                if event["method"] == "network.beforeRequestSent"]
        allowed = urllib.parse.urlsplit(yard.url).netloc
        foreign = [url for url in urls if urllib.parse.urlsplit(url).netloc != allowed
                   and urllib.parse.urlsplit(url).scheme not in ("data", "blob")]
        assert foreign == [], f"the pages asked hosts other than the server: {foreign}"
        # The news came through the page's own refresh (static/app.js fetching /yard/now).
        assert any(urllib.parse.urlsplit(url).path == "/yard/now" for url in urls)
