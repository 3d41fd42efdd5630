"""Coverage-guided fuzzing (atheris, libFuzzer) of what the server reads from outside.

Targets (``--target=NAME``):

- ``api``: one HTTP request, built from the input (method, route, query string,
  credentials: none / a valid Bearer / the cookie with or without its CSRF value /
  garbage, content type, one extra header, the body), served by the real
  ``ApiServer`` request handler with its real ``AlertService``, ``BatchService``
  and account store (SQLite in a temporary directory). A crash is an exception
  that escapes the handler or an answer of 500 (the handler's last resort for a
  bug): both abort the run with the input saved by libFuzzer.
- ``decoders``: the input as JSON through both forecast parsers (only
  ``ForecastError`` may come out), as a Twilio webhook form through the signature
  check, as an acknowledge token, a login ``next`` and a URL to redact.

Run (a bounded number of inputs; docs/security.md has the figures):

    .venv/bin/pip install -e '.[fuzz]'
    fuzz/run.sh 20000        # both targets, N inputs each, at low CPU priority

or one target: ``.venv/bin/python fuzz/fuzz_api.py --target=api -runs=20000 DIR``
(DIR: the corpus, kept between runs; libFuzzer writes crash-* files in the
current directory).

No InfluxDB is needed: the batch service's trays come from a fixed stand-in and
its InfluxDB URL points at a closed port (a batch view answers 503, a clean
answer). The clock moves 61 s at each reading so the rate limits (one attempt
back a minute) do not hide the code behind them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["secadero"]):
    from secadero.server.alerts.service import AlertService
    from secadero.server.alerts.tokens import AckTokens
    from secadero.server.api import ApiServer, local_path
    from secadero.server.batches.service import BatchService
    from secadero.server.batches.store import BatchStore
    from secadero.server.forecast import ForecastError, metno, openmeteo
    from secadero.server.notifiers.twilio import signature, valid_signature
    from secadero.settings import load_server_settings
    from secadero.settings.show import redact_url

START = 1_780_000_000.0
PASSWORD = "fuzzing password"
TWILIO_TOKEN = "twilio-fuzz-token"
PATHS = [
    "/api/login", "/api/logout", "/api/me", "/api/alerts/active", "/api/alerts/history",
    "/api/alerts/1", "/api/alerts/1/ack", "/api/alerts/1/close", "/alerts/1", "/api/forecast",
    "/api/twilio/inbound", "/api/twilio/status", "/api/sms/inbound", "/api/batches",
    "/api/batches/lote-1", "/api/batches/lote-1/moisture", "/api/batches/lote-1/end",
    "/api/batches/lote-1/report.png", "/api/batches/lote-1/export.csv",
    "/api/batches/lote-1/export.json", "/"]
CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain", ""]
EXTRA_HEADERS = ["X-Twilio-Signature", "X-Secadero-Signature", "X-Forwarded-For",
                 "X-CSRF-Token", "Cookie", "Authorization", "Content-Length"]


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        self.now += 61
        return self.now


class KnownTrays:
    """The trays InfluxDB would list: node norte-1 has t1 and t2."""

    def trays_of(self, yard: str, node: str) -> set[str]:
        return {"t1", "t2"} if (yard, node) == ("norte", "norte-1") else set()


class Connection:
    """What ``StreamRequestHandler`` needs of a socket: the request's bytes to read, a
    buffer for the answer."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.sent = io.BytesIO()

    def settimeout(self, timeout: float | None) -> None:
        pass

    def makefile(self, mode: str, buffering: int = -1) -> io.BytesIO:
        return io.BytesIO(self._data)

    def sendall(self, data: bytes) -> None:
        self.sent.write(data)


class ApiTarget:
    def __init__(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="secadero-fuzz-"))
        (directory / "twilio.token").write_text(TWILIO_TOKEN)
        config = directory / "server.toml"
        config.write_text("""
[influxdb]
url = "http://127.0.0.1:9"
timeout_s = 0.2
[alerts]
database = "var/alerts.sqlite3"
public_url = "http://127.0.0.1:9"
drying_start = "00:00"
drying_end = "24:00"
[accounts]
session_ttl_h = 720
[batches]
database = "var/batches.sqlite3"
[notifiers.twilio]
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token_file = "twilio.token"
from_number = "+15005550006"
api_url = "http://127.0.0.1:9"
callback_base_url = "https://yard.example"
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
        settings = load_server_settings(config)
        self.clock = Clock()
        self.service = AlertService(settings, notifiers=[], poller=None, clock=self.clock)
        batches = BatchService(settings, store=BatchStore(settings.batches.database),
                               trays=KnownTrays(), clock=self.clock)
        self.api = ApiServer(self.service, port=0, batches=batches, clock=self.clock)
        self.api.accounts.add("ana", "supervisor", PASSWORD)
        self.api.accounts.add("rosa", "worker", PASSWORD)
        self.sessions = {name: self.api.accounts.login(name, PASSWORD, START + 1)
                         for name in ("ana", "rosa")}
        # Something to act on: an open rain alert (episode 1) and a batch (lote-1).
        from secadero.contract import Envelope, Event
        self.service.observe(Envelope("norte", "norte-1", "event",
                                      Event(ts=START, seq=1, type="rain_started")), START)
        self.service.evaluate()
        batches.start(id="lote-1", yard="norte", trays=["norte-1/t1"], at=START - 3600)

    def __call__(self, data: bytes) -> None:
        """Six bytes pick the method, route, account, credential, content type and extra
        header; the rest is ``query \\n extra header value \\n body`` (fuzz/seeds/api/)."""
        head = data[:6].ljust(6, b"\0")
        method = ["GET", "POST"][head[0] % 2]
        path = PATHS[head[1] % len(PATHS)]
        who = ["", "ana", "rosa"][head[2] % 3]
        credential = ["none", "bearer", "cookie", "cookie+csrf", "garbage"][head[3] % 5]
        content_type = CONTENT_TYPES[head[4] % len(CONTENT_TYPES)]
        extra = EXTRA_HEADERS[head[5] % len(EXTRA_HEADERS)]
        query, _, rest = data[6:].partition(b"\n")
        extra_value, _, body = rest.partition(b"\n")
        session = self.sessions.get(who)
        if session is not None and self.api.accounts.lookup(session.token, self.clock.now) \
                is None:  # a drawn POST /api/logout ended it: log in again
            session = self.sessions[who] = self.api.accounts.login(who, PASSWORD,
                                                                   self.clock.now)
        target = f"{method} {path}".encode()
        if query:
            target += b"?" + urllib.parse.quote_from_bytes(query, safe=b"=&%+").encode()
        lines = [target + b" HTTP/1.1", b"Host: x"]
        if session is not None and credential == "bearer":
            lines.append(f"Authorization: Bearer {session.token}".encode())
        elif session is not None and credential.startswith("cookie"):
            lines.append(f"Cookie: secadero_session={session.token}".encode())
            if credential == "cookie+csrf":
                lines.append(f"X-CSRF-Token: {session.csrf}".encode())
        elif credential == "garbage":
            lines.append(b"Authorization: Bearer " + extra_value.replace(b"\r", b""))
        if content_type:
            lines.append(f"Content-Type: {content_type}".encode())
        # One more header, its value any bytes but a carriage return (it would end it).
        lines.append(extra.encode() + b": " + extra_value.replace(b"\r", b""))
        if extra != "Content-Length":
            lines.append(f"Content-Length: {len(body)}".encode())
        raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
        connection = Connection(raw)
        self.api.handler_class(connection, ("127.0.0.1", 40000), None)
        answer = connection.sent.getvalue()
        status_line = answer.split(b"\r\n", 1)[0]
        if b" 500 " in status_line + b" ":
            raise RuntimeError(f"500 for {raw[:300]!r}: {answer[-300:]!r}")


def decoders(data: bytes) -> None:
    """The first byte picks the decoder, the rest is its input (fuzz/seeds/decoders/)."""
    which = data[0] % 5 if data else 0
    payload = data[1:]
    if which == 0:
        try:
            body: Any = json.loads(payload)
        except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
            return
        for parse in (openmeteo.parse, metno.parse):
            with contextlib.suppress(ForecastError):
                parse(body, fetched_at=START)
        return
    text = payload.decode("utf-8", "replace")
    if which == 1:
        # A Twilio webhook: the form, a line break, the X-Twilio-Signature header.
        form, _, sig = text.partition("\n")
        params = urllib.parse.parse_qsl(form, keep_blank_values=True)
        url = "https://yard.example/api/twilio/inbound"
        good = signature(TWILIO_TOKEN, url, params)
        assert valid_signature(TWILIO_TOKEN, url, params, good)
        assert valid_signature(TWILIO_TOKEN, url, params, sig) == (sig == good)
    elif which == 2:
        tokens = AckTokens("a fuzzing secret of some length", 3600)
        assert tokens.check(1, text, START) is not None  # no input is a valid token
        assert not tokens.check_body(payload, text)
    elif which == 3:
        target = local_path(text)
        assert target == "/" or (target.startswith("/") and not target.startswith("//"))
    else:
        shown = redact_url(text)
        assert "@" not in text or ":***@" in shown or shown == text


def main() -> None:
    target = "api"
    args = []
    for arg in sys.argv:
        if arg.startswith("--target="):
            target = arg.split("=", 1)[1]
        else:
            args.append(arg)
    # The refusals' warnings would bury libFuzzer's report; a crash still prints.
    logging.disable(logging.CRITICAL)
    test = ApiTarget() if target == "api" else decoders
    atheris.Setup(args, test)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
