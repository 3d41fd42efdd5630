"""``secadero batch start|moisture|end|list|show|report|export --config server.toml``.

For the technician and the quality manager, beside the running server: the
commands open the batch database directly (SQLite in WAL mode, so they work
while the server runs) and go through the same ``BatchService`` as the HTTP
API, with the same checks. A refusal prints ``error: <field>: <reason>`` on
stderr and exits 2, with nothing written. Times are shown in the yard's
local time; times given without an offset are UTC (``2026-06-01T08:30-05:00``
is Lima's half past eight).

start, moisture and end also write the ``batch`` point for the dashboards;
if InfluxDB does not take it the record is still stored, and a warning says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from secadero.server.batches.service import BatchService, BatchView, ExportResult
    from secadero.server.influx import PointWriter
    from secadero.settings import ServerSettings

# Exit statuses: a refused input (nothing written), and a command that did part of its job.
REFUSED = 2
PARTLY_FAILED = 1
# The option that gave each field the service checks, for the error line.
OPTIONS = {"id": "ID", "ids": "ID", "yard": "--yard", "trays": "--trays", "tray": "--tray",
           "lot": "--lot", "member": "--member", "notes": "--notes", "by": "--by",
           "at": "--at", "until": "--until", "fermentation_end": "--fermentation-end",
           "wet_weight_kg": "--wet-weight-kg", "dry_weight_kg": "--dry-weight-kg",
           "moisture_pct": "--pct", "final_moisture_pct": "--final-pct",
           "language": "--language", "format": "--format"}
# How long the command waits for InfluxDB to take its one batch point.
POINT_TIMEOUT_S = 10.0


def register(commands: argparse._SubParsersAction) -> None:
    batch = commands.add_parser("batch", help="drying batches: record, show, report, export "
                                              "(docs/batches.md)")
    sub = batch.add_subparsers(dest="batch_command", metavar="COMMAND", required=True)

    def command(name: str, help: str, handler: Callable[..., int]) -> argparse.ArgumentParser:
        # argparse %-formats help strings but not descriptions: "%%" reads "%" in both.
        parser = sub.add_parser(name, help=help, description=help.replace("%%", "%"))
        parser.add_argument("--config", required=True, metavar="FILE",
                            help="server settings (TOML)")
        parser.set_defaults(handler=lambda args: _run(args, handler))
        return parser

    start = command("start", "start a batch on its trays", _start)
    start.add_argument("id", help="the batch id (a-z, 0-9, '-'), e.g. 2026-06-norte-07")
    start.add_argument("--yard", required=True, help="the yard id")
    start.add_argument("--trays", required=True, metavar="NODE/TRAY,...",
                       help="the batch's trays, e.g. norte-1/t1,norte-1/t2")
    start.add_argument("--lot", default="", help="the lot (fermentation box) it comes from")
    start.add_argument("--member", default="", help="the member or supplier")
    start.add_argument("--fermentation-end", metavar="YYYY-MM-DD",
                       help="the date fermentation ended")
    start.add_argument("--wet-weight-kg", metavar="KG", help="wet weight")
    start.add_argument("--notes", default="")
    _who_and_when(start, "when the trays went out")

    moisture = command("moisture", "record a moisture meter reading (%% wet basis)", _moisture)
    moisture.add_argument("id", help="the batch id")
    moisture.add_argument("--pct", required=True, metavar="PCT",
                          help="moisture, %% wet basis, as the meter reads it")
    moisture.add_argument("--tray", metavar="NODE/TRAY", help="the tray the sample came from")
    _who_and_when(moisture, "when the sample was read")

    end = command("end", "end a batch: its trays are free for the next one", _end)
    end.add_argument("id", help="the batch id")
    end.add_argument("--final-pct", metavar="PCT", help="final moisture, %% wet basis")
    end.add_argument("--dry-weight-kg", metavar="KG", help="dry weight")
    _who_and_when(end, "when the beans came off the trays")

    listing = command("list", "the batches, oldest first", _list)
    listing.add_argument("--yard", help="only this yard")
    listing.add_argument("--open", action="store_true", help="only batches not ended")
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    show = command("show", "a batch: its record, metrics and drying estimate", _show)
    show.add_argument("id", help="the batch id")
    show.add_argument("--until", metavar="TIME", help="up to this time (default: its end, "
                                                      "or now)")
    show.add_argument("--json", action="store_true", help="machine-readable output")

    report = command("report", "the one-page report, PDF and PNG", _report)
    report.add_argument("id", help="the batch id")
    report.add_argument("--pdf", type=Path, metavar="FILE", help="default: ID.pdf")
    report.add_argument("--png", type=Path, metavar="FILE", help="default: ID.png")
    report.add_argument("--only", choices=("pdf", "png"), help="write only this one")
    report.add_argument("--language", default="es", choices=("es", "en"))
    report.add_argument("--until", metavar="TIME", help="up to this time")

    export = command("export", "CSV and JSON of batches (curve and metrics), with progress",
                     _export)
    export.add_argument("ids", nargs="*", metavar="ID", help="the batches (or --all)")
    export.add_argument("--all", action="store_true", help="every batch (with --yard: its)")
    export.add_argument("--yard", help="with --all: only this yard's batches")
    export.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="directory for ID.csv and ID.json")
    export.add_argument("--format", default="csv,json", metavar="csv,json")


def _who_and_when(parser: argparse.ArgumentParser, when: str) -> None:
    parser.add_argument("--by", default="", help="who (name or initials)")
    parser.add_argument("--at", metavar="TIME", help=f"{when} (default now): "
                        "2026-06-01T08:30-05:00; without an offset, UTC")


class _RecordedPoints:
    """The service's point sink for one command: a PointWriter, and what became of each point."""

    def __init__(self, writer: PointWriter) -> None:
        self.writer = writer
        self.futures: list[Future[None]] = []

    def submit(self, lines: Sequence[str], *, source: str) -> Future[None]:
        future = self.writer.submit(lines, source=source)
        self.futures.append(future)
        return future

    def finish(self) -> list[str]:
        """Write what is queued (one try) and stop; why any point was not stored."""
        self.writer.stop(POINT_TIMEOUT_S)
        return [str(f.exception()) for f in self.futures
                if f.done() and f.exception() is not None]


def _run(args: argparse.Namespace, handler: Callable[..., int]) -> int:
    from secadero.server.batches.model import BatchError
    from secadero.server.batches.service import BatchService
    from secadero.server.batches.store import BatchStore, NewerSchema
    from secadero.server.influx import PointWriter
    from secadero.settings import load_or_report, load_server_settings

    settings = load_or_report(load_server_settings, args.config)
    if settings is None:
        return REFUSED
    try:
        store = BatchStore(settings.batches.database)
    except NewerSchema as exc:
        print(f"error: {exc}", file=sys.stderr)
        return REFUSED
    writes = args.batch_command in ("start", "moisture", "end")
    points = (_RecordedPoints(PointWriter.from_settings(settings.influxdb, max_queued=10)
                              .start()) if writes else None)
    service = BatchService.from_settings(settings, points=points, store=store)
    try:
        status = handler(args, service, settings)
    except BatchError as exc:
        print(f"error: {OPTIONS.get(exc.field, exc.field)}: {exc.message}", file=sys.stderr)
        status = REFUSED
    finally:
        service.close()
        if points is not None:
            for reason in points.finish():
                print(f"warning: the batch point for the dashboards did not reach InfluxDB "
                      f"(the record is stored): {reason}", file=sys.stderr)
    return status


# ---------------------------------------------------------------- commands


def _start(args: argparse.Namespace, service: BatchService, settings: ServerSettings) -> int:
    batch = service.start(id=args.id, yard=args.yard, trays=args.trays, lot=args.lot,
                          member=args.member, fermentation_end=args.fermentation_end,
                          wet_weight_kg=args.wet_weight_kg, notes=args.notes, by=args.by,
                          at=args.at)
    print(f"started {batch.id} in yard {batch.yard} on {', '.join(map(str, batch.trays))} "
          f"at {_local(batch.started_at, settings, batch.yard)}")
    return 0


def _moisture(args: argparse.Namespace, service: BatchService, settings: ServerSettings) -> int:
    reading = service.moisture(args.id, moisture_pct=args.pct, at=args.at, by=args.by,
                               tray=args.tray)
    yard = service.get(args.id).yard
    where = f" on {reading.tray}" if reading.tray else ""
    print(f"{reading.batch}: {reading.moisture_pct:g} % at "
          f"{_local(reading.ts, settings, yard)}{where}")
    return 0


def _end(args: argparse.Namespace, service: BatchService, settings: ServerSettings) -> int:
    batch = service.end(args.id, at=args.at, final_moisture_pct=args.final_pct,
                        dry_weight_kg=args.dry_weight_kg, by=args.by)
    assert batch.ended_at is not None
    final = (f", final moisture {batch.final_moisture_pct:g} %"
             if batch.final_moisture_pct is not None else "")
    print(f"ended {batch.id} at {_local(batch.ended_at, settings, batch.yard)}{final}; "
          f"trays {', '.join(map(str, batch.trays))} are free")
    return 0


def _list(args: argparse.Namespace, service: BatchService, settings: ServerSettings) -> int:
    from secadero.server.batches.service import batch_json

    batches = service.list(yard=args.yard, open_only=args.open)
    if args.json:
        print(json.dumps([batch_json(b) for b in batches], ensure_ascii=False, indent=1))
        return 0
    if not batches:
        print("no batches")
        return 0
    for b in batches:
        state = ("open" if b.open else
                 f"ended {_local(b.ended_at, settings, b.yard)}")  # type: ignore[arg-type]
        print(f"{b.id:<24} {b.yard:<12} {_local(b.started_at, settings, b.yard)}  {state:<28} "
              f"{len(b.trays)} trays  {b.lot}")
    return 0


def _show(args: argparse.Namespace, service: BatchService, settings: ServerSettings) -> int:
    from secadero.server.batches.service import view_json

    view = service.show(args.id, until=args.until)
    if args.json:
        print(json.dumps(view_json(view), ensure_ascii=False, indent=1))
        return 0
    for line in describe(view, settings):
        print(line)
    return 0


def _report(args: argparse.Namespace, service: BatchService, settings: ServerSettings) -> int:
    pdf = None if args.only == "png" else (args.pdf or Path(f"{args.id}.pdf"))
    png = None if args.only == "pdf" else (args.png or Path(f"{args.id}.png"))
    service.report(args.id, pdf_path=pdf, png_path=png, language=args.language,
                   until=args.until)
    for path in (pdf, png):
        if path is not None:
            print(f"wrote {path}")
    return 0


def _export(args: argparse.Namespace, service: BatchService, settings: ServerSettings) -> int:
    from secadero.server.batches.model import BatchError

    if args.all == bool(args.ids):
        raise BatchError("ids", "name the batches, or give --all")
    if args.yard and not args.all:
        raise BatchError("yard", "--yard goes with --all")
    ids = args.ids or [b.id for b in service.list(yard=args.yard)]
    if not ids:
        print("no batches to export", file=sys.stderr)
        return 0
    formats = [f.strip() for f in args.format.split(",") if f.strip()]

    def progress(done: int, total: int, result: ExportResult) -> None:
        outcome = (f"error: {result.error}" if result.error else
                   ", ".join(str(p) for p in result.paths))
        print(f"[{done}/{total}] {result.batch}: {outcome}", file=sys.stderr, flush=True)

    results = service.export(ids, args.out, formats=formats, progress=progress)
    failed = [r for r in results if r.error]
    print(f"exported {len(results) - len(failed)} of {len(results)} batches to {args.out}")
    return PARTLY_FAILED if failed else 0


# ---------------------------------------------------------------- output


def describe(view: BatchView, settings: ServerSettings) -> list[str]:
    b, m, e = view.batch, view.metrics, view.estimate

    def at(ts: float | None) -> str:
        return "-" if ts is None else _local(ts, settings, b.yard)

    def num(value: float | None, unit: str, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f} {unit}"

    lines = [f"batch {b.id}  yard {b.yard}  lot {b.lot or '-'}  member {b.member or '-'}",
             f"  trays        {', '.join(map(str, b.trays))}",
             f"  started      {at(b.started_at)}" + (f" by {b.started_by}" if b.started_by
                                                      else ""),
             f"  ended        {at(b.ended_at)}" if b.ended_at is not None else "  open",
             f"  fermented    {b.fermentation_end or '-'}   wet {num(b.wet_weight_kg, 'kg')}"
             f"   dry {num(b.dry_weight_kg, 'kg')}",
             f"metrics up to {at(view.until)}",
             f"  drying       {m.drying_h:.1f} h (sun-drying {m.sun_drying_h:.1f} h, "
             f"rewetting {m.rewetting_h:.1f} h)",
             f"  rain on it   {m.rain_exposure_min:.0f} min",
             f"  humidity     mean {num(m.humidity_mean_pct, '%')}  min "
             f"{num(m.humidity_min_pct, '%')}  max {num(m.humidity_max_pct, '%')}",
             f"  temperature  mean {num(m.temperature_mean_c, 'C')}  min "
             f"{num(m.temperature_min_c, 'C')}  max {num(m.temperature_max_c, 'C')}",
             f"  VPD          mean {num(m.vpd_mean_kpa, 'kPa', 2)}",
             f"  to target    {num(m.time_to_target_h, 'h')}",
             f"  data gaps    {len(m.gaps)} ({sum(g.seconds for g in m.gaps) / 3600:.1f} h)"]
    for response in m.responses:
        came_in = "never" if response.minutes is None else num(response.minutes, "min", 0)
        lines.append(f"  rain alert {response.episode}: raised {at(response.raised_at)}, "
                     f"trays in after {came_in}")
    lines.append(f"moisture readings ({len(view.readings)})")
    for r in view.readings:
        lines.append(f"  {at(r.ts)}  {r.moisture_pct:5.1f} %  {r.tray or ''} {r.by}".rstrip())
    if e.reached_at is not None:
        lines.append(f"reached {e.target_pct:g} % at {at(e.reached_at)}")
    elif e.p50_ts is not None:
        lines.append(f"estimate: {e.target_pct:g} % between {at(e.p20_ts)} and {at(e.p80_ts)} "
                     f"(most likely {at(e.p50_ts)})")
    else:
        lines.append(f"estimate: none ({e.reason or 'no reason given'})")
    t = view.typical_day
    if t is not None and e.reached_at is None:
        if t.source == "learnt":
            lines.append(f"  typical day  {t.kpa_h:.1f} kPa·h (±{t.sigma:.0%} a day), learnt "
                         f"from the yard's last {t.days} days before the batch")
        else:
            lines.append(f"  typical day  {t.kpa_h:.1f} kPa·h, built-in ({t.reason})")
    return lines


def _local(ts: float, settings: ServerSettings, yard: str) -> str:
    zone = next((y.timezone for y in settings.yards if y.id == yard), "UTC")
    return datetime.fromtimestamp(ts, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")
