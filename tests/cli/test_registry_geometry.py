"""``lifeline registry check`` against a manhole's geometry: one warning line per rule,
gauge or geometry that contradicts it (naming facility, sensor, rule and the numbers),
exit code 0 as for every warning; a level order broken by the geometry is an error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from services.cli import app
from tests.support.paths import EXAMPLE_REGISTRY

# A storm manhole 3.0 m deep (cover 4.2, invert 1.2) on a DN800 concrete pipe at 1.25 per
# mille: Manning full-pipe capacity 0.468 m³/s, 0.93 m/s.
GEOM: dict[str, Any] = {"invert_m": 1.2, "cover_m": 4.2, "diameter_m": 0.8, "slope": 0.00125,
                        "roughness_n": 0.013}


def lv(name: str, raise_at: Any) -> dict[str, Any]:
    return {"level": name, "raise_at": raise_at, "source": "test"}


def gauge(*rules: dict[str, Any], rng: tuple[float, float] = (0, 7)) -> dict[str, Any]:
    return {"id": "F-1-L1", "metric": "water_level", "unit": "m", "range": list(rng),
            "interval_s": 60, "rules": list(rules)}


def meter(*levels: dict[str, Any]) -> dict[str, Any]:
    return {"id": "F-1-Q1", "metric": "flow", "unit": "L/s", "range": [0, 5000],
            "interval_s": 60, "rules": [{"levels": list(levels)}]}


def check(tmp_path: Path, *sensors: dict[str, Any], geometry: dict[str, Any] = GEOM
          ) -> tuple[int, list[str], dict[str, Any] | None]:
    """Run the command on a one-manhole registry: exit code, warning lines, summary."""
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "facilities": [{
        "id": "F-1", "kind": "drainage", "name": "F-1", "district": "d", "lat": 27.9,
        "lon": 120.8, "geometry": geometry, "sensors": list(sensors)}]}), encoding="utf-8")
    res = CliRunner().invoke(app, ["registry", "check", "--registry", str(path)])
    summary = json.loads(res.stdout) if res.exit_code == 0 else None
    return res.exit_code, res.stderr.splitlines(), summary


def test_a_consistent_manhole_has_no_findings(tmp_path: Path) -> None:
    code, lines, summary = check(
        tmp_path, gauge({"levels": [lv("yellow", {"geometry": "crown"}),
                                    lv("red", {"geometry": "cover", "offset_m": -0.1})]}),
        meter(lv("yellow", {"geometry": "capacity", "fraction": 0.9})))
    assert (code, lines) == (0, [])
    assert summary is not None and summary["with_geometry"] == 1 and summary["warnings"] == 0


def test_levels_above_the_cover_and_a_surcharge_level_below_the_crown(tmp_path: Path) -> None:
    code, lines, summary = check(tmp_path, gauge(
        {"levels": [lv("orange", 2.8), lv("red", 3.4)]},
        {"id": "surcharge", "levels": [lv("blue", 0.6)]}))
    assert code == 0 and summary is not None and summary["warnings"] == len(lines) == 2
    assert lines == [
        "warning: facility F-1: sensor F-1-L1: rule value-upper: red at 3.4 m is above the "
        "cover (3 m above the invert): water spills at the cover, the level never gets there",
        "warning: facility F-1: sensor F-1-L1: rule surcharge: blue at 0.6 m is a surcharge "
        "level below the crown (D 0.8 m): the pipe is not yet full there"]


def test_a_flow_threshold_far_above_the_manning_capacity(tmp_path: Path) -> None:
    _, lines, _ = check(tmp_path, meter(lv("yellow", 4000)))
    [line] = lines
    assert line.startswith("warning: facility F-1: sensor F-1-Q1: rule value-upper: yellow at "
                           "4000 L/s is 8.6 × the full-pipe capacity 468 L/s (Manning, "
                           "D 0.8 m, S 0.00125, n 0.013)")
    # Up to twice the capacity a surcharged pipe may still carry it: not flagged.
    assert check(tmp_path, meter(lv("yellow", 900)))[1] == []


def test_a_gauge_that_cannot_read_up_to_the_cover(tmp_path: Path) -> None:
    [line] = check(tmp_path, gauge({"levels": [lv("red", 2.0)]}, rng=(0, 2.5)))[1]
    assert line == ("warning: facility F-1: sensor F-1-L1: range 0-2.5 m does not reach the "
                    "cover (3 m above the invert): water near the cover reads over range")


@pytest.mark.parametrize(("geometry", "finding"), [
    (GEOM | {"cover_m": 1.8}, "geometry: crown 2 m is above the cover 1.8 m"),
    (GEOM | {"cover_m": 1.0}, "geometry: cover 1 m is not above the invert 1.2 m "
                              "(depth -0.2 m): no manhole"),
    (GEOM | {"slope": 0}, "geometry: slope 0: no gravity flow, the Manning capacity is 0"),
    (GEOM | {"slope": 0.0003}, "geometry: full-pipe velocity 0.46 m/s (D 0.8 m, S 0.0003, "
                               "n 0.013) is below the GB 50014 minimum 0.75 m/s"),
])
def test_geometry_that_contradicts_itself(tmp_path: Path, geometry: dict[str, Any],
                                          finding: str) -> None:
    code, lines, _ = check(tmp_path, gauge({"levels": [lv("red", 0.5)]}), geometry=geometry)
    assert code == 0
    assert any(line.startswith(f"warning: facility F-1: {finding}") for line in lines), lines


def test_red_below_orange_after_resolution_is_an_error_on_one_line(tmp_path: Path) -> None:
    code, lines, _ = check(tmp_path, gauge({"levels": [
        lv("orange", 2.9), lv("red", {"geometry": "cover", "offset_m": -0.5})]}))
    assert code == 1
    assert any("after resolving the geometry red at 2.5 (cover-0.5 m) is below orange at 2.9"
               in line for line in lines), lines


def test_the_example_registry_has_geometry_and_no_findings() -> None:
    res = CliRunner().invoke(app, ["registry", "check", "--registry", str(EXAMPLE_REGISTRY)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["with_geometry"] == 15  # 3 storm manholes in each of 5 zones
    assert (res.stderr, summary["warnings"]) == ("", 0)
