"""The physics of issue 18's duty kinds (decision 0020): construction-site dust over a
regional background, a treatment plant diluted by rain, an outfall on the tide, a house
tilting after nearby excavation — and the hazards each reports."""

from __future__ import annotations

import random
from typing import Any

import pytest

from schemas.kinds import Metric
from schemas.registry import Facility
from schemas.scenario import Incident, IncidentKind
from simulators.facilities import (
    MODELS,
    OUTFALL_TIDE,
    BuildingModel,
    Env,
    Hazard,
    Model,
    OutfallModel,
    PlantModel,
    SiteModel,
    model_for,
    regional_pm10,
)
from simulators.weather import outfall_level

DT = 60.0


def _facility(fid: str, kind: str, sensors: list[tuple[str, str, str]]) -> Facility:
    return Facility.model_validate({
        "id": fid, "kind": kind, "name": fid, "district": "d", "lat": 27.9, "lon": 120.8,
        "sensors": [{"id": f"{fid}-{sid}", "metric": m, "unit": u, "range": [-10, 10000],
                     "interval_s": 60} for sid, m, u in sensors]})


SITE = [("PM10", "pm10", "µg/m³"), ("PM25", "pm25", "µg/m³"), ("TSP", "tsp", "µg/m³"),
        ("N1", "noise", "dB(A)"), ("WS", "wind_speed", "m/s"), ("SP", "spray_state", "state")]
PLANT = [("IN-Q", "flow", "L/s"), ("IN-COD", "cod", "mg/L"), ("EF-COD", "cod", "mg/L"),
         ("EF-NH3N", "nh3n", "mg/L"), ("EF-TN", "tn", "mg/L"), ("EF-TP", "tp", "mg/L"),
         ("R1", "rainfall", "mm")]
OUTFALL = [("T1", "water_level", "m"), ("L1", "water_level", "m"), ("C1", "cod", "mg/L"),
           ("R1", "rainfall", "mm")]
BUILDING = [("T1", "tilt", "deg"), ("C1", "crack_width", "mm"), ("S1", "settlement", "mm"),
            ("G1", "gnss_displacement", "mm")]


def _incident(kind: IncidentKind, fid: str, start_s: float, duration_s: float,
              severity: float = 1.0) -> Incident:
    return Incident(name="x", kind=kind, facility=fid, start_s=start_s, duration_s=duration_s,
                    severity=severity)


def run(model: Model, hours: float, *, rain: Any = None, incidents: tuple[Incident, ...] = (),
        start_s: float = 0.0, day_of_year: int = 100) -> list[tuple[float, set[Hazard]]]:
    """Advance ``model`` for ``hours`` from ``start_s`` (local midnight at 0); the hazards
    of every step."""
    out = []
    t = start_s
    while t < start_s + hours * 3600:
        active = [(i, (t - i.start_s) / i.duration_s) for i in incidents
                  if i.start_s <= t < i.start_s + i.duration_s]
        env = Env(t, (t / 3600) % 24, rain(t) if rain else 0.0, active,
                  day_of_year=day_of_year + int(t // 86400))
        model.advance(env, DT)
        out.append((t, model.hazards(env)))
        t += DT
    return out


def _env(t: float) -> Env:
    return Env(t, (t / 3600) % 24, 0.0, [], day_of_year=100)


def test_every_duty_kind_has_its_model() -> None:
    for fid, kind, sensors, cls in (("CS-1", "site", SITE, SiteModel),
                                    ("PL-1", "plant", PLANT, PlantModel),
                                    ("OF-1", "outfall", OUTFALL, OutfallModel),
                                    ("HB-1", "building", BUILDING, BuildingModel)):
        f = _facility(fid, kind, sensors)
        assert MODELS[f.kind] is cls and isinstance(model_for(f, random.Random(1)), cls)


def test_the_background_alone_raises_no_dust_hazard_and_is_the_same_at_every_site() -> None:
    station = SiteModel(_facility("AB-1", "site", SITE[:3]), random.Random(1))
    site = SiteModel(_facility("CS-1", "site", SITE), random.Random(2))
    hazards = run(station, 24 * 10)  # ten days, haze days among them
    assert not any(h for _, h in hazards)
    run(site, 24 * 10)
    last = 10 * 86400 - DT  # the last step: 23:59 on day 109
    assert station.background == site.background == regional_pm10(109, last / 3600 % 24)
    assert site.excess == 0.0  # at midnight the works are quiet: background only
    days = [regional_pm10(d, 8.0) for d in range(1, 366)]
    assert max(days) < 150  # the regional background never reaches the site warning level


def test_muck_trucks_raise_the_sites_dust_and_switch_the_spray_on() -> None:
    site = SiteModel(_facility("CS-1", "site", SITE), random.Random(2))
    trucks = _incident(IncidentKind.HEAVY_TRAFFIC, "CS-1", 9 * 3600, 3 * 3600, 1.5)
    hazards = run(site, 12, incidents=(trucks,))
    dusty = [t for t, h in hazards if Hazard.DUST in h]
    assert dusty and dusty[0] >= trucks.start_s
    assert not any(Hazard.DUST in h for t, h in hazards if t < trucks.start_s)
    env = _env(11 * 3600)
    assert site.spray and site.physical(Metric.PM10, env) > site.background
    assert site.physical(Metric.TSP, env) > site.physical(Metric.PM10, env) \
        > site.physical(Metric.PM25, env)
    # trucks at night are noise above GB 12523's 55 dB(A) even when the dust is small
    night = SiteModel(_facility("CS-2", "site", SITE), random.Random(3))
    late = _incident(IncidentKind.HEAVY_TRAFFIC, "CS-2", 23 * 3600, 1800, 0.1)
    assert any(Hazard.NOISE in h for _, h in run(night, 24, incidents=(late,)))


def test_rain_dilutes_the_plants_inflow_cod_falls_while_flow_rises() -> None:
    plant = PlantModel(_facility("PL-1", "plant", PLANT), random.Random(4))
    hazards = run(plant, 48)
    dry_flow, dry_cod = plant.flow, plant.inflow[Metric.COD]
    assert not any(h for _, h in hazards)  # dry weather: effluent within grade 1A
    assert all(plant.effluent[m] < limit for m, limit in
               ((Metric.COD, 50), (Metric.NH3N, 5), (Metric.TN, 15), (Metric.TP, 0.5)))
    storm = run(plant, 6, rain=lambda t: 25.0, start_s=48 * 3600)
    assert plant.flow > 1.3 * dry_flow and plant.inflow[Metric.COD] < 0.8 * dry_cod
    assert any(Hazard.INFLOW_DILUTION in h for _, h in storm)


def test_an_industrial_slug_pushes_the_effluent_over_grade_1a() -> None:
    plant = PlantModel(_facility("PL-1", "plant", PLANT), random.Random(4))
    slug = _incident(IncidentKind.ILLEGAL_DISCHARGE, "PL-1", 24 * 3600, 12 * 3600, 2.0)
    hazards = run(plant, 48, incidents=(slug,))
    exceeded = [t for t, h in hazards if Hazard.EFFLUENT_EXCEEDANCE in h]
    assert exceeded and exceeded[0] > slug.start_s


def test_the_outfall_follows_the_tide_and_finds_a_misconnection_in_dry_weather() -> None:
    outfall = OutfallModel(_facility("OF-1", "outfall", OUTFALL), random.Random(5))
    levels = []
    for k in range(50):  # 25 hours, half an hour at a time
        last = run(outfall, 0.5, start_s=k * 1800)[-1][0]
        assert outfall.river == pytest.approx(outfall_level(OUTFALL_TIDE, last))
        levels.append(outfall.river)
    spread = max(levels) - min(levels)
    assert spread > OUTFALL_TIDE.neap_range_m  # a semidiurnal tide, spring range at t = 0
    assert outfall.cod() < 30  # standing water in a dry storm pipe
    mis = _incident(IncidentKind.MISCONNECTION, "OF-1", 25 * 3600, 24 * 3600)
    hazards = run(outfall, 12, incidents=(mis,), start_s=25 * 3600)
    assert all(Hazard.MISCONNECTION in h for _, h in hazards)
    assert outfall.cod() > 100
    # the runner's boundary level, when it gives one, is the river at the outfall
    outfall.advance(Env(0.0, 0.0, 0.0, [], backwater_m=4.2), DT)
    assert outfall.river == 4.2 and Hazard.HIGH_WATER in outfall.hazards(_env(0.0))


def test_a_house_tilts_with_a_step_after_nearby_excavation() -> None:
    house = BuildingModel(_facility("HB-1", "building", BUILDING), random.Random(6))
    calm = run(house, 48)
    assert not any(h for _, h in calm)
    before = house.physical(Metric.TILT, _env(48 * 3600))
    dig = _incident(IncidentKind.PIER_TILT, "HB-1", 48 * 3600 + DT, 30 * 86400)
    hazards = run(house, 72, incidents=(dig,), start_s=48 * 3600)
    first = house.physical(Metric.TILT, _env(48 * 3600 + DT))
    assert first - before > 0.0  # still rising with the consolidation tail
    assert house.tilt_change() >= 0.2  # the step
    assert house.physical(Metric.GNSS_DISPLACEMENT, _env(0)) > 30  # the roof moved with it
    rate = house.settlement_rate_30d()
    assert rate is not None and rate > 4
    assert any(Hazard.BUILDING_DANGER in h for _, h in hazards)
