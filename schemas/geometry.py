"""Pipe and manhole hydraulics for thresholds derived from geometry (pure functions).

Conventions (decision 0019): elevations are metres above the registry's survey datum; a
water-level gauge reads the *depth of water above the outgoing pipe's invert* (the
``water_level`` metric's definition), so a level derived from an elevation ``z`` is
``z - invert``. Flows are in the ``flow`` metric's canonical L/s; Manning gives m³/s.

Formulas, as GB 50014-2021 (室外排水设计标准) states them for gravity sewers (from the
standard's text as known, not re-verified here):

- Manning: ``V = (1/n) R^(2/3) S^(1/2)`` and ``Q = A V``; ``R = A / P`` the hydraulic
  radius; a full circular pipe has ``A = pi D^2 / 4``, ``R = D / 4``.
- Roughness ``n``: concrete and reinforced-concrete pipes 0.013-0.014, plastic (UPVC, PE,
  HDPE) 0.009-0.011.
- Minimum design velocity: storm and combined sewers 0.75 m/s running full; sewage 0.6 m/s
  at the design fill (at ``h/D`` 0.5 the velocity equals the full-pipe one, so the full
  velocity is checked).
- Storm sewers are designed to run full (``h/D = 1``): above the crown the pipe is
  surcharged (pressure flow), and the freeboard to the cover is what is left before the
  manhole overflows.
"""

from __future__ import annotations

import math

MIN_FULL_VELOCITY_M_S = {"drainage": 0.75, "sewage": 0.6}
"""GB 50014 minimum design velocities (storm/combined running full; sewage at the design
fill), by facility kind."""

CAPACITY_FACTOR = 2.0
"""A flow threshold above this many times the full-pipe capacity is flagged: a surcharged
pipe passes more than its full-bore flow only as the square root of the head gradient, so
twice the capacity needs four times the slope's gradient across the reach."""


def full_pipe_area_m2(diameter_m: float) -> float:
    """Flow area of a circular pipe running full: ``A = pi D^2 / 4`` (m²)."""
    return math.pi * diameter_m * diameter_m / 4


def full_pipe_hydraulic_radius_m(diameter_m: float) -> float:
    """Hydraulic radius of a full circular pipe: ``R = A / P = (pi D^2/4) / (pi D) = D / 4``."""
    return diameter_m / 4


def manning_velocity_m_s(hydraulic_radius_m: float, slope: float, roughness_n: float) -> float:
    """Manning's mean velocity ``V = (1/n) R^(2/3) S^(1/2)`` (m/s, SI form; GB 50014).

    ``slope`` is the hydraulic gradient in m/m (the pipe's slope for uniform flow); a slope
    of zero or less carries no gravity flow (0)."""
    if slope <= 0:
        return 0.0
    return float(hydraulic_radius_m ** (2 / 3) * math.sqrt(slope) / roughness_n)


def full_pipe_capacity_m3_s(diameter_m: float, slope: float, roughness_n: float) -> float:
    """Full-pipe (full-bore) capacity by Manning, ``Q = (1/n) A R^(2/3) S^(1/2)`` with
    ``A = pi D^2 / 4`` and ``R = D / 4`` (m³/s). D = 1.0 m at 0.1 % and n = 0.013 gives
    about 0.76 m³/s."""
    return full_pipe_area_m2(diameter_m) * manning_velocity_m_s(
        full_pipe_hydraulic_radius_m(diameter_m), slope, roughness_n)


def full_pipe_velocity_m_s(diameter_m: float, slope: float, roughness_n: float) -> float:
    """Mean velocity running full (m/s): Manning with ``R = D / 4``."""
    return manning_velocity_m_s(full_pipe_hydraulic_radius_m(diameter_m), slope, roughness_n)


def depth_above_invert_m(elevation_m: float, invert_m: float) -> float:
    """A gauge reading (depth above the invert) for a water surface at ``elevation_m``:
    ``h = z - z_invert``."""
    return elevation_m - invert_m


def crown_depth_m(diameter_m: float) -> float:
    """Depth above the invert at which the pipe runs full: ``h = D``; above it the pipe is
    surcharged (``h/D > 1``)."""
    return diameter_m


def cover_depth_m(cover_m: float, invert_m: float) -> float:
    """Depth above the invert at which water reaches the cover (overflow):
    ``h = z_cover - z_invert``, the manhole's depth."""
    return cover_m - invert_m


def freeboard_m(level_m: float, cover_m: float, invert_m: float) -> float:
    """What is left to the cover from a level ``level_m`` above the invert:
    ``(z_cover - z_invert) - h`` (m; negative: overflowing)."""
    return cover_depth_m(cover_m, invert_m) - level_m
