"""The writer: readings, alarm events, pipeline health and the on-call audit trail
(``lifeline.oncall``) → InfluxDB. Readings go through a plain consumer group
(services/writer/readings.py: Faust's per-event cost was the writer's bottleneck); the
other, much smaller streams are Faust agents. What one record and one batch do is
services/writer/handlers.py's; this module wires them (:class:`Writer`) and runs them
(:func:`main`).

Events are taken in batches (``stream.take_events``); Faust acknowledges a batch only when
the agent asks for the next one, i.e. after the sink stored it. While the sink is down the
agent retries the same batch with backoff, Faust stops fetching once its buffer is full,
and Kafka retains the rest: backpressure, never a skip. Nothing is written before the
storage layout (retention policies, continuous queries) exists: it would land in
``autogen``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import faust
from mode.types.signals import BaseSignalT
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential

from schemas.registry import Registry, load_registry
from services.core import topics
from services.core.crash import armed
from services.core.faust import add_health_pages, make_app, register_gauges, report_health
from services.core.health import Counters, Health
from services.core.latency import Budget
from services.core.logging import get_logger
from services.core.reload import WatchedFile, file_version
from services.writer.baseline import DiurnalBaseline
from services.writer.config import WriterConfig
from services.writer.errors import StorageSetupError
from services.writer.handlers import Handlers, Record
from services.writer.points import PointBuilder
from services.writer.readings import ReadingsConsumer
from services.writer.rollup import (
    HourRollup,
    MinuteRollup,
    Recompute,
    recompute_lines,
    recompute_query,
)
from services.writer.sinks import make_sink
from services.writer.storage import ensure_layout

log = get_logger("lifeline.writer")

# The writer's Faust topics (alarm events, on-call records, pipeline health) feed the
# dashboards, not the alarm path: a longer fetch wait on Tansu costs the broker fewer empty
# fetches (issue 16; the readings consumer waits 250 ms, services/writer/readings.py).
FAUST_FETCH_WAIT_MS = 500

COUNTERS = ("processed_events", "processed_reports", "processed_alarm_events", "stored_points",
            "written_batches", "sink_retries", "rejected", "refused_batches", "isolation_writes",
            "refused_points", "dead_lettered", "rollup_points",
            "rollup_refused", "rollup_hours_recomputed",
            "rollup_recompute_failed")  # at zero from the start


def record(event: Any) -> Record:
    """A Faust event as the handlers' :class:`Record`."""
    m = event.message
    return Record(event.value, m.topic, m.partition, m.offset, m.key)


class Writer:
    """The writer's Faust app (``.app``: the alarm, on-call and health agents, the readings
    consumer as a task, the registry reload timer, the start-up) and its ``.health``.
    ``registry_version`` is the digest of the registry file as it was when ``registry`` was
    loaded (services/core/reload.py)."""

    def __init__(self, cfg: WriterConfig, registry: Registry,
                 registry_version: str | None = None) -> None:
        self.cfg = cfg
        w = cfg.writer
        self.app: faust.App = make_app("writer", cfg.kafka, web_port=w.health_port,
                                       web_host=w.health_host,
                                       tansu_fetch_wait_ms=FAUST_FETCH_WAIT_MS)
        self.counters = Counters(*COUNTERS)
        self.health = Health("writer", self.counters)
        self.baseline = DiurnalBaseline(registry, w.baseline_warmup_h)
        self.points = PointBuilder(registry, self.baseline)
        self.sink = make_sink(cfg.influx, w.timeout_s)
        self.dlq = self._raw_topic(topics.READINGS_DLQ)
        self.handlers = Handlers(self.points, self.sink, self.counters, self.health, w,
                                 self._send_dlq)
        h = self.handlers
        # The 1-minute tier, from the readings as they are stored (InfluxDB 1.x; on 2.x a
        # task computes it: deploy/influxdb/setup.sh).
        # On Tansu commits keep no metadata (services/writer/rollup.py).
        self.rollup = MinuteRollup(w.rollup_lateness_s, metadata_kept=cfg.kafka.flavor != "tansu",
                                   hours=HourRollup(w.rollup_hour_refresh_min)
                                   ) if cfg.influx.api == "v1" else None
        self.readings = ReadingsConsumer(cfg.kafka, h.reading_lines, h.store_readings,
                                         h.unreadable_reading, self.counters, w.batch_events,
                                         w.batch_seconds, self.rollup, h.store_rollup,
                                         self.recompute_hours)
        self.readings.budget = Budget(self.counters)  # latency.writer.* on /counters
        self.registry_file = WatchedFile("registry", cfg.common.registry, load_registry,
                                         self.use_registry, self.health,
                                         version=registry_version)
        self.storage_ready = asyncio.Event()  # set by start(): the layout exists
        self.health.problem("storage", "retention policies and continuous query not set up yet")
        self._reloads: set[asyncio.Task[None]] = set()
        self._register()
        register_gauges(self.app, self.health, (topics.ALARMS, topics.ONCALL),
                        extra_lag=self.readings.lag)
        self.counters.gauge("readings_partitions", self.readings.assigned)
        rollup = self.rollup
        if rollup is not None:
            self.counters.gauge("rollup_open_minutes", rollup.open_minutes)
            self.counters.gauge("rollup_late_readings", lambda: rollup.late)
            hours = rollup.hours
            if hours is not None:
                self.counters.gauge("rollup_open_hours", hours.open_hours)
        report_health(self.app, self.health, cfg.common.health_report_s)
        add_health_pages(self.app, self.health)

    def _raw_topic(self, name: str) -> Any:
        return self.app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw")

    async def _send_dlq(self, key: bytes | None, value: bytes) -> Any:
        return await self.dlq.send(key=key, value=value)

    def _register(self) -> None:
        """The agents, tasks and timer on ``self.app``."""
        app, h, w = self.app, self.handlers, self.cfg.writer
        n, within = w.batch_events, w.batch_seconds
        storage_ready = self.storage_ready  # every agent waits for it before its first batch

        @app.agent(self._raw_topic(topics.HEALTH))
        async def store_pipeline_health(stream: Any) -> None:
            await storage_ready.wait()
            async for events in stream.take_events(n, within=within):
                await h.store([record(e) for e in events], topics.HEALTH, h.health_lines,
                              "processed_health_records")

        @app.agent(self._raw_topic(topics.ALARMS))
        async def store_alarms(stream: Any) -> None:
            await storage_ready.wait()
            async for events in stream.take_events(n, within=within):
                await h.store([record(e) for e in events], topics.ALARMS, h.alarm_lines,
                              "processed_alarm_events", long_term=True)

        @app.agent(self._raw_topic(topics.ONCALL))
        async def store_oncall(stream: Any) -> None:
            await storage_ready.wait()
            async for events in stream.take_events(n, within=within):
                await h.store_oncall([record(e) for e in events])

        @app.task  # type: ignore[untyped-decorator]  # faust's task decorator is untyped
        async def _readings() -> None:
            await storage_ready.wait()
            await self.readings.supervise(self.health)  # health problem `kafka` while it fails

        @app.task  # type: ignore[untyped-decorator]  # faust's task decorator is untyped
        async def _start() -> None:
            await self.start()

        @app.timer(self.cfg.common.reload_check_s)  # type: ignore[untyped-decorator]  # untyped
        async def _reload() -> None:
            await self.registry_file.check_async()

        @app.on_before_shutdown.connect
        async def _close(_app: Any, /, *_args: Any, signal: BaseSignalT[Any], **_kw: Any) -> None:
            await self.stop()

    async def start(self) -> None:
        """The storage layout (InfluxDB 1.x; retried until it is in place), the registry's
        facility points and the diurnal baselines; then the agents and the readings
        consumer may write."""
        if self.cfg.influx.api != "v1":
            await self.handlers.store_facilities()
            self.health.ok("storage")
        else:
            await self._ensure_layout()
            self.health.ok("storage")
            await self.handlers.store_facilities()
        await self.restore_baseline()
        self.storage_ready.set()

    async def stop(self) -> None:
        self.readings.stopping.set()
        await self.sink.close()

    async def _ensure_layout(self) -> None:
        w = self.cfg.writer
        async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=0.5, max=10)):
            with attempt:
                try:
                    await ensure_layout(self.cfg.influx, raw_retention=w.raw_retention,
                                        long_retention=w.long_retention)
                except (OSError, aiohttp.ClientError, StorageSetupError) as exc:
                    self.health.problem("storage", f"retention/CQ setup pending: {exc}")
                    raise

    async def recompute_hours(self, hours: list[Recompute], partitions: int) -> None:
        """Hours of partitions this writer took over mid-hour (services/writer/rollup.py):
        their ``reading_1h`` and ``district_1h`` points from the stored minutes, written
        over what the previous owner wrote of the hour. A database that does not answer
        after a few tries leaves the hour as the previous owner last wrote it (logged,
        ``rollup_recompute_failed``): the readings and minutes are stored either way."""
        from datetime import UTC, datetime

        from services.core.influx import QueryError, query

        for r in hours:
            part = getattr(r.part, "partition", None)
            hour = datetime.fromtimestamp(r.hour / 1000, UTC).isoformat()
            try:
                async for attempt in AsyncRetrying(stop=stop_after_attempt(5), reraise=True,
                                                   wait=wait_exponential(multiplier=0.5, max=10)):
                    with attempt:
                        series = await query(self.cfg.influx, recompute_query(r.hour),
                                             timeout_s=60)
            except QueryError as exc:
                self.counters.inc("rollup_recompute_failed")
                log.error("writer.hour_not_recomputed", partition=part, hour=hour,
                          error=str(exc)[:300])
                continue
            lines = recompute_lines(series, r, partitions)
            await self.handlers.store_rollup(lines)
            self.counters.inc("rollup_hours_recomputed")
            log.info("writer.hour_recomputed", partition=part, hour=hour, points=len(lines))

    async def restore_baseline(self) -> None:
        """Seven days of the database's hourly means rebuild the diurnal profiles."""
        from schemas.storage import Field, Measurement, Tag, qualified
        from services.core.influx import QueryError, query

        q = (f'SELECT mean("{Field.MEAN}") AS "{Field.MEAN}" '  # noqa: S608 — constants
             f'FROM {qualified(Measurement.READING_1H)} WHERE "{Tag.KIND}" = '
             f"'sewage' AND (\"{Tag.METRIC}\" = 'flow' OR \"{Tag.METRIC}\" = 'water_level') "
             f'AND time > now() - 7d GROUP BY time(1h), "{Tag.FACILITY}", "{Tag.SENSOR}" '
             "fill(none)")
        try:
            series = await query(self.cfg.influx, q, timeout_s=30)
        except QueryError as exc:
            log.warning("writer.baseline_not_restored", error=str(exc)[:300])
            return
        restored = self.baseline.bootstrap(
            (s["tags"][Tag.FACILITY], s["tags"][Tag.SENSOR], int(t), v)
            for s in series for t, v in s["values"])
        log.info("writer.baseline_restored", sensors=restored)

    def use_registry(self, new: Registry) -> None:
        """A reloaded registry. On the event loop, so never halfway through an event: every
        point built from now on uses it; its new and changed facility points are written."""
        self.points.registry = new
        self.baseline.use_registry(new)
        task = asyncio.get_running_loop().create_task(self._store_reloaded_facilities())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _store_reloaded_facilities(self) -> None:
        await self.storage_ready.wait()  # before that, the start-up write takes the new registry
        async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=0.5, max=10)):
            with attempt:
                try:
                    written = await self.handlers.store_facilities()
                except Exception as exc:
                    log.warning("writer.facilities_not_stored", error=repr(exc)[:300])
                    raise
        log.info("writer.facilities_stored", points=written, reason="registry reloaded")


def main() -> None:
    from services.core.faust import run_worker

    cfg = WriterConfig()
    version = file_version(cfg.common.registry)  # before loading: a later edit is reloaded
    registry = load_registry(cfg.common.registry)
    writer = Writer(cfg, registry, version)
    crash = armed()
    if crash is not None:
        log.warning("writer.crash_point_armed", point=crash[0], count=crash[1])
    run_worker(writer.app, loglevel=cfg.common.log_level, service="writer")
