"""The content of one daily or weekly report (日报/周报, issue 19 item 5): plain frozen data.

:mod:`services.reports.collect` fills it from PostgreSQL (work orders) and InfluxDB (alarms,
readings); :mod:`services.reports.render` turns it into HTML and PDF. Nothing here does I/O,
so the renderers are tested with synthetic reports. Times are aware datetimes (any zone;
the renderers show them in :attr:`Period.tz`); levels, kinds and states are the contracts'
enums, put into words only by the renderers (``schemas.texts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from schemas.errors import LifelineError
from schemas.kinds import AlarmLevel, FacilityKind
from schemas.texts import Bi
from schemas.workorder import OrderState

ReportKind = Literal["daily", "weekly"]
KINDS: tuple[ReportKind, ...] = ("daily", "weekly")
LEVELS_WORST_FIRST: tuple[AlarmLevel, ...] = (AlarmLevel.RED, AlarmLevel.ORANGE,
                                              AlarmLevel.YELLOW, AlarmLevel.BLUE)

GB3095_PM10_24H = 150.0
"""GB 3095-2012 ambient air quality, grade II (residential, commercial, industrial areas):
PM10 24-hour mean limit, µg/m³ — the dust report's limit when a site's rules give none."""


class ReportError(LifelineError):
    """Base of the reports' errors."""


class FontNotFound(ReportError):
    """No CJK font to draw Chinese with (PDF text, plot labels)."""


class ReportSourceError(ReportError):
    """A source of the report (PostgreSQL, InfluxDB) could not be read: no partial report."""


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in local time: one local day (daily) or seven (weekly)."""

    kind: ReportKind
    start: datetime
    end: datetime
    tz: str  # IANA zone name, e.g. Asia/Shanghai

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def seconds(self) -> float:
        return self.end.timestamp() - self.start.timestamp()

    @property
    def days(self) -> tuple[date, ...]:
        """The local calendar days of the period."""
        first = self.start.astimezone(self.zone).date()
        return tuple(first + timedelta(days=i) for i in range(7 if self.kind == "weekly" else 1))


def period_of(kind: ReportKind, first_day: date, tz: ZoneInfo) -> Period:
    """The report period starting at local midnight of ``first_day``: that day (daily) or
    that day and the six after it (weekly; a week starts on Monday by convention, not by
    rule). Local midnights, so a day of a DST change has its real length."""
    if kind not in KINDS:
        raise ValueError(f"report kind must be daily or weekly, not {kind!r}")
    n = 7 if kind == "weekly" else 1
    start = datetime.combine(first_day, time(0), tzinfo=tz)
    end = datetime.combine(first_day + timedelta(days=n), time(0), tzinfo=tz)
    return Period(kind=kind, start=start, end=end, tz=tz.key)


@dataclass(frozen=True)
class LevelCounts:
    """A count per alarm level."""

    red: int = 0
    orange: int = 0
    yellow: int = 0
    blue: int = 0

    def of(self, level: AlarmLevel) -> int:
        count: int = getattr(self, level.value)
        return count

    def plus(self, level: AlarmLevel, n: int) -> LevelCounts:
        return replace(self, **{level.value: self.of(level) + n})

    @property
    def total(self) -> int:
        return self.red + self.orange + self.yellow + self.blue


@dataclass(frozen=True)
class AlarmGroup:
    """Alarms of one kind, district or category."""

    key: str  # the kind's or category's value, the district's (English) name
    label: Bi
    counts: LevelCounts


@dataclass(frozen=True)
class AlarmStats:
    """The period's alarms: each count is an alarm raised at, or escalated to, that level
    (an episode raised yellow and escalated to red counts once in each); alarms silenced by
    a maintenance window are not counted. ``by_level``, ``by_kind`` and ``by_district`` are
    facility alarms (the facility at risk); ``faults`` the sensor and gateway faults."""

    by_level: LevelCounts = field(default_factory=LevelCounts)
    episodes: int = 0  # facility alarm episodes raised in the period
    by_kind: tuple[AlarmGroup, ...] = ()
    by_district: tuple[AlarmGroup, ...] = ()
    faults: tuple[AlarmGroup, ...] = ()


@dataclass(frozen=True)
class FacilityAlarms:
    """One facility's alarms in the period (the worst facilities table)."""

    facility_id: str
    name: str
    name_zh: str | None
    kind: FacilityKind | None
    district: str | None
    district_zh: str | None
    alarms: int  # facility alarms raised or escalated
    worst: AlarmLevel | None
    in_alarm_s: float  # time with at least one facility alarm active, within the period
    faults: int = 0  # sensor and gateway faults raised or escalated


@dataclass(frozen=True)
class OrderRow:
    """One work order as it stood at the end of the period (or when the report was made,
    if earlier)."""

    order_id: str
    facility_id: str
    name: str
    name_zh: str | None
    level: AlarmLevel
    state: OrderState
    owner_unit: str
    opened_at: datetime
    deadline: datetime
    closed_at: datetime | None  # reached closed or false_alarm, within the period
    overdue: bool  # its deadline passed before it was handled (verified, closed, false alarm)
    escalation: int  # highest 督办 reached: 0 none, 1 the unit's manager, 2 the section chief
    kind: FacilityKind | None = None

    @property
    def handling_hours(self) -> float | None:
        """Opened to closed, hours (closed orders only; a false alarm is not handled)."""
        if self.state is not OrderState.CLOSED or self.closed_at is None:
            return None
        return (self.closed_at.timestamp() - self.opened_at.timestamp()) / 3600


@dataclass(frozen=True)
class UnitStats:
    """One owner unit's (权属单位) orders in the period."""

    owner_unit: str
    opened: int = 0  # opened in the period
    closed: int = 0  # closed (销号) in the period
    false_alarm: int = 0  # found a false alarm in the period
    overdue: int = 0  # orders of the period that went past their deadline unhandled
    open_at_end: int = 0  # not closed nor a false alarm at the end
    median_hours: float | None = None  # opened to closed, orders closed in the period
    max_hours: float | None = None


@dataclass(frozen=True)
class Completeness:
    """Readings received against readings expected from the sensors' intervals, for one
    facility kind (``facility_id`` None) or one gateway (a facility's gateway)."""

    kind: FacilityKind | None
    sensors: int
    received: int
    expected: int
    facility_id: str | None = None
    name: str | None = None
    name_zh: str | None = None

    @property
    def rate(self) -> float | None:
        if self.expected <= 0:
            return None
        return min(1.0, self.received / self.expected)


@dataclass(frozen=True)
class DustDay:
    """One local day of a site's PM10: the daily mean of its valid hourly means."""

    day: date
    mean: float | None  # µg/m³; None: fewer valid hours than a daily mean needs
    hours: int  # valid hourly means
    exceeded: bool


@dataclass(frozen=True)
class DustSite:
    """A construction site's dust (扬尘) in the period against a PM10 daily limit."""

    facility_id: str
    name: str
    name_zh: str | None
    owner_unit: str | None
    limit: float  # µg/m³, daily mean
    limit_source: Bi
    limit_from_registry: bool
    days: tuple[DustDay, ...]

    @property
    def valid_days(self) -> int:
        return sum(1 for d in self.days if d.mean is not None)

    @property
    def exceedance_days(self) -> int:
        return sum(1 for d in self.days if d.exceeded)

    @property
    def compliance_rate(self) -> float | None:
        """Days within the limit over days with a valid daily mean (None: no valid day)."""
        if not self.valid_days:
            return None
        return (self.valid_days - self.exceedance_days) / self.valid_days


@dataclass(frozen=True)
class ReportData:
    """Everything one report shows."""

    period: Period
    registry_name: str
    generated_at: datetime
    alarms: AlarmStats = field(default_factory=AlarmStats)
    facilities: tuple[FacilityAlarms, ...] = ()  # the worst first
    orders: tuple[OrderRow, ...] = ()  # open at some time in the period, oldest first
    units: tuple[UnitStats, ...] = ()
    completeness_kinds: tuple[Completeness, ...] = ()
    completeness_gateways: tuple[Completeness, ...] = ()  # the lowest rate first
    dust: tuple[DustSite, ...] = ()
    notes: tuple[Bi, ...] = ()  # how the numbers were made, and what they leave out

    @property
    def as_of(self) -> datetime:
        """The end of the period, or when the report was made if that is earlier."""
        return min(self.period.end, self.generated_at)

    @property
    def totals(self) -> UnitStats:
        """All units together (the median and max over every order closed in the period)."""
        hours = sorted(h for o in self.orders if (h := o.handling_hours) is not None
                       and o.closed_at is not None and o.closed_at >= self.period.start)
        return UnitStats(owner_unit="", opened=sum(u.opened for u in self.units),
                         closed=sum(u.closed for u in self.units),
                         false_alarm=sum(u.false_alarm for u in self.units),
                         overdue=sum(u.overdue for u in self.units),
                         open_at_end=sum(u.open_at_end for u in self.units),
                         median_hours=median(hours), max_hours=hours[-1] if hours else None)

    @property
    def online_rate(self) -> float | None:
        """Every sensor together."""
        expected = sum(c.expected for c in self.completeness_kinds)
        received = sum(min(c.received, c.expected) for c in self.completeness_kinds)
        return None if expected <= 0 else received / expected


def median(values: list[float]) -> float | None:
    """The median of sorted ``values`` (None when empty)."""
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
