"""A scenario straight through ingest's validator and the alarm engine, in process:
the same code as the pipeline without MQTT and Kafka (seconds, not minutes). Used to
calibrate the shipped scenarios and in unit tests; the integration test runs them through
the real pipeline."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.alarm import AlarmEvent
from schemas.registry import Registry
from schemas.scenario import Scenario
from services.ingest.validate import Validator
from services.processor.engine import AlarmEngine, FacilityState
from simulators.scenario import ScenarioRun
from simulators.scoring import Score, score


def replay(registry: Registry, scenario: Scenario, t0: float = 1_780_000_000.0
           ) -> tuple[ScenarioRun, list[AlarmEvent], Score]:
    engine = AlarmEngine(registry)
    validator = Validator(registry, max_payload_bytes=65536, max_future_s=300,
                          max_past_s=7 * 86400)
    states: dict[str, FacilityState] = {}
    run = ScenarioRun(registry, scenario, t0=t0)
    events: list[AlarmEvent] = []
    last_tick = -1.0
    for t, topic, payload in run.reports():
        now = datetime.fromtimestamp(t0 + t, UTC)
        if t - last_tick >= 5:  # the processor's wall-clock ticks (every 5 s)
            for fid, fs in states.items():
                events += engine.tick(fid, fs, int((t0 + t) * 1000)).events
            last_tick = t
        out = validator.validate(topic, payload, now)
        if out.batch is None:
            continue
        fs = states.setdefault(out.batch.facility_id, FacilityState())
        events += engine.evaluate(out.batch, fs).events
    districts = {f.id: f.district for f in registry.facilities}
    return run, events, score(scenario, t0, run.sensor_count, events, districts,
                              {g.facility.id for g in run.gateways})
