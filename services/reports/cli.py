"""``lifeline report daily|weekly``: the 日报/周报 as PDF and HTML, on demand (the orders
service also makes yesterday's daily report on schedule when ``LIFELINE_ORDERS_REPORTS_DIR``
is set)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from services.reports.data import ReportKind

CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "show_default": True,
                           "max_content_width": 110}
report_app = typer.Typer(
    help="Daily and weekly reports (日报/周报): alarms, work orders, data completeness, dust.",
    epilog="Example:\n\n\b\n  lifeline report daily --date 2026-12-01 --out reports/\n"
           "  lifeline report weekly --date 2026-11-30",
    no_args_is_help=True, rich_markup_mode=None, context_settings=CONTEXT)

Day = Annotated[str | None, typer.Option("--date", help="The day (YYYY-MM-DD, local time; a "
                                         "week: its first day).", show_default="yesterday")]
Out = Annotated[Path, typer.Option(help="Folder for the PDF and HTML.")]
Zone = Annotated[str, typer.Option(help="The reports' time zone.")]


def write(kind: ReportKind, day: date, out: Path, zone: ZoneInfo) -> list[Path]:
    """Collect and render one report into ``out``; the files written."""
    from schemas.registry import load_registry
    from services.core.settings import InfluxSettings, RegistrySettings, load
    from services.orders.config import PostgresSettings
    from services.reports.files import write_report

    registry = load_registry(load(RegistrySettings).registry)
    written: list[Path] = asyncio.run(write_report(
        kind, day, out, store_url=load(PostgresSettings).url.get_secret_value(),
        influx=load(InfluxSettings), registry=registry, tz=zone))
    return written


def _day(value: str | None, zone: ZoneInfo) -> date:
    if value is None:
        return (datetime.now(UTC).astimezone(zone) - timedelta(days=1)).date()
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint="--date"
                                 ) from exc


def _run(kind: ReportKind, day: str | None, out: Path, tz: str) -> None:
    from schemas.errors import LifelineError

    zone = ZoneInfo(tz)
    try:
        files = write(kind, _day(day, zone), out, zone)
    except LifelineError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    for f in files:
        typer.echo(f"{f}  {f.stat().st_size:,} bytes")


@report_app.command(epilog="Example:\n\n\b\n  lifeline report daily --date 2026-12-01")
def daily(day: Day = None, out: Out = Path("reports"), tz: Zone = "Asia/Shanghai") -> None:
    """日报: one local day."""
    _run("daily", day, out, tz)


@report_app.command(epilog="Example:\n\n\b\n  lifeline report weekly --date 2026-11-30")
def weekly(day: Day = None, out: Out = Path("reports"), tz: Zone = "Asia/Shanghai") -> None:
    """周报: seven local days from --date."""
    _run("weekly", day, out, tz)
