"""The threshold state machine: levels, hysteresis, lifecycle, ids, late data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.alarm import AlarmEvent
from schemas.reading import Reading, ReadingBatch
from schemas.registry import Registry
from services.processor.rules import FacilityState, ThresholdEngine

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def run(engine: ThresholdEngine, facility: str, kind: str, sensor: str, metric: str, unit: str,
        values: list[float], state: FacilityState | None = None, start: int = 0
        ) -> tuple[FacilityState | None, list[AlarmEvent]]:
    events: list[AlarmEvent] = []
    for i, v in enumerate(values):
        ts = T0 + timedelta(minutes=start + i)
        b = ReadingBatch(facility_id=facility, kind=kind, seq=i, received_at=ts,
                         readings=[Reading(sensor=sensor, metric=metric, value=v, unit=unit, ts=ts)])
        state, evs = engine.evaluate(b, state)
        events.extend(evs)
    return state, events


def level_path(events: list[AlarmEvent]) -> list[tuple[str, str | None]]:
    return [(e.event.value, e.level.value if e.level else None) for e in events]


def manhole(engine: ThresholdEngine, values: list[float], **kw: object
            ) -> tuple[FacilityState | None, list[AlarmEvent]]:
    return run(engine, "DR-BH-001", "drainage", "DR-BH-001-L1", "water_level", "m", values, **kw)  # type: ignore[arg-type]


def test_no_alarm_below_thresholds(registry: Registry) -> None:
    state, events = manhole(ThresholdEngine(registry), [0.5, 1.0, 1.79])
    assert events == [] and state is None


def test_raise_escalate_deescalate_clear(registry: Registry) -> None:
    # blue 1.8/1.7, yellow 2.25/2.15, orange 2.7/2.6, red 2.95/2.85
    _, events = manhole(ThresholdEngine(registry), [1.8, 2.3, 3.0, 2.5, 1.0])
    assert level_path(events) == [("raised", "blue"), ("escalated", "yellow"),
                                  ("escalated", "red"), ("deescalated", "yellow"),
                                  ("cleared", None)]
    assert len({e.alarm_id for e in events}) == 1
    assert len({e.event_id for e in events}) == 5
    assert events[-1].threshold == 1.7  # the clear point that was passed


def test_hysteresis_holds_level_until_clear_point(registry: Registry) -> None:
    # 1.75 is below blue's raise (1.8) but above its clear point (1.7): still blue.
    _, events = manhole(ThresholdEngine(registry), [1.85, 1.75, 1.72, 1.71, 1.69])
    assert level_path(events) == [("raised", "blue"), ("cleared", None)]


def test_lower_threshold_oxygen(registry: Registry) -> None:
    # o2: yellow <= 19.5 (clear > 19.8), red <= 18.0 (clear > 18.5)
    _, events = run(ThresholdEngine(registry), "SG-BH-001", "sewage", "SG-BH-001-O1", "o2",
                    "%vol", [20.9, 19.4, 17.9, 18.3, 18.6, 19.7, 19.9])
    assert level_path(events) == [("raised", "yellow"), ("escalated", "red"),
                                  ("deescalated", "yellow"), ("cleared", None)]


def test_upper_and_lower_rules_are_separate_alarms(registry: Registry) -> None:
    engine = ThresholdEngine(registry)
    args = ("SQ-BH-001", "sewage", "SQ-BH-001-P1", "ph", "pH")
    _, events = run(engine, *args, [7.0, 9.8, 6.0, 7.0])
    assert [(e.rule, e.event.value) for e in events] == [
        ("threshold-upper", "raised"), ("threshold-upper", "cleared"),
        ("threshold-lower", "raised"), ("threshold-lower", "cleared")]


def test_ids_are_deterministic_on_replay(registry: Registry) -> None:
    a = manhole(ThresholdEngine(registry), [2.0, 3.0, 0.5])[1]
    b = manhole(ThresholdEngine(registry), [2.0, 3.0, 0.5])[1]
    assert [e.event_id for e in a] == [e.event_id for e in b]
    # A new episode gets a new id.
    c = manhole(ThresholdEngine(registry), [2.0, 3.0, 0.5], start=60)[1]
    assert c[0].alarm_id != a[0].alarm_id


def test_state_only_changes_on_transition(registry: Registry) -> None:
    engine = ThresholdEngine(registry)
    state, _ = manhole(engine, [2.0])
    same, events = manhole(engine, [2.05, 2.1], state=state, start=1)
    assert events == [] and same is state


def test_late_reading_does_not_rewind_state(registry: Registry) -> None:
    engine = ThresholdEngine(registry)
    state, _ = manhole(engine, [3.0], start=10)
    state, events = manhole(engine, [0.5], state=state, start=5)  # older than the raise
    assert events == [] and state is not None


def test_sensors_without_thresholds_never_alarm(registry: Registry) -> None:
    _, events = run(ThresholdEngine(registry), "DR-BH-001", "drainage", "DR-BH-001-R1",
                    "rainfall", "mm", [0, 40, 50])
    assert events == []
