"""InfluxDB 2.x native writes through influxdb-client: the requests it sends, and error mapping.

InfluxDB 2.x is not packaged for Debian, so a local HTTP server on 127.0.0.1
(tests/server/influx_fakes.py) stands in for it: it answers as the 2.x API
documents (``POST /api/v2/write`` -> 204, errors as ``{"code", "message"}``
JSON; ``/api/v2/buckets``, ``/api/v2/orgs``) and records every request.
"""

from __future__ import annotations

import json

import pytest
from influx_fakes import (  # noqa: F401 (fixtures, found by name)
    RESET,
    FakeInflux2,
    fake_influx2_fixture,
)

from secadero.errors import RetryableStorageError
from secadero.server.influx import (
    AuthenticationFailed,
    BatchTooLarge,
    InfluxV2Writer,
    WriteRejected,
)
from secadero.settings import InfluxSettings


def _writer(url: str) -> InfluxV2Writer:
    return InfluxV2Writer(InfluxSettings(url=url, api=2, token="s3cret", org="coop",
                                         bucket="secadero", timeout_s=2,
                                         raw_retention_days=90))


def test_write_sends_line_protocol_with_token_org_bucket_and_precision(
        fake_influx2: FakeInflux2) -> None:
    writer = _writer(fake_influx2.url)
    body = b"climate,node=n1,yard=norte temperature_c=25 1764000000000000"
    writer.write(body)
    writer.close()
    (request,) = [r for r in fake_influx2.requests if r["path"].startswith("/api/v2/write")]
    assert request["method"] == "POST"
    path, _, query = request["path"].partition("?")
    assert path == "/api/v2/write"
    assert sorted(query.split("&")) == ["bucket=secadero", "org=coop", "precision=us"]
    assert request["headers"]["Authorization"] == "Token s3cret"
    assert request["body"] == body


def test_prepare_creates_the_bucket_with_the_raw_retention(fake_influx2: FakeInflux2) -> None:
    writer = _writer(fake_influx2.url)
    writer.prepare()
    writer.prepare()  # idempotent: the bucket now exists
    writer.close()
    created = [r for r in fake_influx2.requests if r["method"] == "POST"]
    assert len(created) == 1
    bucket = json.loads(created[0]["body"])
    assert bucket["name"] == "secadero"
    assert bucket["retentionRules"] == [{"type": "expire", "everySeconds": 90 * 86400}]


@pytest.mark.parametrize(("status", "error"), [
    (400, WriteRejected), (422, WriteRejected), (413, BatchTooLarge),
    (500, RetryableStorageError), (503, RetryableStorageError),
    (401, AuthenticationFailed), (403, AuthenticationFailed),
])
def test_errors_map_to_what_the_ingest_does_next(fake_influx2: FakeInflux2, status: int,
                                                 error: type[Exception]) -> None:
    fake_influx2.write_status = status
    fake_influx2.write_body = b"failure writing points: field type conflict"
    writer = _writer(fake_influx2.url)
    with pytest.raises(error) as raised:
        writer.write(b"climate,node=n1,yard=norte temperature_c=25 1764000000000000")
    writer.close()
    assert type(raised.value) is error
    if isinstance(raised.value, WriteRejected):
        assert raised.value.status == status
        assert "field type conflict" in raised.value.body


def test_refused_credentials_say_what_to_fix_and_never_show_the_token(
        fake_influx2: FakeInflux2) -> None:
    fake_influx2.write_status = 401
    fake_influx2.write_body = b"unauthorized access"
    writer = _writer(fake_influx2.url)
    with pytest.raises(AuthenticationFailed) as raised:
        writer.write(b"climate,node=n1,yard=norte temperature_c=25 1764000000000000")
    writer.close()
    assert str(raised.value) == (
        f"InfluxDB at {fake_influx2.url} answered 401 (unauthorized access): check [influxdb] "
        "token_env / token_file: the token must be valid and may write to bucket 'secadero' "
        "of org 'coop'")
    assert "s3cret" not in str(raised.value)


def test_unreachable_server_is_retryable() -> None:
    from secadero.devservices import free_port

    writer = _writer(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RetryableStorageError) as raised:
        writer.write(b"climate,node=n1,yard=norte temperature_c=25 1764000000000000")
    writer.close()
    assert type(raised.value.__cause__).__name__ == "NewConnectionError"


def test_a_reset_connection_is_retryable(fake_influx2: FakeInflux2) -> None:
    fake_influx2.write_replies = [RESET]
    writer = _writer(fake_influx2.url)
    with pytest.raises(RetryableStorageError) as raised:
        writer.write(b"climate,node=n1,yard=norte temperature_c=25 1764000000000000")
    assert type(raised.value.__cause__).__name__ == "ProtocolError"
    writer.write(b"climate,node=n1,yard=norte temperature_c=25 1764000000000000")  # answered
    writer.close()
    assert len(fake_influx2.write_requests()) == 2


def test_a_bug_is_raised_as_it_is_not_as_a_storage_error(fake_influx2: FakeInflux2) -> None:
    """influxdb-client writes nothing, silently, for a record type it does not know."""
    writer = _writer(fake_influx2.url)
    with pytest.raises(TypeError, match="line protocol must be bytes, got str"):
        writer.write("climate,node=n1,yard=norte temperature_c=25 1764000000000000")  # type: ignore[arg-type]
    writer.close()
    assert fake_influx2.write_requests() == []


def test_an_error_inside_the_client_is_not_taken_for_an_outage(
        fake_influx2: FakeInflux2) -> None:
    """Only transport errors are retryable: this one would be retried forever."""
    writer = InfluxV2Writer(InfluxSettings(url=fake_influx2.url, api=2, token="s3cret",
                                           org="coop", bucket=None, timeout_s=2))
    with pytest.raises(ValueError, match="Missing the required parameter `bucket`"):
        writer.write(b"climate,node=n1,yard=norte temperature_c=25 1764000000000000")
    writer.close()
    assert fake_influx2.write_requests() == []
