"""Who may call the HTTP API, against the real ``ApiServer`` over real HTTP on 127.0.0.1.

The real ``AlertService`` (no notifiers: nothing is sent) over SQLite, the real
account store, and one clock the test moves (``Clock``): session expiry, link
expiry and the rate limits' refill are driven by it, never by waiting.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from secadero.contract import Envelope, Event
from secadero.server.alerts.service import AlertService
from secadero.server.api import ApiServer
from secadero.server.metrics import Registry
from secadero.settings import ServerSettings, load_server_settings

START = 1_780_000_000.0  # 2026-05-28: any fixed time will do, the clock is the test's
PASSWORD = "a long password"
STAFF = {"ana": "supervisor", "rosa": "worker", "quique": "quality", "teo": "technician",
         "root": "admin"}


@dataclass
class Clock:
    now: float = START

    def __call__(self) -> float:
        return self.now


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "server.toml"
    config.write_text("""
[alerts]
database = "var/alerts.sqlite3"
public_url = "http://127.0.0.1:9"
drying_start = "00:00"
drying_end = "24:00"
ack_token_ttl_h = 1

[accounts]
database = "var/accounts.sqlite3"
session_ttl_h = 2
login_burst = 3
login_per_min = 1
ack_burst = 2
ack_per_min = 1

[[yards]]
id = "norte"
name = "Norte"
latitude = -6.57
longitude = -76.14

[[yards.recipients]]
name = "Luis"
role = "worker"
channels = ["push"]
ntfy_topic = "norte-luis"
""")
    return config


@dataclass
class Api:
    settings: ServerSettings
    service: AlertService
    server: ApiServer
    clock: Clock
    registry: Registry
    tokens: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, body: Any = None, *, as_user: str | None = None,
             headers: dict[str, str] | None = None, form: dict[str, str] | None = None,
             ) -> tuple[int, Any, http.client.HTTPResponse]:
        """One request on its own connection; JSON in and out unless ``form``."""
        headers = dict(headers or {})
        data: bytes | None = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if as_user is not None:
            headers["Authorization"] = f"Bearer {self.token(as_user)}"
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        if response.getheader("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(payload), response
        return response.status, payload.decode(), response

    def login(self, name: str, password: str = PASSWORD, **kwargs: Any
              ) -> tuple[int, Any, http.client.HTTPResponse]:
        return self.call("POST", "/api/login", {"name": name, "password": password}, **kwargs)

    def token(self, name: str) -> str:
        if name not in self.tokens:
            status, answer, _ = self.login(name)
            assert status == 200, answer
            self.tokens[name] = answer["token"]
        return self.tokens[name]

    def raise_rain(self) -> int:
        """A rain event from node n1: the rule raises a rain_now episode; its id."""
        event = Event(ts=self.clock.now, seq=1, type="rain_started")
        self.service.observe(Envelope("norte", "n1", "event", event), self.clock.now)
        self.service.evaluate()
        [episode] = self.service.store.active_episodes()
        return episode.id or 0

    def rate_limited(self, what: str, bucket: str) -> float:
        return self.registry.part("api").get("rate_limited_total", what=what, bucket=bucket)


def start_api(tmp_path: Path, clock: Clock) -> Api:
    settings = load_server_settings(write_config(tmp_path))
    service = AlertService(settings, notifiers=[], poller=None, clock=clock)
    registry = Registry()
    server = ApiServer(service, port=0, registry=registry, clock=clock).start()
    return Api(settings, service, server, clock, registry)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    running = start_api(tmp_path, Clock())
    for name, role in STAFF.items():
        running.server.accounts.add(name, role, PASSWORD)
    yield running
    running.server.stop()
    running.service.stop()


ROUTES = [("GET", "/api/alerts/active"), ("GET", "/api/alerts/history"),
          ("GET", "/api/alerts/1"), ("GET", "/api/forecast"), ("GET", "/api/me"),
          ("POST", "/api/alerts/1/ack"), ("POST", "/api/alerts/1/close")]


def test_no_valid_session_no_answer(api: Api) -> None:
    episode = api.raise_rain()
    assert episode == 1
    for method, path in ROUTES:
        assert api.call(method, path)[:2] == (401, {"error": "login required"}), path
        assert api.call(method, path, headers={"Authorization": "Bearer forged"})[:2] == (
            401, {"error": "login required"}), path
        assert api.call(method, path, headers={"Cookie": "secadero_session=forged"})[:2] == (
            401, {"error": "login required"}), path
    # The alert page without its link's token or a session shows nothing of the yard.
    status, page, _ = api.call("GET", "/alerts/1")
    assert status == 403 and "LLUEVE" not in page and "Enlace no valido o vencido." in page
    # A session works until it expires (session_ttl_h = 2), then it is refused.
    assert api.call("GET", "/api/alerts/active", as_user="rosa")[0] == 200
    api.clock.now += 2 * 3600 - 1
    assert api.call("GET", "/api/me", as_user="rosa")[:2] == (200, {
        "name": "rosa", "role": "worker", "csrf": api.call("GET", "/api/me", as_user="rosa")[
            1]["csrf"], "expires_at": START + 2 * 3600})
    api.clock.now += 1
    assert api.call("GET", "/api/alerts/active", as_user="rosa")[:2] == (
        401, {"error": "login required"})
    # A removed account's session ends at once.
    api.clock.now = START
    api.tokens.clear()
    assert api.call("GET", "/api/forecast", as_user="teo")[0] == 200
    api.server.accounts.remove("teo")
    assert api.call("GET", "/api/forecast", as_user="teo")[0] == 401


def test_a_worker_cannot_do_a_supervisors_action(api: Api) -> None:
    episode = api.raise_rain()
    path = f"/api/alerts/{episode}/close"
    assert api.call("POST", path, as_user="rosa")[:2] == (
        403, {"error": "the role worker may not alerts.close"})
    assert api.service.current_alert("norte").state == "raised"
    # What a worker may: read and acknowledge, as herself.
    assert api.call("GET", "/api/alerts/active", as_user="rosa")[0] == 200
    assert api.call("POST", f"/api/alerts/{episode}/ack", as_user="rosa")[:2] == (
        200, {"acknowledged": episode, "by": "rosa"})
    assert api.call("POST", path, as_user="ana")[:2] == (200, {"closed": episode, "by": "ana"})
    assert api.service.current_alert("norte").state == "clear"


def test_the_login_answers(api: Api) -> None:
    status, session, response = api.login("ana")
    assert status == 200
    assert set(session) == {"token", "name", "role", "expires_at", "csrf"}
    assert (session["name"], session["role"], session["expires_at"]) == (
        "ana", "supervisor", START + 2 * 3600)
    assert response.getheader("Set-Cookie") == (
        f"secadero_session={session['token']}; Max-Age=7200; Path=/; HttpOnly; "
        "SameSite=Strict")
    assert api.login("ana", "wrong password")[:2] == (401, {"error": "wrong name or password"})
    assert api.login("nobody")[:2] == (401, {"error": "wrong name or password"})
    assert api.call("POST", "/api/login", {"name": "ana"})[:2] == (
        400, {"error": "password must be a string of 1 to 1024 characters", "field": "password"})
    assert api.call("POST", "/api/login", {"name": ["ana"], "password": "x"})[:2] == (
        400, {"error": "name must be a string of 1 to 1024 characters", "field": "name"})
    assert api.call("POST", "/api/login", [1])[:2] == (
        400, {"error": "the body must be a JSON object", "field": "body"})
    # Log out: the token is dead.
    token = session["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert api.call("POST", "/api/logout", headers=bearer)[:2] == (200, {"logged_out": True})
    assert api.call("GET", "/api/me", headers=bearer)[0] == 401


def test_a_browser_form_login_and_csrf(api: Api) -> None:
    episode = api.raise_rain()
    status, _, response = api.call("POST", "/api/login", form={
        "name": "rosa", "password": PASSWORD, "next": f"/alerts/{episode}"})
    assert (status, response.getheader("Location")) == (303, f"/alerts/{episode}")
    cookie = response.getheader("Set-Cookie", "").split(";")[0]
    browser = {"Cookie": cookie}
    # With the cookie the page shows, its button carries the session's CSRF value.
    status, page, _ = api.call("GET", f"/alerts/{episode}", headers=browser)
    me = api.call("GET", "/api/me", headers=browser)[1]
    assert status == 200 and "LLUEVE" in page
    assert f'<input type="hidden" name="csrf" value="{me["csrf"]}">' in page
    # A post the browser makes with the cookie but without the CSRF value (another
    # site's page) is refused; with it (header or form field) it goes through.
    ack = f"/api/alerts/{episode}/ack"
    assert api.call("POST", ack, headers=browser)[:2] == (
        403, {"error": "missing or wrong CSRF token"})
    assert api.call("POST", ack, headers=browser, form={"csrf": "guess"})[:2] == (
        403, {"error": "missing or wrong CSRF token"})
    assert api.service.store.active_episodes()[0].state == "raised"
    status, _, response = api.call("POST", ack, headers=browser, form={"csrf": me["csrf"]})
    assert (status, response.getheader("Location")) == (
        303, f"http://127.0.0.1:9/alerts/{episode}")
    assert api.service.store.active_episodes()[0].acked_by == "rosa"
    assert api.call("POST", ack, headers={**browser, "X-CSRF-Token": me["csrf"]})[0] == 200
    # Logging out by the cookie needs the value too.
    assert api.call("POST", "/api/logout", headers=browser)[0] == 403
    status, _, response = api.call("POST", "/api/logout", headers=browser,
                                   form={"csrf": me["csrf"], "next": "/"})
    assert (status, response.getheader("Location")) == (303, "/")
    assert response.getheader("Set-Cookie", "").startswith("secadero_session=; Max-Age=0;")
    assert api.call("GET", "/api/me", headers=browser)[0] == 401


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/",
                                    "/\\evil.example", "javascript:alert(1)", ""])
def test_a_login_never_sends_the_browser_elsewhere(api: Api, target: str) -> None:
    status, _, response = api.call("POST", "/api/login", form={
        "name": "rosa", "password": PASSWORD, "next": target})
    assert (status, response.getheader("Location")) == (303, "/")


def test_a_wrong_form_login_shows_the_form_again(api: Api) -> None:
    status, page, _ = api.call("POST", "/api/login", form={
        "name": "rosa", "password": "nope", "next": "/batches"})
    assert status == 401
    assert "Usuario o contraseña incorrectos. / Wrong name or password." in page
    assert '<input type="hidden" name="next" value="/batches">' in page
    assert "nope" not in page


def test_forged_expired_and_reused_ack_links_are_refused(api: Api, tmp_path: Path) -> None:
    episode = api.raise_rain()
    tokens = api.service.tokens
    link = tokens.make(episode, api.clock.now)
    expiry, nonce, mac = link.split(".")
    forged = [f"{int(expiry) + 3600}.{nonce}.{mac}",  # a later expiry, same signature
              f"{expiry}.{nonce}x.{mac}",  # another nonce
              tokens.make(episode + 1, api.clock.now),  # another episode's link
              f"{expiry}.{nonce}.{mac[:-2]}AA"]
    for token in forged:
        assert api.call("POST", f"/api/alerts/{episode}/ack?token={token}")[:2] == (
            403, {"error": "bad signature"})
        api.clock.now += 60  # out of the ack rate limit's way (2 at once, 1 a minute)
    # Expired: ack_token_ttl_h = 1.
    api.clock.now = START + 3601
    assert api.call("POST", f"/api/alerts/{episode}/ack?token={link}")[:2] == (
        403, {"error": "expired"})
    assert api.service.store.active_episodes()[0].state == "raised"
    api.clock.now = START + 600
    assert api.call("POST", f"/api/alerts/{episode}/ack?token={link}")[:2] == (
        200, {"acknowledged": episode, "by": "push"})
    api.clock.now += 60
    assert api.call("POST", f"/api/alerts/{episode}/ack?token={link}")[:2] == (
        403, {"error": "already used"})
    # A restart forgets nothing: the used link is still refused.
    api.server.stop()
    api.service.stop()
    again = start_api(tmp_path, api.clock)
    try:
        api.clock.now += 60
        assert again.call("POST", f"/api/alerts/{episode}/ack?token={link}")[:2] == (
            403, {"error": "already used"})
        # The page still shows the alert to the link's holder (it only shows).
        status, page, _ = again.call("GET", f"/alerts/{episode}?token={link}")
        assert status == 200 and "Recibido (push)." in page
    finally:
        again.server.stop()
        again.service.stop()


def test_the_login_rate_limit_per_name_and_per_address(api: Api) -> None:
    # Per name: 3 attempts at once (login_burst), then one a minute, even the right one.
    for _ in range(3):
        assert api.login("ana", "guess")[0] == 401
    assert api.login("ana")[:2] == (429, {"error": "too many login attempts; wait a minute"})
    assert api.login("ana")[2].getheader("Retry-After") == "60"
    # Both buckets were empty: each refusal counted in both.
    assert (api.rate_limited("login", "name"), api.rate_limited("login", "address")) == (2, 2)
    api.clock.now += 60
    assert api.login("ana")[0] == 200
    assert api.login("ana")[0] == 429
    # Per address: this client (127.0.0.1) has spent its bucket on ana too: other
    # names get nothing until it refills.
    api.clock.now += 3600
    for name in ("x1", "x2", "x3"):
        assert api.login(name)[0] == 401
    assert api.login("rosa")[0] == 429
    assert (api.rate_limited("login", "name"), api.rate_limited("login", "address")) == (3, 4)
    api.clock.now += 60
    assert api.login("rosa")[0] == 200


def test_the_acknowledge_rate_limit(api: Api) -> None:
    episode = api.raise_rain()
    # Links: per address; 2 at once, one a minute.
    assert api.call("POST", f"/api/alerts/{episode}/ack?token=1.x.y")[0] == 403
    assert api.call("POST", f"/api/alerts/{episode}/ack?token=1.x.y")[0] == 403
    good = api.service.tokens.make(episode, api.clock.now)
    assert api.call("POST", f"/api/alerts/{episode}/ack?token={good}")[:2] == (
        429, {"error": "too many acknowledgements; wait a minute"})
    assert api.service.store.active_episodes()[0].state == "raised"
    api.clock.now += 60
    assert api.call("POST", f"/api/alerts/{episode}/ack?token={good}")[0] == 200
    # Sessions: per account too (a new address would not help a stolen session).
    api.clock.now += 3600
    assert api.call("POST", f"/api/alerts/{episode}/ack", as_user="rosa")[0] == 200
    assert api.call("POST", f"/api/alerts/{episode}/ack", as_user="rosa")[0] == 200
    assert api.call("POST", f"/api/alerts/{episode}/ack", as_user="rosa")[0] == 429
    assert api.rate_limited("ack", "address") == 2
    assert api.rate_limited("ack", "name") == 1


def test_the_forwarded_address_counts_only_when_trusted(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("login_burst = 3",
                                                 "login_burst = 1\ntrust_forwarded_for = true"))
    settings = load_server_settings(config)
    clock = Clock()
    service = AlertService(settings, notifiers=[], poller=None, clock=clock)
    server = ApiServer(service, port=0, clock=clock).start()
    running = Api(settings, service, server, clock, Registry())
    try:
        def attempt(name: str, forwarded: str) -> int:
            return running.login(name, headers={"X-Forwarded-For": forwarded})[0]

        assert attempt("a1", "203.0.113.9, 198.51.100.1") == 401
        assert attempt("a2", "203.0.113.9, 198.51.100.1") == 429  # same last entry
        assert attempt("a3", "203.0.113.9, 198.51.100.2") == 401  # another client
    finally:
        server.stop()
        service.stop()


def test_the_request_log_shows_no_secret(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    episode = api.raise_rain()
    link = api.service.tokens.make(episode, api.clock.now)
    caplog.set_level(logging.DEBUG, logger="secadero.server.api")
    api.call("GET", f"/alerts/{episode}?token={link}")
    api.call("POST", f"/api/alerts/{episode}/ack?token={link}")
    api.call("POST", "/api/login", form={"name": "rosa", "password": "wrong but secret"})
    session = api.token("ana")
    api.call("GET", "/api/me", as_user="ana")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"/alerts/{episode}?token=***" in text
    for secret in (link, "wrong but secret", session, PASSWORD):
        assert secret not in text
