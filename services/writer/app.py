"""The writer: readings, alarm events, pipeline health and the on-call audit trail
(``lifeline.oncall``) → InfluxDB. Readings go through a plain consumer group
(services/writer/readings.py: Faust's per-event cost was the writer's bottleneck); the
other, much smaller streams are Faust agents.

Events are taken in batches (``stream.take_events``); Faust acknowledges a batch only when
the agent asks for the next one, i.e. after the sink stored it. While the sink is down the
agent retries the same batch with backoff, Faust stops fetching once its buffer is full,
and Kafka retains the rest: backpressure, never a skip. Points the database refuses are
isolated and only their events dead-lettered (services/writer/batch.py). A record of any
input topic that cannot be read (not JSON, not its contract, a point that cannot be built)
is dead-lettered with its bytes and reason (services.core.dlq.InternalDeadLetters, counted
``rejected`` and ``dead_lettered``) and the rest of its batch is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import faust
from mode.types.signals import BaseSignalT
from tenacity import AsyncRetrying, wait_exponential

from schemas.alarm import AlarmEvent
from schemas.deadletter import Problem, RejectReason, dead_letter
from schemas.oncall import OnCallRecord
from schemas.registry import Registry, load_registry
from services.core import topics
from services.core.dlq import InternalDeadLetters
from services.core.faust_app import add_health_pages, make_app, register_gauges, report_health
from services.core.health import Counters, Health
from services.core.logging import get_logger
from services.core.reload import WatchedFile, file_version
from services.writer.baseline import DiurnalBaseline
from services.writer.batch import Batch, BatchWriter, merge
from services.writer.config import WriterConfig
from services.writer.points import PointBuilder
from services.writer.readings import ReadingsConsumer
from services.writer.sinks import make_sink
from services.writer.storage import StorageSetupError, ensure_layout

log = get_logger("lifeline.writer")

# What reading one record may raise: dead-lettered with its reason, never fatal to an agent.
UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError)


def build(cfg: WriterConfig, registry: Registry,
          registry_version: str | None = None) -> tuple[faust.App, Health]:
    """The writer's Faust app; ``registry_version`` is the digest of the registry file as
    it was when ``registry`` was loaded (services/core/reload.py)."""
    app = make_app("writer", cfg.kafka, web_port=cfg.writer.health_port,
                   web_host=cfg.writer.health_host)
    counters = Counters("processed_events", "processed_alarm_events", "stored_points",
                        "written_batches", "sink_retries", "rejected", "refused_batches",
                        "isolation_writes", "refused_points", "dead_lettered")
    health = Health("writer", counters)
    baseline = DiurnalBaseline(registry, cfg.writer.baseline_warmup_h)
    points = PointBuilder(registry, baseline)
    sink = make_sink(cfg.influx, cfg.writer.timeout_s)

    def raw_topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw")

    alarms, dlq, pipeline, oncall = (raw_topic(t) for t in (
        topics.ALARMS, topics.READINGS_DLQ, topics.HEALTH, topics.ONCALL))

    async def send_dead_letter(raw: bytes, source: str, reason: RejectReason, detail: str,
                               problems: list[Problem] | None = None,
                               facility_id: str | None = None) -> None:
        counters.inc("rejected")
        log.warning("writer.rejected", source=source, reason=str(reason), detail=detail[:300])
        dl = dead_letter(problems=problems or [Problem(reason=reason, detail=detail[:1000])],
                         service="writer", source=source, payload=raw, facility_id=facility_id,
                         received_at=datetime.now(UTC), keep_bytes=65536)
        await dlq.send(value=dl.model_dump_json().encode())

    async def send_dlq(key: bytes | None, value: bytes) -> Any:
        return await dlq.send(key=key, value=value)

    dead = InternalDeadLetters("writer", send_dlq, counters)

    async def unreadable(event: Any, exc: Exception) -> None:
        """A record of an input topic the writer cannot read: dead-lettered, not stored."""
        counters.inc("rejected")
        m = event.message
        await dead.undecodable(event.value, exc, topic=m.topic, partition=m.partition,
                               offset=m.offset, key=m.key)

    async def unreadable_reading(raw: bytes, source: str, reason: RejectReason,
                                 detail: str) -> None:
        counters.inc("rejected")
        await dead.record(raw, reason, detail, topic=topics.READINGS, source=source)

    writer = BatchWriter(sink, counters, health, cfg.writer.retry_max_s, send_dead_letter,
                         cfg.writer.isolate_max_requests)
    n, within = cfg.writer.batch_events, cfg.writer.batch_seconds

    def where(event: Any) -> str:
        m = event.message
        return f"kafka:{m.topic}[{m.partition}]@{m.offset}"

    async def consume(stream: Any, topic: str, to_lines: Callable[[bytes], list[str]],
                      counter: str, long_term: bool = False) -> None:
        source = f"kafka:{topic}"
        # Nothing is written before the retention policies exist (it would land in autogen).
        await storage_ready.wait()
        async for events in stream.take_events(n, within=within):
            batch = Batch()
            for event in events:
                raw = event.value
                try:
                    lines = to_lines(raw)
                except UNREADABLE as exc:  # pydantic's ValidationError is a ValueError too
                    await unreadable(event, exc)
                    continue
                batch.add(raw, where(event), lines)
            await writer.store_or_dead_letter(batch, source, long_term)
            counters.inc(counter, len(events))

    async def store_readings(batch: Batch) -> None:
        await writer.store_or_dead_letter(batch, f"kafka:{topics.READINGS}", readings=True)

    readings = ReadingsConsumer(cfg.kafka, points.readings_raw, store_readings,
                                unreadable_reading, counters, n, within)

    @app.task  # type: ignore[untyped-decorator]  # faust's task decorator is untyped
    async def _readings() -> None:
        # Nothing is written before the retention policies exist (it would land in autogen).
        await storage_ready.wait()
        await readings.supervise(health)  # health problem `kafka` while it fails

    @app.agent(pipeline)
    async def store_pipeline_health(stream: Any) -> None:
        await consume(stream, topics.HEALTH, lambda raw: [points.pipeline(raw)],
                      "processed_health_records")

    @app.agent(alarms)
    async def store_alarms(stream: Any) -> None:
        def alarm_lines(raw: bytes) -> list[str]:
            ev = AlarmEvent.model_validate_json(raw)
            return [points.alarm(ev), points.alarm_state(ev)]

        await consume(stream, topics.ALARMS, alarm_lines, "processed_alarm_events",
                      long_term=True)

    @app.agent(oncall)
    async def store_oncall(stream: Any) -> None:
        source = f"kafka:{topics.ONCALL}"
        await storage_ready.wait()
        async for events in stream.take_events(n, within=within):
            audit = Batch()
            acks = Batch()
            for event in events:
                raw = event.value
                try:
                    rec = OnCallRecord.model_validate_json(raw)
                    line, ack = points.oncall(rec), points.ack_state(rec)
                except UNREADABLE as exc:
                    await unreadable(event, exc)
                    continue
                audit.add(raw, where(event), [line])
                if ack is not None:
                    acks.add(raw, where(event), [ack])
            refused = await writer.store_events(audit, source, True, "ns")
            refused += await writer.store_events(acks, source, True)
            await writer.send_refused(merge(refused))
            counters.inc("processed_oncall_records", len(events))

    @app.on_before_shutdown.connect
    async def _close(_app: Any, /, *_args: Any, signal: BaseSignalT[Any], **_kw: Any) -> None:
        readings.stopping.set()
        await sink.close()

    async def restore_baseline() -> None:
        """Seven days of the database's hourly means rebuild the diurnal profiles."""
        from schemas.storage import Field, Measurement, Tag, qualified
        from services.core.influx import QueryError, query

        q = (f'SELECT mean("{Field.MEAN}") AS "{Field.MEAN}" '  # noqa: S608 — constants
             f'FROM {qualified(Measurement.READING_1H)} WHERE "{Tag.KIND}" = '
             f"'sewage' AND (\"{Tag.METRIC}\" = 'flow' OR \"{Tag.METRIC}\" = 'water_level') "
             f'AND time > now() - 7d GROUP BY time(1h), "{Tag.FACILITY}", "{Tag.SENSOR}" '
             "fill(none)")
        try:
            series = await query(cfg.influx, q, timeout_s=30)
        except QueryError as exc:
            log.warning("writer.baseline_not_restored", error=str(exc)[:300])
            return
        restored = baseline.bootstrap(
            (s["tags"][Tag.FACILITY], s["tags"][Tag.SENSOR], int(t), v)
            for s in series for t, v in s["values"])
        log.info("writer.baseline_restored", sensors=restored)

    # The map's facility points (time 0: rewriting one overwrites it) as stored so far;
    # after a registry reload only the new and changed ones are written.
    stored_facilities: set[str] = set()
    facilities_lock = asyncio.Lock()

    async def store_facilities() -> int:
        async with facilities_lock:
            lines = [line for line in points.facilities() if line not in stored_facilities]
            if lines:
                await writer.store(lines, "registry", long_term=True)
                stored_facilities.update(lines)
            return len(lines)

    async def store_reloaded_facilities() -> None:
        await storage_ready.wait()  # before that, the start-up write takes the new registry
        async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=0.5, max=10)):
            with attempt:
                try:
                    written = await store_facilities()
                except Exception as exc:
                    log.warning("writer.facilities_not_stored", error=repr(exc)[:300])
                    raise
        log.info("writer.facilities_stored", points=written, reason="registry reloaded")

    reloads: set[asyncio.Task[None]] = set()

    def use_registry(new: Registry) -> None:
        # On the event loop, so never halfway through an event: every point built from now
        # on uses it.
        points.registry = new
        baseline.use_registry(new)
        task = asyncio.get_running_loop().create_task(store_reloaded_facilities())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    registry_file = WatchedFile("registry", cfg.common.registry, load_registry, use_registry,
                                health, version=registry_version)

    @app.timer(cfg.common.reload_check_s)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def _reload() -> None:
        await registry_file.check_async()

    storage_ready = asyncio.Event()
    health.problem("storage", "retention policies and continuous query not set up yet")
    if cfg.influx.api != "v1":
        @app.task  # type: ignore[untyped-decorator]  # faust's task decorator is untyped
        async def _facilities() -> None:
            await store_facilities()
            health.ok("storage")
            await restore_baseline()
            storage_ready.set()
    else:
        @app.task  # type: ignore[untyped-decorator]  # faust's task decorator is untyped
        async def _layout() -> None:
            w = cfg.writer
            async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=0.5, max=10)):
                with attempt:
                    try:
                        await ensure_layout(cfg.influx, raw_retention=w.raw_retention,
                                            long_retention=w.long_retention,
                                            cq_every=w.cq_resample_every,
                                            cq_for=w.cq_resample_for,
                                            hourly_every=w.cq_hourly_every)
                    except (OSError, aiohttp.ClientError, StorageSetupError) as exc:
                        health.problem("storage", f"retention/CQ setup pending: {exc}")
                        raise
            health.ok("storage")
            await store_facilities()
            await restore_baseline()
            storage_ready.set()

    register_gauges(app, health, (topics.ALARMS, topics.ONCALL))
    faust_lag = counters._gauges["lag"]
    counters.gauge("lag", lambda: int(faust_lag()) + readings.lag())
    counters.gauge("readings_partitions", readings.assigned)
    report_health(app, health, cfg.common.health_report_s)
    add_health_pages(app, health)
    return app, health


def main() -> None:
    from services.core.faust_app import run_worker

    cfg = WriterConfig()
    version = file_version(cfg.common.registry)  # before loading: a later edit is reloaded
    registry = load_registry(cfg.common.registry)
    app, _ = build(cfg, registry, version)
    run_worker(app, loglevel=cfg.common.log_level, service="writer")
