"""The storage layout on InfluxDB 1.x, set up by the writer at start (idempotent).

- retention policy ``raw`` (default; ``LIFELINE_INFLUX_RAW_RETENTION``, 30 days): readings;
- retention policy ``long`` (``LIFELINE_INFLUX_LONG_RETENTION``, forever): 1-minute
  aggregates of readings and every alarm event / alarm state;
- continuous query ``reading_1m``: mean/min/max per series and minute into
  ``long.reading_1m``, computed by the database itself, re-run over the last
  ``cq_resample_for`` so late readings are folded in;
- continuous queries ``reading_1h`` (per series) and ``district_1h`` (per district, kind,
  metric) from the 1-minute aggregates: what month-long dashboard ranges read.

InfluxDB 2.x has buckets and tasks instead; with ``LIFELINE_INFLUX_API=v2`` this setup is
not run (see docs/decisions/0007-storage-layout.md).
"""

from __future__ import annotations

import aiohttp

from services.core.logging import get_logger
from services.core.settings import InfluxSettings

log = get_logger("lifeline.writer.storage")

RAW, LONG = "raw", "long"


class StorageSetupError(RuntimeError):
    pass


HOURLY = {
    # name: (source measurement, select, group by) — both from the 1-minute aggregates, so
    # neither waits for the other.
    "reading_1h": ("reading_1m", 'mean("mean") AS "mean", min("min") AS "min", '
                   'max("max") AS "max"', "*"),
    "district_1h": ("reading_1m", 'max("max") AS "max", min("min") AS "min", '
                    'mean("mean") AS "mean"', '"district", "kind", "metric"'),
}


def hourly_queries(db: str, every: str) -> dict[str, str]:
    """Hourly tiers for long ranges: per series (``reading_1h``) and per district, kind and
    metric (``district_1h``, what the overview's 30-day trend reads). Recomputed every
    ``every`` over the last two hours."""
    return {name: (f'CREATE CONTINUOUS QUERY "{name}" ON "{db}" RESAMPLE EVERY {every} FOR 2h '
                   f'BEGIN SELECT {select} INTO "{db}"."{LONG}"."{name}" '
                   f'FROM "{db}"."{LONG}"."{source}" GROUP BY time(1h), {group} END')
            for name, (source, select, group) in HOURLY.items()}


def continuous_query(db: str, every: str, span: str) -> str:
    # Names and durations come from validated settings, never from telemetry.
    select = ('SELECT mean("value") AS "mean", min("value") AS "min", max("value") AS "max" '
              f'INTO "{db}"."{LONG}"."reading_1m" FROM "{db}"."{RAW}"."reading" '
              "GROUP BY time(1m), *")
    return (f'CREATE CONTINUOUS QUERY "reading_1m" ON "{db}" RESAMPLE EVERY {every} '
            f"FOR {span} BEGIN {select} END")


async def _query(session: aiohttp.ClientSession, s: InfluxSettings, q: str) -> dict[str, object]:
    params = {"q": q}
    if s.username:
        params.update(u=s.username, p=s.password.get_secret_value() if s.password else "")
    async with session.post(s.url.rstrip("/") + "/query", data=params) as resp:
        body: dict[str, object] = await resp.json(content_type=None)
        if resp.status != 200:
            raise StorageSetupError(f"InfluxDB refused {q!r}: HTTP {resp.status} {body}")
        return body


def _error(body: dict[str, object]) -> str | None:
    results = body.get("results")
    if isinstance(results, list) and results and isinstance(results[0], dict):
        err = results[0].get("error")
        return str(err) if err else None
    return None


async def ensure_layout(s: InfluxSettings, *, raw_retention: str, long_retention: str,
                        cq_every: str, cq_for: str, hourly_every: str = "10m") -> None:
    """Create or update the database, retention policies and continuous query."""
    db = s.database
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        await _query(session, s, f'CREATE DATABASE "{db}"')
        for rp, duration, default in ((RAW, raw_retention, True), (LONG, long_retention, False)):
            suffix = " DEFAULT" if default else ""
            body = await _query(session, s, f'CREATE RETENTION POLICY "{rp}" ON "{db}" '
                                            f"DURATION {duration} REPLICATION 1{suffix}")
            if _error(body):  # exists with other settings: bring it to the configured ones
                body = await _query(session, s, f'ALTER RETENTION POLICY "{rp}" ON "{db}" '
                                                f"DURATION {duration}{suffix}")
                if err := _error(body):
                    raise StorageSetupError(f"retention policy {rp}: {err}")
        await _query(session, s, f'DROP CONTINUOUS QUERY "reading_1m" ON "{db}"')
        body = await _query(session, s, continuous_query(db, cq_every, cq_for))
        if err := _error(body):
            raise StorageSetupError(f"continuous query reading_1m: {err}")
        for name, cq in hourly_queries(db, hourly_every).items():
            await _query(session, s, f'DROP CONTINUOUS QUERY "{name}" ON "{db}"')
            if err := _error(await _query(session, s, cq)):
                raise StorageSetupError(f"continuous query {name}: {err}")
    log.info("storage.layout_ready", database=db, raw_retention=raw_retention,
             long_retention=long_retention)
