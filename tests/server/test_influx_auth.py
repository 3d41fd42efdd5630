"""The real InfluxDB 1.x with authentication on, as the session fixture runs it (and the
demo, and the production setup of docs/security.md): who may read and write.

Requests are plain HTTP (urllib), not secadero's InfluxDB code, except where the
server's writer is the subject.
"""

from __future__ import annotations

import json
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import influx_query

from secadero.cli import main
from secadero.devservices import INFLUX_ADMIN, INFLUX_READER, INFLUX_WRITER, InfluxDB, basic_auth
from secadero.errors import PermanentStorageError
from secadero.server.influx import InfluxV1Writer

pytestmark = pytest.mark.integration

LINE = b"climate,yard=norte,node=n1 temperature_c=21.5 1780000000"


def status_of(request: urllib.request.Request) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def write(influxdb: InfluxDB, database: str, login: tuple[str, str] | None, *,
          line: bytes = LINE) -> tuple[int, str]:
    request = urllib.request.Request(f"{influxdb.url}/write?db={database}&precision=s",
                                     data=line, method="POST")
    if login:
        request.add_header("Authorization", basic_auth(login))
    return status_of(request)


def select(influxdb: InfluxDB, database: str, login: tuple[str, str] | None
           ) -> tuple[int, str]:
    form = urllib.parse.urlencode({"db": database, "q": "SELECT * FROM climate"}).encode()
    request = urllib.request.Request(f"{influxdb.url}/query", data=form, method="POST")
    if login:
        request.add_header("Authorization", basic_auth(login))
    return status_of(request)


@pytest.fixture
def database(influxdb: InfluxDB, unique_name: str) -> str:
    """This test's database, as the admin makes it: the writer may read and write it,
    the reader may read it."""
    influxdb.query(f'CREATE DATABASE "{unique_name}" WITH NAME raw')  # the server's policy
    influxdb.grant(unique_name, INFLUX_WRITER, "ALL")
    influxdb.grant(unique_name, INFLUX_READER, "READ")
    return unique_name


def test_without_credentials_nothing_is_read_or_written(influxdb: InfluxDB,
                                                        database: str) -> None:
    assert write(influxdb, database, None) == (
        401, '{"error":"unable to parse authentication credentials"}\n')
    assert select(influxdb, database, None) == (
        401, '{"error":"unable to parse authentication credentials"}\n')
    assert write(influxdb, database, (INFLUX_WRITER, "wrong")) == (
        401, '{"error":"authorization failed"}\n')
    assert influx_query(influxdb.url, database, "SELECT * FROM climate") == []


def test_the_reader_reads_and_cannot_write(influxdb: InfluxDB, database: str) -> None:
    assert write(influxdb, database, influxdb.credentials(INFLUX_WRITER))[0] == 204
    assert write(influxdb, database, influxdb.credentials(INFLUX_READER)) == (
        403, f'{{"error":"\\"{INFLUX_READER}\\" user is not authorized to write to database '
             f'\\"{database}\\""}}\n')
    status, body = select(influxdb, database, influxdb.credentials(INFLUX_READER))
    assert status == 200
    assert json.loads(body)["results"][0]["series"][0]["values"] == [
        ["2026-05-28T20:26:40Z", "n1", 21.5, "norte"]]


def test_the_writer_has_its_database_only_and_no_admin_rights(
        influxdb: InfluxDB, database: str, unique_name: str) -> None:
    writer = influxdb.credentials(INFLUX_WRITER)
    other = f"{unique_name[:28]}-x"
    influxdb.query(f'CREATE DATABASE "{other}"')
    assert write(influxdb, other, writer)[0] == 403
    assert select(influxdb, other, writer)[0] == 403
    # The server's own writer: it stores, but may not create databases or queries.
    server = InfluxV1Writer(influxdb.settings(database, INFLUX_WRITER))
    try:
        server.write(b"climate,yard=norte,node=n2 temperature_c=22 1780000000000000")
        with pytest.raises(PermanentStorageError, match="requires admin privilege"):
            server.prepare()
    finally:
        server.close()
    assert [row["node"] for row in influx_query(influxdb.url, database,
                                                "SELECT * FROM climate")] == ["n2"]


# ------------------------------------------------------------ secadero influx init


def test_influx_init_makes_the_users_the_database_and_the_grants_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On an InfluxDB with authentication on and no user yet, as after installing it."""
    server = InfluxDB(workdir=tmp_path / "influx", make_users=False).start()
    secrets = tmp_path / "secrets"
    try:
        argv = ["influx", "init", "--url", server.url, "--database", "yard",
                "--secrets-dir", str(secrets)]
        assert main(argv) == 0
        files = {p.name: p for p in secrets.iterdir()}
        assert sorted(files) == [f"influx-{INFLUX_ADMIN}.password",
                                 f"influx-{INFLUX_READER}.password",
                                 f"influx-{INFLUX_WRITER}.password"]
        assert {stat.S_IMODE(p.stat().st_mode) for p in files.values()} == {0o600}
        out = capsys.readouterr().out
        assert all(p.read_text().strip() not in out for p in files.values())

        def login(user: str) -> tuple[str, str]:
            return user, files[f"influx-{user}.password"].read_text().strip()

        # The server's own prepare ran as the admin: its policies and queries are there.
        policies = server.query('SHOW RETENTION POLICIES ON "yard"',
                                credentials=login(INFLUX_ADMIN))
        assert [(row[0], row[-1]) for row in policies[0]["series"][0]["values"]] == [
            ("raw", True), ("hourly", False)]
        # Within the raw policy's 90 days.
        recent = f"climate,yard=norte,node=n1 temperature_c=21.5 {int(time.time())}".encode()
        assert write(server, "yard", None, line=recent)[0] == 401
        assert write(server, "yard", login(INFLUX_WRITER), line=recent)[0] == 204
        assert select(server, "yard", login(INFLUX_WRITER))[0] == 200
        assert write(server, "yard", login(INFLUX_READER), line=recent)[0] == 403
        assert select(server, "yard", login(INFLUX_READER))[0] == 200
        # Again: nothing new, the secrets kept.
        before = {name: p.read_bytes() for name, p in files.items()}
        assert main(argv) == 0
        assert f"user '{INFLUX_WRITER}' exists already: kept" in capsys.readouterr().out
        assert {name: p.read_bytes() for name, p in files.items()} == before
    finally:
        server.stop()


def test_influx_init_refuses_an_influxdb_without_authentication(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = InfluxDB(workdir=tmp_path / "influx", auth=False).start()
    try:
        assert main(["influx", "init", "--url", server.url, "--secrets-dir",
                     str(tmp_path)]) == 2
        assert capsys.readouterr().err == (
            f"secadero influx: InfluxDB at {server.url} answers without credentials: set "
            "auth-enabled = true in the [http] section of /etc/influxdb/influxdb.conf and "
            "restart it first\n")
        assert list(tmp_path.glob("*.password")) == []
    finally:
        server.stop()


def test_the_private_influxdb_uses_the_users_of_influx_init() -> None:
    from secadero.server import influx_setup

    assert (INFLUX_ADMIN, INFLUX_WRITER, INFLUX_READER) == (
        influx_setup.ADMIN_USER, influx_setup.WRITER_USER, influx_setup.READER_USER)
