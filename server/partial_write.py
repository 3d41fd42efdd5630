"""Which points InfluxDB 1.x refused in a 400 "partial write", from its answer and the lines sent.

InfluxDB 1.x stores the valid points of a batch and answers 400 with one
error string (``{"error": "..."}``) for the rest. Bodies captured from the
real 1.6.7 (all of them are in ``tests/server/test_partial_write.py``), after
``partial write: `` and before `` dropped=N``::

    field type conflict: input field "f" on measurement "m" is type float, already exists
        as type integer
    points beyond retention policy
    unable to parse 'bad1 x': invalid field format<newline>unable to parse '...': ...
    max-values-per-tag limit exceeded (6/3): measurement="v" tag="t" value="y0"
    invalid tag key: input tag "time" on measurement "m" is invalid
    invalid field name: input field "time" on measurement "m" is invalid
    max-series-per-database limit exceeded: (10)

and, when no line of the batch parsed (nothing stored), the ``unable to parse``
lines alone, without ``partial write:`` and ``dropped``.

What one answer can and cannot say (httpd/handler.go, coordinator/points_writer.go
and tsdb/shard.go of 1.x, confirmed by experiment on 1.6.7):

- Unparsable lines are quoted whole (no truncation, leading blanks dropped),
  one per line of the message, and ``dropped=0``: they are not counted.
- They are reported only when the write of the parsed points succeeded: when
  a shard refused points, or points were beyond the retention, the answer is
  that error alone and the unparsable lines go unmentioned.
- Each shard (one per shard group: a time range of at least an hour) writes
  on its own; the answer carries the first failing shard's error, whose
  ``dropped=N`` counts only that shard's refused points, and whose message
  names only the first conflict (a second field's conflict in the same shard
  is counted, not named). A shard's error also hides the retention drops.
- The retention drop is decided before the shards are written: the points
  older than (now - duration) whose shard group no newer point of the batch
  opens. That is always the oldest points of the batch.
- A tag-value or series limit (``max-values-per-tag``, ``max-series-per-
  database``) makes 1.6.7 lose the batch's first N points besides the
  refused ones (N = ``dropped``; measured: 20 valid points with 3 new tag
  values after the 5th, the 3 first valid points were not stored). Such an
  answer never means "the rest is stored".

So an answer accounts for every refused line only in some cases, and
``diagnose`` says whether it does (``complete``): it identifies the refused
lines from the message and the lines (which we built, so a strict reading of
their line protocol is enough: ``parse_line``), and checks the count against
``dropped=N`` and that nothing could be hidden behind the reported error.
The caller (``Rejections``) sets aside what was identified and writes nothing
else again when the diagnosis is complete; otherwise it retries the rest
once, then falls back to bisection.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from secadero.server.influx import BatchTooLarge, Writer, WriteRejected
from secadero.server.metrics import Metrics
from secadero.server.points import PRECISION_PARAM

log = logging.getLogger(__name__)

# Nanoseconds per unit of a line's timestamp, by the /write ``precision``.
UNIT_NS = {"n": 1, "ns": 1, "u": 1_000, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
# InfluxDB refuses times outside this range ("time outside range").
_MIN_NS = -9_223_372_036_854_775_806
_MAX_NS = 9_223_372_036_854_775_806
_INT64 = (-(2**63), 2**63 - 1)
# Shard groups last a whole number of hours (1 h, 1 d and 7 d are InfluxDB's
# defaults, and at least 1 h is its minimum) and start at multiples of their
# duration since 0001-01-01, an hour boundary of the Unix epoch too: the
# points of one clock hour are always in one shard group.
SHARD_BUCKET_NS = 3600 * 1_000_000_000
# A series key (measurement + tags) over 64 KiB is unparsable.
_MAX_KEY_BYTES = 65_000

# -- a strict reading of line protocol
#
# Accepts a subset of what InfluxDB parses: what influxdb-client's Point
# writes for our schema (ids, plain names, numbers, booleans, quoted
# strings). Anything else is "unknown" (None), which only ever costs a
# retry: a line read here is certain to parse on the server.

_NAME_CHAR = r'(?:[^\\\s,="]|\\[ ,=])'
_MEASUREMENT = r'(?:[^\\\s,="#]|\\[ ,])(?:[^\\\s,="]|\\[ ,])*'
_TAG = rf"{_NAME_CHAR}+={_NAME_CHAR}+"
_STRING = r'"(?:[^"\\]|\\["\\])*"'
_FLOAT = r"-?\d+(?:\.\d+)?(?:e[+-]\d+)?"
_BOOLEAN = r"t|T|true|True|TRUE|f|F|false|False|FALSE"
_VALUE = rf"{_STRING}|-?\d+i|{_FLOAT}|{_BOOLEAN}"
_FIELD = rf"{_NAME_CHAR}+=(?:{_VALUE})"
_LINE = re.compile(
    rf"(?P<m>{_MEASUREMENT})(?P<tags>(?:,{_TAG})*) (?P<fields>{_FIELD}(?:,{_FIELD})*)"
    r"(?: (?P<time>-?\d+))?", re.DOTALL)
_TAG_PAIR = re.compile(rf"({_NAME_CHAR}+)=({_NAME_CHAR}+)")
_FIELD_PAIR = re.compile(rf"({_NAME_CHAR}+)=({_VALUE})", re.DOTALL)
_UNESCAPE = re.compile(r"\\([ ,=])")


@dataclass(frozen=True, slots=True)
class Line:
    """One line of line protocol, read: names unescaped, each field's type(s)."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, frozenset[str]]  # InfluxDB's type names: float, integer, string, boolean
    time: int | None  # in the write precision; None: the server's clock


def _escape_key(text: str) -> str:
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _unescape(text: str) -> str:
    return _UNESCAPE.sub(r"\1", text) if "\\" in text else text


def _value_type(token: str) -> str | None:
    # The token matched _VALUE, so its first and last characters tell the type.
    first, last = token[0], token[-1]
    if first == '"':
        return "string"
    if last == "i":
        return "integer" if _INT64[0] <= int(token[:-1]) <= _INT64[1] else None
    if first.isalpha():
        return "boolean"
    # Only an exponent or very many digits can overflow a float.
    if ("e" in token or len(token) > 300) and math.isinf(float(token)):
        return None
    return "float"


def is_blank(line: bytes) -> bool:
    """A line InfluxDB skips: empty, blanks only, or a ``#`` comment (never a point)."""
    stripped = line.lstrip(b" \t")
    return not stripped or stripped.startswith(b"#")


def parse_line(line: bytes, unit_ns: int = UNIT_NS[PRECISION_PARAM],
               keys: dict[str, tuple[str, dict[str, str]] | None] | None = None
               ) -> Line | None:
    """The line read strictly, or None when it is not certain InfluxDB parses it.

    ``keys``: a cache of series keys already read (a batch repeats a few
    series thousands of times), shared by the calls of one diagnosis; lines
    of one series then share their ``tags`` dict (read it, never change it).
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    match = _LINE.fullmatch(text)
    if match is None:
        return None
    measurement, tag_text, field_text, time_text = match.group("m", "tags", "fields", "time")
    series_key = measurement + tag_text
    series = keys.get(series_key, False) if keys is not None else False
    if series is False:
        series = _read_series(measurement, tag_text)
        if keys is not None:
            keys[series_key] = series
    if series is None:
        return None
    fields: dict[str, frozenset[str]] = {}
    for key, token in _FIELD_PAIR.findall(field_text):
        kind = _value_type(token)
        if kind is None:
            return None
        key = _unescape(key)
        fields[key] = fields[key] | {kind} if key in fields else frozenset((kind,))
    time: int | None = None
    if time_text is not None:
        time = int(time_text)
        if not _MIN_NS <= time * unit_ns <= _MAX_NS:
            return None
    return Line(series[0], series[1], fields, time)


def _read_series(measurement: str, tag_text: str) -> tuple[str, dict[str, str]] | None:
    if len(measurement.encode()) + len(tag_text.encode()) > _MAX_KEY_BYTES:
        return None
    tags: dict[str, str] = {}
    for key, value in _TAG_PAIR.findall(tag_text):
        key = _unescape(key)
        if key in tags:
            return None  # "duplicate tags"
        tags[key] = _unescape(value)
    return _unescape(measurement), tags


def _read_all(lines: Sequence[bytes], points: list[int], unit_ns: int
              ) -> dict[int, Line | None]:
    keys: dict[str, tuple[str, dict[str, str]] | None] = {}
    return {i: parse_line(lines[i], unit_ns, keys) for i in points}


# -- the answer

_PARTIAL = re.compile(r"partial write: (?P<reason>.*) dropped=(?P<dropped>\d+)", re.DOTALL)
_UNPARSABLE = "unable to parse '"
_CONFLICT = re.compile(r'field type conflict: input field "(?P<names>.*)" '
                       r"is type (?P<type>\w+), already exists as type (?P<existing>\w+)",
                       re.DOTALL)
_INVALID_FIELD = re.compile(r'invalid field name: input field "time" on measurement "(?P<m>.*)" '
                            r"is invalid", re.DOTALL)
_INVALID_TAG = re.compile(r'invalid tag key: input tag "time" on measurement "(?P<m>.*)" '
                          r"is invalid", re.DOTALL)
_MAX_VALUES = re.compile(r"max-values-per-tag limit exceeded \(\d+/\d+\): "
                         r'measurement="(?P<m>.*)" tag="(?P<tag>.*)" value="(?P<value>.*)"',
                         re.DOTALL)
_RETENTION = "points beyond retention policy"


@dataclass
class Diagnosis:
    """What a 400 says was refused.

    ``refused``: index in the batch -> InfluxDB's reason, for lines certainly
    refused. ``complete``: every other line was stored (nothing needs writing
    again). ``why``: when not complete, what could not be accounted for.
    """

    refused: dict[int, str] = field(default_factory=dict)
    complete: bool = False
    why: str = ""


def trusted_server(version: str | None) -> bool:
    """Whether the server keeps the valid points of a refused batch: InfluxDB 1.x does.

    InfluxDB 2.1 refused whole batches with the same messages; later 2.x
    answer 422. Only a 1.x answer may be read as "the rest is stored".
    """
    return bool(version) and version.startswith("1.")  # type: ignore[union-attr]


def diagnose(body: str, lines: Sequence[bytes], *, trusted: bool = True,
             unit_ns: int = UNIT_NS[PRECISION_PARAM]) -> Diagnosis:
    """Which of ``lines`` (one write) InfluxDB refused, according to its 400 ``body``.

    ``trusted``: the server is InfluxDB 1.x (stores the rest of a partial
    write). Otherwise only what each line would get alone is identified
    (unparsable, ``time`` as a key), and the diagnosis is never complete.
    """
    points = [i for i, line in enumerate(lines) if not is_blank(line)]
    partial = _PARTIAL.fullmatch(body)
    reason = partial.group("reason") if partial else body
    dropped = int(partial.group("dropped")) if partial else None
    if reason.startswith(_UNPARSABLE):
        result = _unparsable(reason, lines, points, partial is not None, dropped, unit_ns)
    elif dropped is not None and points and dropped == len(points):
        # Every line parsed (unparsable ones are not counted) and was refused:
        # true whatever the server keeps of a partial write.
        return Diagnosis({i: body for i in points}, True)
    elif partial is None:
        result = Diagnosis(why="not a partial write")
    elif reason == _RETENTION:
        result = _beyond_retention(body, lines, points, dropped or 0, unit_ns)
    else:
        result = _shard_refusal(body, reason, lines, points, dropped or 0, unit_ns)
    if not trusted:
        # Keep only what each line would get alone, whatever became of the rest.
        deterministic = reason.startswith(_UNPARSABLE) or _INVALID_FIELD.fullmatch(
            reason) or _INVALID_TAG.fullmatch(reason)
        return Diagnosis(result.refused if deterministic else {}, False,
                         "not InfluxDB 1.x: the rest of the batch may not be stored")
    return result


def _unparsable(reason: str, lines: Sequence[bytes], points: list[int], partial: bool,
                dropped: int | None, unit_ns: int) -> Diagnosis:
    # A quoted line may itself contain "': " or a newline: delimit each
    # entry by the lines we sent, never by the punctuation alone.
    sent: dict[str, list[int]] = {}
    for i in points:
        sent.setdefault(lines[i].lstrip(b" \t").decode("utf-8", "replace"), []).append(i)
    refused: dict[int, str] = {}
    pos = 0
    while reason.startswith(_UNPARSABLE, pos):
        start = pos + len(_UNPARSABLE)
        end = reason.find("': ", start)
        while end != -1 and reason[start:end] not in sent:
            end = reason.find("': ", end + 1)
        if end == -1:
            return Diagnosis(refused, False, "an unparsable line that is not in the batch")
        text = reason[start:end]
        following = reason.find("\n" + _UNPARSABLE, end)
        stop = len(reason) if following == -1 else following
        for i in sent[text]:
            refused[i] = reason[pos:stop]
        pos = stop + 1
    if pos <= len(reason):
        return Diagnosis(refused, False, "unrecognised text after the unparsable lines")
    if dropped:
        return Diagnosis(refused, False, f"dropped={dropped} besides the unparsable lines")
    if not partial and len(refused) != len(points):
        return Diagnosis(refused, False, "nothing stored, yet not every line is quoted")
    # Parse errors are reported only when the parsed points were all written,
    # so a line refused for another reason would contradict this answer.
    rest = _read_all(lines, [i for i in points if i not in refused and b"time" in lines[i]],
                     unit_ns)
    if any(line is not None and _invalid_key(line) for line in rest.values()):
        return Diagnosis(refused, False, "a line with a 'time' key was not reported")
    return Diagnosis(refused, True)


def _invalid_key(line: Line) -> str | None:
    """Why InfluxDB refuses this line in any shard, if it does ("time" as a key)."""
    if "time" in line.tags:
        return "tag"
    if all(key == "time" for key in line.fields):
        return "field"
    return None


def _beyond_retention(body: str, lines: Sequence[bytes], points: list[int], dropped: int,
                      unit_ns: int) -> Diagnosis:
    """The ``dropped`` oldest points, when the answer can only be about them.

    The retention drop is the only error InfluxDB reports when no shard
    failed, so nothing but unparsable lines can hide behind it: every line
    must read strictly (see parse_line), and the oldest ``dropped`` must be
    strictly older than the rest (equal times share a shard group, hence a fate).
    """
    parsed = _read_all(lines, points, unit_ns)
    if any(line is None for line in parsed.values()):
        return Diagnosis(why="a line that may be unparsable could hide behind the retention drop")
    far_future = 2**63
    order = sorted(points, key=lambda i: _time(parsed[i], far_future))
    if not 0 < dropped < len(order):
        return Diagnosis(why=f"dropped={dropped} of {len(order)} points")
    boundary_old = _time(parsed[order[dropped - 1]], far_future)
    boundary_new = _time(parsed[order[dropped]], far_future)
    if boundary_old >= boundary_new:
        return Diagnosis(why="the oldest points are not apart from the rest")
    refused = {i: body for i in order[:dropped]}
    if any(_invalid_key(parsed[i]) for i in order[dropped:]):  # type: ignore[arg-type]
        return Diagnosis(refused, False, "a line with a 'time' key would have failed a shard")
    return Diagnosis(refused, True)


def _time(line: Line | None, default: int) -> int:
    return default if line is None or line.time is None else line.time


def _shard_refusal(body: str, reason: str, lines: Sequence[bytes], points: list[int],
                   dropped: int, unit_ns: int) -> Diagnosis:
    """A shard refused points: identify them by the message, then check nothing else can hide.

    Certain: the lines the message is about (a field with another type than
    the one it has, a tag value over the limit), when they all fall in one
    clock hour: one shard group, hence the shard that reported it; lines with
    ``time`` as a key when the message is about that (refused in any shard).
    Complete when they number ``dropped`` and the whole batch is in one clock
    hour and reads strictly: then no other shard's error, no retention drop
    and no unparsable line can be hiding behind this answer.
    """
    parsed = _read_all(lines, points, unit_ns)
    named: Callable[[Line], bool] | None = None
    # The text a line must contain to be one the message is about (for the
    # lines not read strictly here).
    marker = ""
    anywhere = index_limit = False
    if match := _CONFLICT.fullmatch(reason):
        names, existing = match.group("names"), match.group("existing")
        # Names are quoted raw, so split them by the names the lines carry.
        pairs = {(f, line.measurement) for line in parsed.values() if line is not None
                 for f in line.fields}
        matches = [(f, m) for f, m in pairs if f'{f}" on measurement "{m}' == names]
        if len(matches) == 1:
            f, m = matches[0]
            named = lambda line: (line.measurement == m  # noqa: E731
                                  and any(t != existing for t in line.fields.get(f, ())))
            marker = _escape_key(f) + "="
    elif match := _MAX_VALUES.fullmatch(reason):
        m, tag, value = match.group("m", "tag", "value")
        named = lambda line: line.measurement == m and line.tags.get(tag) == value  # noqa: E731
        marker = f"{_escape_key(tag)}={_escape_key(value)}"
        index_limit = True
    elif _INVALID_FIELD.fullmatch(reason):
        named, anywhere = (lambda line: _invalid_key(line) == "field"), True
    elif _INVALID_TAG.fullmatch(reason):
        named, anywhere = (lambda line: _invalid_key(line) == "tag"), True
    if named is None:
        return Diagnosis(why=f"unrecognised refusal: {reason[:120]}")
    hits = [i for i, line in parsed.items() if line is not None and named(line)]
    unread = [i for i, line in parsed.items() if line is None]
    refused: dict[int, str] = {}
    # The named lines, if all in one shard group, are in the reporting shard,
    # unless a line not read here is the one the message is about.
    if anywhere or (hits and len({_bucket(parsed[i], unit_ns) for i in hits}) == 1
                    and not any(marker.encode() in lines[i] for i in unread)):
        refused = {i: body for i in hits}
    if unread:
        return Diagnosis(refused, False, "a line that may be unparsable could hide behind it")
    if len({_bucket(line, unit_ns) for line in parsed.values()}) != 1:
        return Diagnosis(refused, False, "the batch spans shard groups: another may have "
                                         "refused points unreported")
    if len(refused) != dropped:
        return Diagnosis(refused, False, f"identified {len(refused)} of dropped={dropped}")
    if index_limit:
        return Diagnosis(refused, False, "a tag value limit: InfluxDB 1.6 loses other points too")
    return Diagnosis(refused, True)


def _bucket(line: Line | None, unit_ns: int) -> int | None:
    if line is None or line.time is None:
        return None  # the server's clock: its hour is unknown here
    return line.time * unit_ns // SHARD_BUCKET_NS


# -- acting on it


class Rejections:
    """After a 400: set aside what InfluxDB refused, write again only what it may not have stored.

    1. Diagnose the answer. Complete: set aside the refused lines, done
       (one request in all).
    2. Otherwise set aside the lines certainly refused and write the rest
       once more (``write_isolation_fallbacks_total{step="retry"}``); a 400
       to that is diagnosed the same way.
    3. Still not accounted for: bisection (``step="bisect"``), each part's
       400 diagnosed too, down to single lines, which are set aside.

    Bounded: at most two writes of the batch, then fewer than two per line.
    A retryable error (InfluxDB down) propagates: the caller retries the
    whole batch later, as for any write.
    """

    def __init__(self, writer: Writer, set_aside: Callable[[bytes, str], None],
                 metrics: Metrics, *, warn: Callable[..., None] | None = None,
                 unit_ns: int = UNIT_NS[PRECISION_PARAM]) -> None:
        self._writer = writer
        self._set_aside = set_aside
        self._metrics = metrics
        self._warn = warn or (lambda key, message, *args: log.warning(message, *args))
        self._unit_ns = unit_ns

    def handle(self, lines: list[bytes], rejected: WriteRejected) -> None:
        """``lines`` were written in one request, which InfluxDB answered with ``rejected``."""
        rest, why = self._settle(lines, rejected)
        if not rest:
            return
        if len(rest) == 1 and sum(not is_blank(line) for line in lines) == 1:
            # A write of one point refused: that point is the one.
            self._set_aside(rest[0], rejected.body)
            return
        self._fallback("retry", why, rejected, rest)
        retried = rest
        try:
            self._writer.write(b"\n".join(retried))
            return
        except WriteRejected as again:
            self._metrics.inc("write_errors_total", kind="rejected")
            rest, why = self._settle(retried, again)
            if not rest:
                return
            if len(rest) == 1 and len(retried) == 1:
                self._set_aside(rest[0], again.body)
                return
            rejected = again
        except BatchTooLarge:
            self._metrics.inc("write_errors_total", kind="too_large")
            why = "the retry was too large (413)"
        self._fallback("bisect", why, rejected, rest)
        self._bisect(rest)

    def _settle(self, lines: list[bytes], rejected: WriteRejected) -> tuple[list[bytes], str]:
        """Set aside what the answer identifies; the lines still unaccounted for, and why."""
        diagnosis = diagnose(rejected.body, lines,
                             trusted=trusted_server(getattr(rejected, "server_version", None)),
                             unit_ns=self._unit_ns)
        for i, reason in sorted(diagnosis.refused.items()):
            self._set_aside(lines[i], reason)
        if diagnosis.complete:
            return [], ""
        return [line for i, line in enumerate(lines)
                if i not in diagnosis.refused and not is_blank(line)], diagnosis.why

    def _fallback(self, step: str, why: str, rejected: WriteRejected,
                  rest: list[bytes]) -> None:
        self._metrics.inc("write_isolation_fallbacks_total", step=step)
        self._warn("isolation_" + step, "InfluxDB's 400 does not account for every point (%s): "
                   "%s of the %d other points; it said: %s", why, step, len(rest),
                   rejected.body[:200])

    def _bisect(self, lines: list[bytes]) -> None:
        middle = len(lines) // 2
        for part in (lines[:middle], lines[middle:]):
            if part:
                write_splitting(self._writer, part, self._set_aside, self._metrics,
                                on_rejected=self._part_rejected)

    def _part_rejected(self, lines: list[bytes], exc: WriteRejected) -> None:
        if len(lines) == 1:
            self._set_aside(lines[0], exc.body)
            return
        rest, _ = self._settle(lines, exc)
        if rest:
            self._bisect(rest)


def write_splitting(writer: Writer, lines: list[bytes], set_aside: Callable[[bytes, str], None],
                    metrics: Metrics, *,
                    on_rejected: Callable[[list[bytes], WriteRejected], None]) -> None:
    """Write ``lines`` in one request; on 413 write each half the same way.

    The one place a 413 is handled: a single line too large for the server
    is set aside (it can never be written). A 400 goes to ``on_rejected``
    with the lines of that request. A retryable error propagates.
    """
    try:
        writer.write(b"\n".join(lines))
    except BatchTooLarge as exc:
        metrics.inc("write_errors_total", kind="too_large")
        if len(lines) == 1:
            set_aside(lines[0], str(exc))
            return
        middle = len(lines) // 2
        for part in (lines[:middle], lines[middle:]):
            if part:
                write_splitting(writer, part, set_aside, metrics, on_rejected=on_rejected)
    except WriteRejected as exc:
        metrics.inc("write_errors_total", kind="rejected")
        on_rejected(lines, exc)


__all__ = ["Diagnosis", "Line", "Rejections", "diagnose", "is_blank", "parse_line",
           "trusted_server", "write_splitting"]
