"""Hourly downsampling on the real InfluxDB 1.x: the continuous queries as created at start-up.

The hourly series is read back through ``influx_query`` (plain HTTP /query), never through
the code under test.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import influx_query
from ingest_helpers import write_server_config

from secadero.server.influx import InfluxV1Writer, continuous_queries
from secadero.settings import ServerSettings, load_server_settings


def _settings(tmp_path: Path, influx_url: str, database: str) -> ServerSettings:
    path = write_server_config(tmp_path / "server.toml", mqtt_port=1, influx_url=influx_url,
                               database=database, client_id=f"ingest-{database}")
    return load_server_settings(path)


def _prepared(settings: ServerSettings) -> InfluxV1Writer:
    writer = InfluxV1Writer(settings.influxdb)
    writer.prepare()
    return writer


@pytest.mark.integration
def test_prepare_replaces_continuous_queries_of_an_older_definition(
        tmp_path: Path, influxdb: Any, unique_name: str,
        caplog: pytest.LogCaptureFixture) -> None:
    db = unique_name
    settings = _settings(tmp_path, influxdb.url, db)
    old = InfluxV1Writer(settings.influxdb)
    old.query(f'CREATE DATABASE "{db}" WITH DURATION 90d REPLICATION 1 NAME "raw"')
    old.query(f'CREATE RETENTION POLICY "hourly" ON "{db}" DURATION 3650d REPLICATION 1')
    for name, select in continuous_queries(db).items():  # as the previous version made them
        old.query(f'CREATE CONTINUOUS QUERY "{name}" ON "{db}" BEGIN {select} END')
    with caplog.at_level(logging.WARNING, logger="secadero.server.influx"):
        _prepared(settings)
    replaced = [r.getMessage() for r in caplog.records if "another definition" in r.getMessage()]
    assert len(replaced) == 3
    # Every database's queries come back: keep this one's.
    queries = {q["name"]: q["query"] for q in influx_query(influxdb.url, db,
                                                           "SHOW CONTINUOUS QUERIES")
               if f' ON "{db}" ' in q.get("query", "")}
    assert sorted(queries) == ["climate_1h", "node_1h", "rain_1h"]
    assert all(" RESAMPLE EVERY 1h FOR 2h BEGIN SELECT " in q for q in queries.values())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="secadero.server.influx"):
        _prepared(settings)  # the same definition again: left alone
    assert [r for r in caplog.records if "another definition" in r.getMessage()] == []
