"""Unit conversion to each metric's canonical unit.

Pint does the dimensional analysis once per (unit, canonical unit) pair; the result is
cached as a linear map ``value * factor + offset`` so the hot path costs a dict lookup.
Units Lifeline's field devices use but pint does not know (microstrain, %LEL, pH, pump
state) are defined here as their own dimensions, so they convert only to themselves.
"""

from __future__ import annotations

import re
import tokenize
from functools import lru_cache
from typing import Any

import pint


class UnitError(ValueError):
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
}


@lru_cache(maxsize=1)
def _registry() -> Any:
    ureg: Any = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    ureg.define("microstrain = [strain] = ustrain")
    ureg.define("lel_percent = [lel]")
    ureg.define("ph_unit = [ph]")
    ureg.define("state_unit = [state]")
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


def to_canonical(value: float, unit: str, canonical: str) -> float:
    """Convert ``value`` given in ``unit`` to ``canonical``."""
    factor, offset = conversion(unit, canonical)
    return value * factor + offset
