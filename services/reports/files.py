"""One report into a folder: ``lifeline-<kind>-<first day>.pdf`` and ``.html``, each written
to a temporary name first and renamed (a reader never sees half a report). Used by
``lifeline report`` and by the orders service's schedule."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

from schemas.registry import Registry
from services.core.settings import InfluxSettings
from services.reports.data import ReportKind


def report_path(out: Path, kind: ReportKind, first_day: date) -> Path:
    """The PDF's path (the HTML beside it, ``.html``)."""
    return out / f"lifeline-{kind}-{first_day.isoformat()}.pdf"


async def write_report(kind: ReportKind, first_day: date, out: Path, *, store_url: str,
                       influx: InfluxSettings, registry: Registry, tz: ZoneInfo) -> list[Path]:
    """Collect and render one report into ``out``; the files written (PDF, HTML)."""
    from services.reports.collect import collect
    from services.reports.render import render_html, render_pdf

    data = await collect(kind, first_day, store_url=store_url, influx=influx, registry=registry,
                         tz=tz)
    pdf_bytes = await asyncio.to_thread(render_pdf, data)
    page = await asyncio.to_thread(render_html, data)
    return await asyncio.to_thread(_store, out, report_path(out, kind, first_day), pdf_bytes,
                                   page.encode())


def _store(out: Path, pdf: Path, pdf_bytes: bytes, page: bytes) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    html = pdf.with_suffix(".html")
    for path, content in ((html, page), (pdf, pdf_bytes)):  # the PDF last: it marks done
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(content)
        tmp.replace(path)
    return [pdf, html]
