"""The web app end to end: a real browser, the real server, broker and database.

Debian's Chromium (Playwright, ``executable_path``) against ``server/app.py``'s
``Server`` with the real Mosquitto and InfluxDB (tests/conftest.py). The
nodes are played by an MQTT client publishing the wire format a node sends
(``NodeSide``). Outside services are local HTTP servers speaking their
format: the forecast is a local Open-Meteo replaying a recorded response
(tests/data), the people's phones the generic webhook answered here
(``Phones``). Every request a page makes to another host fails the test.

Screenshots of each page at a phone's size (390x844) and of the wall view
(1920x1080) are kept in var/screenshots/ (docs/webapp.md).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from web_helpers import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    PASSWORD,
    PHONE,
    WALL,
    Yard,
    guarded_context,
    running_yard,
    shot,
    skip_without_chromium,
)

from secadero.server.app import Server

pytestmark = pytest.mark.integration

# What the page shows within this time, or the test fails (the page polls every 5 s).
SEEN_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    skip_without_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def yard(tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str) -> Iterator[Yard]:
    with running_yard(tmp_path, mosquitto, influxdb, unique_name) as handle:
        yield handle


def log_in(page: Page, base: str, name: str, target: str = "/yard") -> None:
    page.goto(target)
    # Without a session every page sends the browser to the log-in form, and back after it.
    expect(page).to_have_url(f"{base}/login?next={target.replace('/', '%2F')}")
    page.get_by_label("Usuario").fill(name)
    page.get_by_label("Contraseña").fill(PASSWORD)
    page.get_by_role("button", name="Ingresar").click()
    expect(page).to_have_url(base + target)


def test_a_supervisor_sees_the_rain_acknowledges_and_the_trays_come_in(
        yard: Yard, browser: Browser) -> None:
    yard.trays_out()
    with guarded_context(browser, yard.url, viewport=PHONE) as context:
        page = context.new_page()
        page.goto("/login")
        shot(page, "phone-login")
        log_in(page, yard.url, "ana")
        trays = page.locator("#trays li.tray")
        expect(trays).to_have_count(3)
        expect(page.locator("#trays-summary")).to_have_text("Bandejas: 3 afuera")
        expect(page.locator("#rain")).to_have_text("Sin lluvia")
        expect(page.locator("#alert")).to_have_text("Sin alerta activa.")
        expect(page.locator("#forecast ol.hours li")).to_have_count(6)
        shot(page, "phone-yard-dry")

        # A shower on the north plate: the node says so, the server raises the alert.
        yard.send("norte-1", "rain_started")
        # The ladder's first step: the yard worker (the supervisor only if nobody answers).
        message = yard.phones.next()
        assert message["recipient"] == "Rosa"
        assert message["body"].startswith("LLUEVE en el tendal Chazuta")
        expect(page.locator("#rain h2")).to_have_text("LLUEVE ahora", timeout=SEEN_MS)
        expect(page.locator("#alert h2")).to_contain_text("Lluvia")
        expect(page.locator("#alert .alert-message")).to_contain_text("LLUEVE")
        shot(page, "phone-yard-alert")

        page.get_by_role("button", name="Recibido").click()
        expect(page.locator("#alert .acked")).to_contain_text("Recibida por ana")
        (episode,) = yard.server.alerts.open_episodes()
        assert (episode.state, episode.acked_by) == ("acknowledged", "ana")

        # The workers pull the trays in; the switches report it.
        for node, tray in (("norte-1", "t1"), ("norte-1", "t2"), ("sur-2", "t1")):
            yard.send(node, "tray_retracted", tray=tray)
        expect(page.locator("#trays-summary")).to_have_text("Bandejas: todas adentro",
                                                            timeout=SEEN_MS)
        expect(page.locator("#trays li.tray.retracted")).to_have_count(3)
        expect(page.locator('[data-tray="norte-1/t1"] .state')).to_have_text("adentro")
        shot(page, "phone-yard-trays-in")
        # The narrowest phone the yard has (360 px): nothing runs off the side.
        page.set_viewport_size({"width": 360, "height": 740})
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        shot(page, "phone360-yard")
        page.set_viewport_size(PHONE)

        page.get_by_role("link", name="Alertas").click()
        card = page.locator(f"#episode-{episode.id}")
        expect(card).to_contain_text("recibida")
        expect(card.locator("ul.notes li")).to_have_count(1)
        expect(card.locator("ul.notes")).to_contain_text("Rosa")
        expect(card.locator("ul.notes")).to_contain_text("webhook")
        expect(card.locator("dd.trays-in")).to_have_text("0 min")
        shot(page, "phone-alerts")

        page.get_by_role("link", name="English").click()
        expect(page.locator("h1")).to_have_text("Alerts")
        page.goto("/lang?to=es&next=/alerts")

    with guarded_context(browser, yard.url, viewport=WALL) as context:
        page = context.new_page()
        log_in(page, yard.url, "rosa", "/wall")
        expect(page.locator("h1")).to_have_text("Tendal Chazuta — ahora")
        expect(page.locator("#rain h2")).to_have_text("LLUEVE ahora")
        expect(page.locator("#trays li.tray")).to_have_count(3)
        shot(page, "wall-1920x1080")


def test_quality_starts_a_batch_records_moisture_ends_it_and_downloads_the_report(
        yard: Yard, browser: Browser, tmp_path: Path) -> None:
    yard.trays_out()
    with guarded_context(browser, yard.url, viewport=PHONE, accept_downloads=True) as context:
        page = context.new_page()
        log_in(page, yard.url, "carmen", "/batches")
        expect(page.locator("h1")).to_have_text("Lotes")
        # With no batch drying, the start form is open at once.
        expect(page.locator("details.card")).to_have_attribute("open", "")
        form = page.locator("#start-batch")
        form.get_by_label("Código del lote").fill("l-2026-041")
        form.get_by_label("norte-1/t1").check()
        form.get_by_label("norte-1/t2").check()
        form.get_by_label("Lote de cosecha").fill("Cosecha junio")
        form.get_by_label("Socio").fill("Familia Ruiz")
        form.get_by_label("Peso húmedo (kg)").fill("120,5")
        shot(page, "phone-batches-start")
        form.get_by_role("button", name="Empezar").click()
        expect(page).to_have_url(f"{yard.url}/batches/l-2026-041")
        expect(page.locator("h1")).to_have_text("l-2026-041")
        batch = yard.server.batches.get("l-2026-041")
        assert ([str(t) for t in batch.trays], batch.lot, batch.member, batch.wet_weight_kg,
                batch.started_by) == (["norte-1/t1", "norte-1/t2"], "Cosecha junio",
                                      "Familia Ruiz", 120.5, "carmen")

        # A reading the service refuses is shown, naming the field; nothing stored.
        page.locator("#moisture").get_by_label("Humedad (%)").fill("150")
        page.locator("#moisture").get_by_role("button", name="Anotar").click()
        expect(page.locator("p.error")).to_contain_text("moisture_pct")
        assert yard.server.batches.readings("l-2026-041") == []

        page.locator("#moisture").get_by_label("Humedad (%)").fill("48,5")
        page.locator("#moisture").get_by_role("button", name="Anotar").click()
        expect(page.locator("#readings li")).to_have_count(1)
        expect(page.locator("#readings li")).to_contain_text("48.5 %")
        expect(page.locator("#curve svg circle")).to_have_count(1)
        shot(page, "phone-batch-open")

        page.locator("#end").get_by_label("Humedad final (%)").fill("7,2")
        page.locator("#end").get_by_role("button", name="Terminar").click()
        expect(page.locator("h1")).to_have_text("l-2026-041 · terminado")
        assert yard.server.batches.get("l-2026-041").final_moisture_pct == 7.2
        expect(page.locator("#moisture")).to_have_count(0)

        with page.expect_download() as download_info:
            page.locator("#report").click()
        report = tmp_path / "report.pdf"
        download_info.value.save_as(report)
        assert report.read_bytes().startswith(b"%PDF-")
        assert download_info.value.suggested_filename == "l-2026-041-report.pdf"
        shot(page, "phone-batch-ended")

        page.get_by_role("link", name="Lotes").click()
        expect(page.locator("ul.batches").last).to_contain_text("l-2026-041")
        shot(page, "phone-batches")


def test_a_worker_cannot_reach_the_batches(yard: Yard, browser: Browser) -> None:
    with guarded_context(browser, yard.url, viewport=PHONE) as context:
        page = context.new_page()
        log_in(page, yard.url, "rosa")
        expect(page.get_by_role("link", name="Lotes")).to_have_count(0)
        response = page.goto("/batches")
        assert response is not None and response.status == 403
        expect(page.locator("h1")).to_have_text("Sin permiso")
        expect(page.locator("p.message")).to_contain_text("worker")
        shot(page, "phone-forbidden")
        # Nor by posting the start form itself (the CSRF value is hers, the role is not).
        csrf = page.locator("form.inline input[name=csrf]").get_attribute("value")
        answer = page.request.post("/batches", form={"csrf": csrf, "id": "x-1",
                                                     "trays_list": "norte-1/t1"})
        assert answer.status == 403
        assert yard.server.batches.list() == []


def test_without_a_session_nothing_but_the_login(yard: Yard, browser: Browser) -> None:
    with guarded_context(browser, yard.url, viewport=PHONE) as context:
        page = context.new_page()
        page.goto("/alerts")
        expect(page).to_have_url(f"{yard.url}/login?next=%2Falerts")
        page.get_by_label("Usuario").fill("ana")
        page.get_by_label("Contraseña").fill("wrong")
        page.get_by_role("button", name="Ingresar").click()
        expect(page.get_by_role("alert")).to_contain_text("Usuario o contraseña incorrectos")
        assert page.request.get("/api/yard").status == 401
        # A form without the session's CSRF value changes nothing, even when logged in.
        log_in(page, yard.url, "ana")
        yard.trays_out()
        assert page.request.post("/batches", form={"id": "y-1"}).status == 403
        assert yard.server.batches.list() == []
        # Logging out ends the session: the pages send the browser to the form again.
        page.get_by_role("button", name="Salir").click()
        expect(page).to_have_url(f"{yard.url}/login")
        page.goto("/yard")
        expect(page).to_have_url(f"{yard.url}/login?next=%2Fyard")


# Every page, first load with an empty cache, must stay under this (docs/webapp.md).
PAGE_BUDGET_BYTES = 150 * 1024


def test_every_page_is_light_on_first_load(yard: Yard, browser: Browser) -> None:
    """Bytes transferred (headers and bodies, as received) for each page with an empty
    cache: a phone on a 3G-class link in the yard. Printed for docs/webapp.md."""
    yard.trays_out()
    yard.server.batches.start(id="l-peso", yard=yard.yard, trays=["norte-1/t1"], by="ana")
    yard.server.batches.moisture("l-peso", moisture_pct=52.0, by="ana")
    with guarded_context(browser, yard.url, viewport=PHONE) as context:
        page = context.new_page()
        log_in(page, yard.url, "ana")
        state = context.storage_state()
    weights: dict[str, int] = {}
    for path in ("/login", "/yard", "/alerts", "/batches", "/batches/l-peso", "/wall"):
        options = {} if path == "/login" else {"storage_state": state}
        with guarded_context(browser, yard.url, viewport=PHONE, **options) as context:
            page = context.new_page()
            sizes: list[int] = []
            page.on("requestfinished", lambda request, sizes=sizes: sizes.append(
                request.sizes()["responseBodySize"] + request.sizes()["responseHeadersSize"]))
            response = page.goto(path, wait_until="load")
            assert response is not None and response.status == 200, path
            expect(page.locator("h1")).to_be_visible()
            weights[path] = sum(sizes)
    print("first-load weights (bytes):", weights)
    assert all(0 < size < PAGE_BUDGET_BYTES for size in weights.values()), weights


def test_after_a_restart_the_yard_shows_the_last_stored_values(yard: Yard) -> None:
    """A restarted server has heard no node yet: the trays come from InfluxDB, marked."""
    yard.trays_out()
    yard.server.stop()
    yard.server = Server(yard.settings).start()
    base = f"http://127.0.0.1:{yard.server.api_port}"
    login = urllib.request.Request(f"{base}/api/login", method="POST", data=json.dumps(
        {"name": "rosa", "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(login, timeout=10) as response:
        token = json.load(response)["token"]
    request = urllib.request.Request(f"{base}/api/yard",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        state = json.load(response)
    assert [(n["node"], n["stored"], n["online"], n["trays"]) for n in state["nodes"]] == [
        ("norte-1", True, False, {"t1": "extended", "t2": "extended"}),
        ("sur-2", True, False, {"t1": "extended"})]
    # The first reading after the restart: that node is live again, the other still stored.
    yard.send("sur-2", "telemetry", rain=False, trays={"t1": "retracted"})
    with urllib.request.urlopen(request, timeout=10) as response:
        state = json.load(response)
    assert [(n["node"], n["stored"], n["trays"]) for n in state["nodes"]] == [
        ("norte-1", True, {"t1": "extended", "t2": "extended"}),
        ("sur-2", False, {"t1": "retracted"})]


def test_bad_requests_get_clear_answers_not_crashes(yard: Yard) -> None:
    """Over plain HTTP: what a browser would never send, answered with the right status."""
    def call(method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(yard.url + path, method=method, data=body,
                                         headers=headers or {})
        opener = urllib.request.build_opener(_NoRedirect())
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    login = json.dumps({"name": "ana", "password": PASSWORD}).encode()
    status, headers, _ = call("POST", "/api/login", login,
                              {"Content-Type": "application/json"})
    assert status == 200
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    form = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
    # A CSRF value with non-ASCII text: refused (403), not a server error.
    status, _, _ = call("POST", "/alerts/1/ack", "csrf=ñandú".encode(), form)
    assert status == 403
    # A form larger than any of ours: 413, the connection closed.
    status, headers, _ = call("POST", "/batches", b"x" * 20_000, form)
    assert (status, headers.get("Connection")) == (413, "close")
    # The language switch never sends the browser to another site.
    status, headers, _ = call("GET", "/lang?to=en&next=//example.com/")
    assert (status, headers["Location"]) == (303, "/yard")
    status, headers, _ = call("GET", "/lang?to=xx&next=/alerts")
    assert (status, headers["Location"], headers["Set-Cookie"].split(";")[0]) == (
        303, "/alerts", "secadero_lang=es")
    # Every asset is ours, with its type; an unknown one is 404.
    status, headers, body = call("GET", "/static/app.css")
    assert (status, headers["Content-Type"]) == (200, "text/css; charset=utf-8")
    assert b"http" not in body  # no URL to anywhere in the style sheet
    assert call("GET", "/static/nothing.js")[0] == 404
    # A page with a session carries the policy that forbids loading from elsewhere.
    status, headers, _ = call("GET", "/yard", headers={"Cookie": cookie})
    assert status == 200 and headers["Content-Security-Policy"].startswith("default-src 'self'")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
