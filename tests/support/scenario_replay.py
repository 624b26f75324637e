"""A scenario straight through ingest's validator and the alarm engine, in process:
the same code as the pipeline without MQTT and Kafka (seconds, not minutes). Used to
calibrate the shipped scenarios and in unit tests; the integration test runs them through
the real pipeline.

Like the integration test, a scenario starts at its own local time of day
(``start_local``, in the registry's time zone): the first such instant at or after the
``t0`` given — maintenance windows and daily cycles depend on it. The processor's
wall-clock tick (the gateway-offline deadman) runs every 5 simulated seconds, on the
simulated clock."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from schemas.alarm import AlarmEvent
from schemas.oncall import load_oncall
from schemas.registry import Registry
from schemas.scenario import Scenario
from services.ingest.validate import Validator
from services.processor.engine import AlarmEngine, FacilityState, Outcome
from services.processor.engine.districts import DistrictBook
from simulators.scenario import ScenarioRun, next_start
from simulators.scoring import Score, add_paging, score
from tests.support.paths import EXAMPLE_ONCALL

TICK_S = 5.0  # the processor's wall-clock ticks


def replay(registry: Registry, scenario: Scenario, t0: float = 1_780_000_000.0, *,
           at_start_local: bool = True) -> tuple[ScenarioRun, list[AlarmEvent], Score]:
    """Run ``scenario`` from ``t0`` (moved to the scenario's ``start_local`` unless
    ``at_start_local`` is false) and score the alarm events the engine produced."""
    if at_start_local:
        t0 = next_start(t0, scenario.start_local, ZoneInfo(registry.timezone))
    engine = AlarmEngine(registry)
    book = DistrictBook(registry)  # the district desk's evaluation, on the members in order
    validator = Validator(registry, max_payload_bytes=65536, max_future_s=300,
                          max_past_s=7 * 86400)
    states: dict[str, FacilityState] = {}
    run = ScenarioRun(registry, scenario, t0=t0)
    events: list[AlarmEvent] = []
    last_tick = -1.0
    for t, topic, payload in run.reports():
        now = datetime.fromtimestamp(t0 + t, UTC)
        if t - last_tick >= TICK_S:
            for fid, fs in states.items():
                events += _with_districts(book, engine.tick(fid, fs, int((t0 + t) * 1000)))
            last_tick = t
        out = validator.validate(topic, payload, now)
        if out.batch is None:
            continue
        fs = states.setdefault(out.batch.facility_id, FacilityState())
        events += _with_districts(book, engine.evaluate(out.batch, fs))
    districts = {f.id: f.district for f in registry.facilities}
    s = score(scenario, t0, run.sensor_count, events, districts,
              {g.facility.id for g in run.gateways}, risk=run.risk)
    if scenario.expect_paging is not None:  # the shipped on-call file, as `lifeline score`
        add_paging(s, scenario, t0, events, registry, load_oncall(EXAMPLE_ONCALL))
    return run, events, s


def _with_districts(book: DistrictBook, out: Outcome) -> list[AlarmEvent]:
    """An outcome's alarm events and the district alarm events its members cause, from the
    records the processor publishes."""
    from schemas.context import MemberAlarm
    from services.processor.handlers import context_records

    events = list(out.events)
    for _district, rec in context_records(out):
        if isinstance(rec, MemberAlarm):
            events += book.apply(rec)
    return events
