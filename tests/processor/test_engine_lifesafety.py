"""Life-safety semantics of the alarm engine: scoped maintenance windows and confined-space
entry, critical facilities that go dark, fail-dangerous sensor faults, re-told alarms,
a rate that one spike cannot trip, bounded state and versioned checkpoints."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.alarm import AlarmCategory, AlarmEventType
from schemas.reading import Reading, ReadingBatch
from schemas.registry import Registry, load_registry
from services.processor.engine import AlarmEngine, FacilityState
from services.processor.engine.state import StateVersionError
from services.processor.handlers import parse_tick
from tests.support.engine_helpers import T0, Feeder, by_rule, lv, make_registry, path, sensor
from tests.support.paths import EXAMPLE_REGISTRY

LEVELS = [lv("blue", 1.5, 1.4), lv("yellow", 2.0, 1.9), lv("orange", 2.5, 2.4),
          lv("red", 2.9, 2.8)]
# T0 is 08:00 local (Asia/Shanghai): a window 07:00-10:00 is open for the first two hours.
MORNING = {"daily_from": "07:00", "daily_to": "10:00"}


def gas_registry(*windows: dict[str, Any]) -> Registry:
    return make_registry(
        sensor("H", "h2s", {"levels": [lv("yellow", 10, 8), lv("orange", 20, 17),
                                       lv("red", 50, 45)]}, rng=(0, 200)),
        sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7), stuck_after_s=300),
        kind="sewage", maintenance=list(windows))


# ------------------------------------------------------------------ maintenance scope
def test_a_default_window_never_silences_gas_or_red() -> None:
    f = Feeder(gas_registry({"reason": "pump overhaul", **MORNING}))
    f.report(0, ("H", 60.0), ("L", 2.2))
    [gas] = [e for e in f.events if e.sensor == "H"]
    [level] = [e for e in f.events if e.sensor == "L"]
    assert gas.level is not None and gas.level.value == "red" and not gas.silenced
    assert level.level is not None and level.level.value == "yellow" and level.silenced
    f.report(60, ("H", 60.0), ("L", 3.0))  # the level goes red: red is paged
    red = [e for e in f.events if e.sensor == "L"][-1]
    assert red.event is AlarmEventType.ESCALATED and not red.silenced


def test_a_window_silences_only_what_it_names_and_check_warns() -> None:
    named = {"reason": "gas sensor calibration", **MORNING, "metrics": ["h2s"],
             "silence_up_to": "red"}
    reg = gas_registry(named)
    f = Feeder(reg)
    f.report(0, ("H", 60.0), ("L", 2.2))
    gas = next(e for e in f.events if e.sensor == "H")
    level = next(e for e in f.events if e.sensor == "L")
    assert gas.silenced and not level.silenced  # water_level is not named
    [warning] = reg.warnings()
    assert "h2s" in warning and "red" in warning


def test_night_works_silence_blue_sensor_faults_but_not_facility_alarms() -> None:
    works = {"reason": "night works", **MORNING, "categories": ["sensor", "gateway"],
             "silence_up_to": "yellow"}
    f = Feeder(gas_registry(works))
    f.series("L", [1.0] * 6)  # stuck after 5 min: a blue sensor fault
    [stuck] = by_rule(f.events, "sensor-stuck")
    assert stuck.category is AlarmCategory.SENSOR and stuck.silenced
    f.report(400, ("L", 2.2))
    level = [e for e in f.events if e.rule == "value-upper" and e.sensor == "L"][-1]
    assert level.level is not None and not level.silenced


def test_confined_space_entry_pages_instead_of_silencing_gas() -> None:
    entry = {"reason": "dredging", **MORNING, "categories": ["facility", "sensor"],
             "metrics": ["water_level"], "entry": True, "crew_leader": "Li Qiang",
             "crew_phone": "13800000031"}
    f = Feeder(gas_registry(entry))
    f.report(0, ("H", 25.0), ("L", 2.2))
    gas = next(e for e in f.events if e.sensor == "H")
    level = next(e for e in f.events if e.sensor == "L")
    assert not gas.silenced and gas.entry is not None
    assert gas.entry.crew_leader == "Li Qiang" and gas.entry.crew_phone == "13800000031"
    assert level.silenced and level.entry is None
    # Outside the window (after 10:00 local) the same gas alarm carries no entry.
    g = Feeder(gas_registry(entry))
    g.report(3 * 3600, ("H", 25.0))
    assert g.events[0].entry is None


def test_entry_windows_are_validated() -> None:
    base = {"reason": "dredging", **MORNING, "entry": True}
    with pytest.raises(ValidationError, match="crew_leader"):
        gas_registry(base)
    with pytest.raises(ValidationError, match="cannot silence the gases"):
        gas_registry({**base, "crew_leader": "x", "crew_phone": "13800000031",
                      "metrics": ["h2s"]})


def test_an_alarm_silenced_by_a_window_is_told_again_when_the_window_ends() -> None:
    f = Feeder(gas_registry({"reason": "pump overhaul", **MORNING}))
    f.report(0, ("L", 2.2))
    assert f.events[0].silenced
    # 10:00 local is T0 + 2 h: the next report after it re-tells the still-active alarm.
    events = f.report(2 * 3600 + 60, ("L", 2.2))
    [upd] = [e for e in events if e.event is AlarmEventType.UPDATED]
    assert not upd.silenced and upd.alarm_id == f.events[0].alarm_id
    assert upd.level is not None and upd.level.value == "yellow"
    assert f.report(2 * 3600 + 120, ("L", 2.2)) == []  # once


# ------------------------------------------------------------------ critical facility dark
def district(critical: bool = True) -> Registry:
    pump = {"id": "P-1", "kind": "drainage", "name": "pump station", "district": "d",
            "lat": 27.9, "lon": 120.8, "criticality": "critical" if critical else "normal",
            "sensors": [sensor("W", "water_level", {"levels": [lv("yellow", 4.0, 3.8),
                                                               lv("orange", 5.0, 4.8)]},
                               rng=(0, 10), interval=30)]}
    gauge = {"id": "G-1", "kind": "drainage", "name": "manhole", "district": "d", "lat": 27.9,
             "lon": 120.8, "sensors": [sensor("R", "rainfall", rng=(0, 50), interval=300)]}
    return Registry.model_validate({"name": "t", "facilities": [pump, gauge]})


def batch(fid: str, kind: str, t_s: float, seq: int, *values: tuple[str, str, str, float]
          ) -> ReadingBatch:
    ts = T0 + timedelta(seconds=t_s)
    return ReadingBatch(facility_id=fid, kind=kind, seq=seq, received_at=ts, readings=[
        Reading(sensor=s, metric=m, unit=u, value=v, ts=ts) for s, m, u, v in values])


def ms(t_s: float) -> int:
    return int((T0 + timedelta(seconds=t_s)).timestamp() * 1000)


def test_a_critical_facility_dark_during_rain_is_a_facility_alarm() -> None:
    eng = AlarmEngine(district())
    pump, gauge = FacilityState(), FacilityState()
    out = eng.evaluate(batch("G-1", "drainage", 0, 1, ("R", "rainfall", "mm", 12.0)), gauge)
    assert out.context and out.context[0][0] == "d"  # published for the other workers
    eng.evaluate(batch("P-1", "drainage", 0, 1, ("W", "water_level", "m", 2.0)), pump)
    events = eng.tick("P-1", pump, ms(100)).events  # silent > 3 × 30 s
    kinds = {(e.rule, e.category, e.level.value if e.level else None) for e in events}
    assert ("gateway-offline", AlarmCategory.GATEWAY, "yellow") in kinds
    [dark] = [e for e in events if e.rule == "facility-dark"]
    assert dark.category is AlarmCategory.FACILITY and dark.level is not None
    assert dark.level.value == "orange" and dark.suppressed_by is None
    assert eng.tick("P-1", pump, ms(130)).events == []  # raised once
    back = eng.evaluate(batch("P-1", "drainage", 200, 2, ("W", "water_level", "m", 2.0)), pump)
    assert {(e.rule, e.event.value) for e in back.events} >= {
        ("gateway-offline", "cleared"), ("facility-dark", "cleared")}


def test_dark_while_serious_is_red_and_alarms_stay_active_flagged_stale() -> None:
    eng = AlarmEngine(district())
    pump = FacilityState()
    raised = eng.evaluate(batch("P-1", "drainage", 0, 1, ("W", "water_level", "m", 5.5)),
                          pump).events
    assert path(raised) == [("raised", "orange")]
    events = eng.tick("P-1", pump, ms(100)).events  # no rain, but it was in alarm
    [stale] = [e for e in events if e.event is AlarmEventType.UPDATED]
    assert stale.alarm_id == raised[0].alarm_id and stale.stale_since is not None
    assert stale.suppressed_by is None
    [dark] = [e for e in events if e.rule == "facility-dark"]
    assert dark.level is not None and dark.level.value == "red"


def test_dark_without_rain_or_alarm_is_only_a_gateway_alarm() -> None:
    eng = AlarmEngine(district())
    pump = FacilityState()
    eng.evaluate(batch("P-1", "drainage", 0, 1, ("W", "water_level", "m", 2.0)), pump)
    assert [e.rule for e in eng.tick("P-1", pump, ms(100)).events] == ["gateway-offline"]
    normal = AlarmEngine(district(critical=False))
    fs = FacilityState()
    normal.context.apply("d", ms(0))
    normal.evaluate(batch("P-1", "drainage", 0, 1, ("W", "water_level", "m", 5.5)), fs)
    assert "facility-dark" not in [e.rule for e in normal.tick("P-1", fs, ms(100)).events]


def test_rain_context_from_kafka_reaches_another_worker() -> None:
    eng = AlarmEngine(district())  # this worker never saw the gauge
    eng.context.apply("d", ms(-1800))  # another worker's record: rain half an hour ago
    pump = FacilityState()
    eng.evaluate(batch("P-1", "drainage", 0, 1, ("W", "water_level", "m", 2.0)), pump)
    assert "facility-dark" in [e.rule for e in eng.tick("P-1", pump, ms(100)).events]


# ------------------------------------------------------------------ fail-dangerous faults
def level_feeder(**extra: Any) -> Feeder:
    return Feeder(make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7),
                                       **extra)))


def test_over_range_at_a_serious_level_holds_and_goes_red() -> None:
    f = level_feeder()
    f.series("L", [2.6])  # orange
    events = f.report(60, ("L", 9.9))  # submerged gauge: over range high
    [fault] = by_rule(events, "sensor-out-of-range")
    assert fault.category is AlarmCategory.SENSOR and "fail-dangerous" in fault.message
    level = by_rule(events, "value-upper")
    assert [e.event for e in level] == [AlarmEventType.UPDATED, AlarmEventType.ESCALATED]
    assert all(e.held_by_fault == fault.alarm_id and e.suppressed_by is None for e in level)
    assert level[-1].level is not None and level[-1].level.value == "red"
    back = f.report(120, ("L", 1.0))
    assert path(by_rule(back, "sensor-out-of-range")) == [("cleared", None)]
    assert [e.event.value for e in by_rule(back, "value-upper")] == ["updated", "cleared"]


def test_over_range_from_calm_is_a_sensor_fault_only() -> None:
    f = level_feeder()
    f.series("L", [1.0, 1.0])
    events = f.report(120, ("L", 9.9))
    assert path(events) == [("raised", "blue")]
    assert events[0].category is AlarmCategory.SENSOR and "fail-dangerous" not in events[0].message


def test_over_range_at_a_surcharged_pipe_is_red() -> None:
    f = level_feeder(pipe_diameter_m=1.0)
    f.series("L", [1.2])  # above the crown (h/D 1.2): surcharged, below any level here
    f.report(60, ("L", 9.9))
    f.report(120, ("L", 9.9))
    level = by_rule(f.events, "value-upper")
    assert level and level[-1].level is not None and level[-1].level.value == "red"
    assert level[-1].held_by_fault is not None and level[-1].suppressed_by is None


def test_a_sensor_going_silent_while_red_holds_its_alarm() -> None:
    f = Feeder(make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)),
                             sensor("Q", "flow", rng=(0, 100))))
    f.report(0, ("L", 3.0), ("Q", 1.0))
    for t in range(60, 301, 60):
        f.report(t, ("Q", 1.0))  # L silent while its gateway reports
    [off] = by_rule(f.events, "sensor-offline")
    [held] = [e for e in f.events if e.event is AlarmEventType.UPDATED]
    assert held.held_by_fault == off.alarm_id and held.level is not None
    assert held.level.value == "red"


def test_a_suppressed_alarm_is_told_again_when_its_fault_clears() -> None:
    f = Feeder(make_registry(sensor("L", "water_level", {"levels": LEVELS, "raise_after_s": 600},
                                    rng=(0, 7), stuck_after_s=300)))
    f.series("L", [3.0] * 11)  # stuck first (from calm: no alarm yet), then the level alarm
    [stuck] = by_rule(f.events, "sensor-stuck")
    [level] = by_rule(f.events, "value-upper")
    assert level.suppressed_by == stuck.alarm_id
    events = f.report(660, ("L", 3.01))  # changes: the stuck fault clears, still red
    assert path(by_rule(events, "sensor-stuck")) == [("cleared", None)]
    [upd] = by_rule(events, "value-upper")
    assert upd.event is AlarmEventType.UPDATED and upd.suppressed_by is None
    assert upd.alarm_id == level.alarm_id and upd.level is not None


# ------------------------------------------------------------------ robust rate
def test_one_in_range_spike_raises_no_facility_alarm_and_a_rise_does() -> None:
    reg = load_registry(EXAMPLE_REGISTRY)
    f = Feeder(reg, "DR-BH-001")
    sid = "DR-BH-001-L1"
    f.series(sid, [1.0] * 20 + [2.3] + [1.0] * 15)  # one spike (in range; yellow on its own)
    assert [e for e in f.events if e.category is AlarmCategory.FACILITY] == []
    g = Feeder(reg, "DR-BH-001")
    g.series(sid, [0.5] * 10 + [0.5 + 0.07 * i for i in range(1, 9)])
    rate = [e for e in g.events if e.rule.startswith("rate-")]
    assert rate and rate[0].event is AlarmEventType.RAISED


# ------------------------------------------------------------------ bounded state
def test_a_flooding_gateway_keeps_bounded_state_and_bounded_work() -> None:
    reg = load_registry(EXAMPLE_REGISTRY)
    eng = AlarmEngine(reg)
    fs = FacilityState()
    fid, sid = "DR-BH-001", "DR-BH-001-R1"
    start = time.perf_counter()
    coalesced = 0
    for m in range(200):
        base = T0 + timedelta(seconds=m)
        b = ReadingBatch(facility_id=fid, kind="drainage", seq=m + 1, received_at=base,
                         readings=[Reading(sensor=sid, metric="rainfall", unit="mm", value=0.1,
                                           ts=base + timedelta(microseconds=3900 * i))
                                   for i in range(256)])
        coalesced += eng.evaluate(b, fs).coalesced
    elapsed = time.perf_counter() - start
    size = len(json.dumps(fs.to_json()))
    ss = fs.sensors[sid]
    assert ss.window is not None and len(ss.window) <= 10
    assert size < 20_000, size
    assert coalesced >= 200 * (256 - reg.policy.max_evaluations_per_report)
    assert elapsed < 30  # generous: bounded work, not a speed figure (docs/benchmarks.md)


# ------------------------------------------------------------------ versioned state
def test_version_1_state_is_migrated_and_unknown_versions_refused() -> None:
    f = level_feeder()
    f.series("L", [2.6])
    saved = f.state.to_json()
    assert saved["v"] == 2
    v1 = json.loads(json.dumps(saved))
    v1.pop("v")
    v1["sensors"] = {k: [*s[:4], [[ms(0), 2.6]]] for k, s in v1["sensors"].items()}
    v1["rules"] = {k: r[:9] for k, r in v1["rules"].items()}
    migrated = FacilityState.from_json(v1)
    assert migrated.active_alarms().keys() == f.state.active_alarms().keys()
    with pytest.raises(StateVersionError, match="version 99"):
        FacilityState.from_json({**saved, "v": 99})


def test_ticks_are_validated() -> None:
    now = 1_780_000_000.0
    assert parse_tick(str(int(now * 1000)).encode(), now) == int(now * 1000)
    for bad in (b"", b"abc", b"-5", b"1e12", str(int((now + 86400 * 365) * 1000)).encode(),
                b"9" * 40):
        assert parse_tick(bad, now) is None


def test_a_gateway_outage_is_dated_on_the_facility_clock_and_clears_on_the_wall_clock() -> None:
    """A gateway whose reports carry times a month ahead of the receiving clock (a scenario
    replayed faster than real time): its outage is dated on its own clock — the newest
    reading plus the silence, where a maintenance window judges it — and the next report
    ingest receives after the outage began clears it, across a save and a restore."""
    f = Feeder(make_registry(sensor("L", "water_level", {"levels": [lv("blue", 5.0)]},
                                    rng=(0, 7))))
    ahead = 30 * 86400
    f.report(ahead, ("L", 1.0), received_s=0)
    [gw] = by_rule(f.tick(200), "gateway-offline")  # silent 200 s > 3 × 60 s
    assert gw.event is AlarmEventType.RAISED and gw.ts == T0 + timedelta(seconds=ahead + 200)
    f.state = type(f.state).loads(f.state.dumps())  # a restart in between
    back = f.report(ahead + 300, ("L", 1.0), received_s=300)
    assert path(by_rule(back, "gateway-offline")) == [("cleared", None)]
    assert f.state.offline_wall == 0 and '"ow"' not in f.state.dumps()
