"""The storage layout on InfluxDB 1.x, set up by the writer at start (idempotent).

The names are schemas/storage.py's; this module creates what they name:

- retention policy ``raw`` (default; ``LIFELINE_INFLUX_RAW_RETENTION``, 30 days): readings;
- retention policy ``long`` (``LIFELINE_INFLUX_LONG_RETENTION``, forever): 1-minute
  aggregates of readings and every alarm event / alarm state;
- ``long.reading_1m`` (mean/min/max per series and minute), ``long.reading_1h`` (per
  series and hour) and ``long.district_1h`` (per district, kind, metric, partition and
  hour; what month-long dashboard ranges read) are the writer's own
  (services/writer/rollup.py); the continuous queries that computed them before are
  dropped.

InfluxDB 2.x has buckets and tasks instead; with ``LIFELINE_INFLUX_API=v2`` this setup is
not run (see docs/decisions/0007-storage-layout.md).
"""

from __future__ import annotations

from schemas.storage import LONG, RAW, Measurement
from services.core.influx import SETUP_TIMEOUT_S, InfluxClient, QueryError, QueryRefused
from services.core.logging import get_logger
from services.core.settings import InfluxSettings
from services.writer.errors import StorageSetupError

log = get_logger("lifeline.writer.storage")

__all__ = ["LONG", "RAW", "RETIRED", "StorageSetupError", "ensure_layout"]


# Continuous queries earlier versions created and the writer now does without: the
# 1-minute tier and both hourly tiers are the writer's (services/writer/rollup.py).
RETIRED = (Measurement.READING_1M, Measurement.READING_1H, Measurement.DISTRICT_1H)


async def ensure_layout(s: InfluxSettings, *, raw_retention: str, long_retention: str
                        ) -> None:
    """Create or update the database and retention policies; drop the continuous queries
    earlier versions made (:data:`RETIRED`).

    Raises :class:`StorageSetupError` for a statement the database refuses or when it
    cannot be reached (the writer retries with backoff)."""
    try:
        await _ensure_layout(s, raw_retention, long_retention)
    except StorageSetupError:
        raise
    except QueryError as exc:
        raise StorageSetupError(str(exc)) from exc
    log.info("storage.layout_ready", database=s.database, raw_retention=raw_retention,
             long_retention=long_retention)


async def _ensure_layout(s: InfluxSettings, raw_retention: str, long_retention: str
                         ) -> None:
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
