"""Metric-aware unit conversion: gas detectors' ppm, ppb and %vol to canonical units."""

from __future__ import annotations

import pytest

from schemas.kinds import METRICS, Metric
from schemas.units import (
    CH4_LEL_PERCENT_VOL,
    MOLAR_MASS_G_PER_MOL,
    MOLAR_VOLUME_L_PER_MOL,
    UnitError,
    conversion,
    conversion_for,
    to_canonical,
)


def convert(metric: Metric, value: float, unit: str) -> float:
    return to_canonical(value, unit, METRICS[metric].unit, metric=metric)


@pytest.mark.parametrize(("metric", "value", "unit", "expected"), [
    (Metric.H2S, 10.0, "ppm", 13.94),
    (Metric.H2S, 10.0, "ppmv", 13.94),
    (Metric.H2S, 10.0, "PPM", 13.94),
    (Metric.H2S, 10_000.0, "ppb", 13.94),
    (Metric.H2S, 0.001, "%vol", 13.94),
    (Metric.CO, 20.0, "ppm", 22.91),
    (Metric.NH3, 25.0, "ppm", 17.41),
    (Metric.SO2, 2.0, "ppm", 5.241),
    (Metric.CL2, 1.0, "ppm", 2.900),
    (Metric.CH4, 2.0, "%vol", 40.0),
    (Metric.CH4, 2.0, "vol%", 40.0),
    (Metric.CH4, 2.0, "%VOL", 40.0),
    (Metric.CH4, 5000.0, "ppm", 10.0),
    (Metric.CH4, 10_000.0, "ppmv", 20.0),
    (Metric.CH4, 1.0, "%vol", 20.0),
    (Metric.O2, 20.9, "%vol", 20.9),
    (Metric.O2, 20.9, "vol%", 20.9),
    (Metric.O2, 20.9, "%VOL", 20.9),
    (Metric.O2, 209_000.0, "ppm", 20.9),
])
def test_gas_volume_fractions_convert(metric: Metric, value: float, unit: str,
                                      expected: float) -> None:
    assert convert(metric, value, unit) == pytest.approx(expected, rel=1e-3)


def test_the_formula_and_its_assumptions() -> None:
    assert MOLAR_VOLUME_L_PER_MOL == 24.45 and CH4_LEL_PERCENT_VOL == 5.0
    assert conversion_for(Metric.H2S, "ppm", "mg/m³") == pytest.approx((34.08 / 24.45, 0.0))
    assert conversion_for(Metric.CO, "ppm", "mg/m³") == pytest.approx((28.01 / 24.45, 0.0))
    assert conversion_for(Metric.CH4, "%vol", "%LEL") == pytest.approx((20.0, 0.0))
    assert conversion_for(Metric.O2, "%vol", "%vol") == (1.0, 0.0)


def test_every_mass_concentration_gas_has_a_molar_mass() -> None:
    gases = {m for m, spec in METRICS.items() if spec.unit == "mg/m³"}
    assert gases == set(MOLAR_MASS_G_PER_MOL)


def test_canonical_and_other_units_still_convert() -> None:
    assert convert(Metric.H2S, 7.5, "mg/m³") == 7.5
    assert convert(Metric.H2S, 7.5, "mg/m3") == 7.5
    assert convert(Metric.H2S, 1500.0, "µg/m³") == pytest.approx(1.5)
    assert convert(Metric.CH4, 12.0, "%LEL") == 12.0
    assert convert(Metric.WATER_LEVEL, 150.0, "cm") == pytest.approx(1.5)
    assert to_canonical(150.0, "cm", "m") == pytest.approx(1.5)   # metric-blind caller


def test_metric_is_accepted_as_plain_string() -> None:
    assert conversion_for("h2s", "ppm", "mg/m³") == conversion_for(Metric.H2S, "ppm", "mg/m³")


@pytest.mark.parametrize(("metric", "unit"), [
    (Metric.COD, "ppm"),          # mg/L of water: not a gas
    (Metric.COD, "%vol"),
    (Metric.NH3N, "ppm"),
    (Metric.PH, "ppm"),
    (Metric.WATER_LEVEL, "ppm"),
    (Metric.H2S, "bogus"),        # unknown units
    (Metric.CH4, "furlongs"),
    (Metric.CO, "ppx"),
    (Metric.CH4, "%"),            # ambiguous: %vol or %LEL?
    (Metric.CH4, "mg/m³"),        # no mass-concentration rule for methane
    (Metric.H2S, "%LEL"),
    (Metric.O2, "%LEL"),          # %vol never becomes %LEL for any other gas, nor back
    (Metric.O2, "mg/m³"),
    (Metric.H2S, "m"),
])
def test_refused(metric: Metric, unit: str) -> None:
    with pytest.raises(UnitError):
        conversion_for(metric, unit, METRICS[metric].unit)


def test_volume_fraction_of_another_gas_never_becomes_lel() -> None:
    # Only CH4 has an explosive-limit rule; a %LEL canonical for any other metric refuses.
    for unit in ("ppm", "%vol", "vol%", "ppb"):
        with pytest.raises(UnitError):
            conversion_for(Metric.O2, unit, "%LEL")
        with pytest.raises(UnitError):
            conversion_for(Metric.H2S, unit, "%LEL")


def test_metric_blind_conversion_still_refuses_gas_rules() -> None:
    for unit, canonical in [("ppm", "mg/m³"), ("%vol", "%LEL"), ("ppm", "%LEL")]:
        with pytest.raises(UnitError):
            conversion(unit, canonical)


def test_conversion_for_is_cached() -> None:
    conversion_for(Metric.H2S, "ppm", "mg/m³")
    before = conversion_for.cache_info().hits
    conversion_for(Metric.H2S, "ppm", "mg/m³")
    assert conversion_for.cache_info().hits == before + 1
