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
  district is under rain, or while it was in alarm, is itself a facility alarm.
"""

from __future__ import annotations

from datetime import time
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

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


class Level(Contract):
    """One level of a rule, in the signal's unit (canonical unit; rate: per ``rate_per_s``).

    upper: raised when signal >= ``raise_at``, held until it falls below ``clear_at``;
    lower: raised when signal <= ``raise_at``, held until it rises above ``clear_at``.
    ``clear_at`` defaults to ``raise_at`` (no hysteresis).
    """

    level: AlarmLevel
    raise_at: float = Field(allow_inf_nan=False)
    clear_at: float | None = Field(default=None, allow_inf_nan=False)
    source: Source
    default: bool = Field(default=False, description="A shipped default still to be replaced.")

    @property
    def clear_value(self) -> float:
        return self.raise_at if self.clear_at is None else self.clear_at


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
    """One condition of a composite rule: a signal of a sensor compared with a value."""

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

    @model_validator(mode="after")
    def _check(self) -> Facility:
        ids = {s.id for s in self.sensors}
        for s in self.sensors:
            if self.kind not in METRICS[s.metric].kinds:
                raise ValueError(f"facility {self.id}: a {self.kind} facility has no {s.metric}")
        for c in self.composites:
            for cond in c.all_of:
                if cond.sensor not in ids:
                    raise ValueError(f"facility {self.id}: composite {c.id} names unknown "
                                     f"sensor {cond.sensor}")
        return self

    @cached_property
    def metrics(self) -> frozenset[Metric]:
        return frozenset(s.metric for s in self.sensors)

    @cached_property
    def min_interval_s(self) -> float:
        """The shortest reporting interval of the facility's sensors (read on every report
        by the alarm engine: computed once)."""
        return min(s.interval_s for s in self.sensors)


class Registry(Contract):
    version: int = 1
    name: str
    timezone: TimeZoneName = "Asia/Shanghai"
    policy: AlarmPolicy = Field(default_factory=AlarmPolicy)
    facilities: Annotated[list[Facility], Field(min_length=1)]

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
        return self

    def model_post_init(self, context: Any, /) -> None:
        self._by_id = {f.id: f for f in self.facilities}
        self._sensors = {(f.id, s.id): s for f in self.facilities for s in f.sensors}
        self._by_facility = {f.id: {s.id: s for s in f.sensors} for f in self.facilities}

    def facility(self, facility_id: str) -> Facility | None:
        return self._by_id.get(facility_id)

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
        windows that silence life-safety gases or red."""
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


