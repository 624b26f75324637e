"""The storage layout on InfluxDB 1.x, set up by the writer at start (idempotent).

The names are schemas/storage.py's; this module creates what they name:

- retention policy ``raw`` (default; ``LIFELINE_INFLUX_RAW_RETENTION``, 30 days): readings;
- retention policy ``long`` (``LIFELINE_INFLUX_LONG_RETENTION``, forever): 1-minute
  aggregates of readings and every alarm event / alarm state;
- ``long.reading_1m`` (mean/min/max per series and minute) is the writer's own
  (services/writer/rollup.py); the continuous query that computed it before is dropped;
- continuous queries ``reading_1h`` (per series) and ``district_1h`` (per district, kind,
  metric) from the 1-minute aggregates: what month-long dashboard ranges read.

InfluxDB 2.x has buckets and tasks instead; with ``LIFELINE_INFLUX_API=v2`` this setup is
not run (see docs/decisions/0007-storage-layout.md).
"""

from __future__ import annotations

from schemas.storage import LONG, RAW, Field, Measurement, Tag, ident, qualified
from services.core.influx import SETUP_TIMEOUT_S, InfluxClient, QueryError, QueryRefused
from services.core.logging import get_logger
from services.core.settings import InfluxSettings
from services.writer.errors import StorageSetupError

log = get_logger("lifeline.writer.storage")

__all__ = ["LONG", "RAW", "StorageSetupError", "ensure_layout", "hourly_queries"]


_MEAN, _MIN, _MAX = (ident(f) for f in (Field.MEAN, Field.MIN, Field.MAX))
HOURLY = {
    # name: (source measurement, select, group by) — both from the 1-minute aggregates, so
    # neither waits for the other.
    Measurement.READING_1H: (Measurement.READING_1M,
                             f"mean({_MEAN}) AS {_MEAN}, min({_MIN}) AS {_MIN}, "
                             f"max({_MAX}) AS {_MAX}", "*"),
    Measurement.DISTRICT_1H: (Measurement.READING_1M,
                              f"max({_MAX}) AS {_MAX}, min({_MIN}) AS {_MIN}, "
                              f"mean({_MEAN}) AS {_MEAN}",
                              ", ".join(ident(t) for t in (Tag.DISTRICT, Tag.KIND, Tag.METRIC))),
}


def hourly_queries(db: str, every: str) -> dict[str, str]:
    """Hourly tiers for long ranges: per series (``reading_1h``) and per district, kind and
    metric (``district_1h``, what the overview's 30-day trend reads). Recomputed every
    ``every`` over the last two hours."""
    return {name: (f'CREATE CONTINUOUS QUERY "{name}" ON "{db}" RESAMPLE EVERY {every} FOR 2h '
                   f"BEGIN SELECT {select} INTO {qualified(name, db)} "
                   f"FROM {qualified(source, db)} GROUP BY time(1h), {group} END")
            for name, (source, select, group) in HOURLY.items()}


# Continuous queries earlier versions created and the writer now does without.
RETIRED = (Measurement.READING_1M,)


async def ensure_layout(s: InfluxSettings, *, raw_retention: str, long_retention: str,
                        hourly_every: str = "10m") -> None:
    """Create or update the database, retention policies and the hourly continuous
    queries; drop the retired ones (``reading_1m``).

    Raises :class:`StorageSetupError` for a statement the database refuses or when it
    cannot be reached (the writer retries with backoff)."""
    try:
        await _ensure_layout(s, raw_retention, long_retention, hourly_every)
    except StorageSetupError:
        raise
    except QueryError as exc:
        raise StorageSetupError(str(exc)) from exc
    log.info("storage.layout_ready", database=s.database, raw_retention=raw_retention,
             long_retention=long_retention)


async def _ensure_layout(s: InfluxSettings, raw_retention: str, long_retention: str,
                         hourly_every: str) -> None:
    db = s.database
    async with InfluxClient(s, SETUP_TIMEOUT_S) as client:
        async def run(q: str, what: str | None = None) -> None:
            """Run ``q``; a refusal is an error when ``what`` names it, else ignored."""
            try:
                await client.query(q, post=True, db=False)
            except QueryRefused as exc:
                if what is not None:
                    raise StorageSetupError(f"{what}: {exc}") from exc

        await run(f'CREATE DATABASE "{db}"', "database")
        for rp, duration, default in ((RAW, raw_retention, True), (LONG, long_retention, False)):
            suffix = " DEFAULT" if default else ""
            try:
                await client.query(f'CREATE RETENTION POLICY "{rp}" ON "{db}" '
                                   f"DURATION {duration} REPLICATION 1{suffix}", post=True, db=False)
            except QueryRefused:  # exists with other settings: bring it to the configured ones
                await run(f'ALTER RETENTION POLICY "{rp}" ON "{db}" DURATION {duration}{suffix}',
                          f"retention policy {rp}")
        for name in RETIRED:
            await run(f'DROP CONTINUOUS QUERY "{name}" ON "{db}"')  # gone after the first start
        for name, cq in hourly_queries(db, hourly_every).items():
            await run(f'DROP CONTINUOUS QUERY "{name}" ON "{db}"')  # absent the first time
            await run(cq, f"continuous query {name}")
