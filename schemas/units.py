"""Unit conversion to each metric's canonical unit.

Pint does the dimensional analysis once per (unit, canonical unit) pair; the result is
cached as a linear map ``value * factor + offset`` so the hot path costs a dict lookup.
Units Lifeline's field devices use but pint does not know (microstrain, %LEL, pH, pump
state, A-weighted decibels) are defined here as their own dimensions, so they convert only
to themselves (a sound level is logarithmic: dB(A) is never scaled).

Tilt: an inclinometer on a building reports a tilt *ratio* (offset over height, in ‰ or %,
as JGJ 125 and GB 50007 state limits); the canonical unit is degrees. Pint reads a ratio as
radians (small angles: tan θ ≈ θ, off by θ²/3 — 0.003 % at 1 %), so 1 ‰ = 0.0573° and
1 % = 0.573°.

Gas detectors (four-in-one H2S/CH4/CO/O2 detectors) report volume fractions — ppm, ppb,
%vol — that pint alone cannot turn into a mass concentration or a share of the explosive
limit: that depends on the gas. :func:`conversion_for` knows the metric and applies the
rules in :data:`MOLAR_MASS_G_PER_MOL` and :data:`CH4_LEL_PERCENT_VOL`; :func:`conversion`
stays metric-blind and refuses those conversions.
"""

from __future__ import annotations

import re
import tokenize
from functools import lru_cache
from typing import Any

import pint

from schemas.errors import LifelineError
from schemas.kinds import Metric


class UnitError(LifelineError, ValueError):
    """A unit is unknown or cannot be converted to the metric's canonical unit."""


# Spellings seen on device data sheets -> pint expressions.
_ALIASES: dict[str, str] = {
    "µε": "microstrain",
    "με": "microstrain",
    "ue": "microstrain",
    "microstrain": "microstrain",
    "%LEL": "lel_percent",
    "%lel": "lel_percent",
    "LEL%": "lel_percent",
    "pH": "ph_unit",
    "state": "state_unit",
    "%vol": "percent",
    "%": "percent",
    "vol%": "percent",
    "°C": "degC",
    "℃": "degC",
    "°F": "degF",
    "m/s²": "m/s**2",
    "m/s2": "m/s**2",
    "mg/m³": "mg/m**3",
    "mg/m3": "mg/m**3",
    "m³/s": "m**3/s",
    "m3/s": "m**3/s",
    "m³/h": "m**3/h",
    "m3/h": "m**3/h",
    "L/s": "L/s",
    "l/s": "L/s",
    "deg": "degree",
    "°": "degree",
    "mrad": "milliradian",
    "rad": "radian",
    "gn": "standard_gravity",
    "µg/m³": "microgram/m**3",
    "µg/m3": "microgram/m**3",
    "μg/m³": "microgram/m**3",
    "μg/m3": "microgram/m**3",
    "ug/m3": "microgram/m**3",
    "dB(A)": "dba_unit",
    "dBA": "dba_unit",
    "dB(a)": "dba_unit",
    "‰": "permille",
}


@lru_cache(maxsize=1)
def _registry() -> Any:
    ureg: Any = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    ureg.define("microstrain = [strain] = ustrain")
    ureg.define("lel_percent = [lel]")
    ureg.define("ph_unit = [ph]")
    ureg.define("state_unit = [state]")
    ureg.define("dba_unit = [sound_level_a]")
    return ureg


# What a unit written by a device can look like; anything else never reaches pint's parser
# (found by fuzzing: ")" made pint's tokenizer raise; long hostile strings cost CPU).
_UNIT_SYNTAX = re.compile(r"^[A-Za-z0-9µμ°℃%²³/*^.·\- ]{1,24}$")


def _parse(unit: str) -> Any:
    expr = _ALIASES.get(unit, unit)
    if unit not in _ALIASES and not _UNIT_SYNTAX.fullmatch(unit):
        raise UnitError(f"unknown unit {unit[:40]!r}")
    try:
        return _registry().Quantity(1.0, expr).units
    except (pint.errors.PintError, AttributeError, TypeError, ValueError, SyntaxError,
            AssertionError, KeyError, IndexError, ArithmeticError, RecursionError,
            tokenize.TokenError) as exc:
        raise UnitError(f"unknown unit {unit!r}") from exc


@lru_cache(maxsize=4096)
def conversion(unit: str, canonical: str) -> tuple[float, float]:
    """Return ``(factor, offset)`` with ``canonical_value = value * factor + offset``.

    Raises :class:`UnitError` when ``unit`` is unknown or of another dimension.
    """
    if unit == canonical:
        return (1.0, 0.0)
    src, dst = _parse(unit), _parse(canonical)
    ureg = _registry()
    try:
        zero = float(ureg.Quantity(0.0, src).to(dst).magnitude)
        one = float(ureg.Quantity(1.0, src).to(dst).magnitude)
    except (pint.errors.PintError, ArithmeticError, TypeError, ValueError) as exc:
        raise UnitError(f"unit {unit!r} cannot be converted to {canonical!r}") from exc
    return (one - zero, zero)


# --- gases: volume fraction -> the metric's canonical unit -----------------------------

MOLAR_VOLUME_L_PER_MOL = 24.45
"""Molar volume of an ideal gas at 25 °C and 101.325 kPa, in L/mol.

All ppm -> mg/m³ conversions assume these reference conditions (the usual occupational
hygiene convention): ``mg/m³ = ppm × M / 24.45`` with ``M`` in g/mol. Detectors do not
report their own temperature and pressure, so no correction is made for them.
"""

MOLAR_MASS_G_PER_MOL: dict[str, float] = {
    Metric.H2S: 34.08,
    Metric.CO: 28.01,
    Metric.NH3: 17.03,
    Metric.SO2: 64.07,
    Metric.CL2: 70.90,
}
"""Molar mass (g/mol) of every gas metric whose canonical unit is a mass concentration.

At 25 °C / 101.325 kPa (24.45 L/mol) 1 ppm H2S ≈ 1.394 mg/m³, CO ≈ 1.146, NH3 ≈ 0.697,
SO2 ≈ 2.620, Cl2 ≈ 2.900. A volume fraction of any other gas never becomes mg/m³.
"""

CH4_LEL_PERCENT_VOL = 5.0
"""Lower explosive limit of methane in air, in %vol: a stated assumption.

GB/T 50493 and IEC 60079-20-1 give values between 4.4 and 5.0 %vol; Lifeline uses 5.0, so
1 %vol = 20 %LEL and 10,000 ppm = 1 %vol = 20 %LEL. 5.0 is the less conservative end of
that range: with 4.4 the same gas would read about 14 % higher in %LEL, so a %LEL alarm
threshold is reached at a slightly higher methane concentration here. Detectors that
report %LEL themselves are stored as reported.
"""

# Volume-fraction spellings -> parts per million.
_VOLUME_FRACTION_PPM: dict[str, float] = {
    "ppm": 1.0,
    "ppmv": 1.0,
    "PPM": 1.0,
    "ppb": 1e-3,
    "ppbv": 1e-3,
    "PPB": 1e-3,
    "%vol": 1e4,
    "vol%": 1e4,
    "%VOL": 1e4,
    "%Vol": 1e4,
    "VOL%": 1e4,
}


def _scaled(factor: float, unit: str, via: str, canonical: str) -> tuple[float, float]:
    """``factor`` converts ``unit`` to ``via``; return ``unit`` -> ``canonical``."""
    try:
        to_canonical, offset = conversion(via, canonical)
    except UnitError as exc:
        raise UnitError(f"unit {unit!r} cannot be converted to {canonical!r}") from exc
    return (factor * to_canonical, offset)


@lru_cache(maxsize=4096)
def conversion_for(metric: str, unit: str, canonical: str) -> tuple[float, float]:
    """Return ``(factor, offset)`` converting ``unit`` to ``canonical`` for ``metric``.

    Like :func:`conversion`, plus the gas rules for volume fractions (ppm, ppmv, ppb,
    %vol, vol%): for a metric in :data:`MOLAR_MASS_G_PER_MOL`, ``mg/m³ = ppm × M / 24.45``
    (25 °C, 101.325 kPa); for CH4, ``%LEL = %vol × 100 / 5.0`` (see
    :data:`CH4_LEL_PERCENT_VOL`). Any other metric gets a plain dimensionless volume
    fraction, so O2 keeps ``%vol`` and a volume fraction never becomes ``%LEL`` or
    ``mg/L``. Cached: the hot path is a dict lookup.

    Raises :class:`UnitError` when ``unit`` is unknown or cannot be converted.
    """
    if unit == canonical:
        return (1.0, 0.0)
    ppm = _VOLUME_FRACTION_PPM.get(unit)
    if ppm is None:
        return conversion(unit, canonical)
    molar_mass = MOLAR_MASS_G_PER_MOL.get(metric)
    if molar_mass is not None:
        return _scaled(ppm * molar_mass / MOLAR_VOLUME_L_PER_MOL, unit, "mg/m³", canonical)
    if metric == Metric.CH4:
        return _scaled(ppm / 1e4 * 100.0 / CH4_LEL_PERCENT_VOL, unit, "%LEL", canonical)
    return _scaled(ppm / 1e4, unit, "%vol", canonical)


def to_canonical(value: float, unit: str, canonical: str, *,
                 metric: str | None = None) -> float:
    """Convert ``value`` given in ``unit`` to ``canonical``.

    With ``metric``, the gas rules of :func:`conversion_for` apply (ppm H2S -> mg/m³, …).
    """
    factor, offset = (conversion(unit, canonical) if metric is None
                      else conversion_for(metric, unit, canonical))
    return value * factor + offset
