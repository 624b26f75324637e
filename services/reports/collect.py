"""Collect one report's content (:class:`~services.reports.data.ReportData`) from the stores.

Read-only and bounded to the period (``[start, as_of)``, ``as_of`` the period's end or now,
whichever is earlier):

- PostgreSQL (one autocommit connection, its session read-only): the orders open at some
  time in the period (``work_order``), and from their history (``work_order_event``, up to
  ``as_of``) the state, deadline and owner unit each had at ``as_of``, the highest 督办
  reached and when each was verified or closed — so a report made later shows the period as
  it was.
- InfluxDB (InfluxQL over the v1 API, retention policy ``long``):
  ``alarm_event`` counts of raised and escalated alarms per facility, level and category
  (silenced ones left out); the facility alarms' events for the time in alarm, with the
  ``alarm_state`` of the 30 days before the period for alarms already active at its start;
  ``reading_1m`` counts per sensor for data completeness (the writer's 1-minute mean, min,
  max per series: one point per minute with data, so a sensor reporting more often than
  once a minute is counted in minutes, and the raw ``reading`` points are never scanned);
  hourly PM10 means of construction sites from ``reading_1m`` for the dust days.

Everything after the queries is pure (:func:`assemble` and the functions it calls), so it
is tested with rows and series shaped like the databases' answers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from schemas.common import parse_timestamp, to_epoch_ms
from schemas.kinds import AlarmLevel, FacilityKind, Metric
from schemas.registry import Direction, Facility, Registry, Signal
from schemas.storage import Measurement, Tag, qualified
from schemas.texts import Bi, category_words, kind_words, level_words, region_words
from schemas.workorder import TERMINAL, OrderState
from services.core.influx import QueryError, Series, query
from services.core.settings import InfluxSettings
from services.reports.data import (
    GB3095_PM10_24H,
    AlarmGroup,
    AlarmStats,
    Completeness,
    DustDay,
    DustSite,
    FacilityAlarms,
    LevelCounts,
    OrderRow,
    Period,
    ReportData,
    ReportError,
    ReportKind,
    ReportSourceError,
    UnitStats,
    median,
    period_of,
)

INFLUX_TIMEOUT_S = 60.0  # a week of counts over every sensor is one statement
PG_STATEMENT_TIMEOUT_MS = 60_000
ACTIVE_LOOKBACK = timedelta(days=30)  # alarms active at the period's start: their state
WORST_FACILITIES = 10
HOUR_VALID_FRACTION = 0.75  # GB 3095-2012 §7: an hourly mean needs 45 minutes of the hour
DAY_VALID_HOURS = 20  # GB 3095-2012 §7: a 24-hour mean needs 20 hourly means
FAULT_CATEGORIES = ("sensor", "gateway")


async def collect(kind: ReportKind, day_or_week_start: date, *, store_url: str,
                  influx: InfluxSettings, registry: Registry, tz: ZoneInfo,
                  now: datetime | None = None) -> ReportData:
    """The report of the local day (``daily``) or the seven days (``weekly``) starting at
    ``day_or_week_start``, in zone ``tz``. ``now`` (default: the clock) cuts a period not
    over yet. Raises :class:`ReportSourceError` when PostgreSQL or InfluxDB cannot answer
    (no partial report) and :class:`ReportError` for a period that has not begun."""
    period = period_of(kind, day_or_week_start, tz)
    generated = now if now is not None else datetime.now(UTC)
    as_of = min(period.end, generated)
    if as_of <= period.start:
        raise ReportError(f"the {kind} report of {day_or_week_start} cannot be made before "
                          f"{period.start.isoformat()} (its period has not begun)")
    orders, history = await _orders(store_url, period, as_of)
    series = {}
    for name, q in influx_queries(period, as_of).items():
        try:
            series[name] = await query(influx, q, timeout_s=INFLUX_TIMEOUT_S)
        except QueryError as exc:
            raise ReportSourceError(f"InfluxDB ({name}): {exc}") from exc
    return assemble(period, registry, generated, orders=orders, history=history,
                    alarm_counts=series["alarm_counts"], alarm_events=series["alarm_events"],
                    active_at_start=series["active_at_start"],
                    readings=series["readings"], dust=series["dust"])


# ------------------------------------------------------------------ PostgreSQL

ORDERS_SQL = (
    "SELECT order_id, state, facility_id, level, kind, owner_unit, opened_at, deadline, "
    "closed_at, escalation FROM work_order "
    "WHERE opened_at < %(as_of)s AND (closed_at IS NULL OR closed_at >= %(start)s) "
    "ORDER BY opened_at, order_id")
"""The orders open at some time in ``[start, as_of)``."""

HISTORY_SQL = (
    "SELECT order_id, "
    "(array_agg(state_after ORDER BY seq DESC))[1] AS state, "
    "(array_agg(doc->>'deadline' ORDER BY seq DESC) "
    " FILTER (WHERE doc->>'deadline' IS NOT NULL))[1] AS deadline, "
    "(array_agg(doc->>'owner_unit' ORDER BY seq DESC) "
    " FILTER (WHERE doc->>'owner_unit' IS NOT NULL))[1] AS owner_unit, "
    "max((doc->>'escalation')::int) FILTER (WHERE action = 'escalate') AS escalation, "
    "min(at) FILTER (WHERE action = 'verify') AS verified_at, "
    "min(at) FILTER (WHERE state_after IN ('closed', 'false_alarm')) AS closed_at "
    "FROM work_order_event WHERE order_id = ANY(%(ids)s) AND at < %(as_of)s "
    "GROUP BY order_id")
"""Per order, from its events up to ``as_of``: what it was then."""


async def _orders(url: str, period: Period, as_of: datetime
                  ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    try:
        conn = await psycopg.AsyncConnection.connect(url, row_factory=dict_row,
                                                     connect_timeout=5, autocommit=True)
    except psycopg.Error as exc:
        # The class of the error only: libpq's text can quote the connection string.
        raise ReportSourceError(f"PostgreSQL: {type(exc).__name__}") from exc
    try:
        await conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        await conn.execute(f"SET statement_timeout = {int(PG_STATEMENT_TIMEOUT_MS)}")
        cur = await conn.execute(ORDERS_SQL, {"start": period.start, "as_of": as_of})
        orders = list(await cur.fetchall())
        history: dict[str, dict[str, Any]] = {}
        if orders:
            cur = await conn.execute(HISTORY_SQL, {"ids": [o["order_id"] for o in orders],
                                                   "as_of": as_of})
            history = {r["order_id"]: r for r in await cur.fetchall()}
        return orders, history
    except psycopg.Error as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ReportSourceError(f"PostgreSQL: {type(exc).__name__}: {first}") from exc
    finally:
        await conn.close()


# ------------------------------------------------------------------ InfluxDB

def _range(start: datetime, end: datetime) -> str:
    return f"time >= {to_epoch_ms(start)}ms AND time < {to_epoch_ms(end)}ms"


def _t(name: str) -> str:
    return f'"{name}"'


def influx_queries(period: Period, as_of: datetime) -> dict[str, str]:
    """The InfluxQL statements of one report, each bounded to the period (the active-alarm
    lookback to the 30 days before it)."""
    span = _range(period.start, as_of)
    alarms, states, minute = (qualified(m) for m in (Measurement.ALARM_EVENT,
                                                    Measurement.ALARM_STATE,
                                                    Measurement.READING_1M))
    offset_s = int((period.start.utcoffset() or timedelta()).total_seconds()) % 3600
    hour = f"time(1h, {offset_s}s)" if offset_s else "time(1h)"
    by_alarm = ", ".join(_t(x) for x in (Tag.FACILITY, Tag.KIND, Tag.DISTRICT, Tag.LEVEL,
                                         Tag.CATEGORY, Tag.EVENT))
    # Numbers and the schema's constant names only: no input in these statements.
    return {
        "alarm_counts": (
            f'SELECT count("alarm_id") AS n FROM {alarms} WHERE {span} AND '  # noqa: S608
            f"(\"event\" = 'raised' OR \"event\" = 'escalated') AND \"silenced\" = false "
            f"GROUP BY {by_alarm}"),
        "alarm_events": (
            f'SELECT "alarm_id", "severity", "silenced" FROM {alarms} WHERE {span} AND '  # noqa: S608
            f"\"category\" = 'facility' GROUP BY \"facility\""),
        "active_at_start": (
            f'SELECT last("severity") AS severity, "alarm_id", "silenced" FROM {states} '  # noqa: S608
            f"WHERE {_range(period.start - ACTIVE_LOOKBACK, period.start)} AND "
            f"\"category\" = 'facility' GROUP BY \"facility\", \"sensor\", \"rule\""),
        "readings": (
            f'SELECT count("mean") AS n FROM {minute} WHERE {span} '  # noqa: S608
            f'GROUP BY "facility", "sensor"'),
        "dust": (
            f'SELECT mean("mean") AS mean, count("mean") AS n FROM {minute} WHERE {span} AND '  # noqa: S608
            f"\"kind\" = 'site' AND \"metric\" = 'pm10' "
            f'GROUP BY {hour}, "facility", "sensor" fill(none)'),
    }


def _rows(series: Iterable[Series]) -> Iterable[tuple[dict[str, str], dict[str, Any]]]:
    """(tags, row as column → value) of every row of every series."""
    for s in series:
        tags = s.get("tags") or {}
        columns = s.get("columns") or []
        for values in s.get("values") or []:
            yield tags, dict(zip(columns, values, strict=False))


# ------------------------------------------------------------------ assembling

def assemble(period: Period, registry: Registry, generated: datetime, *,
             orders: Sequence[Mapping[str, Any]], history: Mapping[str, Mapping[str, Any]],
             alarm_counts: Sequence[Series], alarm_events: Sequence[Series],
             active_at_start: Sequence[Series], readings: Sequence[Series],
             dust: Sequence[Series]) -> ReportData:
    """The report from the databases' answers (pure)."""
    as_of = min(period.end, generated)
    rows = order_rows(orders, history, registry, period, as_of)
    in_alarm = in_alarm_seconds(alarm_events, active_at_start, period.start, as_of)
    stats, facilities = alarm_stats(alarm_counts, in_alarm, registry)
    kinds, gateways = completeness(readings, registry, as_of.timestamp() - period.start.timestamp())
    sites = dust_sites(dust, registry, period, as_of)
    return ReportData(period=period, registry_name=registry.name, generated_at=generated,
                      alarms=stats, facilities=facilities, orders=rows,
                      units=unit_stats(rows, registry, period, as_of),
                      completeness_kinds=kinds, completeness_gateways=gateways, dust=sites,
                      notes=notes(sites, generated < period.end))


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return parse_timestamp(value)


def _state(value: Any, fallback: OrderState) -> OrderState:
    try:
        return OrderState(value)
    except ValueError:
        return fallback


def order_rows(orders: Sequence[Mapping[str, Any]], history: Mapping[str, Mapping[str, Any]],
               registry: Registry, period: Period, as_of: datetime) -> tuple[OrderRow, ...]:
    """Each order as it stood at ``as_of``: its history up to then where there is one, else
    its current row. Overdue: its deadline passed before it was handled (verified, closed
    or found a false alarm) or before ``as_of``, and it was still unhandled within the
    period."""
    out = []
    for o in orders:
        h = history.get(o["order_id"], {})
        current = OrderState(o["state"])
        state = _state(h.get("state"), current) if h else current
        deadline = _aware(h.get("deadline")) or _aware(o["deadline"])
        opened = _aware(o["opened_at"])
        assert opened is not None and deadline is not None  # NOT NULL columns
        closed = _aware(h.get("closed_at")) if h else _aware(o.get("closed_at"))
        if state not in TERMINAL or (closed is not None and closed >= as_of):
            closed = None
        verified = _aware(h.get("verified_at"))
        handled = min((t for t in (verified, closed) if t is not None), default=None)
        ref = handled if handled is not None and handled < as_of else as_of
        overdue = ref > deadline and ref > period.start
        f = registry.facility(o["facility_id"])
        try:
            kind = FacilityKind(o["kind"]) if o.get("kind") else (f.kind if f else None)
        except ValueError:
            kind = f.kind if f else None
        escalation = h.get("escalation") if h else None
        out.append(OrderRow(
            order_id=o["order_id"], facility_id=o["facility_id"],
            name=f.name if f else o["facility_id"], name_zh=f.name_zh if f else None,
            level=AlarmLevel(o["level"]), state=state,
            owner_unit=str(h.get("owner_unit") or o["owner_unit"]), opened_at=opened,
            deadline=deadline, closed_at=closed, overdue=overdue,
            escalation=int(escalation if escalation is not None else o.get("escalation") or 0),
            kind=kind))
    return tuple(out)


def unit_stats(rows: Sequence[OrderRow], registry: Registry, period: Period,
               as_of: datetime) -> tuple[UnitStats, ...]:
    """Per owner unit: the registry's units (those without orders too), then any other
    unit an order went to, by name."""
    names = {f.owner_unit for f in registry.facilities if f.owner_unit}
    names.update(r.owner_unit for r in rows)
    by_unit: dict[str, list[OrderRow]] = defaultdict(list)
    for r in rows:
        by_unit[r.owner_unit].append(r)
    out = []
    for name in sorted(names):
        mine = by_unit.get(name, [])
        hours = sorted(h for r in mine if (h := r.handling_hours) is not None)
        out.append(UnitStats(
            owner_unit=name,
            opened=sum(1 for r in mine if period.start <= r.opened_at < as_of),
            closed=sum(1 for r in mine if r.state is OrderState.CLOSED and r.closed_at),
            false_alarm=sum(1 for r in mine if r.state is OrderState.FALSE_ALARM
                            and r.closed_at),
            overdue=sum(1 for r in mine if r.overdue),
            open_at_end=sum(1 for r in mine if r.state not in TERMINAL),
            median_hours=median(hours), max_hours=hours[-1] if hours else None))
    return tuple(out)


def _level(value: Any) -> AlarmLevel | None:
    try:
        return AlarmLevel(value)
    except ValueError:
        return None


def in_alarm_seconds(events: Sequence[Series], active: Sequence[Series], start: datetime,
                     as_of: datetime) -> dict[str, float]:
    """Per facility, the time within ``[start, as_of)`` with at least one facility alarm
    active (not silenced): episodes from their first active event (or the period's start,
    for those active then) to their clear (or ``as_of``), overlaps counted once."""
    start_ms, end_ms = to_epoch_ms(start), to_epoch_ms(as_of)
    opened: dict[tuple[str, str], int] = {}
    for tags, row in _rows(active):
        if (row.get("severity") or 0) > 0 and not row.get("silenced") and row.get("alarm_id"):
            opened[(tags.get(Tag.FACILITY, "?"), str(row["alarm_id"]))] = start_ms
    spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
    timeline = sorted(((int(row["time"]), tags.get(Tag.FACILITY, "?"), row)
                       for tags, row in _rows(events) if row.get("alarm_id")),
                      key=lambda x: x[0])
    for t, fid, row in timeline:
        key = (fid, str(row["alarm_id"]))
        if (row.get("severity") or 0) > 0:
            if not row.get("silenced"):
                opened.setdefault(key, t)
        elif key in opened:
            spans[fid].append((opened.pop(key), t))
    for (fid, _), t0 in opened.items():
        spans[fid].append((t0, end_ms))
    out: dict[str, float] = {}
    for fid, intervals in spans.items():
        total, reach = 0, start_ms
        for a, b in sorted(intervals):
            a, b = max(a, reach), min(b, end_ms)
            if b > a:
                total += b - a
                reach = b
        out[fid] = total / 1000
    return out


def alarm_stats(counts: Sequence[Series], in_alarm: Mapping[str, float], registry: Registry
                ) -> tuple[AlarmStats, tuple[FacilityAlarms, ...]]:
    """The alarm tallies and the worst facilities (most facility alarms, then longest in
    alarm) from the per-facility counts."""
    by_level = LevelCounts()
    episodes = 0
    kinds: dict[str, LevelCounts] = defaultdict(LevelCounts)
    districts: dict[str, LevelCounts] = defaultdict(LevelCounts)
    faults: dict[str, LevelCounts] = defaultdict(LevelCounts)
    per_fac: dict[str, list[Any]] = {}  # fid -> [alarms, worst, faults]
    for tags, row in _rows(counts):
        level = _level(tags.get(Tag.LEVEL))
        n = int(row.get("n") or 0)
        if level is None or n <= 0:
            continue
        fid = tags.get(Tag.FACILITY, "?")
        acc = per_fac.setdefault(fid, [0, None, 0])
        if tags.get(Tag.CATEGORY) in FAULT_CATEGORIES:
            faults[tags[Tag.CATEGORY]] = faults[tags[Tag.CATEGORY]].plus(level, n)
            acc[2] += n
            continue
        by_level = by_level.plus(level, n)
        if tags.get(Tag.EVENT) == "raised":
            episodes += n
        kinds[tags.get(Tag.KIND, "unknown")] = kinds[tags.get(Tag.KIND, "unknown")].plus(level, n)
        district = tags.get(Tag.DISTRICT, "unknown")
        districts[district] = districts[district].plus(level, n)
        acc[0] += n
        if acc[1] is None or level.severity > acc[1].severity:
            acc[1] = level
    district_zh = {f.district: f.district_zh for f in registry.facilities}
    kind_order = {k.value: i for i, k in enumerate(FacilityKind)}
    stats = AlarmStats(
        by_level=by_level, episodes=episodes,
        by_kind=tuple(AlarmGroup(k, kind_words(k), c) for k, c in
                      sorted(kinds.items(), key=lambda kc: kind_order.get(kc[0], 99))),
        by_district=tuple(
            AlarmGroup(d, region_words(d, district_zh.get(d)) if d != "unknown"
                       else Bi("未登记", "not in the registry"), c)
            for d, c in sorted(districts.items(), key=lambda dc: (-dc[1].total, dc[0]))),
        faults=tuple(AlarmGroup(c, category_words(c), faults[c]) for c in FAULT_CATEGORIES
                     if c in faults))
    for fid in in_alarm:
        per_fac.setdefault(fid, [0, None, 0])
    worst = []
    for fid, (alarms, level, n_faults) in per_fac.items():
        seconds = in_alarm.get(fid, 0.0)
        if not alarms and seconds <= 0:
            continue
        f = registry.facility(fid)
        worst.append(FacilityAlarms(
            facility_id=fid, name=f.name if f else fid, name_zh=f.name_zh if f else None,
            kind=f.kind if f else None, district=f.district if f else None,
            district_zh=f.district_zh if f else None, alarms=alarms, worst=level,
            in_alarm_s=seconds, faults=n_faults))
    worst.sort(key=lambda w: (-w.alarms, -w.in_alarm_s, -(w.worst.severity if w.worst else 0),
                              w.facility_id))
    return stats, tuple(worst[:WORST_FACILITIES])


def completeness(readings: Sequence[Series], registry: Registry, seconds: float
                 ) -> tuple[tuple[Completeness, ...], tuple[Completeness, ...]]:
    """Online rate per kind and per gateway: minutes with data (``reading_1m`` points)
    against the readings a sensor's interval promises, counted in minutes for sensors
    reporting more often than once a minute; each sensor capped at what it owes."""
    got: dict[tuple[str, str], int] = {}
    for tags, row in _rows(readings):
        key = (tags.get(Tag.FACILITY, ""), tags.get(Tag.SENSOR, ""))
        got[key] = got.get(key, 0) + int(row.get("n") or 0)
    by_kind: dict[FacilityKind, list[int]] = {}
    gateways = []
    for f in registry.facilities:
        expected = received = 0
        for s in f.sensors:
            owed = max(0, round(seconds / max(s.interval_s, 60.0)))
            expected += owed
            received += min(got.get((f.id, s.id), 0), owed)
        acc = by_kind.setdefault(f.kind, [0, 0, 0])
        acc[0] += len(f.sensors)
        acc[1] += received
        acc[2] += expected
        gateways.append(Completeness(kind=f.kind, sensors=len(f.sensors), received=received,
                                     expected=expected, facility_id=f.id, name=f.name,
                                     name_zh=f.name_zh))
    kinds = tuple(Completeness(kind=k, sensors=v[0], received=v[1], expected=v[2])
                  for k in FacilityKind if (v := by_kind.get(k)) is not None)
    gateways.sort(key=lambda c: (c.rate if c.rate is not None else 2.0, c.facility_id or ""))
    return kinds, tuple(gateways)


@dataclass(frozen=True)
class _Limit:
    value: float
    source: Bi
    from_registry: bool


def pm10_limit(f: Facility) -> _Limit:
    """The site's PM10 daily limit: the first level of a 24-hour mean rule on one of its
    PM10 sensors, else GB 3095-2012 grade II (150 µg/m³). Hourly and 15-minute rules are
    not daily limits and are not used."""
    found: list[tuple[float, str, AlarmLevel]] = []
    for s in f.sensors:
        if s.metric is not Metric.PM10:
            continue
        for r in s.rules:
            if (r.signal is Signal.MEAN and r.window_s == 86400
                    and r.direction is Direction.UPPER):
                first = r.ordered_levels()[0]
                found.append((first.raise_at, s.id, first.level))
    if found:
        value, sensor, level = min(found)
        lw = level_words(level)
        return _Limit(value, Bi(f"登记规则：[{sensor}] 24小时均值{lw.zh}阈值",
                                f"registry: [{sensor}] 24-hour mean, {lw.en} threshold"),
                      True)
    return _Limit(GB3095_PM10_24H,
                  Bi("GB 3095-2012 二级 24小时平均浓度限值（登记中无PM10日均值规则）",
                     "GB 3095-2012 grade II 24-hour limit (no 24-hour PM10 rule in the "
                     "registry)"), False)


def dust_sites(dust: Sequence[Series], registry: Registry, period: Period, as_of: datetime
               ) -> tuple[DustSite, ...]:
    """Per construction site with a PM10 sensor: each local day's mean of its valid hourly
    means (an hour valid with 45 of its minutes, or three quarters of the readings a slower
    sensor owes; a day with 20 valid hours: GB 3095-2012 §7), over its limit or not."""
    zone = period.zone
    interval = {(f.id, s.id): s.interval_s for f in registry.facilities for s in f.sensors}
    hourly: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for tags, row in _rows(dust):
        fid, sid = tags.get(Tag.FACILITY, ""), tags.get(Tag.SENSOR, "")
        mean, n = row.get("mean"), int(row.get("n") or 0)
        owed = 3600 / max(interval.get((fid, sid), 60.0), 60.0)
        if mean is None or n < HOUR_VALID_FRACTION * owed:
            continue
        hourly[fid][int(row["time"])].append(float(mean))
    days = [d for d in period.days if datetime.combine(d, datetime.min.time(), zone) < as_of]
    out = []
    for f in registry.facilities:
        if f.kind is not FacilityKind.SITE or Metric.PM10 not in f.metrics:
            continue
        limit = pm10_limit(f)
        per_day: dict[date, list[float]] = defaultdict(list)
        for t, means in hourly.get(f.id, {}).items():
            local = datetime.fromtimestamp(t / 1000, UTC).astimezone(zone).date()
            per_day[local].append(sum(means) / len(means))
        shown = []
        for d in days:
            hours = per_day.get(d, [])
            mean = sum(hours) / len(hours) if len(hours) >= DAY_VALID_HOURS else None
            shown.append(DustDay(day=d, mean=mean, hours=len(hours),
                                 exceeded=mean is not None and mean > limit.value))
        out.append(DustSite(facility_id=f.id, name=f.name, name_zh=f.name_zh,
                            owner_unit=f.owner_unit, limit=limit.value,
                            limit_source=limit.source, limit_from_registry=limit.from_registry,
                            days=tuple(shown)))
    return tuple(out)


def notes(sites: Sequence[DustSite], unfinished: bool) -> tuple[Bi, ...]:
    """How the numbers were made (the report's last section)."""
    out = [
        Bi("告警次数为本期发布或升级到该级别的告警（一次告警由黄色升级为红色，黄色、红色各计一次）；"
           "维护时段内静默的告警不计。",
           "Alarm counts are alarms raised at or escalated to each level in the period (one "
           "raised yellow and escalated to red counts once in each); alarms silenced by a "
           "maintenance window are not counted."),
        Bi("工单按本期结束时（或报告生成时）的状态统计；逾期指期限已过仍未复核或销号；"
           "处置时长为从生成工单到销号。",
           "Orders are shown as they stood at the end of the period (or when the report was "
           "made); overdue: past the deadline before being verified or closed; handling time: "
           "opened to closed."),
        Bi("数据完整率 = 收到的数据 / 按各仪表上报周期应收的数据，按1分钟汇总计"
           "（上报周期短于1分钟的仪表按分钟计）；仪表按当前设施登记计。",
           "Data completeness = readings received / readings expected from each sensor's "
           "interval, from the 1-minute aggregates (sensors reporting more often than once a "
           "minute are counted in minutes); sensors as in the current registry."),
    ]
    if sites:
        out.append(Bi("扬尘：日均值为有效小时均值的平均（每小时至少45分钟数据，每日至少20个小时均值，"
                      "GB 3095-2012 第7条）；日均值超过限值即为超标日；达标率 = 未超标日 / 有效日。",
                      "Dust: the daily mean is the mean of the valid hourly means (45 minutes of "
                      "data in an hour, 20 hourly means in a day: GB 3095-2012 §7); a day over "
                      "the limit is an exceedance day; compliance = days within the limit / "
                      "valid days."))
        if any(not s.limit_from_registry for s in sites):
            out.append(Bi(f"设施登记中没有PM10日均值规则的工地，按 GB 3095-2012 二级24小时平均浓度限值 "
                          f"{GB3095_PM10_24H:g} µg/m³ 评价（环境空气质量标准，并非工地排放标准）。",
                          f"Sites without a 24-hour PM10 rule in the registry are judged against "
                          f"the GB 3095-2012 grade II 24-hour limit, {GB3095_PM10_24H:g} µg/m³ "
                          f"(an ambient air quality standard, not a site emission limit)."))
    if unfinished:
        out.append(Bi("本期尚未结束：数据截至报告生成时。",
                      "The period is not over: the data run to when the report was made."))
    return tuple(out)
