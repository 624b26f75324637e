"""Contracts: telemetry parsing, registry validation, JSON Schema export."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import AlarmLevel, TelemetryMessage, load_registry
from schemas.export import EXPORTS, render
from schemas.registry import Registry, RegistryError
from schemas.units import UnitError, conversion, to_canonical

ROOT = Path(__file__).resolve().parents[2]


def msg(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "ts": "2026-07-01T08:00:00Z", "seq": 1,
        "readings": [{"sensor": "S-1", "metric": "water_level", "value": 1.5, "unit": "m"}]}
    base.update(over)
    return base


def test_telemetry_accepts_rfc3339_and_epoch_ms() -> None:
    a = TelemetryMessage.model_validate(msg(ts="2026-07-01T16:00:00+08:00"))
    b = TelemetryMessage.model_validate(msg(ts=1782892800000))
    assert a.ts == b.ts == datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("bad", [
    {"ts": "2026-07-01T08:00:00"},            # no offset
    {"ts": True},                             # bool is not a time
    {"ts": 1.5e12},                           # float epoch
    {"ts": 10**17},                           # microseconds mistaken for ms
    {"seq": "1"},                             # string counter
    {"seq": -1},
    {"readings": []},
    {"extra": 1},                             # unknown field
])
def test_telemetry_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TelemetryMessage.model_validate(msg(**bad))


@pytest.mark.parametrize("raw", ['NaN', 'Infinity', '"1.5"', 'true', 'null'])
def test_reading_value_must_be_a_finite_number(raw: str) -> None:
    text = ('{"ts": 0, "seq": 1, "readings": [{"sensor": "S-1", "metric": "water_level", '
            f'"value": {raw}, "unit": "m"}}]}}')
    with pytest.raises(ValidationError):
        TelemetryMessage.model_validate_json(text)


def test_json_round_trip_keeps_millisecond_utc() -> None:
    m = TelemetryMessage.model_validate(msg(ts=1782892800123))
    assert '"2026-07-01T08:00:00.123Z"' in m.model_dump_json()


@pytest.mark.parametrize(("unit", "canonical", "value", "expected"), [
    ("cm", "m", 150.0, 1.5),
    ("mm", "m", 1500.0, 1.5),
    ("°F", "°C", 212.0, 100.0),
    ("K", "°C", 273.15, 0.0),
    ("m3/s", "L/s", 0.5, 500.0),
    ("ustrain", "µε", 12.0, 12.0),
    ("gn", "m/s²", 1.0, 9.80665),
])
def test_unit_conversion(unit: str, canonical: str, value: float, expected: float) -> None:
    assert to_canonical(value, unit, canonical) == pytest.approx(expected)


@pytest.mark.parametrize(("unit", "canonical"), [("ppm", "mg/m³"), ("kg", "m"), ("bogus", "m"),
                                                 ("%LEL", "%vol"), ("pH", "m")])
def test_unit_conversion_refuses(unit: str, canonical: str) -> None:
    with pytest.raises(UnitError):
        conversion(unit, canonical)


def test_alarm_levels_order() -> None:
    assert [lv.severity for lv in AlarmLevel] == [1, 2, 3, 4]
    assert AlarmLevel.RED.grade == "I" and AlarmLevel.BLUE.grade == "IV"


def test_example_registry_is_realistic(registry: Registry) -> None:
    from schemas.kinds import FacilityKind

    assert {f.kind for f in registry.facilities} == set(FacilityKind)  # every kind has some
    assert len(registry.facilities) >= 36
    metrics_with_rules = set()
    for f in registry.facilities:
        assert 27.8 <= f.lat <= 28.0 and 120.7 <= f.lon <= 121.0, f.id
        for s in f.sensors:
            for r in s.rules:
                metrics_with_rules.add(s.metric)
                for lv in r.levels:
                    assert lv.default and len(lv.source) > 10, (s.id, lv)
        for c in f.composites:
            assert c.default and len(c.source) > 10
    # Every metric that can signal a risk has a default rule (pump_state, a spray's state and
    # the wind's direction are context only).
    from schemas.kinds import Metric

    # NH3, SO2 and Cl2 gas are there for detectors that report them (unit conversion and
    # life-safety scope); no facility of the example carries such a detector yet.
    assert set(Metric) - metrics_with_rules == {Metric.PUMP_STATE, Metric.NH3, Metric.SO2,
                                                Metric.CL2, Metric.SPRAY_STATE,
                                                Metric.WIND_DIRECTION}
    signals = {r.signal.value for f in registry.facilities for s in f.sensors for r in s.rules}
    assert {"value", "rate", "sum", "rms"} <= signals
    assert any(f.composites for f in registry.facilities)
    assert all(f.owner_unit for f in registry.facilities)  # whom its work orders go to


def _registry_yaml(sensor: str) -> str:
    return f"""
name: test
facilities:
  - id: F-1
    kind: drainage
    name: f
    district: d
    lat: 27.9
    lon: 120.8
    sensors:
{sensor}
"""


@pytest.mark.parametrize(("sensor", "message"), [
    ("      - {id: S-1, metric: water_level, unit: cm, range: [0, 7], interval_s: 60}",
     "not the canonical unit"),
    ("      - {id: S-1, metric: deflection, unit: mm, range: [0, 7], interval_s: 60}",
     "has no deflection"),
    ("      - {id: S-1, metric: water_level, unit: m, range: [7, 0], interval_s: 60}",
     "range min"),
    ("      - {id: S-1, metric: water_level, unit: m, range: [0, 7], interval_s: 60,\n"
     "         rules: [{levels: [{level: red, raise_at: 1, source: abc},\n"
     "                           {level: blue, raise_at: 2, source: abc}]}]}",
     "stricter with severity"),
    ("      - {id: S-1, metric: water_level, unit: m, range: [0, 7], interval_s: 60,\n"
     "         rules: [{levels: [{level: red, raise_at: 1, clear_at: 2, source: abc}]}]}",
     "wrong side"),
    ("      - {id: S-1, metric: water_level, unit: m, range: [0, 7], interval_s: 60,\n"
     "         rules: [{signal: sum, levels: [{level: red, raise_at: 1, source: abc}]}]}",
     "needs window_s"),
    ("      - {id: S-1, metric: water_level, unit: m, range: [0, 7], interval_s: 60,\n"
     "         rules: [{levels: [{level: red, raise_at: 1, source: abc}]},\n"
     "                 {levels: [{level: blue, raise_at: 1, source: abc}]}]}",
     "share the id"),
    ("      - {id: S-1, metric: water_level, unit: m, range: [0, 7], interval_s: 60}\n"
     "      - {id: S-1, metric: flow, unit: L/s, range: [0, 7], interval_s: 60}",
     "duplicate sensor id"),
])
def test_registry_errors_name_the_problem(tmp_path: Path, sensor: str, message: str) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(_registry_yaml(sensor))
    with pytest.raises(RegistryError, match=message):
        load_registry(p)


def test_registry_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("facilities: [")
    with pytest.raises(RegistryError, match="not valid YAML"):
        load_registry(tmp_path / "bad.yaml")


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_committed_json_schemas_are_current(name: str) -> None:
    committed = (ROOT / "schemas" / "json" / name).read_text(encoding="utf-8")
    assert committed == render(EXPORTS[name]), f"run `lifeline schemas export` ({name})"


def test_composite_must_name_known_sensors(tmp_path: Path) -> None:
    text = _registry_yaml("      - {id: S-1, metric: water_level, unit: m, range: [0, 7], "
                          "interval_s: 60}") + """    composites:
      - id: c1
        level: red
        source: test
        all_of: [{sensor: S-1, op: ">=", value: 1}, {sensor: S-9, op: "<=", value: 0}]
"""
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(RegistryError, match="unknown sensor S-9"):
        load_registry(p)


@pytest.mark.parametrize(("window", "ok"), [
    ({"reason": "night works", "daily_from": "22:00", "daily_to": "02:00"}, True),
    ({"reason": "works", "starts": "2026-07-01T00:00:00+08:00",
      "ends": "2026-07-02T00:00:00+08:00"}, True),
    ({"reason": "works", "daily_from": "22:00"}, False),
    ({"reason": "works", "daily_from": "22:00", "daily_to": "23:00",
      "starts": "2026-07-01T00:00:00Z", "ends": "2026-07-02T00:00:00Z"}, False),
    ({"reason": "works", "starts": "2026-07-02T00:00:00Z", "ends": "2026-07-01T00:00:00Z"}, False),
])
def test_maintenance_window_forms(window: dict[str, str], ok: bool) -> None:
    from schemas.registry import MaintenanceWindow

    if ok:
        MaintenanceWindow.model_validate(window)
    else:
        with pytest.raises(ValidationError):
            MaintenanceWindow.model_validate(window)


def test_registry_rejects_unknown_timezone(registry: Registry) -> None:
    raw = registry.model_dump(mode="json")
    raw["timezone"] = "Mars/Olympus"
    with pytest.raises(ValidationError, match="unknown time zone"):
        Registry.model_validate(raw)
