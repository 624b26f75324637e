"""The processor's Faust wiring: ``lifeline.readings`` → rules → ``lifeline.alarms``.

Rule state lives in the changelog-backed table ``alarm_state`` (one entry per facility,
the partition key), written only when an alarm changes. Alarm events are sent before the
table write and before the offset commit; after a crash the batch is evaluated again and,
because ids are deterministic, any event sent twice carries the same ``event_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust
from pydantic import ValidationError

from schemas.deadletter import Problem, RejectReason, dead_letter
from schemas.reading import ReadingBatch
from schemas.registry import Registry
from services.core import topics
from services.core.faust_app import add_health_pages, make_app, register_gauges
from services.core.health import Counters, Health
from services.core.logging import get_logger
from services.processor.config import ProcessorConfig
from services.processor.rules import ThresholdEngine

log = get_logger("lifeline.processor")


@dataclass
class Processor:
    """The wired processor; tests reach the agent, topics and table through it."""

    app: faust.App
    agent: Any
    alarms: Any
    dlq: Any
    state: Any
    health: Health


def build(cfg: ProcessorConfig, registry: Registry) -> Processor:
    app = make_app("processor", cfg.kafka, web_port=cfg.processor.health_port,
                   web_host=cfg.processor.health_host)
    counters = Counters()
    health = Health("processor", counters)
    engine = ThresholdEngine(registry)

    readings = app.topic(topics.READINGS, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")
    alarms = app.topic(topics.ALARMS, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    dlq = app.topic(topics.READINGS_DLQ, key_type=bytes, value_type=bytes,
                    key_serializer="raw", value_serializer="raw")
    state = app.Table("alarm_state", default=None, key_type=str, value_type=None)

    @app.agent(readings)
    async def evaluate(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            raw: bytes = event.value
            try:
                batch = ReadingBatch.model_validate_json(raw)
            except ValidationError as exc:
                counters.inc("rejected")
                source = f"kafka:{msg.topic}[{msg.partition}]@{msg.offset}"
                detail = f"not a ReadingBatch: {exc.errors()[0]['msg']}"[:300]
                log.warning("processor.rejected", source=source, detail=detail)
                dl = dead_letter(problems=[Problem(reason=RejectReason.UNDECODABLE_EVENT,
                                                   detail=detail)],
                                 service="processor", source=source, payload=raw,
                                 received_at=datetime.now(UTC), keep_bytes=65536)
                await dlq.send(key=msg.key, value=dl.model_dump_json().encode())
                continue
            fid = batch.facility_id
            before = state.get(fid)
            after, events = engine.evaluate(batch, before)
            for ev in events:
                await alarms.send(key=fid.encode(), value=ev.model_dump_json().encode())
                counters.inc(f"alarm_events.{ev.event}")
                log.info("alarm." + ev.event.value, facility_id=fid, sensor=ev.sensor,
                         level=ev.level, value=ev.value, alarm_id=ev.alarm_id,
                         event_time=ev.ts.isoformat())
            if after is not before:
                if after is None:
                    state.pop(fid, None)
                else:
                    state[fid] = after
            counters.inc("processed_batches")
            counters.inc("processed_readings", len(batch.readings))

    register_gauges(app, health)
    counters.gauge("active_alarm_facilities", lambda: len(state))
    add_health_pages(app, health)
    return Processor(app, evaluate, alarms, dlq, state, health)


def main() -> None:
    from schemas.registry import load_registry
    from services.core.faust_app import run_worker

    cfg = ProcessorConfig()
    registry = load_registry(cfg.common.registry)
    run_worker(build(cfg, registry).app, loglevel=cfg.common.log_level, service="processor")
