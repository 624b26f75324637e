"""Life-safety scenarios: the simulator side of scoped maintenance windows (a confined-space
entry, night works), a critical facility going dark, fail-dangerous sensor faults and a
robust rate-of-rise rule — the physics and faults that demonstrate them, the scoring of
``updated``, held, silenced and facility-wide alarms, and each scenario replayed through
ingest's validator and the alarm engine in process (tests/support/scenario_replay.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from schemas.alarm import AlarmCategory, AlarmEvent, AlarmEventType, alarm_id_for, event_id_for
from schemas.kinds import AlarmLevel, FacilityKind
from schemas.registry import Registry, load_registry
from schemas.scenario import GAS_RELEASE_RAMP_S, Scenario, ScenarioError, load_scenario
from simulators.plot import plot_incidents
from simulators.scenario import SCENARIOS, ScenarioRun, check_scenario
from simulators.scoring import Score, score
from tests.simulators.test_duty_scenarios import ISSUE18
from tests.simulators.test_physics_and_truth import ISSUE17
from tests.simulators.test_scenarios import ORIGINAL
from tests.support.paths import EXAMPLE_REGISTRY
from tests.support.scenario_replay import replay

LIFE_SAFETY = ["dredging-gas", "level-spike", "night-works", "pump-blackout-storm",
               "surcharge-gauge-fault"]
T0 = 1_780_000_000.0
ZONE = ZoneInfo("Asia/Shanghai")

Replayed = tuple[ScenarioRun, list[AlarmEvent], Score]


@cache
def _registry() -> Registry:
    return load_registry(EXAMPLE_REGISTRY)


@cache
def replayed(name: str) -> Replayed:
    """Each scenario replayed once per test session (a few seconds each)."""
    return replay(_registry(), load_scenario(SCENARIOS / f"{name}.yaml"), T0)


def at(run: ScenarioRun, ev: AlarmEvent) -> float:
    return ev.ts.timestamp() - run.t0


def local(ev: AlarmEvent) -> str:
    return ev.ts.astimezone(ZONE).strftime("%H:%M")


def paged(ev: AlarmEvent) -> bool:
    return (ev.event in (AlarmEventType.RAISED, AlarmEventType.ESCALATED,
                         AlarmEventType.FLAPPING, AlarmEventType.UPDATED)
            and ev.level is not None and ev.suppressed_by is None and not ev.silenced)


# ------------------------------------------------------------------ the scenarios


def test_the_life_safety_scenarios_are_shipped_and_fit_the_registry(registry: Registry) -> None:
    shipped = sorted(p.stem for p in SCENARIOS.glob("*.yaml"))
    assert shipped == sorted(ORIGINAL + LIFE_SAFETY + ISSUE17 + ISSUE18)
    for name in LIFE_SAFETY:
        sc = load_scenario(SCENARIOS / f"{name}.yaml")
        assert sc.name == name and check_scenario(registry, sc) == []


@pytest.mark.parametrize("name", LIFE_SAFETY)
def test_life_safety_scenario_scores_through_ingest_and_the_engine(name: str) -> None:
    run, _events, s = replayed(name)
    sc = run.scenario
    assert s.passed(sc), s.table()
    assert s.detected == len(s.expectations)
    assert all(e.delay_s is not None and e.delay_s <= e.within_s for e in s.expectations)
    assert not s.faults_as_facility_alarms and not s.false_alarms, s.table()
    assert all(x.met for x in s.silenced_expectations), s.table()
    # The replay starts the scenario at its own local time of day.
    assert datetime.fromtimestamp(run.t0, ZONE).strftime("%H:%M") == sc.start_local
    report = s.as_dict()
    assert {"silenced", "held_by_fault", "released", "inhibited"} <= report.keys()
    json.dumps(report)  # report.json


def test_dredging_gas_pages_the_crew_leader_and_silences_the_water_level() -> None:
    run, events, s = replayed("dredging-gas")
    h2s = [ev for ev in events if ev.sensor == "SP-OF-001-H1" and ev.rule == "value-upper"]
    red = next(ev for ev in h2s if ev.level is AlarmLevel.RED and paged(ev))
    # Inside the 09:00-11:00 entry window, after the release at 09:20, not silenced: the
    # gas alarm carries the entry so that the notifier pages the crew leader.
    assert "09:20" <= local(red) < "11:00" and not red.silenced
    assert red.entry is not None and red.entry.crew_phone == "13800000031"
    assert "Li Qiang" in red.entry.crew_leader
    assert at(run, red) - 4800 <= 1800
    # The well's water level (pumps isolated for the work) is in the window's scope.
    well = [ev for ev in events if ev.sensor == "SP-OF-001-W1"
            and ev.category is AlarmCategory.FACILITY and ev.level is not None]
    assert well and all(ev.silenced for ev in well) and not any(paged(ev) for ev in well)
    assert s.silenced >= 1


def test_night_works_silence_the_sensor_and_gateway_faults_and_nothing_is_a_facility_alarm(
        ) -> None:
    _run, events, s = replayed("night-works")
    there = [ev for ev in events if ev.facility_id == "DP-KG-001"]
    offline = [ev for ev in there if ev.rule == "sensor-offline" and ev.level is not None]
    gateway = [ev for ev in there if ev.rule == "gateway-offline" and ev.level is not None]
    assert offline and gateway
    for ev in offline + gateway:
        assert ev.silenced and "00:00" <= local(ev) < "05:00"
        assert ev.level.severity <= AlarmLevel.YELLOW.severity  # type: ignore[union-attr]
    # A dry, calm night: the dark station is not a facility alarm (no facility-dark).
    assert not [ev for ev in there if ev.category is AlarmCategory.FACILITY]
    assert s.facility_alarms == 0 and s.silenced >= 2


def test_pump_blackout_storm_the_dark_station_is_the_alarm() -> None:
    run, events, _s = replayed("pump-blackout-storm")
    dark = [ev for ev in events if ev.rule == "facility-dark"]
    assert {ev.facility_id for ev in dark} == {"DP-OF-001"}  # the UPS station is not dark
    raised = next(ev for ev in dark if ev.event is AlarmEventType.RAISED)
    assert raised.category is AlarmCategory.FACILITY and raised.sensor == "DP-OF-001"
    assert raised.level is not None and raised.level.severity >= AlarmLevel.ORANGE.severity
    assert paged(raised) and 0 <= at(run, raised) - 3000 <= 600
    cleared = [ev for ev in dark if ev.event is AlarmEventType.CLEARED]
    assert cleared and at(run, cleared[0]) >= 3000 + 5400  # back with the power
    # The station with a UPS keeps reporting: pumps off, wet well high.
    composite = [ev for ev in events if ev.facility_id == "DP-KJ-001"
                 and ev.rule == "wet-well-high-pump-off" and ev.level is AlarmLevel.RED]
    assert composite and paged(composite[0])


def test_surcharged_gauge_faults_hold_the_alarm_and_the_dry_one_is_a_sensor_fault() -> None:
    _run, events, s = replayed("surcharge-gauge-fault")
    # Over range at the cover: the level alarm is red, held, never suppressed.
    level = [ev for ev in events if ev.sensor == "DR-BH-003-L1" and ev.rule == "value-upper"]
    assert any(ev.level is AlarmLevel.RED and paged(ev) for ev in level)
    assert all(ev.suppressed_by is None for ev in level)
    assert any(ev.held_by_fault is not None for ev in level)
    assert any(ev.rule == "sensor-out-of-range" and ev.sensor == "DR-BH-003-L1"
               for ev in events)
    # Silent at the cover while rising: held as well.
    silent = [ev for ev in events if ev.sensor == "DR-BH-002-L1" and ev.rule == "value-upper"]
    assert all(ev.suppressed_by is None for ev in silent)
    assert any(ev.held_by_fault is not None for ev in silent)
    # The same fault on a dry day: a sensor fault, and no facility alarm paged there.
    dry = [ev for ev in events if ev.facility_id == "DR-KJ-002"]
    assert any(ev.category is AlarmCategory.SENSOR and ev.rule == "sensor-out-of-range"
               for ev in dry)
    assert not [ev for ev in dry if ev.category is AlarmCategory.FACILITY and paged(ev)]
    assert s.held_by_fault >= 2


def test_one_in_range_spike_raises_nothing_a_blockage_raises_the_rate_and_level() -> None:
    _run, events, s = replayed("level-spike")
    assert not [ev for ev in events if ev.facility_id == "DR-OF-002"
                and ev.category is AlarmCategory.FACILITY]
    reported = {ev.facility_id for ev in events if ev.category is AlarmCategory.FACILITY
                and paged(ev)}
    assert reported == {"DR-LW-002"}
    rules = {ev.rule for ev in events if ev.facility_id == "DR-LW-002" and paged(ev)}
    assert {"rate-600s-upper", "value-upper"} <= rules
    assert s.facility_alarms == 2


def test_plots_for_facility_wide_expectations_and_incidents_without_any(
        registry: Registry, tmp_path: Path) -> None:
    for name in ("pump-blackout-storm", "dredging-gas"):
        run, events, _ = replayed(name)
        paths = plot_incidents(run.scenario, registry, run.truth_document(), events, tmp_path)
        assert len(paths) == len(run.scenario.storms) + len(run.scenario.incidents)


# ------------------------------------------------------------------ physics and faults


def _reports(registry: Registry, doc: dict[str, Any]) -> tuple[ScenarioRun, list[
        tuple[float, str, dict[str, Any]]]]:
    sc = Scenario.model_validate({"name": "t", "description": "d", **doc})
    run = ScenarioRun(registry, sc, t0=T0)
    return run, [(t, topic, json.loads(p)) for t, topic, p in run.reports()]


def _values(out: list[tuple[float, str, dict[str, Any]]], sid: str) -> list[tuple[float, float]]:
    return [(t, r["value"]) for t, _, b in out for r in b["readings"] if r["sensor"] == sid]


STORM = {"districts": ["Oufei Reclamation"], "start_s": 0, "duration_s": 7200,
         "return_period_y": 5}


def test_power_failure_stops_the_pumps_and_darkens_the_gateway_unless_ups(
        registry: Registry) -> None:
    blackout = {"kind": "power_failure", "facility": "DP-OF-001", "start_s": 1200,
                "duration_s": 2400}
    run, out = _reports(registry, {"duration_s": 4800, "facilities": ["DP-OF-001"],
                                   "storms": [STORM], "incidents": [{"name": "b", **blackout}]})
    sent = [t for t, topic, _ in out if "DP-OF-001" in topic]
    assert sent and not [t for t in sent if 1200 <= t < 3600] and max(sent) >= 3600
    truth = run.truth["DP-OF-001/DP-OF-001-W1"]
    dark = [r for r in truth if 1200 <= r[0] < 3600]
    assert all(r[2] is None for r in dark)  # nothing reported, the truth kept
    assert dark[-1][1] - dark[0][1] > 1.0  # the storm fills the well, metres an hour
    assert all(r[1] == 0 for r in run.truth["DP-OF-001/DP-OF-001-S1"] if 1200 <= r[0] < 3600)

    _, ups = _reports(registry, {"duration_s": 4800, "facilities": ["DP-OF-001"],
                                 "storms": [STORM],
                                 "incidents": [{"name": "b", **blackout, "ups": True}]})
    during = [v for t, v in _values(ups, "DP-OF-001-S1") if 1200 <= t < 3600]
    current = [v for t, v in _values(ups, "DP-OF-001-I1") if 1200 <= t < 3600]
    level = [v for t, v in _values(ups, "DP-OF-001-W1") if 1200 <= t < 3600]
    assert during and set(during) == {0.0} and set(current) == {0.0}
    assert level[-1] > 4.0 > level[0]  # above the wet-well alarm, pumps off


def test_gas_release_reaches_red_within_its_ramp(registry: Registry) -> None:
    _, out = _reports(registry, {"duration_s": 3600, "facilities": ["SP-OF-001"], "incidents": [
        {"name": "g", "kind": "gas_release", "facility": "SP-OF-001", "start_s": 600,
         "duration_s": 1800}]})
    h2s = _values(out, "SP-OF-001-H1")
    first_red = min(t for t, v in h2s if v >= 50)
    assert 600 < first_red <= 600 + GAS_RELEASE_RAMP_S
    assert max(v for t, v in h2s if t < 600) < 10 and max(v for _, v in h2s) < 200
    assert max(v for _, v in _values(out, "SP-OF-001-M1")) >= 25


def test_a_submerged_gauge_reads_over_range_only_at_the_cover(registry: Registry) -> None:
    flt = {"kind": "submerged", "facility": "DR-OF-003", "sensor": "DR-OF-003-L1",
           "start_s": 0, "duration_s": 7200, "magnitude": 0.1}
    run, _ = _reports(registry, {"duration_s": 7200, "facilities": ["district:Oufei Reclamation"],
                                 "storms": [STORM], "faults": [flt]})
    truth = run.truth["DR-OF-003/DR-OF-003-L1"]
    at_cover = [r for r in truth if r[1] >= 3.0]
    assert at_cover and all(r[2] == pytest.approx(7.7) for r in at_cover)
    assert all(r[2] == r[1] for r in truth if r[1] < 3.0)  # below the cover: still true
    _, silent = _reports(registry, {"duration_s": 7200,
                                    "facilities": ["district:Oufei Reclamation"],
                                    "storms": [STORM], "faults": [{**flt, "reads": "nothing"}]})
    assert len(_values(silent, "DR-OF-003-L1")) == len(truth) - len(at_cover)
    # A dry day: at_cover never happens — unless the fault is for its whole duration.
    _, dry = _reports(registry, {"duration_s": 3600, "facilities": ["DR-OF-003"],
                                 "faults": [{**flt, "duration_s": 3600}]})
    assert max(v for _, v in _values(dry, "DR-OF-003-L1")) < 3.0
    _, flooded = _reports(registry, {"duration_s": 3600, "facilities": ["DR-OF-003"],
                                     "faults": [{**flt, "duration_s": 3600, "at_cover": False}]})
    assert {v for _, v in _values(flooded, "DR-OF-003-L1")} == {7.7}


def test_an_in_range_spike_is_one_plausible_value(registry: Registry) -> None:
    run, _ = _reports(registry, {"duration_s": 3600, "facilities": ["DR-OF-002"], "faults": [
        {"kind": "in_range_spike", "facility": "DR-OF-002", "sensor": "DR-OF-002-L1",
         "start_s": 1200, "duration_s": 60, "magnitude": 0.3}]})
    rows = run.truth["DR-OF-002/DR-OF-002-L1"]
    off = [r for r in rows if r[2] != r[1]]
    assert len(off) == 1 and off[0][0] == 1200
    _, true, reported = off[0]
    assert reported is not None and 0.0 <= reported <= 7.0
    assert reported - true == pytest.approx(2.1, abs=1e-3)


def test_the_contract_refuses_misplaced_options(registry: Registry) -> None:
    base: dict[str, Any] = {"name": "x", "description": "d", "duration_s": 3600}
    inc = {"name": "i", "facility": "DP-OF-001", "start_s": 0, "duration_s": 60}
    with pytest.raises(ValidationError, match="ups is for a power_failure"):
        Scenario.model_validate({**base, "incidents": [{**inc, "kind": "pump_failure",
                                                        "ups": True}]})
    flt = {"facility": "DR-OF-001", "sensor": "DR-OF-001-L1", "start_s": 0, "duration_s": 60}
    with pytest.raises(ValidationError, match="for a submerged fault"):
        Scenario.model_validate({**base, "faults": [{**flt, "kind": "stuck", "reads": "nothing"}]})
    with pytest.raises(ValidationError, match="the gateway's: no sensor"):
        Scenario.model_validate({**base, "faults": [{**flt, "kind": "gateway_offline"}]})
    bad = Scenario.model_validate({
        **base, "facilities": ["DR-OF-001"],
        "incidents": [{**inc, "kind": "power_failure", "facility": "DR-OF-001"}],
        "faults": [{**flt, "kind": "submerged", "sensor": "DR-OF-001-Q1"},
                   {**flt, "kind": "dropout", "facility": "DP-OF-001", "sensor": "X"}],
        "expect_silenced": [{"facility": "DR-OF-001", "sensor": "DR-OF-001-Z9"}]})
    problems = " | ".join(check_scenario(registry, bad))
    assert "needs a pump station" in problems and "not a level gauge" in problems
    assert "DP-OF-001 is not in the scenario's facilities" in problems
    assert "has no sensor DR-OF-001-Z9" in problems
    with pytest.raises(ScenarioError, match="does not fit"):
        ScenarioRun(registry, bad, t0=T0)


# ------------------------------------------------------------------ scoring


def _ev(t: float, fid: str, sensor: str, level: str | None, *, event: str = "raised",
        rule: str = "value-upper", category: str = "facility", episode: float | None = None,
        **extra: Any) -> AlarmEvent:
    started = datetime.fromtimestamp(T0 + (t if episode is None else episode), UTC)
    ts = datetime.fromtimestamp(T0 + t, UTC)
    aid = alarm_id_for(fid, sensor, rule, started)
    lv = AlarmLevel(level) if level else None
    return AlarmEvent(event_id=event_id_for(aid, AlarmEventType(event), lv, ts), alarm_id=aid,
                      event=AlarmEventType(event), level=lv, previous_level=None,
                      category=AlarmCategory(category),
                      facility_id=fid, kind=FacilityKind.DRAINAGE, sensor=sensor, metric=None,
                      rule=rule, value=None, threshold=None, unit="", ts=ts, message="m",
                      **extra)


def _scenario(expect: list[dict[str, Any]], **more: Any) -> Scenario:
    return Scenario.model_validate({
        "name": "s", "description": "d", "duration_s": 36000, **more,
        "incidents": [{"name": "i", "kind": "power_failure", "facility": "DP-1",
                       "start_s": 3600, "duration_s": 3600, "expect": expect}]})


def test_a_facility_dark_alarm_satisfies_expectations_on_the_facility() -> None:
    dark = _ev(3690, "DP-1", "DP-1", "orange", rule="facility-dark")
    for expect, hit in [({}, True), ({"sensor": "DP-1"}, True),
                        ({"sensor": "DP-1", "rule": "facility-dark"}, True),
                        ({"rule": "facility-dark"}, True), ({"sensor": "DP-1-W1"}, False),
                        ({"rule": "wet-well-high-pump-off"}, False)]:
        sc = _scenario([{"facility": "DP-1", "level": "orange", "within_s": 600, **expect}])
        s = score(sc, T0, 10, [dark], {})
        assert s.expectations[0].detected is hit, expect
        if hit:
            assert s.expectations[0].delay_s == 90 and s.expectations[0].alarm_rule == \
                "facility-dark"


def test_an_alarm_released_by_its_fault_is_reported_from_the_release() -> None:
    sc = _scenario([{"facility": "DP-1", "sensor": "W1", "level": "yellow", "within_s": 1800}])
    suppressed = _ev(3700, "DP-1", "W1", "yellow", suppressed_by="fault-1")
    released = _ev(4500, "DP-1", "W1", "yellow", event="updated", episode=3700)
    s = score(sc, T0, 10, [suppressed], {})
    assert not s.expectations[0].detected and s.inhibited == 1 and s.facility_alarms == 0
    s = score(sc, T0, 10, [suppressed, released], {})
    assert s.expectations[0].detected and s.expectations[0].delay_s == 900
    assert s.inhibited == 1 and s.released == 1 and s.facility_alarms == 1
    late = _ev(6000, "DP-1", "W1", "yellow", event="updated", episode=3700)
    assert not score(sc, T0, 10, [suppressed, late], {}).expectations[0].detected


def test_held_and_silenced_alarms_are_counted_and_updated_is_no_new_raise() -> None:
    sc = _scenario([{"facility": "DP-1", "sensor": "W1", "level": "orange", "within_s": 1800}],
                   expect_silenced=[{"facility": "DP-2", "sensor": "I1"}])
    events = [_ev(3700, "DP-1", "W1", "orange"),
              _ev(3800, "DP-1", "W1", "orange", event="updated", episode=3700,
                  held_by_fault="fault-2"),
              _ev(3900, "DP-2", "I1", "blue", rule="sensor-offline", category="sensor",
                  silenced=True)]
    s = score(sc, T0, 10, events, {})
    assert s.expectations[0].detected and s.expectations[0].delay_s == 100
    assert s.facility_alarms == 1 and s.held_by_fault == 1 and s.silenced == 1
    assert s.silenced_expectations[0].met and s.passed(sc)
    d = s.as_dict()
    assert d["held_by_fault"] == 1 and d["silenced"] == 1
    assert d["silenced_expectations"] == [{"facility": "DP-2", "sensor": "I1", "silenced": 1,
                                           "paged": 0, "met": True}]
    # The same fault paged all the same: the silence expectation fails, and so does the score.
    paged_too = [*events, _ev(4000, "DP-2", "I1", "blue", rule="sensor-offline",
                              category="sensor", event="updated", episode=3900)]
    s = score(sc, T0, 10, paged_too, {})
    assert not s.silenced_expectations[0].met and not s.passed(sc)
    assert "NOT SILENCED" in s.table()


def test_outages_are_published_in_real_time_when_asked() -> None:
    """``lifeline simulate --outages-in-real-time``: the first minutes of a blackout without
    UPS (or a gateway_offline fault) run at real time, so the processor's wall-clock check
    sees the silence; everything else at the chosen speed."""
    from simulators.pacing import Schedule
    from simulators.scenario import OUTAGE_REAL_TIME_MARGIN_S, outage_windows

    reg = _registry()
    storm = load_scenario(SCENARIOS / "pump-blackout-storm.yaml")
    [window] = outage_windows(reg, storm)  # DP-OF-001 (no UPS); DP-KJ-001 has one
    dark = next(i for i in storm.incidents if i.facility == "DP-OF-001")
    station = reg.facility("DP-OF-001")
    assert station is not None
    limit = reg.policy.gateway_offline_after_intervals * station.min_interval_s
    assert window == (dark.start_s, dark.start_s + limit + OUTAGE_REAL_TIME_MARGIN_S)
    works = load_scenario(SCENARIOS / "night-works.yaml")
    assert len(outage_windows(reg, works)) == 1
    sched = Schedule(1000.0, [window, (window[0] + 10, window[1] + 60)])  # overlaps merge
    assert sched.slow == [(window[0], window[1] + 60)]
    span = window[1] + 60 - window[0]
    assert sched.wall(window[0]) == pytest.approx(window[0] / 1000)
    assert sched.wall(storm.duration_s) == pytest.approx(
        (storm.duration_s - span) / 1000 + span)
