"""Shared fixtures: the real Mosquitto and InfluxDB, started once per test session.

Both come from the Debian packages (``mosquitto``, ``influxdb``) and run as
our child processes on free loopback ports with temporary directories; they
are stopped by PID at the end. Tests keep apart by using their own yard ids
(topics) and their own InfluxDB databases: see ``unique_name``.

Both run with authentication on, as in production (secadero/devservices.py):

- ``mosquitto``: no anonymous access; users and ACL written by the code of
  ``secadero nodes``. ``mosquitto.client_credentials()`` is the harness (may do
  anything: for clients that play nodes of invented yards or watch them);
  ``mosquitto.credentials(SERVER_USER)`` / ``READONLY_USER`` have their production
  rights; ``mosquitto.add_node(yard, node)`` makes a node's own user (reloads the
  broker); ``mosquitto.toml_credentials(user)`` gives the ``username`` and
  ``password_file`` lines of a settings file.
- ``influxdb``: ``auth-enabled = true``; ``influxdb.admin`` is the admin's
  ``(user, password)`` (tests make databases); ``INFLUX_WRITER`` and
  ``INFLUX_READER`` have rights only where ``influxdb.grant(db, user)`` gives them;
  ``influxdb.toml_credentials(user)`` as above. ``influx_query`` and
  ``create_database_and_write`` log in as the admin of the private InfluxDB at the
  URL they are given (``auth=`` for another user).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from secadero.devservices import (
    INFLUX_ADMIN,
    InfluxDB,
    Mosquitto,
    influx_at,
    influx_request,
)

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = Mosquitto(workdir=tmp_path_factory.mktemp("mosquitto")).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    database = InfluxDB(workdir=tmp_path_factory.mktemp("influxdb")).start()
    yield database
    database.stop()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A valid id unique to this test (and this process): a yard id, a database name."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:16].strip("-")
    return f"t{os.getpid() % 10000}-{next(_counter)}-{base}"[:32].rstrip("-")


def influx_query(url: str, database: str, query: str, *,
                 auth: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """Run InfluxQL through the HTTP /query API; rows of the first series as dicts.

    Deliberately independent of secadero's own InfluxDB code, so a test
    reading points back does not trust the code under test.
    """
    params = urllib.parse.urlencode({"db": database, "q": query, "epoch": "ms"})
    with urllib.request.urlopen(influx_request(f"{url}/query?{params}", auth=auth),
                                timeout=10) as response:
        body = json.load(response)
    rows: list[dict[str, Any]] = []
    for result in body.get("results", []):
        if "error" in result:
            raise AssertionError(f"InfluxDB error for {query!r}: {result['error']}")
        for series in result.get("series", []):
            tags = series.get("tags", {})
            for values in series.get("values", []):  # a database with no rows has none
                rows.append({**tags, **dict(zip(series["columns"], values, strict=True))})
    return rows


def influx_login_toml(url: str, *, of: InfluxDB | None = None) -> str:
    """The ``[influxdb]`` ``username`` / ``password_file`` lines of the admin of the private
    InfluxDB at ``url`` (``of``: the one behind a proxy at ``url``); "" for another server."""
    found = of or influx_at(url)
    return found.toml_credentials(INFLUX_ADMIN) if found is not None else ""


def wait_until(predicate: Callable[[], Any], timeout_s: float = 15.0,
               what: str = "condition") -> Any:
    """Poll ``predicate`` until truthy and return its value.

    Only for state the code under test offers no event for: InfluxDB's
    contents, another process's /metrics, a row's status, a thread's end.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.01)


def create_database_and_write(url: str, database: str, body: bytes, *,
                              precision: str = "s", timeout_s: float = 10.0,
                              auth: tuple[str, str] | None = None) -> None:
    """CREATE DATABASE, then /write ``body`` into it, as a test's set-up.

    InfluxDB 1.6.7 has been seen (twice, once in CI) to answer a /write right
    after a successful CREATE DATABASE on a freshly started server with 404
    "database not found". The server's own writer handles that (it prepares
    again and retries: ``DatabaseMissing``); a test's set-up, which is not what
    it tests, waits for the database the same way, and says what InfluxDB
    answered if it never comes.
    """
    create = urllib.parse.urlencode({"q": f'CREATE DATABASE "{database}"'}).encode()
    with urllib.request.urlopen(influx_request(f"{url}/query", data=create, auth=auth),
                                timeout=10) as response:
        results = json.load(response)["results"]
    assert not any("error" in result for result in results), results
    deadline = time.monotonic() + timeout_s
    while True:
        request = influx_request(f"{url}/write?db={database}&precision={precision}",
                                 data=body, auth=auth)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 204
                return
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            if exc.code != 404 or time.monotonic() > deadline:
                raise AssertionError(f"/write answered {exc.code}: {detail}") from exc
        time.sleep(0.1)  # InfluxDB's metadata is only visible by asking again


def make_certificates(directory: Path, *, host_ip: str = "127.0.0.1") -> None:
    """A throw-away CA (``ca.crt``, ``ca.key``) and a server certificate for ``host_ip``
    (``server.crt``, ``server.key``) made by the ``openssl`` command, the way
    docs/security.md tells a technician to make the yard's own CA."""
    def run(*argv: str) -> None:
        subprocess.run(argv, cwd=directory, check=True, capture_output=True, timeout=60)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.crt", "-days", "2", "-subj", "/CN=secadero test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
        "server.csr", "-subj", f"/CN={host_ip}")
    (directory / "san.ext").write_text(f"subjectAltName=IP:{host_ip}\n"
                                       "extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-sha256", "-extfile", "san.ext")
    for name in ("server.key", "server.crt", "ca.crt"):
        (directory / name).chmod(0o644)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
