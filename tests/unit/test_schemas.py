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
    kinds = {f.kind.value for f in registry.facilities}
    assert kinds == {"drainage", "bridge", "sewage"}
    assert len(registry.facilities) >= 36
    for f in registry.facilities:
        assert 27.8 <= f.lat <= 28.0 and 120.7 <= f.lon <= 121.0, f.id
        for s in f.sensors:
            for t in s.thresholds:
                assert t.default and len(t.source) > 10, (s.id, t)


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
     "         thresholds: [{level: red, raise_at: 1, source: abc},\n"
     "                      {level: blue, raise_at: 2, source: abc}]}",
     "stricter with level"),
    ("      - {id: S-1, metric: water_level, unit: m, range: [0, 7], interval_s: 60,\n"
     "         thresholds: [{level: red, raise_at: 1, clear_at: 2, source: abc}]}",
     "clear_at"),
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
