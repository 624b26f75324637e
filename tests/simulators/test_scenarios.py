"""Simulators, scenarios and scoring: the physics, the faults, the score — and the five
original scenarios replayed through ingest's validator and the alarm engine in process
(tests/pipeline/test_scenarios.py runs them through the real pipeline). The
life-safety scenarios have their own tests: tests/simulators/test_lifesafety_scenarios.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.alarm import AlarmCategory, AlarmEvent, AlarmEventType
from schemas.registry import Registry
from schemas.scenario import Scenario, Storm, load_scenario
from simulators.scale import scale_registry
from simulators.scenario import SCENARIOS, ScenarioRun
from simulators.scoring import score
from simulators.weather import Hyetograph
from tests.support.oncall_helpers import alarm
from tests.support.scenario_replay import replay

SHIPPED = sorted(p.stem for p in SCENARIOS.glob("*.yaml"))
ORIGINAL = ["bridge-damage", "dry-day", "sensor-faults", "sewage-toxic-gas", "summer-rainstorm"]
T0 = 1_780_000_000.0


def test_the_five_scenarios_the_issue_asks_for_are_shipped() -> None:
    assert set(ORIGINAL) <= set(SHIPPED)
    for name in SHIPPED:
        sc = load_scenario(SCENARIOS / f"{name}.yaml")
        assert sc.name == name


@pytest.mark.parametrize("name", ORIGINAL)
def test_shipped_scenario_scores_through_ingest_and_the_engine(registry: Registry,
                                                                name: str) -> None:
    sc = load_scenario(SCENARIOS / f"{name}.yaml")
    run, _events, s = replay(registry, sc, T0)
    assert s.passed(sc), s.table()
    assert s.detected == len(s.expectations)  # every incident, within its stated delay
    assert not s.faults_as_facility_alarms and not s.false_alarms
    if name == "dry-day":
        assert s.facility_alarms == 0 and run.readings_sent > 500_000
    if name == "sensor-faults":
        assert s.sensor_or_gateway_alarms > 0  # the faults are seen — as what they are


def test_scenario_contract_refuses_nonsense() -> None:
    base: dict[str, Any] = {"name": "x", "description": "d", "duration_s": 3600}
    with pytest.raises(ValidationError, match="starts after the scenario ends"):
        Scenario.model_validate({**base, "storms": [{"districts": ["d"], "start_s": 7200}]})
    with pytest.raises(ValidationError, match="needs a sensor"):
        Scenario.model_validate({**base, "faults": [{"kind": "stuck", "facility": "F",
                                                     "start_s": 0, "duration_s": 60}]})
    with pytest.raises(ValidationError):
        Scenario.model_validate({**base, "incidents": [{"name": "n", "kind": "meteor",
                                                        "facility": "F", "start_s": 0,
                                                        "duration_s": 1}]})


def test_chicago_hyetograph() -> None:
    def storm(p: float) -> Hyetograph:
        return Hyetograph.of(Storm(districts=["d"], start_s=0, duration_s=7200,
                                   return_period_y=p, peak=0.4))

    one, five = storm(1).depth_mm(0, 7200), storm(5).depth_mm(0, 7200)
    assert 35 < one < five < 80  # a 2-hour storm: tens of millimetres, rarer is heavier
    h = storm(5)
    peak_t = max(range(0, 7200, 10), key=h.intensity)
    assert abs(peak_t - 0.4 * 7200) <= 10 and h.intensity(7300) == 0 == h.intensity(-1)


def _run(registry: Registry, faults: list[dict[str, Any]], hours: float = 1.0
         ) -> list[tuple[float, str, dict[str, Any]]]:
    sc = Scenario.model_validate({"name": "f", "description": "faults", "duration_s":
                                  hours * 3600, "facilities": ["DR-BH-001", "BR-BH-001"],
                                  "faults": faults})
    return [(t, topic, json.loads(p)) for t, topic, p in ScenarioRun(registry, sc, t0=T0)
            .reports()]


def test_faults_are_applied_as_declared(registry: Registry) -> None:
    def values(out: list[tuple[float, str, dict[str, Any]]], sid: str) -> list[float]:
        return [r["value"] for _, _, b in out for r in b["readings"] if r["sensor"] == sid]

    clean = _run(registry, [])
    assert values(clean, "DR-BH-001-L1") and len(set(values(clean, "DR-BH-001-L1"))) > 5
    stuck = _run(registry, [{"kind": "stuck", "facility": "DR-BH-001", "sensor": "DR-BH-001-L1",
                             "start_s": 0, "duration_s": 3600}])
    assert len(set(values(stuck, "DR-BH-001-L1"))) == 1
    gone = _run(registry, [{"kind": "dropout", "facility": "DR-BH-001",
                            "sensor": "DR-BH-001-L1", "start_s": 0, "duration_s": 3600}])
    assert values(gone, "DR-BH-001-L1") == [] and values(gone, "DR-BH-001-Q1")
    spikes = values(_run(registry, [{"kind": "spike", "facility": "BR-BH-001",
                                     "sensor": "BR-BH-001-D1", "start_s": 0,
                                     "duration_s": 3600}]), "BR-BH-001-D1")
    assert sum(v > 100 for v in spikes) == 6  # one per 10 minutes, beyond the range
    offline = _run(registry, [{"kind": "gateway_offline", "facility": "BR-BH-001",
                               "start_s": 0, "duration_s": 3600}])
    assert not [t for t, topic, _ in offline if "BR-BH-001" in topic]
    dup = _run(registry, [{"kind": "duplicate", "facility": "DR-BH-001", "start_s": 0,
                           "duration_s": 3600}])
    seqs = [b["seq"] for _, topic, b in dup if "DR-BH-001" in topic]
    assert len(seqs) == 2 * len(set(seqs))
    ooo = _run(registry, [{"kind": "out_of_order", "facility": "DR-BH-001", "start_s": 0,
                           "duration_s": 3600}])
    seqs = [b["seq"] for _, topic, b in ooo if "DR-BH-001" in topic]
    assert seqs[:4] == [2, 1, 4, 3]
    skew = _run(registry, [{"kind": "clock_skew", "facility": "DR-BH-001", "start_s": 0,
                            "duration_s": 3600, "magnitude": 1800}])
    t, _, body = next(x for x in skew if "DR-BH-001" in x[1])
    sent = datetime.fromisoformat(body["ts"]).timestamp()
    assert sent - (T0 + t) == 1800


def test_same_seed_same_data(registry: Registry) -> None:
    sc = load_scenario(SCENARIOS / "sewage-toxic-gas.yaml").model_copy(
        update={"duration_s": 3600.0})
    a = [p for _, _, p in ScenarioRun(registry, sc, t0=T0).reports()]
    b = [p for _, _, p in ScenarioRun(registry, sc, t0=T0).reports()]
    assert a == b and len(a) > 100


def test_scale_multiplies_facilities_and_keeps_rules(registry: Registry) -> None:
    big = scale_registry(registry, 4)
    assert len(big.facilities) == 4 * len(registry.facilities)
    assert big.sensor_count == 4 * registry.sensor_count
    copy = big.facility("DR-BH-001-X003")
    assert copy is not None and copy.district == "Binhai Park"
    assert {c.sensor for c in copy.composites[0].all_of} == {"DR-BH-001-R1-X003",
                                                             "DR-BH-001-L1-X003"}
    sc = Scenario.model_validate({"name": "s", "description": "d", "duration_s": 600,
                                  "facilities": ["DR-BH-001"]})
    run = ScenarioRun(big, sc, t0=T0)
    assert len(run.gateways) == 4  # the original and its copies


def _event(t: float, fid: str, sensor: str, level: str | None, category: str = "facility",
           event: str = "raised") -> AlarmEvent:
    ev = alarm(event, level, fid=fid, sensor=sensor, category=category,
               started=datetime.fromtimestamp(T0 + t, UTC))
    return ev.model_copy(update={"category": AlarmCategory(category),
                                 "event": AlarmEventType(event)})


def test_scoring_counts_detection_delay_false_alarms_and_misreported_faults() -> None:
    sc = Scenario.model_validate({
        "name": "s", "description": "d", "duration_s": 36000,
        "incidents": [{"name": "gas", "kind": "toxic_gas", "facility": "SG-1",
                       "start_s": 3600, "duration_s": 3600,
                       "expect": [{"facility": "SG-1", "sensor": "H1", "level": "red",
                                   "within_s": 900},
                                  {"facility": "SG-1", "sensor": "M1", "level": "yellow",
                                   "within_s": 900}]}],
        "faults": [{"kind": "spike", "facility": "BR-1", "sensor": "D1", "start_s": 0,
                    "duration_s": 3600}]})
    alarms = [_event(3600 + 600, "SG-1", "H1", "red"),         # detected after 600 s
              _event(3600 + 1200, "SG-1", "M1", "yellow"),     # too late: 1,200 > 900
              _event(3600 + 1200, "SG-1", "M1", "yellow"),     # a duplicate: counted once
              _event(20000, "SG-2", "H1", "blue"),             # nothing explains it
              _event(600, "BR-1", "D1", "red"),                # a spike called a facility alarm
              _event(700, "BR-1", "D1", "blue", category="sensor")]  # right: a sensor fault
    s = score(sc, T0, sensors=100, alarms=alarms, districts={})
    got = {(e.sensor, e.detected, e.delay_s) for e in s.expectations}
    assert got == {("H1", True, 600.0), ("M1", False, None)}
    assert [a["facility"] for a in s.false_alarms] == ["SG-2"]
    assert s.false_alarm_rate == pytest.approx(1000 / (100 * 10))
    assert [a["fault"] for a in s.faults_as_facility_alarms] == ["spike"]
    assert s.sensor_or_gateway_alarms == 1 and not s.passed(sc)
    assert "MISSED" in s.table()


def test_plots_are_written(registry: Registry, tmp_path: Path) -> None:
    from simulators.plot import plot_incidents

    sc = load_scenario(SCENARIOS / "sewage-toxic-gas.yaml").model_copy(
        update={"duration_s": 16000.0, "incidents": load_scenario(
            SCENARIOS / "sewage-toxic-gas.yaml").incidents[:1]})
    run, events, _ = replay(registry, sc, T0)
    paths = plot_incidents(sc, registry, run.truth_document(), events, tmp_path)
    assert [p.name for p in paths] == ["sewage-toxic-gas-gas-build-up.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 10_000


def test_the_summary_page_shows_the_scenarios_figures(registry: Registry, tmp_path: Path) -> None:
    """One page per scenario (issue 17 item 4): precision/recall per kind, the delays and
    the alarms' timeline, from a real replay and its score; a false alarm is drawn."""
    from PIL import Image

    from simulators.plot import plot_summary

    sc = load_scenario(SCENARIOS / "sewage-toxic-gas.yaml").model_copy(
        update={"duration_s": 16000.0, "incidents": load_scenario(
            SCENARIOS / "sewage-toxic-gas.yaml").incidents[:1]})
    run, events, result = replay(registry, sc, T0)
    path = plot_summary(sc, result, events, run.t0, tmp_path)
    assert path.name == "summary.png"
    with Image.open(path) as im:
        assert im.size == (990, 765)
        assert len(im.getcolors(maxcolors=1 << 16) or ()) > 20  # drawn, not blank
    # A score with a false alarm and a missed risk draws them too (no crash on either).
    result.false_alarms.append({"t_s": 100.0, "facility": events[0].facility_id,
                                "sensor": "x", "rule": "r", "level": "red"})
    result.missed_risk.append({"facility": events[0].facility_id, "hazard": "h",
                               "start_s": 0.0, "end_s": 600.0})
    assert plot_summary(sc, result, events, run.t0, tmp_path / "2").stat().st_size > 10_000
