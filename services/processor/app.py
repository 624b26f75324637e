"""The processor's Faust wiring: ``lifeline.readings`` (+ ticks) → alarm engine →
``lifeline.alarms``.

State: each facility's working state lives in memory while this worker owns its partition
and is saved to the changelog-backed table ``alarm_state`` (one entry per facility, the
partition key) on every alarm transition and at least every ``checkpoint_interval_s`` of
event time. After a crash the entry is restored and Kafka redelivers everything after the
last committed offset; samples are keyed by event time and alarm ids are deterministic, so
reprocessing neither double-counts a window nor raises an alarm twice. What a crash can
cost is bounded: the window contributions and debounce progress between the last
checkpoint and the last committed offset (at most ``checkpoint_interval_s`` of event time).

Ticks: a timer sends one tick per owned partition to ``lifeline.ticks`` every
``tick_interval_s``; the agent consumes readings and ticks together, so the wall-clock
gateway-offline check runs inside the stream and may write the table.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from mode.types.signals import BaseSignalT
from pydantic import ValidationError

from schemas.codec import READING_BATCH, TICK
from schemas.context import DistrictRain
from schemas.deadletter import DeadLetter, Problem, RejectReason, dead_letter
from schemas.registry import Registry, load_registry
from services.core import topics
from services.core.dlq import InternalDeadLetters
from services.core.faust_app import (
    add_health_pages,
    make_app,
    partition_ticks,
    register_gauges,
    report_health,
)
from services.core.health import Counters, Health
from services.core.logging import get_logger
from services.core.ratelimit import TokenBuckets
from services.core.reload import WatchedFile, file_version
from services.processor.config import ProcessorConfig
from services.processor.context_feed import ContextFeed
from services.processor.engine import AlarmEngine, FacilityState, Outcome
from services.processor.engine.context import RainContext
from services.processor.engine.state import StateVersionError

log = get_logger("lifeline.processor")


@dataclass
class Processor:
    """The wired processor; tests reach the agent, topics, table and engine through it."""

    app: faust.App
    agent: Any
    alarms: Any
    dlq: Any
    ticks: Any
    state: Any
    health: Health
    engine_ref: list[AlarmEngine]
    context_topic: Any = None  # lifeline.context: district rain for the other workers
    cache: dict[str, FacilityState] = field(default_factory=dict)
    owner: dict[str, int] = field(default_factory=dict)  # facility -> partition
    position: dict[int, int] = field(default_factory=dict)  # readings partition -> offset done
    # readings partition -> how far behind the wall clock its stream is being processed
    # (now - received_at of the last report processed), ms
    delay: dict[int, int] = field(default_factory=dict)
    registry_file: WatchedFile[AlarmEngine] | None = None  # reloaded when it changes

    @property
    def engine(self) -> AlarmEngine:
        return self.engine_ref[0]


STATE_WARNING_TTL_S = 3600.0  # how long /health shows "saved state unreadable"


def build(cfg: ProcessorConfig, registry: Registry,
          registry_version: str | None = None) -> Processor:
    """The processor's Faust app; ``registry_version`` is the digest of the registry file
    as it was when ``registry`` was loaded (services/core/reload.py)."""
    app = make_app("processor", cfg.kafka, web_port=cfg.processor.health_port,
                   web_host=cfg.processor.health_host)
    counters = Counters("processed_batches", "processed_readings", "rejected", "late_readings",
                        "state_saves", "checkpoints_deferred", "readings_coalesced",
                        "context_sent", "context_applied", "context_rejected",
                        "state_unreadable")
    # Periodic checkpoints are paced: a wave of them (every facility loaded in the same
    # minute) filled Faust's producer buffer on Tansu and stalled the agent for seconds.
    rate = cfg.processor.checkpoint_rate(cfg.kafka.flavor)
    budget = TokenBuckets(rate, max(1.0, rate))
    health = Health("processor", counters)

    def raw(*names: str) -> Any:
        return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw")

    source = raw(topics.READINGS, topics.TICKS)
    alarms, dlq, ticks = raw(topics.ALARMS), raw(topics.READINGS_DLQ), raw(topics.TICKS)
    context_topic = raw(topics.CONTEXT)
    context = RainContext()
    # Values are the facility state as compact JSON text: one string per facility in the
    # worker's memory instead of a tree of dicts (about 5x smaller for 100,000 sensors).
    table = app.Table("alarm_state", default=None, key_type=str, value_type=str)
    proc = Processor(app, None, alarms, dlq, ticks, table, health,
                     [AlarmEngine(registry, context)], context_topic)

    def facility_state(fid: str, partition: int) -> FacilityState:
        fs = proc.cache.get(fid)
        if fs is None:
            saved = table.get(fid)
            try:
                fs = FacilityState.from_json(json.loads(saved) if saved else None)
            except (StateVersionError, ValueError, KeyError, TypeError, IndexError) as exc:
                # A state this release cannot read (a newer format, damage): start the
                # facility afresh rather than stop the partition; say so loudly.
                counters.inc("state_unreadable")
                # An event to see, not a readiness failure: the facility runs afresh.
                health.warning(f"state:{fid}", f"saved state unreadable, started fresh: {exc}"
                               [:300], ttl_s=STATE_WARNING_TTL_S)
                log.error("processor.state_unreadable", facility_id=fid, error=str(exc)[:300])
                fs = FacilityState()
            proc.cache[fid] = fs
            proc.owner[fid] = partition
        return fs

    async def publish(fid: str, fs: FacilityState, out: Outcome) -> None:
        for district, ts, mm, cfid, sensor in out.context:
            rec = DistrictRain(district=district, ts=datetime.fromtimestamp(ts / 1000, UTC),
                               mm_per_h=round(mm, 3), facility_id=cfid, sensor=sensor)
            await proc.context_topic.send(key=district.encode(),
                                          value=rec.model_dump_json().encode())
            counters.inc("context_sent")
        if out.coalesced:
            counters.inc("readings_coalesced", out.coalesced)
        for ev in out.events:
            await alarms.send(key=fid.encode(), value=ev.model_dump_json().encode())
            counters.inc(f"alarm_events.{ev.event}")
            log.info(f"alarm.{ev.event.value}", facility_id=fid, sensor=ev.sensor, rule=ev.rule,
                     level=ev.level, category=ev.category, alarm_id=ev.alarm_id,
                     silenced=ev.silenced, suppressed_by=ev.suppressed_by,
                     held_by_fault=ev.held_by_fault, entry=ev.entry is not None,
                     event_time=ev.ts.isoformat())
        if out.save or (out.checkpoint and budget.allow("checkpoints", time.monotonic())):
            fs.mark_saved()
            table[fid] = json.dumps(fs.to_json(), separators=(",", ":"))
            counters.inc("state_saves")
        elif out.checkpoint:
            counters.inc("checkpoints_deferred")

    def behind(partition: int) -> bool:
        consumer = getattr(app, "_consumer", None)
        if consumer is None:
            return True
        from faust.types import TP

        high = consumer.highwater(TP(topics.READINGS, partition))
        done = proc.position.get(partition)
        if high is None:
            return False
        return (int(high) - 1 - (done if done is not None else -1)) > cfg.processor.max_lag_for_ticks

    async def reject(key: bytes | None, raw_value: bytes, src: str,
                     problems: list[Problem]) -> None:
        counters.inc("rejected")
        log.warning("processor.rejected", source=src, reason=str(problems[0].reason),
                    detail=problems[0].detail, facility_id=key.decode(errors="replace") if key
                    else None)
        dl: DeadLetter = dead_letter(problems=problems, service="processor", source=src,
                                     payload=raw_value, received_at=datetime.now(UTC),
                                     keep_bytes=65536,
                                     facility_id=key.decode(errors="replace") if key else None)
        await dlq.send(key=key, value=dl.model_dump_json().encode())

    @app.agent(source)
    async def evaluate(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            value: bytes = event.value
            if msg.topic == topics.TICKS:
                tick = parse_tick(value, time.time())
                if tick is None:
                    # Anyone who can write the topic must not be able to declare every
                    # gateway offline (a far-future tick) or kill the agent (not a number).
                    await reject(msg.key, value, f"kafka:{msg.topic}[{msg.partition}]@"
                                 f"{msg.offset}", [Problem(
                                     reason=RejectReason.UNDECODABLE_EVENT,
                                     detail=f"not a tick within {TICK_SKEW_S:g}s of this "
                                            f"worker's clock: {value[:40]!r}")])
                    continue
                if behind(msg.partition):
                    # Catching up after downtime: the readings waiting in Kafka would show
                    # every gateway as silent. Judge silence only once caught up.
                    counters.inc("ticks_skipped_behind")
                    continue
                # Silence is judged on the partition's own clock: a gateway is offline when
                # it is silent compared with the reports being processed now, so a worker
                # running behind (overload, catching up) does not declare everyone offline.
                now_ms = tick - proc.delay.get(msg.partition, 0)
                engine = proc.engine
                for fid, part in list(proc.owner.items()):
                    if part == msg.partition:
                        fs = proc.cache[fid]
                        await publish(fid, fs, engine.tick(fid, fs, now_ms))
                continue
            src = f"kafka:{msg.topic}[{msg.partition}]@{msg.offset}"
            try:
                batch = READING_BATCH.decode(value)
            except ValidationError as exc:
                await reject(msg.key, value, src, [Problem(
                    reason=RejectReason.UNDECODABLE_EVENT,
                    detail=f"not a ReadingBatch: {exc.errors()[0]['msg']}"[:300])])
                continue
            proc.position[msg.partition] = msg.offset
            proc.delay[msg.partition] = max(0, int(time.time() * 1000)
                                            - int(batch.received_at.timestamp() * 1000))
            fid = batch.facility_id
            fs = facility_state(fid, msg.partition)
            t0 = time.perf_counter()
            out = proc.engine.evaluate(batch, fs)
            counters.inc("engine_us", int((time.perf_counter() - t0) * 1e6))
            await publish(fid, fs, out)
            if out.late:
                counters.inc("late_readings", len(out.late))
                await reject(msg.key, value, src, out.late)
            counters.inc("processed_batches")
            counters.inc("processed_readings", len(batch.readings))

    proc.agent = evaluate

    @app.on_partitions_revoked.connect
    async def _revoked(_app: Any, /, *args: Any, signal: BaseSignalT[Any], **_kw: Any) -> None:
        revoked: set[Any] = args[0] if args else set()
        gone = {tp.partition for tp in revoked if tp.topic == topics.READINGS}
        for fid in [f for f, p in proc.owner.items() if p in gone]:
            proc.owner.pop(fid, None)
            proc.cache.pop(fid, None)  # another worker now owns it; reload from the table later

    partition_ticks(app, ticks, topics.READINGS, cfg.processor.tick_interval_s)

    def engine_for(path: Path) -> AlarmEngine:
        # Loaded and compiled in the watcher's thread: a large registry takes seconds.
        return AlarmEngine(load_registry(path), context)

    def use_engine(engine: AlarmEngine) -> None:
        # Facility states are kept; alarms of rules the new registry removed are cleared
        # by the engine ("rule removed") on the facility's next report.
        proc.engine_ref[0] = engine
        log.info("processor.registry_in_use", facilities=len(engine.registry.facilities),
                 sensors=engine.registry.sensor_count)

    proc.registry_file = WatchedFile("registry", cfg.common.registry, engine_for, use_engine,
                                     health, version=registry_version)

    @app.timer(cfg.common.reload_check_s)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def _reload() -> None:
        assert proc.registry_file is not None
        await proc.registry_file.check_async()

    async def send_dlq(key: bytes | None, value: bytes) -> Any:
        return await dlq.send(key=key, value=value)

    feed = ContextFeed(cfg.kafka, context, counters,
                       InternalDeadLetters("processor", send_dlq, counters))

    @app.task  # type: ignore[untyped-decorator]  # faust's task decorator is untyped
    async def _context_feed() -> None:
        await feed.run()

    register_gauges(app, health, (topics.READINGS,))
    report_health(app, health, cfg.common.health_report_s)
    counters.gauge("facilities_in_memory", lambda: len(proc.cache))
    add_health_pages(app, health)
    return proc


TICK_SKEW_S = 300.0


def parse_tick(value: bytes, now_s: float) -> int | None:
    """A tick's wall clock (epoch ms), or None when it is not a plain integer close to this
    worker's own clock."""
    tick = TICK.decode(value)  # 1-16 ASCII digits
    if tick is None:
        return None
    return tick if abs(tick / 1000 - now_s) <= TICK_SKEW_S else None


def main() -> None:
    from services.core.faust_app import run_worker

    cfg = ProcessorConfig()
    version = file_version(cfg.common.registry)  # before loading: a later edit is reloaded
    registry = load_registry(cfg.common.registry)
    app = build(cfg, registry, version).app
    release_free_memory()
    run_worker(app, loglevel=cfg.common.log_level, service="processor")


def release_free_memory() -> None:
    """Return the memory freed after parsing a large registry to the OS (glibc)."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
