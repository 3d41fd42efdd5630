"""Property tests against the running API over real HTTP: no request makes it crash.

A crash is an answer of 500 or no answer at all (an exception that escaped the
handler: ``http.server`` then drops the connection). Every input the outside
controls is drawn by hypothesis: the path and query string, the headers a
client sets (session token, cookie, CSRF, signatures, forwarded address,
content type and length) and the body; and, with valid credentials, the JSON
bodies of login and the batch routes, the Twilio webhook's form (signed:
accepted; changed after signing: refused) and the Gammu hook's body.

The real ``ApiServer``, ``AlertService`` (SQLite) and ``BatchService`` (SQLite
and the fixture's InfluxDB for the trays). The rate limits would answer 429 to
most of these requests; the test's clock moves 61 s at each reading (a
bucket gets one attempt back a minute), so the code behind them is reached,
and the session (30 days) outlives the run.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import influx_login_toml, influx_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secadero.server.alerts.service import AlertService
from secadero.server.api import ApiServer
from secadero.server.batches.service import BatchService
from secadero.server.influx import InfluxV1Writer
from secadero.server.notifiers.twilio import signature
from secadero.settings import load_server_settings

pytestmark = pytest.mark.integration

START = 1_780_000_000.0
PASSWORD = "fuzzing password"
TWILIO_TOKEN = "twilio-fuzz-token"
CALLBACK = "https://yard.example"
relaxed = settings(deadline=None, max_examples=150,
                   suppress_health_check=[HealthCheck.too_slow,
                                          HealthCheck.function_scoped_fixture])


class Clock:
    """61 s later at every reading: the rate limits never get in the way."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        self.now += 61
        return self.now


@dataclass
class Api:
    server: ApiServer
    service: AlertService
    clock: Clock
    token: str = ""

    def send(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One request on a new connection; fails the test on no answer or a 500."""
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=20)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            for key, value in (headers or {}).items():
                connection.putheader(key, value)
            if body is not None and not any(k.lower() == "content-length"
                                            for k in (headers or {})):
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            payload = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError) as exc:
            raise AssertionError(f"no answer to {method} {path!r} {headers}: {exc}") from exc
        finally:
            connection.close()
        assert response.status != 500, (method, path, headers, body, payload)
        assert response.status < 600
        return response.status, payload

    def bearer(self) -> dict[str, str]:
        """A live session's header (a drawn request may have been POST /api/logout)."""
        if self.server.accounts.lookup(self.token, self.clock.now) is None:
            session = self.server.accounts.login("ana", PASSWORD, self.clock.now)
            assert session is not None
            self.token = session.token
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, influxdb: Any) -> Iterator[Api]:
    directory = tmp_path_factory.mktemp("api-fuzz")
    database = "api_fuzz"
    config = directory / "server.toml"
    config.write_text(f"""
[influxdb]
url = "{influxdb.url}"
database = "{database}"
timeout_s = 5
{influx_login_toml(influxdb.url)}

[alerts]
database = "var/alerts.sqlite3"
public_url = "http://127.0.0.1:9"

[accounts]
session_ttl_h = 720

[batches]
database = "var/batches.sqlite3"

[notifiers.twilio]
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token_file = "twilio.token"
from_number = "+15005550006"
api_url = "http://127.0.0.1:9"
callback_base_url = "{CALLBACK}"

[[yards]]
id = "norte"
name = "Norte"
latitude = -6.57
longitude = -76.14

[[yards.recipients]]
name = "Rosa"
role = "worker"
phone = "+51900000001"
""")
    (directory / "twilio.token").write_text(TWILIO_TOKEN)
    settings_ = load_server_settings(config)
    writer = InfluxV1Writer(settings_.influxdb)
    writer.prepare()
    writer.close()
    request = influx_request(
        f"{influxdb.url}/write?db={database}&precision=s",
        data=f'tray,node=norte-1,tray=t1,yard=norte extended=1i,state="extended" '
             f"{int(time.time())}".encode())  # within the raw retention
    urllib.request.urlopen(request, timeout=10).close()
    clock = Clock()
    service = AlertService(settings_, notifiers=[], poller=None, clock=clock)
    batches = BatchService.from_settings(settings_, clock=clock)
    server = ApiServer(service, port=0, batches=batches, clock=clock).start()
    server.accounts.add("ana", "supervisor", PASSWORD)
    try:
        yield Api(server, service, clock)
    finally:
        server.stop()
        service.stop()
        batches.close()


# Header values as a client can send them (http.client refuses control characters);
# Latin-1 above ASCII too: http.server decodes headers as Latin-1.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                    blacklist_characters="\x7f"), max_size=60)
paths = st.sampled_from([
    "/api/login", "/api/logout", "/api/me", "/api/alerts/active", "/api/alerts/history",
    "/api/alerts/1", "/api/alerts/1/ack", "/api/alerts/1/close", "/alerts/1",
    "/api/forecast", "/api/twilio/inbound", "/api/twilio/status", "/api/sms/inbound",
    "/api/batches", "/api/batches/lote-1", "/api/batches/lote-1/moisture",
    "/api/batches/lote-1/end", "/api/batches/lote-1/report.png",
    "/api/batches/lote-1/export.csv", "/api/batches/x%00/export.json", "/"])
query_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=8)


@relaxed
@given(method=st.sampled_from(["GET", "POST"]), path=paths, query=query_text,
       headers=st.dictionaries(st.sampled_from([
           "Authorization", "Cookie", "Content-Type", "X-CSRF-Token", "X-Twilio-Signature",
           "X-Secadero-Signature", "X-Forwarded-For"]), header_text, max_size=4),
       body=st.binary(max_size=200))
def test_any_request(api: Api, method: str, path: str, query: str, headers: dict[str, str],
                     body: bytes) -> None:
    target = path + ("?" + urllib.parse.quote(query, safe="=&%") if query else "")
    api.send(method, target, body if method == "POST" else None, headers)


@relaxed
@given(path=paths, length=st.sampled_from(["x", "-1", "1e3", "65537", "99999999999",
                                           "0x10", "²"]))
def test_a_bad_content_length(api: Api, path: str, length: str) -> None:
    """A length that is not one, or above 64 KiB: 413 before reading anything."""
    assert api.send("POST", path, b"", {"Content-Length": length})[0] == 413


@relaxed
@given(method=st.sampled_from(["GET", "POST"]), path=paths, query=query_text,
       body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
       content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded",
                                     "text/plain"]))
def test_any_request_with_a_session(api: Api, method: str, path: str, query: str,
                                    body: bytes, content_type: str) -> None:
    target = path + ("?" + urllib.parse.quote(query, safe="=&%") if query else "")
    api.send(method, target, body if method == "POST" else None,
             {**api.bearer(), "Content-Type": content_type})


@relaxed
@given(fields=st.fixed_dictionaries({}, optional={
    "name": json_values | st.sampled_from(["ana", "ANA", "ana\x00"]),
    "password": json_values | st.just(PASSWORD), "next": json_values}),
    as_form=st.booleans())
def test_any_login(api: Api, fields: dict[str, Any], as_form: bool) -> None:
    if as_form:
        body = urllib.parse.urlencode({k: str(v) for k, v in fields.items()}).encode()
        kind = "application/x-www-form-urlencoded"
    else:
        body, kind = json.dumps(fields).encode(), "application/json"
    status, _ = api.send("POST", "/api/login", body, {"Content-Type": kind})
    assert status in (200, 303, 400, 401)
    if status in (200, 303):
        assert fields.get("password") == PASSWORD


batch_fields = {key: json_values | st.sampled_from(["norte", "norte-1/t1", "2026-06-01", "x"])
                for key in ("id", "yard", "trays", "lot", "member", "fermentation_end",
                            "wet_weight_kg", "notes", "by", "at", "moisture_pct", "tray",
                            "final_moisture_pct", "dry_weight_kg")}


@relaxed
@given(route=st.sampled_from(["/api/batches", "/api/batches/lote-1/moisture",
                              "/api/batches/lote-1/end", "/api/batches/fuzz-1"]),
       fields=st.fixed_dictionaries({}, optional=batch_fields)
       | st.fixed_dictionaries({"id": st.just("fuzz-1"), "yard": st.just("norte"),
                                "trays": st.just(["norte-1/t1"])}, optional={
           k: v for k, v in batch_fields.items() if k not in ("id", "yard", "trays")}))
def test_any_batch_body(api: Api, route: str, fields: dict[str, Any]) -> None:
    status, payload = api.send("POST", route, json.dumps(fields).encode(),
                               {**api.bearer(), "Content-Type": "application/json"})
    assert status in (200, 201, 400, 404), payload
    if status in (400, 404):
        answer = json.loads(payload)
        assert answer["error"] and "field" in answer


@relaxed
@given(query=st.dictionaries(st.sampled_from(["yard", "limit", "open", "until", "language",
                                              "token"]), st.text(max_size=30), max_size=3),
       path=st.sampled_from(["/api/alerts/history", "/api/batches", "/api/batches/lote-1",
                             "/api/batches/lote-1/export.csv", "/alerts/1"]))
def test_any_query_string(api: Api, query: dict[str, str], path: str) -> None:
    status, _ = api.send("GET", f"{path}?{urllib.parse.urlencode(query)}", None, api.bearer())
    assert status in (200, 400, 403, 404, 503)


@relaxed
@given(form=st.lists(st.tuples(st.text(max_size=12), st.text(max_size=30)), max_size=6),
       changed=st.text(min_size=1, max_size=10),
       path=st.sampled_from(["/api/twilio/inbound", "/api/twilio/status"]))
def test_twilio_signed_forms_are_taken_and_altered_ones_refused(
        api: Api, form: list[tuple[str, str]], changed: str, path: str) -> None:
    body = urllib.parse.urlencode(form).encode()
    # What the server sees: the body parsed back (what Twilio signed is that form).
    params = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
    signed = signature(TWILIO_TOKEN, CALLBACK + path, params)
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Twilio-Signature": signed}
    assert api.send("POST", path, body, headers)[0] == 200
    altered = urllib.parse.urlencode([*form, ("Body", changed)]).encode()
    assert api.send("POST", path, altered, headers)[0] == 403


@relaxed
@given(body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_gammu_hook_any_signed_body(api: Api, body: bytes) -> None:
    tokens = api.service.tokens
    status, _ = api.send("POST", "/api/sms/inbound", body,
                         {"X-Secadero-Signature": tokens.sign_body(body)})
    assert status in (200, 400)
    assert api.send("POST", "/api/sms/inbound", body + b" ",
                    {"X-Secadero-Signature": tokens.sign_body(body)})[0] == 403
