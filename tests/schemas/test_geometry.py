"""Thresholds derived from a manhole's geometry: the hydraulics (Manning, GB 50014), the
``{geometry: …}`` references resolved to plain numbers when the registry loads, what is
refused, and the example registry's drainage manholes."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from schemas import geometry as hy
from schemas.kinds import Metric
from schemas.registry import Geometry, Registry, load_registry
from tests.support.paths import EXAMPLE_REGISTRY, ROOT

# A storm manhole 3.2 m deep on a DN1000 concrete pipe at 1 per mille.
GEOM: dict[str, Any] = {"invert_m": 1.1, "cover_m": 4.3, "diameter_m": 1.0, "slope": 0.001,
                        "roughness_n": 0.013}


def level(name: str, raise_at: Any, clear_at: Any = None) -> dict[str, Any]:
    d: dict[str, Any] = {"level": name, "raise_at": raise_at, "source": "test"}
    if clear_at is not None:
        d["clear_at"] = clear_at
    return d


def gauge(*levels: dict[str, Any], sid: str = "L", rng: tuple[float, float] = (0, 7),
          **rule: Any) -> dict[str, Any]:
    return {"id": sid, "metric": "water_level", "unit": "m", "range": list(rng),
            "interval_s": 60, "rules": [{**rule, "levels": list(levels)}]}


def meter(*levels: dict[str, Any], sid: str = "Q") -> dict[str, Any]:
    return {"id": sid, "metric": "flow", "unit": "L/s", "range": [0, 5000], "interval_s": 60,
            "rules": [{"levels": list(levels)}]}


def doc(*sensors: dict[str, Any], geometry: dict[str, Any] | None = None,
        kind: str = "drainage") -> dict[str, Any]:
    facility: dict[str, Any] = {"id": "F-1", "kind": kind, "name": "F-1", "district": "d",
                                "lat": 27.9, "lon": 120.8, "sensors": list(sensors)}
    if geometry is not None:
        facility["geometry"] = geometry
    return {"name": "test", "facilities": [facility]}


def levels_of(reg: Registry, sid: str) -> list[tuple[str, float, float]]:
    s = reg.sensor("F-1", sid)
    assert s is not None
    return [(lv.level.value, lv.raise_at, lv.clear_value) for r in s.rules for lv in r.levels]


# --------------------------------------------------------------------------- hydraulics
def test_manning_full_pipe_capacity_of_a_dn1000_at_one_per_mille() -> None:
    # (1/n) A R^(2/3) S^(1/2) by hand: 76.92 × 0.7854 × 0.3969 × 0.03162 = 0.758 m³/s,
    # DOMAIN.md's ~0.76 m³/s.
    q = hy.full_pipe_capacity_m3_s(1.0, 0.001, 0.013)
    assert q == pytest.approx(0.758, abs=0.001)
    assert hy.full_pipe_velocity_m_s(1.0, 0.001, 0.013) == pytest.approx(q / (math.pi / 4))


@pytest.mark.parametrize(("d", "s", "n"), [(0.6, 0.003, 0.013), (1.2, 0.0008, 0.009),
                                           (1.5, 0.0015, 0.014)])
def test_manning_scales_as_d_to_8_3_root_slope_over_n(d: float, s: float, n: float) -> None:
    q = hy.full_pipe_capacity_m3_s(d, s, n)
    assert hy.full_pipe_capacity_m3_s(2 * d, s, n) == pytest.approx(q * 2 ** (8 / 3))
    assert hy.full_pipe_capacity_m3_s(d, 4 * s, n) == pytest.approx(2 * q)
    assert hy.full_pipe_capacity_m3_s(d, s, n / 2) == pytest.approx(2 * q)
    assert hy.full_pipe_hydraulic_radius_m(d) == pytest.approx(
        hy.full_pipe_area_m2(d) / (math.pi * d))


def test_no_slope_no_gravity_flow_and_levels_are_depths_above_the_invert() -> None:
    assert hy.full_pipe_capacity_m3_s(1.0, 0.0, 0.013) == 0.0
    assert hy.full_pipe_capacity_m3_s(1.0, -0.001, 0.013) == 0.0
    assert hy.depth_above_invert_m(3.5, 1.1) == pytest.approx(2.4)
    assert hy.cover_depth_m(4.3, 1.1) == pytest.approx(3.2)
    assert hy.freeboard_m(2.9, 4.3, 1.1) == pytest.approx(0.3)


# --------------------------------------------------------------------------- references
def test_levels_from_crown_cover_fraction_and_elevation_become_numbers() -> None:
    reg = Registry.model_validate(doc(
        gauge(level("blue", {"geometry": "crown", "fraction": 0.75}),
              level("yellow", {"geometry": "crown"}, {"geometry": "crown", "offset_m": -0.05}),
              level("orange", {"elevation_m": 3.6}),
              level("red", {"geometry": "cover", "offset_m": -0.3})),
        meter(level("yellow", {"geometry": "capacity", "fraction": 0.9})),
        geometry=GEOM))
    depth = GEOM["cover_m"] - GEOM["invert_m"]
    got = levels_of(reg, "L")
    assert [name for name, _, _ in got] == ["blue", "yellow", "orange", "red"]
    assert [x for _, r, c in got for x in (r, c)] == pytest.approx(
        [0.75, 0.75, 1.0, 0.95, 3.6 - 1.1, 3.6 - 1.1, depth - 0.3, depth - 0.3])
    cap = 1000 * hy.full_pipe_capacity_m3_s(1.0, 0.001, 0.013)
    [(_, q, _)] = levels_of(reg, "Q")
    assert q == pytest.approx(0.9 * cap, abs=0.001)
    s = reg.sensor("F-1", "L")
    assert s is not None and s.pipe_diameter_m == 1.0  # the fill ratio h/D from the geometry
    red = s.rules[0].ordered_levels()[-1]
    assert isinstance(red.raise_at, float) and red.from_geometry is not None
    assert red.from_geometry.raise_at is not None
    assert red.from_geometry.raise_at.label() == "cover-0.3 m"


def test_crown_may_be_given_instead_of_the_diameter() -> None:
    geom = {k: v for k, v in GEOM.items() if k != "diameter_m"} | {"crown_m": 2.3}
    reg = Registry.model_validate(doc(gauge(level("blue", {"geometry": "crown"})),
                                      geometry=geom))
    [(name, raise_at, clear_at)] = levels_of(reg, "L")
    assert name == "blue" and (raise_at, clear_at) == pytest.approx((1.2, 1.2))
    assert Geometry.model_validate(geom).capacity_m3_s == pytest.approx(
        hy.full_pipe_capacity_m3_s(1.2, 0.001, 0.013))


def test_a_dumped_registry_loads_again_and_is_checked_against_its_geometry() -> None:
    reg = Registry.model_validate(doc(gauge(level("red", {"geometry": "cover",
                                                          "offset_m": -0.1})), geometry=GEOM))
    assert Registry.model_validate_json(reg.model_dump_json(exclude_none=True)) == reg
    dumped = reg.model_dump(mode="json", exclude_none=True)
    assert Registry.model_validate(dumped) == reg
    dumped["facilities"][0]["geometry"]["cover_m"] = 4.0  # resurveyed: the number is stale
    with pytest.raises(ValidationError, match=r"3\.1 disagrees with cover-0\.1 m = 2\.8"):
        Registry.model_validate(dumped)


BAD = [
    (doc(gauge(level("red", {"geometry": "cover"}))), "needs the facility's geometry"),
    (doc(meter(level("red", {"geometry": "crown"})), geometry=GEOM),
     "crown applies to water_level rules, not flow"),
    (doc(gauge(level("red", {"geometry": "capacity"})), geometry=GEOM),
     "capacity applies to flow rules, not water_level"),
    (doc(meter(level("red", {"geometry": "capacity"})),
         geometry={k: v for k, v in GEOM.items() if k != "slope"}),
     "capacity needs the geometry's pipe"),
    (doc(meter(level("red", {"geometry": "capacity"})), geometry=GEOM | {"slope": 0}),
     "capacity is 0 at slope 0"),
    (doc(gauge(level("red", {"geometry": "cover"}), signal="rate", window_s=600),
         geometry=GEOM), "not rate"),
    (doc(gauge(level("red", {"geometry": "cover"})), geometry={"diameter_m": 1.0}),
     "needs the geometry's invert_m and cover_m"),
    (doc(gauge(level("red", {"geometry": "cover", "elevation_m": 3.0})), geometry=GEOM),
     "either geometry"),
    (doc(meter(level("red", {"geometry": "capacity", "offset_m": 10})), geometry=GEOM),
     "offset_m goes with crown and cover only"),
    (doc(gauge(level("orange", 2.9), level("red", {"geometry": "cover", "offset_m": -0.5})),
         geometry=GEOM),
     r"after resolving the geometry red at 2\.7 \(cover-0\.5 m\) is below orange at 2\.9"),
    (doc(gauge(level("red", 3.0)), geometry=GEOM | {"crown_m": 2.5}),
     "crown_m 2.5 is not invert_m 1.1 \\+ diameter_m 1"),
    (doc(gauge(level("red", 3.0)) | {"pipe_diameter_m": 1.2}, geometry=GEOM),
     "pipe_diameter_m 1.2 disagrees with the geometry's pipe D 1 m"),
    (doc({"id": "D", "metric": "deflection", "unit": "mm", "range": [0, 100],
          "interval_s": 10}, geometry=GEOM, kind="bridge"),
     "geometry applies to drainage and sewage facilities, not bridge"),
]


@pytest.mark.parametrize(("raw", "message"), BAD)
def test_what_geometry_cannot_give_is_refused_naming_the_rule(raw: dict[str, Any],
                                                              message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Registry.model_validate(raw)


# --------------------------------------------------------------------------- the example
def test_the_example_manholes_take_their_levels_from_their_geometry() -> None:
    reg = load_registry(EXAMPLE_REGISTRY)
    manholes = [f for f in reg.facilities if f.id.startswith("DR-")]
    assert manholes and all(f.geometry is not None for f in manholes)
    for f in manholes:
        g = f.geometry
        assert g is not None and g.depth is not None and g.diameter is not None
        assert 3.5 - 0.3 <= (g.cover_m or 0) <= 5.0  # reclaimed land 3.5-5 m, falling seawards
        level, flow = (next(s for s in f.sensors if s.metric is m)
                       for m in (Metric.WATER_LEVEL, Metric.FLOW))
        assert level.pipe_diameter_m == pytest.approx(g.diameter)
        by_key = {r.key: r for r in level.rules}
        assert [lv.raise_at for lv in by_key["value-upper"].ordered_levels()] == pytest.approx(
            [g.depth - 1.2, g.depth - 0.75, g.depth - 0.3, g.depth - 0.05])
        # Slope and roughness (decision 0023): the flow level is the full-pipe capacity,
        # which at 1/D per mille and n 0.013 is the simulator's full-bore flow,
        # 760 L/s × D^(13/6) (simulators/facilities.py).
        cap = g.capacity_m3_s
        assert cap is not None and cap * 1000 == pytest.approx(760 * g.diameter ** (13 / 6),
                                                               rel=0.01)
        [yellow] = flow.rules[0].levels
        assert yellow.from_geometry is not None and yellow.raise_at == pytest.approx(cap * 1000)
        assert f.geometry_warnings() == []


def test_the_committed_json_schema_knows_geometry_and_level_references() -> None:
    schema = json.loads((ROOT / "schemas" / "json" / "registry.schema.json").read_text())
    defs = schema["$defs"]
    assert {"Geometry", "GeometryRef", "FromGeometry"} <= set(defs)
    assert defs["Facility"]["properties"]["geometry"]
    number, ref = defs["Level"]["properties"]["raise_at"]["anyOf"]
    assert number == {"type": "number"} and ref["title"] == "GeometryRef"
    assert set(defs["GeometryRef"]["properties"]) == {"geometry", "elevation_m", "fraction",
                                                      "offset_m"}


def test_the_example_with_its_references_validates_against_the_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "schemas" / "json" / "registry.schema.json").read_text())
    raw = yaml.safe_load(EXAMPLE_REGISTRY.read_text(encoding="utf-8"))
    assert "geometry" in json.dumps(raw["facilities"][0]["sensors"][0]["rules"][0]["levels"])
    jsonschema.validate(raw, schema)
    raw["facilities"][0]["sensors"][0]["rules"][0]["levels"][0]["raise_at"] = {"geometry": "x"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, schema)
