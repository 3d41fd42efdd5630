"""The reading of InfluxDB 1.x's 400 answers (pure: no services).

Every body below is InfluxDB 1.6.7's own (Debian package 1.6.7~rc0), captured by
experiment and pasted here, with the lines it answered, unless a comment says
the batch was built around the captured message to probe one rule. Times are
``T`` (microseconds), ``OLD`` (5 days before) and offsets from them, as in the
captures (which wrote "now"). The integration tests in
test_ingest_partial_write.py write the same kinds against the running server.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client import Point

from secadero.server.partial_write import diagnose, parse_line, trusted_server
from secadero.server.points import PRECISION

T = 1764000000000000  # 2025-11-24T16:00:00Z, the start of a clock hour
OLD = T - 5 * 86400 * 10**6
HOUR_US = 3600 * 10**6


def _lines(*texts: str | bytes) -> list[bytes]:
    return [t if isinstance(t, bytes) else t.encode() for t in texts]


CONFLICT_F_M = ('partial write: field type conflict: input field "f" on measurement "m" '
                "is type float, already exists as type integer dropped={}")


# -- field type conflicts


def test_a_conflict_names_one_field_and_the_lines_of_other_types_are_refused_too() -> None:
    # After "m,t=a f=1i": a float and a string f both conflict; the message names the first.
    lines = _lines(f"m,t=a f=1.5 {T + 1}", f"m,t=b f=2i {T + 2}", f'm,t=c f="s" {T + 3}',
                   f"m,t=d g=1 {T + 4}")
    body = CONFLICT_F_M.format(2)
    diagnosis = diagnose(body, lines)
    assert diagnosis.complete
    assert diagnosis.refused == {0: body, 2: body}


def test_a_conflict_within_the_batch_refuses_the_lines_after_the_first_type() -> None:
    lines = _lines(f"p,t=a x=1i {T}", f"p,t=a x=1.5 {T + 1}", f"p,t=a x=true {T + 2}")
    body = ('partial write: field type conflict: input field "x" on measurement "p" is type '
            "float, already exists as type integer dropped=2")
    diagnosis = diagnose(body, lines)
    assert (diagnosis.complete, sorted(diagnosis.refused)) == (True, [1, 2])


@pytest.mark.parametrize(("lines", "body", "refused"), [
    (_lines(f"m,t=a f\\ x=1.5 {T}"),
     'partial write: field type conflict: input field "f x" on measurement "m" is type float, '
     "already exists as type integer dropped=1", [0]),
    (_lines(f"m\\ x,t=a\\ b f=1i {T + 10}", f"m\\ x,t=a\\ b f=1.5 {T + 11}"),
     'partial write: field type conflict: input field "f" on measurement "m x" is type float, '
     "already exists as type integer dropped=1", [1]),
    (_lines(f"mé,t=a g=1i {T}", f"mé,t=a g=1.5 {T + 1}"),
     'partial write: field type conflict: input field "g" on measurement "mé" is type float, '
     "already exists as type integer dropped=1", [1]),
])
def test_names_in_a_conflict_are_unescaped(lines: list[bytes], body: str,
                                           refused: list[int]) -> None:
    diagnosis = diagnose(body, lines)
    assert (diagnosis.complete, sorted(diagnosis.refused)) == (True, refused)


def test_a_conflict_in_a_batch_across_shard_groups_is_not_the_whole_story() -> None:
    # Captured: "c" had f=1i two hours back and g=1i now; only f was reported,
    # the refused g (another shard) went unmentioned.
    lines = _lines(f"c,t=a f=1.5 {T - 2 * HOUR_US}", f"c,t=a g=1.5 {T}", f"c,t=b h=1 {T}")
    body = ('partial write: field type conflict: input field "f" on measurement "c" is type '
            "float, already exists as type integer dropped=1")
    diagnosis = diagnose(body, lines)
    assert not diagnosis.complete
    assert list(diagnosis.refused) == [0]  # the named one is certain: alone in its hour


def test_a_conflict_whose_lines_span_shard_groups_identifies_none_of_them() -> None:
    # Built around the captured message.
    lines = _lines(f"m,t=a f=1.5 {T - 2 * HOUR_US}", f"m,t=a f=2.5 {T}")
    diagnosis = diagnose(CONFLICT_F_M.format(1), lines)
    assert (diagnosis.complete, diagnosis.refused) == (False, {})


def test_a_count_that_does_not_match_dropped_is_not_complete() -> None:
    # Built around the captured message.
    lines = _lines(f"m,t=a f=1.5 {T}", f"m,t=a g=1 {T + 1}", f"m,t=b g=1 {T + 1}")
    diagnosis = diagnose(CONFLICT_F_M.format(2), lines)  # something else was refused too
    assert (diagnosis.complete, list(diagnosis.refused)) == (False, [0])


def test_an_unparsable_line_hidden_behind_a_conflict_is_not_complete() -> None:
    # Captured: the answer names the conflict only; "garbage" goes unmentioned.
    lines = _lines(f"m,t=a g=1 {T}", "garbage", f"m,t=a f=9.5 {T + 3}", f"m,t=a g=2 {OLD}")
    body = CONFLICT_F_M.format(1)
    diagnosis = diagnose(body, lines)
    assert not diagnosis.complete
    assert diagnosis.refused == {2: body}  # "garbage" cannot carry f: the named line is certain


def test_a_line_not_read_that_may_carry_the_named_field_makes_nothing_certain() -> None:
    # Built around the captured message.
    lines = _lines(f"m,t=a f=9.5 {T}", f"m,t=a f=1.5,x=NaN {T - 2 * HOUR_US}")
    diagnosis = diagnose(CONFLICT_F_M.format(1), lines)
    assert (diagnosis.complete, diagnosis.refused) == (False, {})


# -- unparsable lines


def test_unparsable_lines_are_identified_by_their_quoted_text() -> None:
    # A quoted line may contain "': " itself.
    lines = _lines(f"m,t=a g=1 {T + 5}", f"m,t=a s=\"it's': odd\",x= {T + 6}",
                   f"m,t=a g=2 {T + 7}", "unable x", f"m,t=a g=NaN {T + 8}")
    body = ("partial write: unable to parse 'm,t=a s=\"it's': odd\",x= 1764000000000006': "
            "missing field value\nunable to parse 'unable x': invalid field format\n"
            "unable to parse 'm,t=a g=NaN 1764000000000008': invalid number dropped=0")
    diagnosis = diagnose(body, lines)
    assert diagnosis.complete
    assert diagnosis.refused == {
        1: "unable to parse 'm,t=a s=\"it's': odd\",x= 1764000000000006': missing field value",
        3: "unable to parse 'unable x': invalid field format",
        4: "unable to parse 'm,t=a g=NaN 1764000000000008': invalid number"}


def test_when_no_line_parses_the_answer_has_no_partial_write_prefix() -> None:
    lines = _lines("bad1", "bad2 x", "m,t=a g=NaN 1")
    body = ("unable to parse 'bad1': missing fields\nunable to parse 'bad2 x': invalid field "
            "format\nunable to parse 'm,t=a g=NaN 1': invalid number")
    diagnosis = diagnose(body, lines)
    assert (diagnosis.complete, sorted(diagnosis.refused)) == (True, [0, 1, 2])


@pytest.mark.parametrize(("lines", "body", "refused"), [
    # The same line twice: quoted twice.
    (_lines(f"m,t=a g=1 {T + 9}", "bad x", "bad x"),
     "partial write: unable to parse 'bad x': invalid field format\nunable to parse 'bad x': "
     "invalid field format dropped=0", [1, 2]),
    # Leading blanks are not quoted, trailing ones are.
    (_lines(f"m,t=a g=1 {T}", "  badlead x  ", f"m g=1 {T}"),
     "partial write: unable to parse 'badlead x  ': invalid field format dropped=0", [1]),
    # Invalid UTF-8 comes back as U+FFFD.
    (_lines(f"m,t=a g=1 {T}", b"m\xff garbage"),
     "partial write: unable to parse 'm\ufffd garbage': invalid field format dropped=0", [1]),
    # A newline inside a quoted string belongs to the line.
    (_lines(f"m,t=a g=1 {T}", f'm,t=a s="a\nb",x= {T}'),
     f"partial write: unable to parse 'm,t=a s=\"a\nb\",x= {T}': missing field value dropped=0",
     [1]),
    # A carriage return stays in the line.
    (_lines(f"m,t=a g=1 {T}\r", "badcr x\r", f"m g=2 {T}"),
     f"partial write: unable to parse 'm,t=a g=1 {T}\r': bad timestamp\nunable to parse "
     "'badcr x\r': invalid field format dropped=0", [0, 1]),
])
def test_unparsable_line_quirks(lines: list[bytes], body: str, refused: list[int]) -> None:
    diagnosis = diagnose(body, lines)
    assert (diagnosis.complete, sorted(diagnosis.refused)) == (True, refused)


def test_a_quoted_line_we_did_not_send_is_not_understood() -> None:
    # Built around the captured message.
    diagnosis = diagnose("partial write: unable to parse 'other': invalid field format "
                         "dropped=0", _lines(f"m g=1 {T}", "bad"))
    assert not diagnosis.complete


def test_a_time_tag_line_not_reported_contradicts_a_parse_only_answer() -> None:
    # Built around the captured message. Parse errors are reported only when
    # every parsed point was written.
    lines = _lines("bad x", f"m,time=x g=1 {T}")
    diagnosis = diagnose("partial write: unable to parse 'bad x': invalid field format "
                         "dropped=0", lines)
    assert (diagnosis.complete, list(diagnosis.refused)) == (False, [0])


# -- retention


def test_the_points_beyond_the_retention_are_the_oldest() -> None:
    lines = _lines(f"m,t=a g=1 {T}", f"m,t=a g=2 {OLD}", f"m,t=a g=3 {OLD + 1}")
    body = "partial write: points beyond retention policy dropped=2"
    diagnosis = diagnose(body, lines)
    assert diagnosis.complete
    assert diagnosis.refused == {1: body, 2: body}


def test_oldest_points_tied_with_kept_ones_are_not_understood() -> None:
    # Built around the captured message: points of one time share a fate.
    lines = _lines(f"m,t=a g=2 {OLD}", f"m,t=b g=3 {OLD}", f"m,t=a g=1 {T}")
    diagnosis = diagnose("partial write: points beyond retention policy dropped=1", lines)
    assert (diagnosis.complete, diagnosis.refused) == (False, {})


def test_an_unreadable_line_may_hide_behind_the_retention_answer() -> None:
    # Captured: "m,t='x' g=\"a'b\" bad" (bad timestamp) went unmentioned.
    lines = _lines("m,t=a g=1 1", "m,t='x' g=\"a'b\" bad", "")
    diagnosis = diagnose("partial write: points beyond retention policy dropped=1", lines)
    assert not diagnosis.complete


def test_every_point_dropped_sets_them_all_aside_at_once() -> None:
    lines = _lines(f"m,t=a g=2 {OLD}", f"m,t=a g=3 {OLD + 1}")
    body = "partial write: points beyond retention policy dropped=2"
    assert diagnose(body, lines).refused == {0: body, 1: body}
    assert diagnose(body, lines).complete


# -- other refusals


def test_a_tag_value_limit_is_never_complete_the_rest_was_partly_lost() -> None:
    # InfluxDB 1.6.7 loses the batch's first N points as well: write the rest again.
    lines = _lines(f"v,t=y0 g=1 {T}", f"v,t=y1 g=1 {T + 1}", f"v,t=x0 g=2 {T}")
    body = ('partial write: max-values-per-tag limit exceeded (6/3): measurement="v" tag="t" '
            'value="y0" dropped=2')
    diagnosis = diagnose(body, lines)
    assert (diagnosis.complete, list(diagnosis.refused)) == (False, [0])


# Captured alone ("dropped=1" for one line); a good line added to probe the rule.
@pytest.mark.parametrize(("lines", "body", "refused"), [
    (_lines(f"m,t=a g=1 {T}", f"m,time=a g=3 {T + 3}"),
     'partial write: invalid tag key: input tag "time" on measurement "m" is invalid dropped=1',
     [1]),
    (_lines(f"m,t=a time=1i,g=3 {T + 2}", f"m,t=a time=1i {T + 2}"),
     'partial write: invalid field name: input field "time" on measurement "m" is invalid '
     "dropped=1", [1]),
])
def test_time_as_a_key(lines: list[bytes], body: str, refused: list[int]) -> None:
    diagnosis = diagnose(body, lines)
    assert (diagnosis.complete, sorted(diagnosis.refused)) == (True, refused)


def test_a_series_limit_is_not_understood_unless_every_point_was_dropped() -> None:
    # Captured with 9 series and 3 new ones; built smaller here.
    lines = _lines(f"m,n=s0 g=2 {T}", f"m,n=new0 g=3 {T + 1}")
    body = "partial write: max-series-per-database limit exceeded: (10) dropped=1"
    assert (diagnose(body, lines).complete, diagnose(body, lines).refused) == (False, {})
    every = "partial write: max-series-per-database limit exceeded: (10) dropped=2"
    assert diagnose(every, lines).complete


@pytest.mark.parametrize("body", [
    "timeout", "partial write: something new dropped=1", "",
    # InfluxDB 2.x's wording around the same message.
    "failure writing points to database: partial write: " + CONFLICT_F_M.format(1),
])
def test_anything_else_is_not_understood(body: str) -> None:
    # Made up: what a later or other server might say.
    diagnosis = diagnose(body, _lines(f"m,t=a f=1.5 {T}", f"m,t=a g=1 {T}"))
    assert (diagnosis.complete, diagnosis.refused) == (False, {})


def test_only_an_influxdb_1_server_is_trusted_to_have_stored_the_rest() -> None:
    assert trusted_server("1.6.7~rc0") and trusted_server("1.8.10")
    assert not trusted_server(None) and not trusted_server("v2.7.1") and not trusted_server("2.1")
    lines = _lines(f"m,t=a f=1.5 {T}", "bad x", f"m,t=a g=1 {T}")
    conflict = diagnose(CONFLICT_F_M.format(1), lines[::2], trusted=False)
    assert (conflict.complete, conflict.refused) == (False, {})
    unparsable = diagnose("partial write: unable to parse 'bad x': invalid field format "
                          "dropped=0", lines, trusted=False)
    assert (unparsable.complete, list(unparsable.refused)) == (False, [1])


# -- the strict reading of line protocol


def test_parse_line_reads_names_types_and_time() -> None:
    line = parse_line(b'fl,k=v\\ w\\,x\\=y s="q\\"\\\\\n\t\'\xc3\xa9",x\\ y\\,z\\==1e+20,'
                      b"i=-9223372036854775808i,b=TRUE 1764000000000500")
    assert line is not None
    assert (line.measurement, line.tags, line.time) == ("fl", {"k": "v w,x=y"},
                                                        1764000000000500)
    assert line.fields == {"s": {"string"}, "x y,z=": {"float"}, "i": {"integer"},
                           "b": {"boolean"}}


@pytest.mark.parametrize("text", [
    "m g=NaN 1", "m g=1e400 1", "m g=1u 1", "m g=9223372036854775808i 1",
    "m,t=a,t=b g=1 1", "m,t=a 1", "m  g=1 1", "m g=1 1 2", "m g=1 1\r", "m g=", "m,t= g=1",
    "m g=1 11256724118285952", "# comment", "", " m g=1", 'm g="unterminated 1',
    'm g="bad \\n escape" 1', "m\\\\x g=1",
])
def test_parse_line_refuses_what_it_cannot_vouch_for(text: str) -> None:
    assert parse_line(text.encode()) is None


# Ids and plain names, with the characters line protocol escapes (a
# measurement's "=" is left out: the strict reading refuses it unescaped).
_ids = st.from_regex(r"[a-z0-9][a-z0-9 ,=_-]{0,20}", fullmatch=True)
_measurements = st.from_regex(r"[a-z0-9][a-z0-9 ,_-]{0,20}", fullmatch=True)
_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(measurement=_measurements, tags=st.dictionaries(_ids, _ids, max_size=3),
       fields=st.dictionaries(_ids, _values, min_size=1, max_size=4),
       time_us=st.integers(min_value=0, max_value=4_000_000_000_000_000))
def test_every_line_the_library_builds_for_such_names_is_read(
        measurement: str, tags: dict[str, str], fields: dict[str, object], time_us: int) -> None:
    point = Point(measurement).time(time_us, PRECISION)
    for key, value in tags.items():
        point.tag(key, value)
    for key, value in fields.items():
        point.field(key, value)
    line = parse_line(point.to_line_protocol(PRECISION).encode())
    assert line is not None
    assert (line.measurement, line.tags, line.time) == (measurement, tags, time_us)
    kinds = {bool: "boolean", int: "integer", float: "float", str: "string"}
    assert line.fields == {k: {kinds[type(v)]} for k, v in fields.items()}
