"""Issue 18's duty kinds (decision 0020): site, plant, outfall and building — their metrics
and units, the example facilities of deploy/registry/example_duties.py with sourced default
rules, and their dashboards."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from schemas.kinds import METRICS, FacilityKind, Metric
from schemas.registry import Facility, Registry, Signal
from schemas.units import UnitError, conversion, to_canonical
from services.dashboards.generate import dashboards, render, thresholds

ROOT = Path(__file__).resolve().parents[2]
DUTY_KINDS = (FacilityKind.SITE, FacilityKind.PLANT, FacilityKind.OUTFALL, FacilityKind.BUILDING)


def _duties() -> ModuleType:
    folder = ROOT / "deploy" / "registry"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("example_duties", folder / "example_duties.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(folder))


DUTIES = _duties()


@pytest.fixture(scope="module")
def wired(registry: Registry) -> Registry:
    """The example registry, which the generator makes with the duty facilities."""
    assert {f["id"] for f in DUTIES.facilities(random.Random(0))} <= {f.id for f in
                                                                   registry.facilities}
    return registry


def _facility(kind: str, metric: str, unit: str) -> dict[str, Any]:
    return {"id": "X-1", "kind": kind, "name": "x", "district": "d", "lat": 27.9, "lon": 120.8,
            "sensors": [{"id": "X-1-A", "metric": metric, "unit": unit, "range": [0, 1000],
                         "interval_s": 60}]}


@pytest.mark.parametrize(("kind", "metric"), [
    ("site", "pm10"), ("site", "noise"), ("site", "spray_state"), ("plant", "bod5"),
    ("plant", "tp"), ("plant", "cod"), ("plant", "flow"), ("outfall", "water_level"),
    ("outfall", "cod"), ("building", "tilt"), ("building", "settlement"),
    ("building", "gnss_displacement")])
def test_a_duty_kind_takes_its_metrics(kind: str, metric: str) -> None:
    Facility.model_validate(_facility(kind, metric, METRICS[Metric(metric)].unit))


@pytest.mark.parametrize(("kind", "metric"), [
    ("drainage", "pm10"), ("bridge", "settlement"), ("sewage", "bod5"), ("site", "cod"),
    ("building", "pm10"), ("outfall", "tilt")])
def test_a_kind_refuses_metrics_that_are_not_its_own(kind: str, metric: str) -> None:
    with pytest.raises(ValueError, match=f"a {kind} facility has no {metric}"):
        Facility.model_validate(_facility(kind, metric, METRICS[Metric(metric)].unit))


def test_duty_units_convert_to_the_canonical_ones() -> None:
    assert to_canonical(0.15, "mg/m³", "µg/m³") == pytest.approx(150.0)
    assert to_canonical(150, "ug/m3", "µg/m³") == pytest.approx(150.0)
    # A tilt ratio read as a small angle: 7 ‰ is 0.401°, within 0.003 % of atan.
    assert to_canonical(7, "‰", "deg") == pytest.approx(math.degrees(math.atan(0.007)), rel=1e-4)
    assert to_canonical(1, "%", "deg") == pytest.approx(0.573, abs=1e-3)
    assert conversion("dBA", "dB(A)") == (1.0, 0.0)
    with pytest.raises(UnitError):
        conversion("dB(A)", "µg/m³")  # a sound level is its own dimension


def test_example_duty_facilities_are_in_the_seed_zones_with_sourced_defaults(
        wired: Registry) -> None:
    duty = [f for f in wired.facilities if f.kind in DUTY_KINDS]
    by_kind = {k: [f for f in duty if f.kind is k] for k in DUTY_KINDS}
    assert {f.district_zh for f in by_kind[FacilityKind.SITE]} == {"空港新区"}
    assert len(by_kind[FacilityKind.SITE]) == 4  # three sites and the background station
    assert [f.district_zh for f in by_kind[FacilityKind.PLANT]] == ["瓯飞工程"]
    assert len(by_kind[FacilityKind.OUTFALL]) == 2
    assert {f.district_zh for f in by_kind[FacilityKind.BUILDING]} == {"龙湾区"}
    assert len(by_kind[FacilityKind.BUILDING]) == 3
    levels = [lv for f in duty for s in f.sensors for r in s.rules for lv in r.levels]
    assert levels and all(lv.default and lv.source for lv in levels)
    assert all(c.default and c.source for f in duty for c in f.composites)
    for fid in DUTIES.CONTRACTORS:
        f = wired.facility(fid)
        assert f is not None and f.kind is FacilityKind.SITE


def test_site_rules_follow_published_practice(wired: Registry) -> None:
    site = wired.facility("CS-KG-001")
    assert site is not None
    pm10 = next(s for s in site.sensors if s.metric is Metric.PM10)
    hourly = next(r for r in pm10.rules if r.signal is Signal.MEAN)
    assert hourly.window_s == 3600
    assert [(lv.level.value, lv.raise_at, lv.clear_value) for lv in hourly.ordered_levels()] == [
        ("yellow", 150, 140), ("orange", 200, 150)]  # stop at 200, resume below 150
    count = next(r for r in pm10.rules if r.signal is Signal.COUNT)
    # DB13/2934's form: 15-minute means of the excess over the background station
    assert (count.of, count.window_s, count.count_above) == (Signal.MEAN, 900, 80)
    assert count.minus is not None and count.minus.facility == "AB-KG-001"
    [window] = site.maintenance
    assert window.metrics == [Metric.NOISE] and window.silence_up_to.value == "blue"
    background = wired.facility("AB-KG-001")
    assert background is not None and not any(s.rules for s in background.sensors)


def test_plant_effluent_rules_are_grade_1a(wired: Registry) -> None:
    plant = wired.facility("PL-OF-001")
    assert plant is not None
    daily = {s.metric: r.levels[0].raise_at for s in plant.sensors if "-EF-" in s.id
             for r in s.rules if r.window_s == 86400}
    assert daily == {Metric.COD: 50, Metric.BOD5: 10, Metric.NH3N: 5, Metric.TN: 15,
                     Metric.TP: 0.5}


def test_duty_dashboards_use_their_own_facilities_rules(registry: Registry,
                                                        wired: Registry) -> None:
    boards = dashboards(wired)
    site = boards["site.json"]
    site_map = next(p for p in site["panels"] if p["type"] == "geomap")
    steps = site_map["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 150, 200]
    tilt = thresholds(wired, Metric.TILT, FacilityKind.BUILDING)["steps"]
    assert [s["value"] for s in tilt] == [None, 0.2292, 0.4011, 0.5729]
    assert tilt != thresholds(wired, Metric.TILT)["steps"]  # the bridge's
    plant_titles = " ".join(p["title"] for p in boards["plant.json"]["panels"])
    assert "Inflow vs rain" in plant_titles
    building_titles = " ".join(p["title"] for p in boards["building.json"]["panels"])
    assert "Tilt trend" in building_titles
    # The duty facilities, appended, leave the other kinds' dashboards as they are.
    before = dashboards(registry)
    for name in ("overview.json", "drainage.json", "bridge.json", "sewage.json"):
        assert render(boards[name]) == render(before[name]), name
