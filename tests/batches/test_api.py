"""The batch routes of the HTTP API: the same checks as the CLI, 400/404/503 with the field.

The real ``ApiServer`` (with an alert service that is built but not started)
and the real ``BatchService`` over SQLite and the fixture's InfluxDB (the
trays a node reported). The series, metrics, estimate and report modules are
stand-ins behind the service's ``Analysis`` seam (batch_helpers.py);
test_end_to_end.py runs the real ones.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import (
    DAY,
    HOUR,
    StandInRender,
    StandInSeries,
    prepare_database,
    report_trays,
    standin_analysis,
    write_config,
)

from secadero.server.accounts import AccountStore
from secadero.server.alerts.service import AlertService
from secadero.server.api import ApiServer
from secadero.server.batches.service import BatchService, InfluxTrays
from secadero.server.batches.store import BatchStore
from secadero.server.metrics import Registry
from secadero.settings import ServerSettings, load_server_settings

pytestmark = pytest.mark.integration

NOW = time.time()
START = float(int(NOW - 2 * DAY))


# The quality officer's account (secadero users add carmen --role quality): the batch
# routes need a session whose role may batches.read / batches.write.
USER, PASSWORD = "carmen", "quality password"


class Api:
    """A client on one kept-alive connection (as a phone's browser would use it), logged
    in as ``USER``."""

    def __init__(self, port: int, registry: Registry, series: StandInSeries,
                 database: Path, accounts: AccountStore) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.registry = registry
        self.series = series
        self.database = database
        self.accounts = accounts
        if accounts.get(USER) is None:
            accounts.add(USER, "quality", PASSWORD)
        self.token: str | None = None
        status, session, _ = self.call("POST", "/api/login", {"name": USER,
                                                              "password": PASSWORD})
        assert status == 200, session
        self.token = session["token"]

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None
             ) -> tuple[int, Any, dict[str, str]]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        payload = response.read()
        kind = response.getheader("Content-Type", "")
        parsed = json.loads(payload) if kind.startswith("application/json") else payload
        return response.status, parsed, dict(response.getheaders())

    def count(self, method: str, route: str, status: int) -> float:
        return self.registry.part("api").get("requests_total", method=method, route=route,
                                             status=str(status))


@pytest.fixture
def api(tmp_path: Path, influxdb: Any, unique_name: str) -> Iterator[Api]:
    settings: ServerSettings = load_server_settings(write_config(
        tmp_path / "server.toml", influx_url=influxdb.url, database=unique_name,
        batches_db=tmp_path / "batches.sqlite3", alerts_db=tmp_path / "alerts.sqlite3"))
    prepare_database(settings)
    report_trays(influxdb.url, unique_name, "norte", {"norte-1": ["t1", "t2"]}, NOW - 3 * DAY)
    registry = Registry()
    series = StandInSeries()
    batches = BatchService(settings, store=BatchStore(settings.batches.database),
                           trays=InfluxTrays(settings.influxdb), series=series,
                           analysis=standin_analysis(StandInRender()), registry=registry)
    alerts = AlertService(settings, notifiers=[], poller=None)
    server = ApiServer(alerts, port=0, registry=registry, batches=batches).start()
    client = Api(server.port, registry, series, settings.batches.database, server.accounts)
    yield client
    client.connection.close()
    server.stop()
    batches.close()


def dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return list(db.iterdump())


START_BODY = {"id": "lote-1", "yard": "norte", "trays": ["norte-1/t2", "norte-1/t1"],
              "lot": "L-07", "member": "Familia Ruiz", "wet_weight_kg": 120, "at": START}


def test_a_batch_through_the_api(api: Api) -> None:
    status, batch, _ = api.call("POST", "/api/batches", START_BODY)
    assert status == 201
    assert batch == {"id": "lote-1", "yard": "norte", "trays": ["norte-1/t1", "norte-1/t2"],
                     "started_at": START, "lot": "L-07", "member": "Familia Ruiz",
                     "fermentation_end": None, "wet_weight_kg": 120.0, "notes": "",
                     "started_by": USER, "ended_at": None, "final_moisture_pct": None,
                     "dry_weight_kg": None, "ended_by": "", "open": True}
    status, reading, _ = api.call("POST", "/api/batches/lote-1/moisture",
                                  {"moisture_pct": 41.5, "at": START + HOUR, "by": "ana",
                                   "tray": "norte-1/t1"})
    assert (status, reading) == (201, {"batch": "lote-1", "ts": START + HOUR,
                                       "moisture_pct": 41.5, "by": "ana",
                                       "tray": "norte-1/t1"})
    assert api.call("GET", "/api/batches?open=1")[1] == [batch]

    status, shown, _ = api.call("GET", "/api/batches/lote-1")
    assert status == 200
    assert shown["batch"] == batch
    assert shown["readings"] == [reading]
    assert shown["metrics"]["drying_h"] == pytest.approx((NOW - START) / HOUR / 2, abs=0.1)
    assert shown["estimate"]["details"] == {"readings": 1.0, "periods": 1.0}

    status, pdf, headers = api.call("GET", "/api/batches/lote-1/report.pdf?language=en")
    assert (status, headers["Content-Type"]) == (200, "application/pdf")
    assert pdf.startswith(b"PDF lote-1 en ")
    assert headers["Content-Disposition"] == 'attachment; filename="lote-1-report.pdf"'
    status, png, headers = api.call("GET", "/api/batches/lote-1/report.png")
    assert (status, headers["Content-Type"], png[:13]) == (200, "image/png", b"PNG lote-1 es")
    status, csv, _ = api.call("GET", "/api/batches/lote-1/export.csv")
    assert (status, csv.decode().splitlines()[0]) == (200, "batch,drying_h,timezone")
    status, exported, _ = api.call("GET", "/api/batches/lote-1/export.json")
    assert (status, exported["batch"], exported["readings"]) == (200, "lote-1", [41.5])

    status, ended, _ = api.call("POST", "/api/batches/lote-1/end",
                                {"at": START + DAY, "final_moisture_pct": 7.4,
                                 "dry_weight_kg": 52.5, "by": "luis"})
    assert status == 200
    assert (ended["open"], ended["ended_at"], ended["final_moisture_pct"]) == (
        False, START + DAY, 7.4)
    assert api.call("GET", "/api/batches?open=1")[1] == []
    assert api.count("POST", "/api/batches", 201) == 1
    assert api.count("POST", "/api/batches/{id}/moisture", 201) == 1
    assert api.count("GET", "/api/batches/{id}/report.pdf", 200) == 1
    assert api.count("POST", "/api/batches/{id}/end", 200) == 1


BAD = [
    ("POST", "/api/batches", dict(START_BODY, id="lote-2", trays=["norte-1/t1"]), 400,
     "trays", "tray norte-1/t1 is in open batch 'lote-1'; end that batch first"),
    ("POST", "/api/batches", dict(START_BODY, id="lote-2", trays=["norte-1/t9"]), 400,
     "trays", "no node reports tray norte-1/t9 in yard 'norte' (node 'norte-1' reports: "
              "t1, t2)"),
    ("POST", "/api/batches", {"yard": "norte", "trays": ["norte-1/t9"]}, 400, "id",
     "required"),
    ("POST", "/api/batches", dict(START_BODY, id="lote-2", colour="red"), 400, "colour",
     "not a field here (fields: at, by, fermentation_end, id, lot, member, notes, trays, "
     "wet_weight_kg, yard)"),
    ("POST", "/api/batches/lote-1/moisture", {"moisture_pct": 120}, 400, "moisture_pct",
     "120 is outside 0..100 %"),
    ("POST", "/api/batches/lote-1/moisture", {"moisture_pct": 30, "at": START - 1}, 400,
     "at", "the reading is before the batch's start"),
    ("POST", "/api/batches/lote-1/moisture", {}, 400, "moisture_pct", "required"),
    ("POST", "/api/batches/lote-1/end", {"at": "2020-01-01T00:00"}, 400, "at",
     "the end is before the batch's start"),
    ("POST", "/api/batches/nada/moisture", {"moisture_pct": 30}, 404, "id", "no batch 'nada'"),
    ("POST", "/api/batches/nada/end", {}, 404, "id", "no batch 'nada'"),
    ("GET", "/api/batches/nada", None, 404, "id", "no batch 'nada'"),
    ("GET", "/api/batches/nada/report.pdf", None, 404, "id", "no batch 'nada'"),
    ("GET", "/api/batches/Lote-1", None, 400, "id",
     "'Lote-1' is not an id: 1-32 of a-z, 0-9 and '-', starting with a letter or digit"),
    ("GET", "/api/batches/lote-1/report.pdf?language=fr", None, 400, "language",
     "must be one of es, en"),
    ("GET", "/api/batches/lote-1/photo.jpg", None, 404, "path", "not found"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "field", "error"), BAD,
                         ids=[f"{i}-{b[4]}" for i, b in enumerate(BAD)])
def test_bad_input_is_a_clear_answer_and_nothing_is_written(
        api: Api, method: str, path: str, body: Any, status: int, field: str,
        error: str) -> None:
    assert api.call("POST", "/api/batches", START_BODY)[0] == 201
    before = dump(api.database)
    answer = api.call(method, path, body)
    assert answer[:2] == (status, {"error": error, "field": field})
    assert dump(api.database) == before
    # The kept-alive connection still works after the refusal.
    assert api.call("GET", "/api/batches")[0] == 200


def test_a_body_that_is_not_json_or_too_large(api: Api) -> None:
    assert api.call("POST", "/api/batches", raw=b"id=lote-1")[:2] == (
        400, {"error": "the body is not JSON", "field": "body"})
    assert api.call("POST", "/api/batches", raw=b"[1, 2]")[:2] == (
        400, {"error": "the body must be a JSON object", "field": "body"})
    assert api.call("GET", "/api/batches")[1] == []
    # A Content-Length over the limit is refused before the body is read (none is sent
    # here: a server closing on unread bytes would reset the connection under the answer).
    api.connection.request("POST", "/api/batches", headers={"Content-Length": "65537"})
    response = api.connection.getresponse()
    assert (response.status, json.loads(response.read())["field"]) == (413, "body")
    assert response.getheader("Connection") == "close"
    assert api.count("POST", "/api/batches", 413) == 1


def test_the_batch_routes_check_the_role(api: Api) -> None:
    """batches.read: supervisor, quality, technician, admin; batches.write: quality,
    supervisor, admin. A worker reads no batch; a technician writes none."""
    assert api.call("POST", "/api/batches", START_BODY)[0] == 201
    token = api.token
    api.token = None
    assert api.call("GET", "/api/batches")[:2] == (401, {"error": "login required"})
    assert api.call("POST", "/api/batches/lote-1/moisture", {"moisture_pct": 30})[:2] == (
        401, {"error": "login required"})
    api.token = "forged"
    assert api.call("GET", "/api/batches/lote-1/report.pdf")[0] == 401
    for name, role in (("rosa", "worker"), ("teo", "technician")):
        api.accounts.add(name, role, PASSWORD)
    before = dump(api.database)
    api.token = None
    api.token = api.call("POST", "/api/login", {"name": "rosa", "password": PASSWORD})[1][
        "token"]
    assert api.call("GET", "/api/batches")[:2] == (
        403, {"error": "the role worker may not batches.read"})
    assert api.call("POST", "/api/batches/lote-1/end", {})[:2] == (
        403, {"error": "the role worker may not batches.write"})
    api.token = None
    api.token = api.call("POST", "/api/login", {"name": "teo", "password": PASSWORD})[1]["token"]
    assert api.call("GET", "/api/batches/lote-1")[0] == 200
    assert api.call("POST", "/api/batches/lote-1/moisture", {"moisture_pct": 30})[:2] == (
        403, {"error": "the role technician may not batches.write"})
    assert dump(api.database) == before
    api.token = token
    assert api.call("POST", "/api/batches/lote-1/moisture", {"moisture_pct": 30})[0] == 201


def test_a_report_influxdb_cannot_answer_is_503(api: Api) -> None:
    assert api.call("POST", "/api/batches", START_BODY)[0] == 201
    api.series.down = True
    status, answer, _ = api.call("GET", "/api/batches/lote-1/report.pdf")
    assert status == 503
    assert answer["field"] == "until"
    assert answer["error"].startswith("InfluxDB cannot answer for the batch's span up to ")


def test_a_bug_in_a_computation_is_a_counted_500_and_the_server_goes_on(api: Api) -> None:
    assert api.call("POST", "/api/batches", START_BODY)[0] == 201
    api.series.broken = True
    status, answer, _ = api.call("GET", "/api/batches/lote-1")
    assert (status, answer) == (500, {"error": "internal error (see the server log)",
                                      "field": None})
    assert api.count("GET", "/api/batches/{id}", 500) == 1
    api.series.broken = False
    assert api.call("GET", "/api/batches/lote-1")[0] == 200


def test_the_server_serves_the_batch_routes_and_writes_the_points(
        tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str) -> None:
    """The composition root (server/app.py): the batch service on the API, its points
    through the server's own PointWriter, counted in the server's one registry."""
    from conftest import influx_query

    from secadero.devservices import free_port
    from secadero.server.app import Server

    settings = load_server_settings(write_config(
        tmp_path / "server.toml", influx_url=influxdb.url, database=unique_name,
        batches_db=tmp_path / "batches.sqlite3", alerts_db=tmp_path / "alerts.sqlite3",
        broker=mosquitto, api_port=free_port()))
    with Server(settings, notifiers=[]) as server:
        assert server.ingest.wait_ready(10)
        report_trays(influxdb.url, unique_name, "norte", {"norte-1": ["t1"]}, NOW - 3 * DAY)
        assert server.api_port is not None
        assert server.api is not None
        api = Api(server.api_port, server.registry, StandInSeries(), settings.batches.database,
                  server.api.accounts)
        body = {"id": "lote-1", "yard": "norte", "trays": ["norte-1/t1"], "at": START}
        assert api.call("POST", "/api/batches", body)[0] == 201
        assert api.call("POST", "/api/batches/lote-1/end", {"at": START + DAY})[0] == 200
        api.connection.close()
    # Stopped: the point writer wrote what was queued before it closed.
    rows = influx_query(influxdb.url, unique_name, 'SELECT event FROM "batch"')
    assert [(r["time"], r["event"]) for r in rows] == [(int(START) * 1000, "start"),
                                                      (int(START + DAY) * 1000, "end")]
    assert server.registry.part("batches").by_label("operations_total", "operation") == {
        "start": 1, "end": 1}
    assert api.count("POST", "/api/batches", 201) == 1
