"""The facility registry: facilities, sensors, alarm rules and the alarm policy.

A YAML file validated by these models. Every number in a rule is data with provenance
(``source``); shipped defaults are marked ``default: true`` so nobody mistakes a
placeholder for a design value. Rule kinds:

- per-sensor :class:`Rule` on a *signal* of the sensor: its value, its rate of change over
  a window, or an aggregate (sum, mean, min, max, RMS, TWA) over an event-time window of up
  to 7 days, or — with coarser buckets — a long window of up to 90 days (crack growth per
  month, settlement per day); a step change between the medians of its newest readings;
  a count of exceedances of a limit per local calendar day; its deviation from the usual
  for the hour (a :class:`Baseline` learned per hour of day, weekdays and weekends apart)
  and last night's minimum; four levels with separate raise and clear points; raise/clear
  durations (time and/or count);
- per-facility :class:`CompositeRule`: all of several conditions on different sensors;
- sensor health (always on): out of instrument range, stuck value, sensor offline, gateway
  offline, gateway sequence gaps — tuned per sensor and by the registry's :class:`AlarmPolicy`;
- :class:`MaintenanceWindow` per facility, in the registry's time zone, with a scope: the
  categories, metrics and levels it silences. Life-safety gases and red are never silenced
  unless a window names them; a confined-space entry window (``entry: true``) pages the
  crew leader for gas alarms instead of silencing them.
- a facility's ``criticality``: a critical facility whose gateway goes dark while its
  district is under rain, or while it was in alarm, is itself a facility alarm;
- a drainage or sewage facility's :class:`Geometry` (invert, crown and cover elevations,
  the outgoing pipe's diameter, slope and roughness): levels of its water-level and flow
  rules may be :class:`GeometryRef` (``{geometry: cover, offset_m: -0.3}``), resolved to
  numbers when the registry loads; ``warnings`` names rules that contradict it.
"""

from __future__ import annotations

from datetime import time
from enum import StrEnum
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal, TypeGuard
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from schemas import geometry as hydraulics
from schemas.alarm import AlarmCategory
from schemas.common import Contract, Identifier, Timestamp, TimeZoneName
from schemas.errors import LifelineError
from schemas.kinds import LIFE_SAFETY_METRICS, METRICS, AlarmLevel, FacilityKind, Metric


class RegistryError(LifelineError, ValueError):
    """The registry file is missing, not YAML, or violates the schema."""


class Direction(StrEnum):
    UPPER = "upper"
    LOWER = "lower"


class Signal(StrEnum):
    """What a rule looks at: the reading itself or something derived over a window."""

    VALUE = "value"
    RATE = "rate"
    SUM = "sum"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    RMS = "rms"
    TWA = "twa"  # time-weighted mean over the window (exposure: 8 h PC-TWA, 15 min PC-STEL)
    # Median of the newest step_k readings minus the median of the step_k before them (a jump;
    # step_k 1: between consecutive readings). The medians make it blind to one spike.
    STEP = "step"
    # Exceedances of count_above per local calendar day (registry time zone), from 0 at local
    # midnight: readings above it (of: value), or clock-aligned periods of window_s whose
    # signal ``of`` (e.g. the 15-minute mean) was above it.
    COUNT = "count"
    # The reading (or ``of`` over window_s) minus the usual for this local hour of a weekday
    # or weekend day (the sensor's learned Baseline), in the unit or in spreads.
    DEVIATION = "deviation"
    # The minimum of last night's Baseline night window (local 02:00-05:00), raw or against
    # the usual night minimum.
    NIGHT_MINIMUM = "night_minimum"


WINDOWED: frozenset[Signal] = frozenset({Signal.RATE, Signal.SUM, Signal.MEAN, Signal.MIN,
                                         Signal.MAX, Signal.RMS, Signal.TWA})
"""Signals over an event-time window (``window_s``)."""
INPUTS: frozenset[Signal] = frozenset({Signal.VALUE, Signal.SUM, Signal.MEAN, Signal.MIN,
                                       Signal.MAX, Signal.RMS, Signal.TWA})
"""What a count or a deviation may be ``of``."""
LEARNED: frozenset[Signal] = frozenset({Signal.DEVIATION, Signal.NIGHT_MINIMUM})
"""Signals read from the sensor's learned :class:`Baseline`."""
WINDOW_MAX_S = 7 * 86400.0
"""Windows up to this long keep the sensor's report interval as their bucket width."""
LONG_WINDOW_MAX_S = 90 * 86400.0
"""Longer windows, up to this, are *long windows*: coarser buckets (about 90 of them: daily
for 90 days), kept apart from the short ones so a 30-day rate does not coarsen a 10-minute
one."""
DAY_S = 86400


Source = Annotated[str, Field(min_length=3, description="Where the number comes from.")]
Seconds = Annotated[float, Field(ge=0, le=30 * 86400)]


Elevation = Annotated[float, Field(ge=-100, le=1000, allow_inf_nan=False)]


class Geometry(Contract):
    """A drainage or sewage manhole and its outgoing pipe, for thresholds derived from it.

    Elevations in metres above the registry's survey datum (``datum``, e.g. the 1985
    National Height Datum). The facility's water-level gauges read the depth of water
    above ``invert_m`` (the ``water_level`` metric): derived levels are elevations less
    the invert. Give the pipe as ``diameter_m`` or ``crown_m`` (or both, agreeing).
    Inconsistent but readable geometry (crown above the cover, a manhole of no depth, a
    slope of zero) loads and is flagged by ``lifeline registry check``.
    """

    datum: Annotated[str, Field(min_length=2, max_length=100)] | None = Field(
        default=None, description="The survey datum of the elevations.")
    invert_m: Elevation | None = Field(
        default=None, description="Elevation of the outgoing pipe's invert at the manhole, m; "
                                  "the gauges' zero.")
    crown_m: Elevation | None = Field(
        default=None, description="Elevation of the pipe's crown (invert + internal "
                                  "diameter), m.")
    cover_m: Elevation | None = Field(
        default=None, description="Elevation of the manhole cover (the ground), m: water there "
                                  "overflows.")
    diameter_m: Annotated[float, Field(gt=0, le=10)] | None = Field(
        default=None, description="Internal diameter D of the outgoing pipe, m.")
    slope: Annotated[float, Field(ge=-0.1, le=0.5, allow_inf_nan=False)] | None = Field(
        default=None, description="Slope of the outgoing pipe, m/m (0.001 = 1 per mille).")
    roughness_n: Annotated[float, Field(gt=0, le=0.05)] | None = Field(
        default=None, description="Manning's roughness n, s/m^(1/3) (GB 50014: concrete "
                                  "0.013-0.014, plastic/HDPE 0.009-0.011).")
    source: Source | None = Field(
        default=None, description="Where the geometry comes from (survey, as-built drawings).")

    @model_validator(mode="after")
    def _check(self) -> Geometry:
        if self.crown_m is not None:
            if self.invert_m is None:
                raise ValueError("geometry: crown_m needs invert_m")
            if self.crown_m <= self.invert_m:
                raise ValueError(f"geometry: crown_m {self.crown_m} must be above invert_m "
                                 f"{self.invert_m}")
            if (self.diameter_m is not None
                    and abs(self.crown_m - self.invert_m - self.diameter_m) > 0.005):
                raise ValueError(f"geometry: crown_m {self.crown_m} is not invert_m "
                                 f"{self.invert_m} + diameter_m {self.diameter_m}")
        return self

    @property
    def diameter(self) -> float | None:
        """D, m: ``diameter_m``, else crown less invert."""
        if self.diameter_m is not None:
            return self.diameter_m
        if self.crown_m is not None and self.invert_m is not None:
            return self.crown_m - self.invert_m
        return None

    @property
    def crown_elevation(self) -> float | None:
        """The crown's elevation, m: ``crown_m``, else invert + D."""
        if self.crown_m is not None:
            return self.crown_m
        if self.invert_m is not None and self.diameter_m is not None:
            return self.invert_m + self.diameter_m
        return None

    @property
    def depth(self) -> float | None:
        """The manhole's depth from invert to cover, m: the gauge reading at overflow."""
        if self.cover_m is None or self.invert_m is None:
            return None
        return hydraulics.cover_depth_m(self.cover_m, self.invert_m)

    @property
    def capacity_m3_s(self) -> float | None:
        """Full-pipe capacity by Manning, m³/s (derived, read-only); None without D, slope
        and n."""
        d = self.diameter
        if d is None or self.slope is None or self.roughness_n is None:
            return None
        return hydraulics.full_pipe_capacity_m3_s(d, self.slope, self.roughness_n)

    def describe_pipe(self) -> str:
        """``D 1 m, S 0.001, n 0.013`` for messages."""
        return f"D {self.diameter:g} m, S {self.slope:g}, n {self.roughness_n:g}"


GeometryBase = Literal["crown", "cover", "capacity"]
LEVEL_BASES: frozenset[str] = frozenset({"crown", "cover"})
"""References a water level may take; ``capacity`` is a flow's."""


class GeometryRef(Contract):
    """A level value taken from the facility's :class:`Geometry` when the registry loads.

    ``{geometry: crown}`` the pipe full (h = D); ``{geometry: crown, fraction: 0.75}`` a
    fill ratio h/D; ``{geometry: cover, offset_m: -0.3}`` 0.3 m of freeboard left;
    ``{geometry: capacity, fraction: 0.9}`` 90 % of the full-pipe Manning capacity (flow,
    L/s); ``{elevation_m: 3.2}`` a water surface at that elevation. Levels are depths
    above the invert: ``fraction × base + offset_m``, the base being D (crown), the
    manhole's depth (cover) or the capacity.
    """

    geometry: GeometryBase | None = None
    elevation_m: Elevation | None = Field(
        default=None, description="A water-surface elevation, m above the datum (becomes "
                                  "elevation less the invert).")
    fraction: Annotated[float, Field(gt=0, le=10)] = Field(
        default=1.0, description="Multiplies the base (crown: D; cover: the manhole's depth; "
                                 "capacity: the full-pipe flow).")
    offset_m: Annotated[float, Field(ge=-20, le=20)] = Field(
        default=0.0, description="Added to a crown or cover level, m (negative: below it).")

    @model_validator(mode="after")
    def _check(self) -> GeometryRef:
        if (self.geometry is None) == (self.elevation_m is None):
            raise ValueError("a geometry reference names either geometry (crown, cover, "
                             "capacity) or elevation_m")
        if self.geometry != "capacity" and self.geometry is not None:
            return self
        if self.offset_m:
            raise ValueError("offset_m goes with crown and cover only")
        if self.elevation_m is not None and self.fraction != 1.0:
            raise ValueError("fraction does not apply to elevation_m")
        return self

    def label(self) -> str:
        """``cover-0.3 m``, ``crown×0.75``, ``capacity×0.9``, ``elevation 3.2 m``."""
        if self.elevation_m is not None:
            return f"elevation {self.elevation_m:g} m"
        text = f"{self.geometry}{f'×{self.fraction:g}' if self.fraction != 1.0 else ''}"
        return text + (f"{self.offset_m:+g} m" if self.offset_m else "")

    def resolve(self, geometry: Geometry, metric: Metric) -> float:
        """The number in the sensor's canonical unit (m above the invert, or L/s); ValueError
        when the geometry lacks what it needs or the metric cannot take it."""
        wanted = Metric.FLOW if self.geometry == "capacity" else Metric.WATER_LEVEL
        if metric is not wanted:
            raise ValueError(f"{self.label()} applies to {wanted} rules, not {metric}")
        if self.elevation_m is not None:
            if geometry.invert_m is None:
                raise ValueError(f"{self.label()} needs the geometry's invert_m")
            return hydraulics.depth_above_invert_m(self.elevation_m, geometry.invert_m)
        if self.geometry == "capacity":
            q = geometry.capacity_m3_s
            if q is None:
                raise ValueError("capacity needs the geometry's pipe (diameter_m or crown_m), "
                                 "slope and roughness_n")
            if q <= 0:
                raise ValueError(f"capacity is 0 at slope {geometry.slope:g}: no gravity flow")
            return round(self.fraction * q * 1000, 3)  # m³/s -> L/s
        if self.geometry == "crown":
            d = geometry.diameter
            base = None if d is None else hydraulics.crown_depth_m(d)
        else:
            base = geometry.depth
        if base is None:
            need = "diameter_m or crown_m" if self.geometry == "crown" else "invert_m and cover_m"
            raise ValueError(f"{self.label()} needs the geometry's {need}")
        return round(self.fraction * base + self.offset_m, 4)


class FromGeometry(Contract):
    """Where a level's numbers came from (set when the registry loads; a dumped registry
    carries it, and its numbers are checked against the geometry when loaded again)."""

    raise_at: GeometryRef | None = None
    clear_at: GeometryRef | None = None


# The JSON Schema says what the YAML may hold (a number or a reference), the model what
# the engine reads (a number): the reference is resolved before the field is validated.
_NUMBER_OR_REF = WithJsonSchema({"anyOf": [{"type": "number"},
                                           GeometryRef.model_json_schema()]})
_NUMBER_OR_REF_OR_NULL = WithJsonSchema({"anyOf": [{"type": "number"},
                                                   GeometryRef.model_json_schema(),
                                                   {"type": "null"}]})


class Level(Contract):
    """One level of a rule, in the signal's unit (canonical unit; rate: per ``rate_per_s``).

    upper: raised when signal >= ``raise_at``, held until it falls below ``clear_at``;
    lower: raised when signal <= ``raise_at``, held until it rises above ``clear_at``.
    ``clear_at`` defaults to ``raise_at`` (no hysteresis). Either may be a
    :class:`GeometryRef` (water levels and flows of a facility with ``geometry``),
    resolved to a number when the registry loads (``from_geometry`` keeps the reference).
    """

    level: AlarmLevel
    raise_at: Annotated[float, _NUMBER_OR_REF] = Field(
        allow_inf_nan=False, description="A number, or a geometry reference.")
    clear_at: Annotated[float | None, _NUMBER_OR_REF_OR_NULL] = Field(
        default=None, allow_inf_nan=False, description="A number, or a geometry reference.")
    source: Source
    default: bool = Field(default=False, description="A shipped default still to be replaced.")
    from_geometry: FromGeometry | None = Field(
        default=None, description="Set by the loader: the geometry references raise_at and "
                                  "clear_at were resolved from.")

    @property
    def clear_value(self) -> float:
        return self.raise_at if self.clear_at is None else self.clear_at


class Reference(Contract):
    """Another facility's sensor whose same signal a rule subtracts from its own (the excess
    over a regional background station). Its worker publishes the signal to
    ``lifeline.context``; the newest value at or before the reading's time is used."""

    facility: Identifier
    sensor: Identifier
    max_age_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        default=1800.0, description="An older reference is not known: the rule holds its "
                                    "state (raises and clears nothing) until it is again.")


class Rule(Contract):
    """A level rule on one signal of one sensor."""

    id: Identifier | None = Field(default=None, description="Defaults to signal-window-direction.")
    signal: Signal = Signal.VALUE
    window_s: Annotated[float, Field(gt=0, le=LONG_WINDOW_MAX_S)] | None = Field(
        default=None, description="The window of a windowed signal (over 7 days: a long "
                                  "window, coarse buckets), or of the signal a count or a "
                                  "deviation is of.")
    rate_per_s: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="Rate is expressed per this many seconds (60: per minute).")
    direction: Direction = Direction.UPPER
    levels: Annotated[list[Level], Field(min_length=1)]
    step_k: Annotated[int, Field(ge=1, le=10)] = Field(
        default=3, description="step: readings per median (1: consecutive readings).")
    of: Signal = Field(
        default=Signal.VALUE, description="count, deviation: the signal counted or compared "
                                          "(value, or sum/mean/min/max/rms/twa over window_s).")
    count_above: float | None = Field(
        default=None, allow_inf_nan=False,
        description="count: the limit; a reading or period counts when strictly above it.")
    deviation_as: Literal["difference", "spreads"] | None = Field(
        default=None, description="deviation (default difference) and night_minimum (default: "
                                  "the raw minimum): minus the usual, in the unit "
                                  "(difference) or in the usual's spreads (spreads).")
    minus: Reference | None = Field(
        default=None, description="value, windowed and count signals: minus the same signal "
                                  "of another facility's sensor (a regional background): the "
                                  "excess over it (a count counts the excesses of ``of``).")
    when_dry_for_s: Annotated[float, Field(gt=0, le=30 * 86400)] | None = Field(
        default=None, description="Evaluated only while the facility's district is known "
                                  "to have had no rain (policy rain_context_mm_per_h, any of "
                                  "its gauges) for this long; otherwise the rule holds its "
                                  "state. Dry-weather rules (旱天): misconnections.")
    raise_after_s: Seconds = 0.0
    raise_after_count: Annotated[int, Field(ge=1, le=10_000)] = 1
    clear_after_s: Seconds = 0.0
    clear_after_count: Annotated[int, Field(ge=1, le=10_000)] = 1
    description: str | None = None

    @property
    def key(self) -> str:
        if self.id:
            return self.id
        window = f"-{self.window_s:g}s" if self.window_s else ""
        if self.signal is Signal.STEP:
            window = f"-k{self.step_k}"
        return f"{self.signal.value}{window}-{self.direction.value}"

    def ordered_levels(self) -> tuple[Level, ...]:
        return tuple(sorted(self.levels, key=lambda lv: lv.level.severity))

    @model_validator(mode="after")
    def _check(self) -> Rule:
        self._check_signal()
        names = [lv.level for lv in self.levels]
        if len(set(names)) != len(names):
            raise ValueError(f"rule {self.key}: duplicate level")
        values = [lv.raise_at for lv in self.ordered_levels()]
        upper = self.direction is Direction.UPPER
        if values != sorted(values, reverse=not upper):
            raise ValueError(f"rule {self.key}: {self.direction} levels must get stricter with "
                             f"severity (got {values})")
        for lv in self.levels:
            c = lv.clear_value
            if (upper and c > lv.raise_at) or (not upper and c < lv.raise_at):
                raise ValueError(f"rule {self.key}: {lv.level} clear_at {c} is on the wrong side "
                                 f"of raise_at {lv.raise_at} for a {self.direction} rule")
        return self

    def _check_signal(self) -> None:
        """Each signal's own fields, and only those (a misplaced field other than its
        default is an error, not silently ignored; defaults pass, so a dumped registry
        loads again)."""
        sig, key = self.signal, self.key
        for name, owners in (("step_k", {Signal.STEP}), ("of", {Signal.COUNT, Signal.DEVIATION}),
                             ("count_above", {Signal.COUNT}), ("deviation_as", LEARNED)):
            if sig not in owners and getattr(self, name) != type(self).model_fields[name].default:
                raise ValueError(f"rule {key}: {name} applies to signal "
                                 f"{' or '.join(sorted(owners))} only, not {sig}")
        if sig in (Signal.COUNT, Signal.DEVIATION):
            if self.of not in INPUTS:
                raise ValueError(f"rule {key}: of must be one of {', '.join(sorted(INPUTS))} "
                                 f"(got {self.of})")
            windowed = self.of is not Signal.VALUE
            if windowed and self.window_s is None:
                raise ValueError(f"rule {key}: of {self.of} needs window_s")
            if not windowed and self.window_s is not None:
                raise ValueError(f"rule {key}: window_s goes with of: a windowed signal")
            if windowed and self.window_s is not None and self.window_s > WINDOW_MAX_S:
                raise ValueError(f"rule {key}: window_s of a {sig} input is at most 7 days")
        if sig is Signal.COUNT:
            if self.count_above is None:
                raise ValueError(f"rule {key}: signal count needs count_above (the limit)")
            if self.direction is not Direction.UPPER:
                raise ValueError(f"rule {key}: direction of a count is upper (more than N "
                                 f"times a day)")
            w = self.window_s
            if w is not None and (w != int(w) or DAY_S % int(w)):
                raise ValueError(f"rule {key}: window_s of a count must divide the day "
                                 f"(86400 s) into whole periods (got {w:g})")
        elif sig in WINDOWED:
            if self.window_s is None:
                raise ValueError(f"rule {key}: signal {sig} needs window_s")
        elif sig is not Signal.DEVIATION and self.window_s is not None:
            raise ValueError(f"rule {key}: a {sig} rule has no window_s")
        if self.minus is not None and sig is not Signal.VALUE and sig not in WINDOWED \
                and sig is not Signal.COUNT:
            raise ValueError(f"rule {key}: minus goes with value, windowed and count signals "
                             f"only (not {sig})")


class Baseline(Contract):
    """How a sensor learns its usual (the ``deviation`` and ``night_minimum`` signals).

    Per local hour of day, weekdays and weekends apart (48 estimates): the hour's mean
    reading, folded once an hour is over into an exponentially weighted mean and spread
    that weighs each new day ``1 / memory_days`` (a plain mean and spread over the first
    ``memory_days`` days). Likewise last night's minimum over ``night_from``-``night_to``
    against the nights before. An estimate speaks only once ``min_days`` days (nights)
    went into it: no alarm from a baseline not yet learned.
    """

    memory_days: Annotated[int, Field(ge=2, le=365)] = 28
    min_days: Annotated[int, Field(ge=1, le=365)] = Field(
        default=5, description="Days an hour's (or the night's) estimate needs before its "
                               "signal exists; a weekend hour gets two a week.")
    night_from: time = Field(default=time(2, 0), description="Local start of the night window.")
    night_to: time = Field(default=time(5, 0), description="Local end of the night window.")
    spread_floor: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        default=0.0, description="deviation_as spreads: the spread never counts as less than "
                                 "this (a flat sensor's zero spread would make any change "
                                 "infinite).")

    @model_validator(mode="after")
    def _check(self) -> Baseline:
        if not self.night_from < self.night_to:
            raise ValueError(f"baseline: night_from {self.night_from} must be before "
                             f"night_to {self.night_to} (one night window, same day)")
        if self.min_days > self.memory_days:
            raise ValueError(f"baseline: min_days {self.min_days} exceeds memory_days "
                             f"{self.memory_days}")
        return self


_SHARED_RULES: dict[str, Rule] = {}


class Sensor(Contract):
    id: Identifier
    metric: Metric
    unit: str = Field(description="Must be the metric's canonical unit.")
    range: tuple[float, float] = Field(description="Instrument range [min, max], canonical unit.")
    interval_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        description="Expected report interval in seconds.")
    rules: list[Rule] = Field(default_factory=list)
    stuck_after_s: Seconds | None = Field(
        default=None, description="Same value for this long = stuck sensor (None: not checked).")
    stuck_epsilon: Annotated[float, Field(ge=0)] = 0.0
    description: str | None = None
    pipe_diameter_m: Annotated[float, Field(gt=0, le=10)] | None = Field(
        default=None, description="Water level in a pipe or at its manhole: the pipe's "
                                  "internal diameter D; readings then also carry the fill "
                                  "ratio h/D (above 1: surcharged).")
    baseline: Baseline | None = Field(
        default=None, description="How the usual is learned for deviation and night_minimum "
                                  "rules (default: Baseline's defaults).")

    @field_validator("rules", mode="after")
    @classmethod
    def _share(cls, rules: list[Rule]) -> list[Rule]:
        # Most sensors carry their metric's default rules: keep one (immutable) Rule per
        # distinct rule, so 100,000 sensors do not hold 100,000 copies of the same levels.
        return [_SHARED_RULES.setdefault(r.model_dump_json(), r) for r in rules]

    @model_validator(mode="after")
    def _check(self) -> Sensor:
        canonical = METRICS[self.metric].unit
        if self.unit != canonical:
            raise ValueError(f"sensor {self.id}: unit {self.unit!r} is not the canonical unit "
                             f"{canonical!r} of {self.metric}")
        lo, hi = self.range
        if not lo < hi:
            raise ValueError(f"sensor {self.id}: range min {lo} must be below max {hi}")
        if self.pipe_diameter_m is not None and self.metric is not Metric.WATER_LEVEL:
            raise ValueError(f"sensor {self.id}: pipe_diameter_m applies to water levels only")
        keys = [r.key for r in self.rules]
        if len(set(keys)) != len(keys):
            raise ValueError(f"sensor {self.id}: two rules share the id {keys}")
        if self.baseline is not None and not self.learns:
            raise ValueError(f"sensor {self.id}: baseline is set but no rule reads it "
                             f"(signal deviation or night_minimum)")
        return self

    @property
    def learns(self) -> bool:
        """A rule reads the sensor's learned baseline."""
        return any(r.signal in LEARNED for r in self.rules)


class Condition(Contract):
    """One condition of a composite rule: a signal of a sensor compared with a value. The
    sensor is the facility's own, or — with ``facility`` — another facility's (a district
    rain gauge), whose signal its worker publishes to ``lifeline.context``."""

    facility: Identifier | None = Field(
        default=None, description="Another facility whose sensor this is (its newest signal "
                                  "at or before the reading's time, at most max_age_s old; "
                                  "older or unknown: the condition does not hold).")
    max_age_s: Annotated[float, Field(gt=0, le=86400)] = 1800.0
    sensor: Identifier
    signal: Signal = Signal.VALUE
    window_s: Annotated[float, Field(gt=0, le=LONG_WINDOW_MAX_S)] | None = None
    rate_per_s: Annotated[float, Field(gt=0)] = 60.0
    op: Literal[">=", "<="]
    value: float = Field(allow_inf_nan=False)

    @model_validator(mode="after")
    def _check(self) -> Condition:
        if self.signal is not Signal.VALUE and self.signal not in WINDOWED:
            raise ValueError(f"condition on {self.sensor}: signal {self.signal} is a sensor "
                             f"rule's only (composites read value and windowed signals)")
        if (self.signal is Signal.VALUE) != (self.window_s is None):
            raise ValueError(f"condition on {self.sensor}: window_s goes with derived signals only")
        return self


def shared_signal(rule: Rule) -> tuple[Signal, float | None, float]:
    """The signal of a ``minus`` reference a rule reads: its own, or what a count is of."""
    if rule.signal is Signal.COUNT:
        return rule.of, rule.window_s if rule.of is not Signal.VALUE else None, rule.rate_per_s
    return rule.signal, rule.window_s, rule.rate_per_s


def share_spec(signal: Signal, window_s: float | None, rate_per_s: float) -> str:
    """How a shared signal is named in ``lifeline.context`` (schemas.context.SharedSignal)."""
    if signal is Signal.VALUE or window_s is None:
        return "value"
    return f"{signal.value}-{window_s:g}s-{rate_per_s:g}"


class CompositeRule(Contract):
    """A facility alarm raised while all conditions hold (e.g. heavy rain AND level rising)."""

    id: Identifier
    level: AlarmLevel
    all_of: Annotated[list[Condition], Field(min_length=2)]
    raise_after_s: Seconds = 0.0
    clear_after_s: Seconds = 0.0
    source: Source
    default: bool = False
    description: str | None = None


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class MaintenanceWindow(Contract):
    """A silence with a scope: alarms it covers are recorded but flagged ``silenced``
    (nobody is paged); everything else is paged as usual.

    When: either daily (``daily_from``/``daily_to`` as local ``HH:MM``, optionally on some
    ``days``; ``daily_to`` before ``daily_from`` crosses midnight, and ``days`` names the
    day the window starts) or one-off (``starts``/``ends``, with an offset).

    What: alarms of the ``categories`` it lists, of the ``metrics`` it lists (default: every
    metric except the life-safety gases), up to ``silence_up_to`` (default orange: a red is
    paged). H2S, CH4, CO, O2, NH3, SO2, Cl2 are silenced only by a window that names them.

    A confined-space entry window (``entry: true``, 井下作业/清淤 with the crew leader's
    contact) never silences gas alarms: it makes them page the crew leader and the duty
    engineer at once, on their most urgent channel (CJJ 6: gas detection during the work).
    """

    reason: Annotated[str, Field(min_length=3)]
    daily_from: time | None = None
    daily_to: time | None = None
    days: list[Weekday] | None = None
    starts: Timestamp | None = None
    ends: Timestamp | None = None
    categories: Annotated[list[AlarmCategory], Field(min_length=1)] = Field(
        default_factory=lambda: list(AlarmCategory),
        description="Alarm categories the window silences (facility, sensor, gateway).")
    metrics: list[Metric] | None = Field(
        default=None, description="Metrics whose alarms it silences (default: all but the "
                                  "life-safety gases). Facility-wide alarms (composites, "
                                  "gateway) count as every metric of the facility.")
    silence_up_to: AlarmLevel = Field(
        default=AlarmLevel.ORANGE, description="The most severe level it silences; red only "
                                               "when named.")
    entry: bool = Field(default=False, description="Confined-space entry (井下作业): gas alarms "
                                                   "page the crew leader and the duty engineer.")
    crew_leader: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    crew_phone: Annotated[str, Field(pattern=r"^\+?[0-9]{5,15}$")] | None = None

    @property
    def names_life_safety(self) -> bool:
        """The window silences a life-safety gas or red: allowed, but warned about."""
        return (self.silence_up_to is AlarmLevel.RED
                or any(m in LIFE_SAFETY_METRICS for m in self.metrics or ()))

    def covers(self, category: AlarmCategory, metrics: frozenset[Metric],
               level: AlarmLevel | None) -> bool:
        """Whether an alarm of ``category`` on ``metrics`` (one for a sensor's alarm, the
        facility's for a facility-wide one) at ``level`` is silenced by this window."""
        if category not in self.categories:
            return False
        if level is not None and level.severity > self.silence_up_to.severity:
            return False
        named = set(self.metrics) if self.metrics is not None else None
        for m in metrics:
            if named is not None and m not in named:
                return False
            if named is None and m in LIFE_SAFETY_METRICS:
                return False
        return True

    @model_validator(mode="after")
    def _check(self) -> MaintenanceWindow:
        if self.entry:
            if not self.crew_leader or not self.crew_phone:
                raise ValueError("a confined-space entry window needs crew_leader and "
                                 "crew_phone (the person the gas alarms page)")
            if any(m in LIFE_SAFETY_METRICS for m in self.metrics or ()):
                raise ValueError("a confined-space entry window cannot silence the gases it "
                                 "exists to watch")
        daily = self.daily_from is not None or self.daily_to is not None
        once = self.starts is not None or self.ends is not None
        if daily == once:
            raise ValueError("a maintenance window is either daily (daily_from/daily_to) "
                             "or one-off (starts/ends)")
        if daily and (self.daily_from is None or self.daily_to is None):
            raise ValueError("a daily window needs daily_from and daily_to")
        if once and (self.starts is None or self.ends is None or self.ends <= self.starts):
            raise ValueError("a one-off window needs starts before ends")
        return self


class AlarmPolicy(Contract):
    """Engine-wide settings of the alarm engine (all with defaults)."""

    allowed_lateness_s: Seconds = Field(
        default=300.0, description="Readings older than a sensor's newest minus this are late "
                                   "and go to the DLQ.")
    flap_window_s: Annotated[float, Field(gt=0)] = 900.0
    flap_max_transitions: Annotated[int, Field(ge=2)] = 6
    sensor_offline_after_intervals: Annotated[float, Field(gt=1)] = 3.0
    gateway_offline_after_intervals: Annotated[float, Field(gt=1)] = 3.0
    gap_clear_reports: Annotated[int, Field(ge=1)] = 10
    checkpoint_interval_s: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="Working state (windows, debounce) is saved at least this "
                                  "often per facility, in event time (spread over 50-100 %% of "
                                  "it by facility); also the most a crash can lose of it.")
    sensor_fault_level: AlarmLevel = AlarmLevel.BLUE
    gateway_offline_level: AlarmLevel = AlarmLevel.YELLOW
    gap_level: AlarmLevel = AlarmLevel.BLUE
    # A critical facility that goes dark (DOMAIN.md: a pump station's blackout takes its
    # RTU down with the pumps: the silence *is* the facility alarm).
    dark_level: AlarmLevel = Field(
        default=AlarmLevel.ORANGE, description="Level of a critical facility's dark alarm.")
    dark_level_if_serious: AlarmLevel = Field(
        default=AlarmLevel.RED, description="Level when its last known state was orange or "
                                            "worse.")
    dark_if_active_from: AlarmLevel = Field(
        default=AlarmLevel.YELLOW, description="Dark without rain is a facility alarm when the "
                                               "facility had an alarm at least this severe.")
    rain_context_mm_per_h: Annotated[float, Field(gt=0)] = Field(
        default=2.5, description="A district is under rain while one of its gauges measured "
                                 "at least this much in the last hour (CMA: moderate rain "
                                 "from 2.6 mm/h).")
    rain_context_hold_s: Seconds = Field(
        default=3 * 3600.0, description="... and for this long after (a wet catchment still "
                                        "needs its pumps).")
    max_window_buckets: Annotated[int, Field(ge=16, le=10_000)] = Field(
        default=1440, description="A window keeps at most this many time buckets per sensor "
                                  "(bounded state whatever a gateway sends).")
    max_evaluations_per_report: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=16, description="Readings of one sensor in one report evaluated one by one; "
                                "beyond this the report's readings still fill the windows but "
                                "the rules are evaluated at its newest reading (a flood cannot "
                                "hold up the partition).")


class Criticality(StrEnum):
    NORMAL = "normal"
    CRITICAL = "critical"  # its silence during rain or alarm is a facility alarm (pump stations)


def _geometry_itself(g: Geometry, kind: FacilityKind) -> list[str]:
    """Geometry that contradicts itself or GB 50014's minimum velocity."""
    out: list[str] = []
    depth, crown = g.depth, g.crown_elevation
    if depth is not None and depth <= 0:
        out.append(f"cover {g.cover_m:g} m is not above the invert {g.invert_m:g} m "
                   f"(depth {depth:g} m): no manhole")
    if crown is not None and g.cover_m is not None and crown > g.cover_m:
        out.append(f"crown {crown:g} m is above the cover {g.cover_m:g} m: the pipe would "
                   f"stand out of the ground")
    if g.slope is not None and g.slope <= 0:
        out.append(f"slope {g.slope:g}: no gravity flow, the Manning capacity is 0")
    elif g.capacity_m3_s is not None and g.diameter is not None and g.slope is not None \
            and g.roughness_n is not None:
        v = hydraulics.full_pipe_velocity_m_s(g.diameter, g.slope, g.roughness_n)
        v_min = hydraulics.MIN_FULL_VELOCITY_M_S[kind.value]
        if v < v_min:
            out.append(f"full-pipe velocity {v:.2f} m/s ({g.describe_pipe()}) is below the "
                       f"GB 50014 minimum {v_min:g} m/s: the pipe silts up")
    return out


def _sensor_against(g: Geometry, s: Sensor) -> list[str]:
    """A sensor's range and level rules against the geometry."""
    out: list[str] = []
    depth, d, q = g.depth, g.diameter, g.capacity_m3_s
    if s.metric is Metric.WATER_LEVEL and depth is not None and 0 < depth > s.range[1]:
        out.append(f"range {s.range[0]:g}-{s.range[1]:g} m does not reach the cover "
                   f"({depth:g} m above the invert): water near the cover reads over range")
    for r in s.rules:
        if r.direction is not Direction.UPPER or r.signal.value not in GEOMETRY_SIGNALS:
            continue
        for lv in r.ordered_levels():
            at = f"rule {r.key}: {lv.level} at {lv.raise_at:g}"
            if s.metric is Metric.WATER_LEVEL:
                if depth is not None and depth > 0 and lv.raise_at > depth + 1e-9:
                    out.append(f"{at} m is above the cover ({depth:g} m above the invert): "
                               f"water spills at the cover, the level never gets there")
                if d is not None and lv.raise_at < d - 1e-9 and _names_surcharge(r):
                    out.append(f"{at} m is a surcharge level below the crown (D {d:g} m): "
                               f"the pipe is not yet full there")
            elif s.metric is Metric.FLOW and q is not None and q > 0:
                cap = q * 1000
                if lv.raise_at > hydraulics.CAPACITY_FACTOR * cap:
                    out.append(f"{at} L/s is {lv.raise_at / cap:.1f} × the full-pipe "
                               f"capacity {cap:.0f} L/s (Manning, {g.describe_pipe()}): "
                               f"the pipe cannot carry it")
    return out


def _names_surcharge(r: Rule) -> bool:
    """The rule says it is about surcharge (its id or description)."""
    text = f"{r.id or ''} {r.description or ''}".lower()
    return "surcharge" in text or "满管" in text


GEOMETRY_KINDS: frozenset[FacilityKind] = frozenset({FacilityKind.DRAINAGE, FacilityKind.SEWAGE})
"""Kinds whose facilities (manholes, pipes) may carry a :class:`Geometry`."""
GEOMETRY_SIGNALS: frozenset[str] = frozenset({"value", "mean", "min", "max"})
"""Signals in the sensor's own unit, which a geometry reference may set levels of."""


def _number(x: Any) -> TypeGuard[float]:
    """A number as YAML or JSON gives one (not a bool)."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def _resolve_facility(data: Any) -> Any:
    """Replace the geometry references of a raw facility's levels by numbers (keeping the
    references in ``from_geometry``) and give its water-level gauges the pipe's diameter.
    Anything malformed is left to field validation to report."""
    if not isinstance(data, dict) or not isinstance(data.get("sensors"), list):
        return data
    raw = data.get("geometry")
    if raw is None and not _has_reference(data["sensors"]):
        return data  # the common case: nothing to resolve, nothing copied
    geom: Geometry | None = None
    if raw is not None:
        try:
            geom = Geometry.model_validate(raw)
        except ValidationError:
            return data  # the geometry field reports it
    where = f"facility {data.get('id', '?')}"
    sensors = [_resolve_sensor(s, geom, where) if isinstance(s, dict) else s
               for s in data["sensors"]]
    return {**data, "sensors": sensors}


def _has_reference(sensors: list[Any]) -> bool:
    """Some level of these raw sensors is a geometry reference (or carries one)."""
    return any(isinstance(lv, dict) and (isinstance(lv.get("raise_at"), dict)
                                         or isinstance(lv.get("clear_at"), dict)
                                         or "from_geometry" in lv)
               for s in sensors if isinstance(s, dict)
               for r in s.get("rules") or () if isinstance(r, dict)
               for lv in r.get("levels") or ())


def _resolve_sensor(raw: dict[str, Any], geom: Geometry | None, where: str) -> dict[str, Any]:
    try:
        metric = Metric(str(raw.get("metric")))
    except ValueError:
        return raw
    where = f"{where} sensor {raw.get('id', '?')}"
    out = dict(raw)
    if isinstance(raw.get("rules"), list):
        out["rules"] = [_resolve_rule(r, geom, metric, where) if isinstance(r, dict) else r
                        for r in raw["rules"]]
    d = geom.diameter if geom is not None else None
    if d is not None and metric is Metric.WATER_LEVEL:
        given = raw.get("pipe_diameter_m")
        if given is None:
            out["pipe_diameter_m"] = round(d, 4)
        elif _number(given) and abs(given - d) > 0.005:
            raise ValueError(f"{where}: pipe_diameter_m {given:g} disagrees with the "
                             f"geometry's pipe D {d:g} m")
    return out


def _resolve_rule(raw: dict[str, Any], geom: Geometry | None, metric: Metric,
                  where: str) -> dict[str, Any]:
    if not isinstance(raw.get("levels"), list):
        return raw
    signal = raw.get("signal", "value")
    where = f"{where} rule {raw.get('id') or f'{signal}-...'}"
    levels: list[Any] = []
    labels: dict[int, str] = {}
    for i, lv in enumerate(raw["levels"]):
        if not isinstance(lv, dict):
            levels.append(lv)
            continue
        known = lv.get("from_geometry")
        refs: dict[str, Any] = dict(known.model_dump() if isinstance(known, FromGeometry)
                                    else known if isinstance(known, dict) else {})
        new = dict(lv)
        for name in ("raise_at", "clear_at"):
            given = lv.get(name)
            ref_raw = refs.get(name) if _number(given) or given is None else given
            if ref_raw is None:
                continue
            here = f"{where} {lv.get('level', '?')} {name}"
            ref = GeometryRef.model_validate(ref_raw)
            if geom is None:
                raise ValueError(f"{here}: {ref.label()} needs the facility's geometry")
            if signal not in GEOMETRY_SIGNALS:
                raise ValueError(f"{here}: a geometry reference sets levels of "
                                 f"{', '.join(sorted(GEOMETRY_SIGNALS))} rules, not {signal}")
            try:
                value = ref.resolve(geom, metric)
            except ValueError as exc:
                raise ValueError(f"{here}: {exc}") from exc
            if _number(given) and abs(given - value) > 1e-6:
                raise ValueError(f"{here}: {given:g} disagrees with {ref.label()} = {value:g} "
                                 f"(the geometry changed: drop the number)")
            new[name] = value
            refs[name] = ref.model_dump(exclude_defaults=True)
            if name == "raise_at":
                labels[i] = ref.label()
        if refs:
            new["from_geometry"] = {k: v for k, v in refs.items() if v is not None}
        levels.append(new)
    if labels:
        _check_order(levels, labels, raw.get("direction", "upper"), where)
    return {**raw, "levels": levels}


def _check_order(levels: list[Any], labels: dict[int, str], direction: Any, where: str) -> None:
    """After resolution a more severe level must still be stricter: say which geometry
    reference broke the order (the rule's own check would only list the numbers)."""
    ranked: list[tuple[int, str, float, str]] = []
    for i, lv in enumerate(levels):
        try:
            sev = AlarmLevel(lv["level"]).severity
        except (TypeError, KeyError, ValueError):
            return
        if not _number(lv.get("raise_at")):
            return
        ranked.append((sev, lv["level"], lv["raise_at"], labels.get(i, "a number")))
    ranked.sort()
    upper = direction != Direction.LOWER.value
    for (_, lo_name, lo, lo_how), (_, hi_name, hi, hi_how) in pairwise(ranked):
        if (hi < lo) if upper else (hi > lo):
            raise ValueError(f"{where}: after resolving the geometry {hi_name} at {hi:g} "
                             f"({hi_how}) is {'below' if upper else 'above'} {lo_name} at "
                             f"{lo:g} ({lo_how}): levels must get stricter with severity")


class Facility(Contract):
    id: Identifier
    kind: FacilityKind
    name: str
    name_zh: str | None = None
    district: str
    district_zh: str | None = Field(default=None, description="The district's Chinese name "
                                                              "(alarm texts, pages).")
    criticality: Criticality = Field(
        default=Criticality.NORMAL, description="critical: a gateway outage while the district "
                                                "is under rain or while the facility is in "
                                                "alarm raises a facility alarm (dark).")
    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]
    sensors: Annotated[list[Sensor], Field(min_length=1)]
    composites: list[CompositeRule] = Field(default_factory=list)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    owner_unit: Annotated[str, Field(min_length=1, max_length=80)] | None = Field(
        default=None, description="The unit that owns the facility (权属单位: the drainage "
                                  "company, the bridge maintenance contractor, the site's "
                                  "contractor): its work orders go to it.")
    geometry: Geometry | None = Field(
        default=None, description="A drainage or sewage manhole's invert, crown and cover "
                                  "elevations and its outgoing pipe (diameter, slope, "
                                  "roughness): levels may be taken from it.")

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        """Geometry references become numbers before the levels are validated: the engine
        sees ordinary levels."""
        return _resolve_facility(data)

    @model_validator(mode="after")
    def _check(self) -> Facility:
        if self.geometry is not None and self.kind not in GEOMETRY_KINDS:
            raise ValueError(f"facility {self.id}: geometry applies to drainage and sewage "
                             f"facilities, not {self.kind}")
        ids = {s.id for s in self.sensors}
        for s in self.sensors:
            if self.kind not in METRICS[s.metric].kinds:
                raise ValueError(f"facility {self.id}: a {self.kind} facility has no {s.metric}")
        for c in self.composites:
            for cond in c.all_of:
                if cond.facility is None and cond.sensor not in ids:
                    raise ValueError(f"facility {self.id}: composite {c.id} names unknown "
                                     f"sensor {cond.sensor}")
            if all(cond.facility is not None for cond in c.all_of):
                raise ValueError(f"facility {self.id}: composite {c.id} reads only other "
                                 f"facilities' sensors (at least one must be its own)")
        return self

    @cached_property
    def metrics(self) -> frozenset[Metric]:
        return frozenset(s.metric for s in self.sensors)

    def geometry_warnings(self) -> list[str]:
        """Rules and gauges that contradict the facility's geometry, and geometry that
        contradicts itself (``lifeline registry check``): one line each, with the numbers."""
        g = self.geometry
        if g is None:
            return []
        out = [f"facility {self.id}: geometry: {w}" for w in _geometry_itself(g, self.kind)]
        for s in self.sensors:
            for w in _sensor_against(g, s):
                out.append(f"facility {self.id}: sensor {s.id}: {w}")
        return out

    @cached_property
    def min_interval_s(self) -> float:
        """The shortest reporting interval of the facility's sensors (read on every report
        by the alarm engine: computed once)."""
        return min(s.interval_s for s in self.sensors)


class MemberMatch(Contract):
    """Which facility alarms a district rule counts (all given fields must match): facility
    category alarms only — a sensor fault or a silent gateway is not the district at risk."""

    kind: list[FacilityKind] | None = None
    metric: list[Metric] | None = None
    rule: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, description="Rule keys (e.g. 'sum-10800s-upper', a composite's id).")


class DistrictRule(Contract):
    """A district alarm (category ``district``): raised while at least ``min_facilities`` of
    the district's facilities have a matching facility alarm at ``at_least`` or worse.

    Its level is ``level`` when given, else the worst level that ``min_facilities`` of them
    share (one facility: its worst alarm). With ``groups`` the member alarms are recorded and
    shown but not paged on their own (``grouped_into``): the district alarm pages for them —
    one rainstorm alarm per district instead of one per rain gauge. Evaluated by exactly one
    processor worker per district (the owner of the district's ``lifeline.context``
    partition), from the members' transitions published there."""

    id: Identifier
    name: Annotated[str, Field(min_length=1, max_length=100)] = Field(
        description="What the alarm is called (English): 'rainstorm'.")
    name_zh: Annotated[str, Field(min_length=1, max_length=50)] = Field(
        description="The same in Chinese: '暴雨'.")
    kind: FacilityKind = Field(description="What the district alarm is filed and routed as "
                                           "(on-call routes match it).")
    districts: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, description="Districts (English names) it applies to; null: every "
                                  "district.")
    members: MemberMatch
    at_least: AlarmLevel = AlarmLevel.BLUE
    min_facilities: Annotated[int, Field(ge=1, le=10_000)] = 1
    level: AlarmLevel | None = None
    groups: bool = False
    source: Source
    default: bool = False
    description: str | None = None

    def applies(self, district: str) -> bool:
        return self.districts is None or district in self.districts

    def counts(self, f: Facility, sensor: Sensor | None, rule_key: str) -> bool:
        """Whether a facility alarm of ``rule_key`` (on ``sensor``; None: a composite)
        is one of this rule's members."""
        m = self.members
        return (self.applies(f.district)
                and (m.kind is None or f.kind in m.kind)
                and (m.metric is None or (sensor is not None and sensor.metric in m.metric))
                and (m.rule is None or rule_key in m.rule))


class Registry(Contract):
    version: int = 1
    name: str
    timezone: TimeZoneName = "Asia/Shanghai"
    policy: AlarmPolicy = Field(default_factory=AlarmPolicy)
    facilities: Annotated[list[Facility], Field(min_length=1)]
    district_rules: list[DistrictRule] = Field(
        default_factory=list, description="Alarms of a district as a whole, from its "
                                          "facilities' alarms (a rainstorm, widespread "
                                          "surcharge).")

    _by_id: dict[str, Facility] = PrivateAttr(default_factory=dict)
    _sensors: dict[tuple[str, str], Sensor] = PrivateAttr(default_factory=dict)
    _by_facility: dict[str, dict[str, Sensor]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _unique(self) -> Registry:
        seen: set[str] = set()
        sensors: set[str] = set()
        for f in self.facilities:
            if f.id in seen:
                raise ValueError(f"duplicate facility id {f.id}")
            seen.add(f.id)
            for s in f.sensors:
                if s.id in sensors:
                    raise ValueError(f"duplicate sensor id {s.id} (facility {f.id})")
                sensors.add(s.id)
        self._check_references()
        self._check_district_rules()
        return self

    def _check_references(self) -> None:
        by_id = {f.id: f for f in self.facilities}

        def other(where: str, fid: str, sid: str) -> Sensor:
            f = by_id.get(fid)
            if f is None:
                raise ValueError(f"{where}: unknown facility {fid}")
            found = next((s for s in f.sensors if s.id == sid), None)
            if found is None:
                raise ValueError(f"{where}: facility {fid} has no sensor {sid}")
            return found

        for f in self.facilities:
            for s in f.sensors:
                for r in s.rules:
                    if r.minus is None:
                        continue
                    where = f"facility {f.id}: sensor {s.id}: rule {r.key}: minus"
                    if r.minus.facility == f.id:
                        raise ValueError(f"{where}: names its own facility")
                    ref = other(where, r.minus.facility, r.minus.sensor)
                    if ref.metric is not s.metric:
                        raise ValueError(f"{where}: {ref.id} measures {ref.metric}, not "
                                         f"{s.metric}")
            for c in f.composites:
                for cond in c.all_of:
                    if cond.facility is not None:
                        other(f"facility {f.id}: composite {c.id}", cond.facility, cond.sensor)

    def _check_district_rules(self) -> None:
        ids = [r.id for r in self.district_rules]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate district rule id")
        districts = {f.district for f in self.facilities}
        for r in self.district_rules:
            unknown = sorted(set(r.districts or ()) - districts)
            if unknown:
                raise ValueError(f"district rule {r.id}: unknown district(s) "
                                 f"{', '.join(unknown)}")

    def model_post_init(self, context: Any, /) -> None:
        self._by_id = {f.id: f for f in self.facilities}
        self._sensors = {(f.id, s.id): s for f in self.facilities for s in f.sensors}
        self._by_facility = {f.id: {s.id: s for s in f.sensors} for f in self.facilities}

    def facility(self, facility_id: str) -> Facility | None:
        return self._by_id.get(facility_id)

    @property
    def facilities_by_id(self) -> dict[str, Facility]:
        """Facility id → facility: the registry's own index (read-only by convention). A hot
        path keeps it — pydantic reaches private attributes through a Python-level
        ``__getattr__``, ~1 µs a call (ingest: 5 % of its samples for three lookups a
        message, issue 16)."""
        return self._by_id

    @property
    def sensors_by_facility(self) -> dict[str, dict[str, Sensor]]:
        """Facility id → its sensors by id (the index :meth:`sensors_of` reads)."""
        return self._by_facility

    def sensor(self, facility_id: str, sensor_id: str) -> Sensor | None:
        return self._sensors.get((facility_id, sensor_id))

    def sensors_of(self, facility_id: str) -> dict[str, Sensor]:
        """A facility's sensors by id (empty for an unknown facility)."""
        return self._by_facility.get(facility_id, {})

    @property
    def sensor_count(self) -> int:
        return len(self._sensors)

    def warnings(self) -> list[str]:
        """Allowed but dangerous choices an engineer should look at again: maintenance
        windows that silence life-safety gases or red; rules, gauges and geometry that
        contradict a facility's geometry."""
        out: list[str] = []
        for f in self.facilities:
            for w in f.maintenance:
                if not w.names_life_safety:
                    continue
                named = sorted(m.value for m in w.metrics or () if m in LIFE_SAFETY_METRICS)
                what = ", ".join([*named, *(["red"] if w.silence_up_to is AlarmLevel.RED else [])])
                out.append(f"facility {f.id}: maintenance window {w.reason!r} silences {what}: "
                           f"nobody is paged for them inside it (confined-space work needs gas "
                           f"alarms: CJJ 6)")
        for f in self.facilities:
            out.extend(f.geometry_warnings())
        return out

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def load_registry(path: str | Path) -> Registry:
    """Read and validate a registry file (YAML, or JSON when it ends in ``.json``); errors
    name the file and the field."""
    p = Path(path)
    _SHARED_RULES.clear()  # only rules of the registry being loaded are shared
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read registry {p}: {exc}") from exc
    if p.suffix == ".json":
        # Province-sized registries: pydantic parses JSON itself (no intermediate Python
        # objects), ~50x faster than YAML and in a fraction of the memory.
        try:
            return Registry.model_validate_json(text)
        except ValidationError as exc:
            raise RegistryError(f"registry {p} is invalid:\n{exc}") from exc
    else:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            raw = yaml.load(text.decode("utf-8"), Loader=loader)  # noqa: S506 — a safe loader
        except yaml.YAMLError as exc:
            raise RegistryError(f"registry {p} is not valid YAML: {exc}") from exc
    try:
        return Registry.model_validate(raw)
    except ValidationError as exc:
        raise RegistryError(f"registry {p} is invalid:\n{exc}") from exc


