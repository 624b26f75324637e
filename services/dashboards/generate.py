"""Generate Lifeline's Grafana dashboards (JSON model) from the registry.

Every query is InfluxQL against the datasource uid ``lifeline-influx`` (InfluxDB 1.x
directly, 2.x through the DBRP mapping), except the work-orders dashboard's: SQL against
the PostgreSQL data source ``lifeline-orders-pg`` (the orders store's tables,
services/orders/store.py). Thresholds come from the registry's rules, so the bands drawn
are the levels the alarm engine uses. Titles are Chinese and English.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from schemas.kinds import METRICS, FacilityKind, Metric
from schemas.registry import Direction, Registry, Signal
from schemas.storage import Measurement, ident, qualified
from schemas.workorder import TERMINAL, OrderState

DATASOURCE = {"type": "influxdb", "uid": "lifeline-influx"}
# The work orders' PostgreSQL (grafana/provisioning/datasources/lifeline.yaml).
PG_DATASOURCE = {"type": "grafana-postgresql-datasource", "uid": "lifeline-orders-pg"}
# What the queries read (schemas/storage.py): readings and pipeline health in the default
# retention policy, the rest in "long".
READING = ident(Measurement.READING)
PIPELINE = ident(Measurement.PIPELINE)
ALARM_STATE, ALARM_EVENT, ONCALL, FACILITY, DISTRICT_1H = (qualified(m) for m in (
    Measurement.ALARM_STATE, Measurement.ALARM_EVENT, Measurement.ONCALL,
    Measurement.FACILITY, Measurement.DISTRICT_1H))
LEVEL_COLOURS = {"blue": "blue", "yellow": "yellow", "orange": "orange", "red": "red"}
ZH = {
    Metric.RAINFALL: "降雨量", Metric.WATER_LEVEL: "水位", Metric.PONDING_DEPTH: "积水深度",
    Metric.FLOW: "流量", Metric.PUMP_STATE: "泵运行状态", Metric.PUMP_CURRENT: "泵电流",
    Metric.COVER_STATE: "井盖状态",
    Metric.DEFLECTION: "挠度", Metric.STRAIN: "应变", Metric.CRACK_WIDTH: "裂缝宽度",
    Metric.TILT: "倾斜", Metric.ACCELERATION: "加速度", Metric.TEMPERATURE: "温度",
    Metric.BEARING_DISPLACEMENT: "支座位移", Metric.H2S: "硫化氢", Metric.CH4: "甲烷",
    Metric.CO: "一氧化碳", Metric.O2: "氧气", Metric.COD: "化学需氧量", Metric.NH3N: "氨氮",
    Metric.PH: "酸碱度", Metric.PM10: "可吸入颗粒物", Metric.PM25: "细颗粒物", Metric.TSP: "总悬浮颗粒物",
    Metric.NOISE: "噪声", Metric.WIND_SPEED: "风速", Metric.WIND_DIRECTION: "风向",
    Metric.SPRAY_STATE: "喷淋状态", Metric.BOD5: "五日生化需氧量", Metric.TN: "总氮",
    Metric.TP: "总磷", Metric.SETTLEMENT: "沉降", Metric.GNSS_DISPLACEMENT: "GNSS位移",
}
KIND_TITLES = {FacilityKind.DRAINAGE: ("城市排水", "Urban drainage"),
               FacilityKind.BRIDGE: ("道路桥梁", "Road bridges"),
               FacilityKind.SEWAGE: ("污水管网", "Sewage network"),
               FacilityKind.SITE: ("在建工地扬尘", "Construction sites"),
               FacilityKind.PLANT: ("污水处理厂", "Treatment plants"),
               FacilityKind.OUTFALL: ("排口与潮位", "Outfalls and tide levels"),
               FacilityKind.BUILDING: ("自建房与危房", "Self-built and dilapidated houses")}
# Kinds whose bands are their own facilities' rules. The first three keep the registry's
# first rule of the metric (their committed dashboards): for sewage that is the drainage
# manhole's flow and level rule, a known inaccuracy (decision 0020).
OWN_THRESHOLD_KINDS = frozenset({FacilityKind.SITE, FacilityKind.PLANT, FacilityKind.OUTFALL,
                                 FacilityKind.BUILDING})

# Current state of every alarm: the last alarm_state point of each series. The writer
# puts the acknowledgement into the same series (services/writer/points.py), so "who
# acknowledged" is one more last() here, not a join.
STATE = ('SELECT last("severity") AS "severity", last("level") AS "level", '
         'last("message") AS "message", last("alarm_id") AS "alarm_id", '
         'last("since") AS "since", last("since_ms") AS "since_ms", '
         'last("acked_by") AS "acked_by", last("acked_at") AS "acked_at", '
         'last("facility_name") AS "facility_name", '
         'last("facility_name_zh") AS "facility_name_zh", last("silenced") AS "silenced", '
         'last("suppressed") AS "suppressed", last("held") AS "held", '
         'last("stale_since") AS "stale_since" '
         f'FROM {ALARM_STATE} WHERE "category" {{cat}} AND "district" =~ /^$district$/ '
         'GROUP BY "facility", "sensor", "rule", "kind", "category", "district"')

# An alarm's history opens this long before the alarm was raised (the readings leading up).
HISTORY_LEAD_MS = 3_600_000
# The row link of the alarm tables: the alarm history dashboard for that alarm, from an
# hour before it was raised until now. ``${__data.fields.x}`` is the row's value of x
# (hidden columns included); Grafana reads epoch ms in ``from``.
HISTORY_LINK = {
    "title": "告警历史 Alarm history",
    "url": ("/d/lifeline-alarm/alarm-history?var-alarm_id=${__data.fields.alarm_id}"
            "&var-facility=${__data.fields.facility}&var-sensor=${__data.fields.sensor}"
            "&from=${__data.fields.history_from}&to=now"),
}
# The sensor-health table's link to the false alarms per sensor (work orders closed as
# false alarms, in PostgreSQL): this dashboard reads InfluxDB only, so the count is a
# panel of the orders dashboard rather than a column here.
FALSE_ALARMS_LINK = {"title": "误报（近30天）False alarms per sensor, last 30 days",
                     "url": "/d/lifeline-orders/work-orders?from=now-30d&to=now"}
LEVEL_MAPPINGS = [{"type": "value", "options": {
    level: {"color": colour, "text": f"{zh} {level}", "index": i}
    for i, (level, zh, colour) in enumerate((("blue", "蓝色", "blue"),
                                             ("yellow", "黄色", "yellow"),
                                             ("orange", "橙色", "orange"),
                                             ("red", "红色", "red")))}}]


# The overview's 30-day trend: the database's hourly rollup per district (not per sensor),
# so a month of 10,000 sensors stays a small query (docs/benchmarks.md).
DISTRICT_TREND = (f'SELECT max("max") AS "max" FROM {DISTRICT_1H} WHERE "metric" = '
                  '\'water_level\' AND "district" =~ /^$district$/ AND $timeFilter '
                  'GROUP BY time($__interval), "district" fill(none)')


class _Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n


def _target(query: str, fmt: str = "time_series", ref: str = "A") -> dict[str, Any]:
    return {"refId": ref, "datasource": DATASOURCE, "rawQuery": True, "query": query,
            "resultFormat": fmt}


def _sql_target(sql: str, fmt: str = "table", ref: str = "A") -> dict[str, Any]:
    """A raw SQL target of the PostgreSQL data source (``format``: table or time_series)."""
    return {"refId": ref, "datasource": PG_DATASOURCE, "rawQuery": True, "editorMode": "code",
            "rawSql": sql, "format": fmt}


def _panel(ids: _Ids, kind: str, title: str, grid: tuple[int, int, int, int],
           targets: list[dict[str, Any]], datasource: dict[str, str] = DATASOURCE,
           **extra: Any) -> dict[str, Any]:
    x, y, w, h = grid
    return {"id": ids(), "type": kind, "title": title, "datasource": datasource,
            "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets, **extra}


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": query, "refresh": 2, "includeAll": True, "multi": True,
            "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1}


def _dashboard(uid: str, title: str, panels: list[dict[str, Any]],
               variables: list[dict[str, Any]], annotate: bool = True) -> dict[str, Any]:
    annotations = []
    if annotate:
        annotations.append({
            "name": "告警 Alarms", "datasource": DATASOURCE, "enable": True,
            "iconColor": "red",
            "query": (f'SELECT "message" FROM {ALARM_EVENT} WHERE '
                      '"facility" =~ /^$facility$/ AND $timeFilter'),
            "textColumn": "message", "tagsColumn": "level"})
    return {"uid": uid, "title": title, "tags": ["lifeline"], "timezone": "browser",
            "schemaVersion": 39, "version": 1, "editable": False, "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": variables}, "annotations": {"list": annotations},
            "panels": panels}


def thresholds(registry: Registry, metric: Metric, kind: FacilityKind | None = None
               ) -> dict[str, Any]:
    """Threshold steps of the metric's first value rule in the registry (upper or lower);
    with ``kind``, of that kind's facilities (a building's tilt is not a bridge's) and the
    first value or mean rule (dust and effluent are judged on means, the panels show means)."""
    signals = {Signal.VALUE} if kind is None else {Signal.VALUE, Signal.MEAN}
    for f in registry.facilities:
        if kind is not None and f.kind is not kind:
            continue
        for s in f.sensors:
            if s.metric is not metric:
                continue
            for r in s.rules:
                if r.signal in signals:
                    levels = r.ordered_levels()
                    if r.direction is Direction.UPPER:
                        steps = [{"color": "green", "value": None}] + [
                            {"color": LEVEL_COLOURS[lv.level.value], "value": lv.raise_at}
                            for lv in levels]
                    else:
                        steps = [{"color": LEVEL_COLOURS[lv.level.value], "value": None}
                                 for lv in levels[-1:]] + [
                            {"color": LEVEL_COLOURS[lv.level.value], "value": up.raise_at}
                            for lv, up in zip(levels[-2::-1], levels[::-1], strict=False)] + [
                            {"color": "green", "value": levels[0].raise_at}]
                    return {"mode": "absolute", "steps": steps}
    return {"mode": "absolute", "steps": [{"color": "green", "value": None}]}


def _common_variables(kind: FacilityKind | None) -> list[dict[str, Any]]:
    where = f" WHERE \"kind\" = '{kind.value}'" if kind else ""
    and_kind = f" AND \"kind\" = '{kind.value}'" if kind else ""
    return [
        _variable("district", "片区 District",
                  f'SHOW TAG VALUES FROM {FACILITY} WITH KEY = "district"{where}'),
        _variable("facility", "设施 Facility",
                  f'SHOW TAG VALUES FROM {FACILITY} WITH KEY = "facility" '
                  f'WHERE "district" =~ /^$district$/{and_kind}'),
        _variable("sensor", "传感器 Sensor",
                  f'SHOW TAG VALUES FROM {READING} WITH KEY = "sensor" '
                  'WHERE "facility" =~ /^$facility$/'),
    ]


def _active_count(ids: _Ids, title: str, grid: tuple[int, int, int, int], by: str,
                  extra_field: str, group_by: str) -> dict[str, Any]:
    """Bar gauge counting active facility alarms per ``by`` (a Grafana groupBy)."""
    return _panel(ids, "bargauge", title, grid, [
        _target(f'SELECT "severity"{extra_field} FROM (' + STATE.format(cat="= 'facility'")
                + f') WHERE "severity" > 0{group_by}', "table")],
        transformations=[{"id": "groupBy", "options": {"fields": {
            by: {"aggregations": [], "operation": "groupby"},
            "severity": {"aggregations": ["count"], "operation": "aggregate"}}}}])


# The alarm tables' columns: (field, header, width or None); the ones after them are
# hidden (the row link and the sort need them).
ALARM_COLUMNS = (
    ("facility_name_zh", "设施", 150), ("facility_name", "Facility", 190),
    ("district", "片区 District", 130), ("level", "级别 Level", 100),
    ("since_ms", "开始 Since", 170), ("acked_by", "确认人 Acknowledged by", 150),
    ("acked_at", "确认时间 Acknowledged at", 200), ("silenced", "维护静默 Silenced", 110),
    ("suppressed", "抑制 Suppressed", 110), ("held", "故障保持 Held", 100),
    ("stale_since", "数据中断 Stale since", 190), ("message", "信息 Message", None),
    ("facility", "设施编号 Facility id", 130), ("sensor", "传感器 Sensor", 150),
)
ALARM_HIDDEN = ("severity", "alarm_id", "kind", "history_from")


def _alarm_table(ids: _Ids, title: str, grid: tuple[int, int, int, int], cat: str,
                 links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Active alarms of the categories ``cat``, worst first: names and district from the
    registry (written with each state point), level in its colour, since, who
    acknowledged, maintenance silence and inhibition, and a link on every row to the
    alarm's history; ``links``: the panel's own links (its header)."""
    fields = [c[0] for c in ALARM_COLUMNS] + list(ALARM_HIDDEN[:-1])
    query = ("SELECT " + ", ".join(f'"{f}"' for f in fields)
             + f', "since_ms" - {HISTORY_LEAD_MS} AS "history_from" FROM ('
             + STATE.format(cat=cat) + ') WHERE "severity" > 0')
    overrides: list[dict[str, Any]] = []
    for name, header, width in ALARM_COLUMNS:
        props: list[dict[str, Any]] = [{"id": "displayName", "value": header}]
        if width:
            props.append({"id": "custom.width", "value": width})
        if name == "level":
            props += [{"id": "mappings", "value": LEVEL_MAPPINGS},
                      {"id": "custom.cellOptions", "value": {"type": "color-background",
                                                             "mode": "basic"}}]
        if name == "since_ms":
            props.append({"id": "unit", "value": "dateTimeAsLocal"})
        if name in ("facility_name_zh", "facility_name"):
            props.append({"id": "links", "value": [HISTORY_LINK]})
        if name in ("silenced", "suppressed", "held"):
            props.append({"id": "mappings", "value": [{"type": "value", "options": {
                "true": {"text": "是 yes", "color": "purple", "index": 0},
                "false": {"text": "", "index": 1}}}]})
        overrides.append({"matcher": {"id": "byName", "options": name}, "properties": props})
    overrides += [{"matcher": {"id": "byName", "options": name},
                   "properties": [{"id": "custom.hidden", "value": True}]}
                  for name in ("Time", *ALARM_HIDDEN)]
    panel = _panel(ids, "table", title, grid, [_target(query, "table")],
                   transformations=[{"id": "sortBy", "options": {
                       "fields": {}, "sort": [{"field": "severity", "desc": True}]}}],
                   fieldConfig={"defaults": {"links": []}, "overrides": overrides},
                   options={"showHeader": True, "cellHeight": "sm"})
    if links:
        panel["links"] = links
    return panel


def overview(registry: Registry) -> dict[str, Any]:
    ids = _Ids()
    facility_state = ('SELECT max("severity") AS "severity" FROM (' + STATE.format(
        cat="= 'facility'") + ') GROUP BY "facility"')
    panels = [
        _panel(ids, "geomap", "设施状态地图 Facility state map", (0, 0, 14, 14), [
            _target('SELECT last("lat") AS "lat", last("lon") AS "lon", last("name_zh") AS '
                    f'"name" FROM {FACILITY} WHERE "district" =~ /^$district$/ '
                    'GROUP BY "facility", "kind"', "table", "A"),
            _target(facility_state, "table", "B")],
            transformations=[{"id": "merge", "options": {}}],
            options={"view": {"id": "coords", "lat": 27.9, "lon": 120.85, "zoom": 11},
                     "layers": [{"type": "markers", "name": "设施 Facilities",
                                 "location": {"mode": "coords", "latitude": "lat",
                                              "longitude": "lon"},
                                 "config": {"color": {"field": "severity"},
                                            "showLegend": True}}]},
            fieldConfig={"defaults": {"thresholds": {"mode": "absolute", "steps": [
                {"color": "green", "value": None}, {"color": "blue", "value": 1},
                {"color": "yellow", "value": 2}, {"color": "orange", "value": 3},
                {"color": "red", "value": 4}]}}, "overrides": []}),
        _active_count(ids, "按级别的活动告警 Active alarms by level", (14, 0, 10, 7), "level",
                      ', "level"', ""),
        _active_count(ids, "按设施类型的活动告警 Active alarms by kind", (14, 7, 10, 7), "kind",
                      "", ' GROUP BY "kind"'),
        # Facility alarms and district alarms (a district's rainstorm, decision 0023).
        _alarm_table(ids, "活动告警 Active alarms", (0, 14, 24, 10),
                     "=~ /^(facility|district)$/"),
        _alarm_table(ids, "传感器与网关健康 Sensor and gateway health", (0, 24, 24, 8),
                     "!= 'facility'", links=[FALSE_ALARMS_LINK]),
        _panel(ids, "timeseries", "30 天趋势：各片区最高水位 30-day trend: highest water level "
                                  "by district (hourly)", (0, 32, 24, 8),
               [_target(DISTRICT_TREND)], timeFrom="30d", interval="1h",
               fieldConfig={"defaults": {"unit": "m"}, "overrides": []}),
    ]
    variables = _common_variables(None)[:1]
    return _dashboard("lifeline-overview", "城市生命线总览 District overview", panels, variables,
                      annotate=False)


def kind_dashboard(registry: Registry, kind: FacilityKind) -> dict[str, Any]:
    ids = _Ids()
    zh, en = KIND_TITLES[kind]
    panels = []
    metrics = [m for m, spec in METRICS.items() if kind in spec.kinds
               and any(s.metric is m for f in registry.facilities if f.kind is kind
                       for s in f.sensors)]
    for i, metric in enumerate(metrics):
        unit = METRICS[metric].unit
        agg = "sum" if metric is Metric.RAINFALL else "mean"
        panel_type = "barchart" if metric is Metric.RAINFALL else "timeseries"
        query = (f'SELECT {agg}("value") FROM {READING} WHERE "kind" = \'{kind.value}\' '
                 f"AND \"metric\" = '{metric.value}' AND \"facility\" =~ /^$facility$/ "
                 'AND "sensor" =~ /^$sensor$/ AND $timeFilter '
                 'GROUP BY time($__interval), "sensor" fill(none)')
        if metric is Metric.ACCELERATION:
            # The alarm engine judges vibration by RMS: show the same quantity.
            query = ('SELECT sqrt(mean("sq")) AS "rms" FROM (SELECT "value" * "value" AS "sq" '
                     f"FROM {READING} WHERE \"kind\" = '{kind.value}' AND \"metric\" = "
                     f"'{metric.value}' AND \"facility\" =~ /^$facility$/ AND \"sensor\" =~ "
                     '/^$sensor$/ AND $timeFilter GROUP BY "sensor") '
                     'WHERE $timeFilter GROUP BY time($__interval), "sensor" fill(none)')
        targets = [_target(query)]
        if kind is FacilityKind.SEWAGE and metric in (Metric.FLOW, Metric.WATER_LEVEL):
            # The usual value at this hour (services/writer/baseline.py), dashed beside it.
            targets.append(_target(query.replace('mean("value")', 'mean("baseline") AS '
                                                 '"baseline"'), ref="B"))
        panels.append(_panel(
            ids, "timeseries" if panel_type == "barchart" else panel_type,
            f"{ZH[metric]} {metric.value.replace('_', ' ').capitalize()}"
            f"{' RMS' if metric is Metric.ACCELERATION else ''} ({unit})"
            f"{' — 日变化基线 with diurnal baseline' if len(targets) > 1 else ''}",
            ((i % 2) * 12, (i // 2) * 8, 12, 8), targets,
            fieldConfig={"defaults": {
                "unit": unit, "thresholds": thresholds(
                    registry, metric, kind if kind in OWN_THRESHOLD_KINDS else None),
                "custom": {"thresholdsStyle": {"mode": "area"},
                           "drawStyle": "bars" if metric is Metric.RAINFALL else "line"}},
                "overrides": [{"matcher": {"id": "byFrameRefID", "options": "B"},
                               "properties": [{"id": "custom.lineStyle",
                                               "value": {"fill": "dash", "dash": [10, 10]}}]}]
                if len(targets) > 1 else []}))
    if kind is FacilityKind.DRAINAGE and any(s.pipe_diameter_m for f in registry.facilities
                                             for s in f.sensors):
        n = len(panels)
        panels.append(_panel(
            ids, "timeseries", "充满度 Fill ratio h/D (pipes)",
            ((n % 2) * 12, (n // 2) * 8, 12, 8),
            [_target(f'SELECT mean("fill") FROM {READING} WHERE "kind" = \'drainage\' AND '
                     '"metric" = \'water_level\' AND "facility" =~ /^$facility$/ AND '
                     '"sensor" =~ /^$sensor$/ AND $timeFilter '
                     'GROUP BY time($__interval), "sensor" fill(none)')],
            description="Water level over the pipe's diameter (registry pipe_diameter_m). "
                        "Bands: 0.75 — the upper design maximum fill ratio for sewers in "
                        "GB 50014 (0.55-0.75 by diameter; storm sewers are designed full); "
                        "1.0 — the pipe runs full (surcharge). Defaults to be confirmed "
                        "per pipe.",
            fieldConfig={"defaults": {"unit": "percentunit", "thresholds": {
                "mode": "absolute", "steps": [{"color": "green", "value": None},
                                              {"color": "yellow", "value": 0.75},
                                              {"color": "orange", "value": 1.0}]},
                "custom": {"thresholdsStyle": {"mode": "area"}}}, "overrides": []}))
    present = {s.metric for f in registry.facilities if f.kind is kind for s in f.sensors}
    for needs, make in KIND_PANELS.get(kind, ()):
        if needs <= present:
            n = len(panels)
            panels.append(make(ids, registry, ((n % 2) * 12, (n // 2) * 8, 12, 8)))
    return _dashboard(f"lifeline-{kind.value}", f"{zh} {en}", panels, _common_variables(kind))


def _readings(kind: FacilityKind, metric: Metric, agg: str = "mean",
              interval: str = "$__interval") -> str:
    return (f'SELECT {agg}("value") FROM {READING} WHERE "kind" = \'{kind.value}\' AND '
            f"\"metric\" = '{metric.value}' AND \"facility\" =~ /^$facility$/ AND $timeFilter "
            f'GROUP BY time({interval}), "facility" fill(none)')


def _site_map(ids: _Ids, registry: Registry, grid: tuple[int, int, int, int]) -> dict[str, Any]:
    """The sites on a map, each coloured by its PM10 over the last hour against the
    sites' own PM10 levels."""
    pm10 = (f'SELECT mean("value") AS "pm10" FROM {READING} WHERE "kind" = \'site\' AND '
            '"metric" = \'pm10\' AND "facility" =~ /^$facility$/ AND time > now() - 1h '
            'GROUP BY "facility"')
    return _panel(ids, "geomap", "工地PM10地图 Site map (PM10, last hour)", grid, [
        _target('SELECT last("lat") AS "lat", last("lon") AS "lon", last("name_zh") AS '
                f'"name" FROM {FACILITY} WHERE "kind" = \'site\' AND "district" =~ '
                '/^$district$/ GROUP BY "facility"', "table", "A"),
        _target(pm10, "table", "B")],
        transformations=[{"id": "merge", "options": {}}],
        options={"view": {"id": "coords", "lat": 27.9, "lon": 120.85, "zoom": 12},
                 "layers": [{"type": "markers", "name": "工地 Sites",
                             "location": {"mode": "coords", "latitude": "lat",
                                          "longitude": "lon"},
                             "config": {"color": {"field": "pm10"}, "showLegend": True}}]},
        fieldConfig={"defaults": {"unit": METRICS[Metric.PM10].unit, "thresholds": thresholds(
            registry, Metric.PM10, FacilityKind.SITE)}, "overrides": []})


def _inflow_vs_rain(ids: _Ids, registry: Registry, grid: tuple[int, int, int, int]
                    ) -> dict[str, Any]:
    """A plant's inflow beside the rain on its catchment (bars, right axis): inflow that
    follows the rain is rain or river water in the sewers (厂网一体化)."""
    return _panel(ids, "timeseries", "进水流量与降雨 Inflow vs rain", grid, [
        _target(_readings(FacilityKind.PLANT, Metric.FLOW), ref="A"),
        _target(_readings(FacilityKind.PLANT, Metric.RAINFALL, "sum"), ref="B")],
        fieldConfig={"defaults": {"unit": METRICS[Metric.FLOW].unit}, "overrides": [
            {"matcher": {"id": "byFrameRefID", "options": "B"}, "properties": [
                {"id": "unit", "value": METRICS[Metric.RAINFALL].unit},
                {"id": "custom.axisPlacement", "value": "right"},
                {"id": "custom.drawStyle", "value": "bars"}]}]})


def _tilt_trend(ids: _Ids, registry: Registry, grid: tuple[int, int, int, int]
                ) -> dict[str, Any]:
    """Each building's daily mean tilt over 90 days, against the buildings' own levels: a
    slow creep, and the step after nearby excavation."""
    return _panel(ids, "timeseries", "倾斜趋势 Tilt trend (daily mean, 90 days)", grid,
                  [_target(_readings(FacilityKind.BUILDING, Metric.TILT, interval="1d"))],
                  timeFrom="90d", interval="1d",
                  fieldConfig={"defaults": {
                      "unit": METRICS[Metric.TILT].unit,
                      "thresholds": thresholds(registry, Metric.TILT, FacilityKind.BUILDING),
                      "custom": {"thresholdsStyle": {"mode": "line"}}}, "overrides": []})


PanelMaker = Callable[[_Ids, Registry, tuple[int, int, int, int]], dict[str, Any]]
KIND_PANELS: dict[FacilityKind, tuple[tuple[frozenset[Metric], PanelMaker], ...]] = {
    FacilityKind.SITE: ((frozenset({Metric.PM10}), _site_map),),
    FacilityKind.PLANT: ((frozenset({Metric.FLOW, Metric.RAINFALL}), _inflow_vs_rain),),
    FacilityKind.BUILDING: ((frozenset({Metric.TILT}), _tilt_trend),),
}
"""A kind's own panels after its metric panels, each shown when the kind's facilities have
the metrics it needs."""


def pipeline() -> dict[str, Any]:
    ids = _Ids()

    def rate(service: str, counter: str) -> str:
        return (f'SELECT non_negative_derivative(last("{counter}"), 1s) FROM {PIPELINE} '
                f"WHERE \"service\" = '{service}' AND $timeFilter "
                'GROUP BY time($__interval), "instance" fill(none)')

    panels = [
        _panel(ids, "timeseries", "吞吐量 Throughput (readings/s)", (0, 0, 12, 8), [
            _target(rate("ingest", "accepted_readings"), ref="A"),
            _target(rate("processor", "processed_readings"), ref="B"),
            _target(rate("writer", "stored_points"), ref="C")]),
        _panel(ids, "timeseries", "积压 Consumer lag (events)", (12, 0, 12, 8), [
            _target(f'SELECT last("lag") FROM {PIPELINE} WHERE $timeFilter '
                    'GROUP BY time($__interval), "service", "instance" fill(none)')]),
        _panel(ids, "timeseries", "拒收 Rejected / dead-lettered per s", (0, 8, 12, 8), [
            _target(rate("ingest", "rejected_messages"), ref="A")]),
        _panel(ids, "stat", "服务健康 Service health", (12, 8, 12, 8), [
            _target(f'SELECT last("healthy") FROM {PIPELINE} WHERE $timeFilter '
                    'GROUP BY "service"')]),
    ]
    return _dashboard("lifeline-pipeline", "数据管道健康 Pipeline health", panels, [],
                      annotate=False)


def _textbox(name: str, label: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "textbox", "query": "",
            "current": {"text": "", "value": ""}, "hide": 0}


def alarm_history() -> dict[str, Any]:
    """One alarm's history, opened from a row of the overview's alarm tables: its events,
    its on-call trail (pages, deliveries, who acknowledged) and the readings of its sensor
    (all of the facility's for a facility-wide alarm, whose sensor is the facility id)."""
    ids = _Ids()
    alarm = "\"facility\" =~ /^$facility$/ AND \"alarm_id\" = '$alarm_id' AND $timeFilter"
    panels = [
        _panel(ids, "table", "告警事件 Alarm events", (0, 0, 24, 8), [
            _target('SELECT "facility_name_zh", "facility_name", "sensor", "event", "level", '
                    '"value", "threshold", "message", "silenced", "suppressed_by", '
                    f'"held_by_fault" FROM {ALARM_EVENT} WHERE {alarm}', "table")]),
        _panel(ids, "table", "值班记录 On-call trail (pages, deliveries, acknowledgements)",
               (0, 8, 24, 8), [
            _target('SELECT "type", "person", "channel", "notification", "step", "ok", '
                    f'"detail" FROM {ONCALL} WHERE {alarm}', "table")]),
        _panel(ids, "timeseries", "读数 Readings", (0, 16, 24, 9), [
            _target(f'SELECT mean("value") FROM {READING} WHERE "facility" =~ /^$facility$/ '
                    "AND (\"sensor\" = '$sensor' OR \"facility\" = '$sensor') AND "
                    '$timeFilter GROUP BY time($__interval), "sensor", "metric" fill(none)')]),
    ]
    variables = [
        _textbox("alarm_id", "告警编号 Alarm id"),
        _variable("facility", "设施 Facility",
                  f'SHOW TAG VALUES FROM {FACILITY} WITH KEY = "facility"'),
        _textbox("sensor", "传感器 Sensor"),
    ]
    return _dashboard("lifeline-alarm", "告警历史 Alarm history", panels, variables)


# ------------------------------------------------------------------ work orders (PostgreSQL)
# States as SQL lists, from the lifecycle itself (schemas/workorder.py): an order is open
# until final; overdue strictly after its deadline unless final or verified (a verified
# order waits only for the centre's close: DeadlinePolicy.overdue).
def _sql_text(value: str) -> str:
    """A PostgreSQL string literal (quotes doubled; standard_conforming_strings is on)."""
    return "'" + value.replace("'", "''") + "'"


FINAL_STATES = ", ".join(_sql_text(s) for s in sorted(TERMINAL))
UNHANDLED_STATES = ", ".join(_sql_text(s) for s in sorted({*TERMINAL, OrderState.VERIFIED}))


def _open(t: str = "") -> str:
    """Not final (``t``: the table's alias and a dot, if any)."""
    return f"{t}state NOT IN ({FINAL_STATES})"


def _overdue(t: str = "") -> str:
    """Strictly past the deadline, neither final nor verified."""
    return f"{t}deadline < now() AND {t}state NOT IN ({UNHANDLED_STATES})"


def _level_rank(t: str = "") -> str:
    """The level as the overview's severity (1 blue … 4 red), for the map's colours."""
    return (f"CASE {t}level WHEN 'red' THEN 4 WHEN 'orange' THEN 3 WHEN 'yellow' THEN 2 "
            "WHEN 'blue' THEN 1 END")


SEVERITY_STEPS = {"mode": "absolute", "steps": [
    {"color": "green", "value": None}, {"color": "blue", "value": 1},
    {"color": "yellow", "value": 2}, {"color": "orange", "value": 3},
    {"color": "red", "value": 4}]}
HANDLING_HOURS = "extract(epoch FROM closed_at - opened_at)::float8 / 3600"


def _facilities_cte(registry: Registry) -> str:
    """The registry's facilities as a ``facility`` CTE (id, names, coordinates).

    work_order carries no coordinates and PostgreSQL has no facility table: the
    coordinates live in the registry (and InfluxDB's ``facility`` measurement, which the
    writer fills from it). They are written into the SQL at generation time rather than
    joined in Grafana from an InfluxDB query (a mixed panel): one query, one data source,
    the join done by PostgreSQL, and nothing for Grafana to merge between two sources.
    The dashboards are regenerated from the registry anyway (its thresholds) and CI's
    ``lifeline grafana generate --check`` fails when a facility was added and they were
    not. An order of a facility no longer in the registry is left off the map only (the
    tables join with LEFT JOIN)."""
    rows = ",\n    ".join(
        f"({_sql_text(f.id)}, {_sql_text(f.name_zh or f.name)}, {_sql_text(f.name)}, "
        f"{f.lat!r}, {f.lon!r})" for f in registry.facilities)
    return f"WITH facility (facility_id, name_zh, name, lat, lon) AS (VALUES\n    {rows})\n"


def _day(column: str, registry: Registry) -> str:
    """``column``'s calendar day in the registry's time zone (PostgreSQL 12+)."""
    return f"date_trunc('day', {column}, {_sql_text(registry.timezone)})"


def _stat(ids: _Ids, title: str, x: int, sql: str, colour: str,
          description: str) -> dict[str, Any]:
    return _panel(ids, "stat", title, (x, 0, 6, 4), [_sql_target(sql)],
                  datasource=PG_DATASOURCE, description=description,
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                             "values": False},
                           "colorMode": "background", "graphMode": "none"},
                  fieldConfig={"defaults": {"unit": "short", "thresholds": {
                      "mode": "absolute", "steps": [{"color": "green", "value": None},
                                                    {"color": colour, "value": 1}]}},
                      "overrides": []})


def _columns(columns: tuple[tuple[str, str, int | None], ...],
             extra: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Table overrides: each column's header and width, plus ``extra`` properties by name."""
    out = []
    for name, header, width in columns:
        props: list[dict[str, Any]] = [{"id": "displayName", "value": header}]
        if width:
            props.append({"id": "custom.width", "value": width})
        props += extra.get(name, [])
        out.append({"matcher": {"id": "byName", "options": name}, "properties": props})
    return out


LEVEL_CELL: list[dict[str, Any]] = [
    {"id": "mappings", "value": LEVEL_MAPPINGS},
    {"id": "custom.cellOptions", "value": {"type": "color-background", "mode": "basic"}}]
OVERDUE_COLUMNS = (
    ("order_id", "工单 Order", 190), ("facility_name_zh", "设施", 150),
    ("facility_name", "Facility", 190), ("facility_id", "设施编号 Facility id", 120),
    ("owner_unit", "责任单位 Unit", 220), ("level", "级别 Level", 100),
    ("state", "状态 State", 110), ("deadline", "期限 Deadline", 170),
    ("hours_overdue", "超期（小时）Hours overdue", 150),
    ("escalation", "督办 Escalation", 110), ("assignee", "处置人 Assignee", None),
)


def orders(registry: Registry) -> dict[str, Any]:
    """工单 Work orders, from the orders store in PostgreSQL: open, overdue, escalated and
    false-alarm counts, the open orders on a map, the overdue orders (most overdue first),
    handling times, orders opened and closed per day, open orders per unit and false alarms
    per sensor. Counts of the present (open, overdue, escalated, per unit, map) ignore the
    time range; the rest is over it, except false alarms per sensor (the last 30 days)."""
    ids = _Ids()
    cte = _facilities_cte(registry)
    level_colours: list[dict[str, Any]] = [
        {"matcher": {"id": "byRegexp", "options": f".* {level}$"},
         "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}]}
        for level, colour in LEVEL_COLOURS.items()]
    panels = [
        _stat(ids, "未结工单 Open orders", 0,
              f"SELECT count(*) AS open_orders FROM work_order WHERE {_open()}", "blue",
              "Orders not closed (销号) and not false alarms, whatever their time."),
        _stat(ids, "超期工单 Overdue orders", 6,
              f"SELECT count(*) AS overdue FROM work_order WHERE {_overdue()}", "red",
              "Past the deadline and not handled: neither final nor verified."),
        _stat(ids, "督办中 Escalated", 12,
              "SELECT count(*) AS escalated FROM work_order WHERE escalation > 0 AND "
              f"state NOT IN ({UNHANDLED_STATES})", "orange",
              "Unhandled orders escalated (督办) to the unit's manager or the bureau; a "
              "dispatch with a new deadline restarts the escalation."),
        _stat(ids, "误报 False alarms (time range)", 18,
              "SELECT count(*) AS false_alarms FROM work_order WHERE state = 'false_alarm' "
              "AND $__timeFilter(closed_at)", "purple",
              "Orders judged false alarms (研判) within the dashboard's time range."),
        _panel(ids, "geomap", "未结工单地图 Open orders map", (0, 4, 14, 12), [_sql_target(
            cte + "SELECT o.facility_id AS facility, f.name_zh AS name, f.name AS name_en, "
            "f.lat, f.lon, count(*) AS open_orders, "
            f"max({_level_rank('o.')}) AS severity, "
            f"count(*) FILTER (WHERE {_overdue('o.')}) AS overdue\n"
            "FROM work_order o JOIN facility f ON f.facility_id = o.facility_id\n"
            f"WHERE {_open('o.')}\nGROUP BY o.facility_id, f.name_zh, f.name, f.lat, f.lon")],
            datasource=PG_DATASOURCE,
            description="Facilities with open orders, coloured by the worst level open, "
                        "sized by how many. Coordinates from the registry (written into "
                        "the query when the dashboards are generated).",
            options={"view": {"id": "coords", "lat": 27.9, "lon": 120.85, "zoom": 11},
                     "layers": [{"type": "markers", "name": "未结工单 Open orders",
                                 "location": {"mode": "coords", "latitude": "lat",
                                              "longitude": "lon"},
                                 "config": {"color": {"field": "severity"},
                                            "size": {"field": "open_orders", "min": 5,
                                                     "max": 20, "fixed": 5},
                                            "showLegend": True}}]},
            fieldConfig={"defaults": {"thresholds": SEVERITY_STEPS}, "overrides": []}),
        _panel(ids, "bargauge", "各单位未结工单 Open orders per unit", (14, 4, 10, 12), [
            _sql_target(f"SELECT owner_unit, count(*) AS open_orders FROM work_order WHERE "
                        f"{_open()} GROUP BY owner_unit ORDER BY open_orders DESC, owner_unit")],
            datasource=PG_DATASOURCE,
            options={"orientation": "horizontal", "displayMode": "basic",
                     "reduceOptions": {"values": True, "calcs": [], "fields": ""}},
            fieldConfig={"defaults": {"unit": "short", "min": 0}, "overrides": []}),
        _panel(ids, "table", "超期工单 Overdue orders (most overdue first)", (0, 16, 24, 10), [
            _sql_target(
                cte + "SELECT o.order_id, f.name_zh AS facility_name_zh, "
                "f.name AS facility_name, o.facility_id, o.owner_unit, o.level, o.state, "
                "o.deadline, round((extract(epoch FROM now() - o.deadline) / 3600)::numeric, "
                "1) AS hours_overdue, o.escalation, o.assignee\n"
                "FROM work_order o LEFT JOIN facility f ON f.facility_id = o.facility_id\n"
                f"WHERE {_overdue('o.')}\n"
                "ORDER BY o.deadline, o.order_id")],
            datasource=PG_DATASOURCE,
            options={"showHeader": True, "cellHeight": "sm"},
            fieldConfig={"defaults": {}, "overrides": _columns(OVERDUE_COLUMNS, {
                "level": LEVEL_CELL,
                "deadline": [{"id": "unit", "value": "dateTimeAsLocal"}],
                "hours_overdue": [{"id": "unit", "value": "h"},
                                  {"id": "decimals", "value": 1}],
                "escalation": [{"id": "mappings", "value": [{"type": "value", "options": {
                    "0": {"text": "", "index": 0},
                    "1": {"text": "1 单位负责人 unit manager", "color": "orange", "index": 1},
                    "2": {"text": "2 局科室 bureau section", "color": "red", "index": 2}}}]}],
            })}),
        _panel(ids, "timeseries", "处置时长 Handling time, opened → closed (hours, daily median "
                                  "and p90 per unit)", (0, 26, 12, 9), [
            _sql_target(
                f"SELECT {_day('closed_at', registry)} AS time, owner_unit AS metric, "
                f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {HANDLING_HOURS}) AS median, "
                f"percentile_cont(0.9) WITHIN GROUP (ORDER BY {HANDLING_HOURS}) AS p90\n"
                "FROM work_order WHERE state = 'closed' AND $__timeFilter(closed_at)\n"
                "GROUP BY 1, 2 ORDER BY 1", "time_series")],
            datasource=PG_DATASOURCE, interval="1d",
            description="Orders closed (销号) each day, by the unit that owned them: hours "
                        "from opening to closing, median and 90th percentile. False alarms "
                        "are not counted.",
            fieldConfig={"defaults": {"unit": "h", "custom": {"drawStyle": "line",
                                                             "pointSize": 6,
                                                             "showPoints": "always"}},
                         "overrides": [{"matcher": {"id": "byRegexp", "options": ".*p90.*"},
                                        "properties": [{"id": "custom.lineStyle", "value": {
                                            "fill": "dash", "dash": [10, 10]}}]}]}),
        _panel(ids, "timeseries", "每日开单与销号 Orders opened and closed per day, by level",
               (12, 26, 12, 9), [
            _sql_target(
                f"SELECT {_day('opened_at', registry)} AS time, '开单 opened ' || level AS "
                "metric, count(*) AS orders\nFROM work_order WHERE $__timeFilter(opened_at)\n"
                "GROUP BY 1, 2 ORDER BY 1", "time_series", "A"),
            _sql_target(
                f"SELECT {_day('closed_at', registry)} AS time, '销号 closed ' || level AS "
                "metric, count(*) AS orders\nFROM work_order WHERE state = 'closed' AND "
                "$__timeFilter(closed_at)\nGROUP BY 1, 2 ORDER BY 1", "time_series", "B")],
            datasource=PG_DATASOURCE, interval="1d",
            description="Opened: by the day an order was opened. Closed: by the day it was "
                        "closed (销号); false alarms are counted in their own panels.",
            fieldConfig={"defaults": {"unit": "short", "custom": {"drawStyle": "bars",
                                                                 "fillOpacity": 60}},
                         "overrides": [*level_colours,
                                       {"matcher": {"id": "byFrameRefID", "options": "B"},
                                        "properties": [{"id": "custom.fillOpacity",
                                                        "value": 15}]}]}),
        _panel(ids, "table", "误报（近30天）False alarms per sensor, last 30 days",
               (0, 35, 24, 8), [
            _sql_target(
                cte + "SELECT o.sensor_id, o.facility_id, f.name_zh AS facility_name_zh, "
                "count(*) AS false_alarms, max(o.closed_at) AS last_false_alarm\n"
                "FROM work_order o LEFT JOIN facility f ON f.facility_id = o.facility_id\n"
                "WHERE o.state = 'false_alarm' AND o.closed_at > now() - interval '30 days'\n"
                "GROUP BY o.sensor_id, o.facility_id, f.name_zh\n"
                "ORDER BY false_alarms DESC, o.sensor_id")],
            datasource=PG_DATASOURCE,
            description="Orders judged false alarms in the last 30 days, per sensor: a "
                        "sensor that keeps raising false alarms needs checking (calibration, "
                        "placement) — the count feeds back into its health. Linked from the "
                        "overview's sensor and gateway health table.",
            options={"showHeader": True, "cellHeight": "sm",
                     "sortBy": [{"displayName": "误报次数 False alarms", "desc": True}]},
            fieldConfig={"defaults": {}, "overrides": _columns((
                ("sensor_id", "传感器 Sensor", 180), ("facility_id", "设施编号 Facility id", 130),
                ("facility_name_zh", "设施 Facility", 200),
                ("false_alarms", "误报次数 False alarms", 140),
                ("last_false_alarm", "最近一次 Last", None)), {
                "last_false_alarm": [{"id": "unit", "value": "dateTimeAsLocal"}],
                "false_alarms": [{"id": "custom.cellOptions", "value": {
                    "type": "color-background", "mode": "basic"}},
                    {"id": "thresholds", "value": {"mode": "absolute", "steps": [
                        {"color": "transparent", "value": None},
                        {"color": "yellow", "value": 2}, {"color": "orange", "value": 5}]}}],
            })}),
    ]
    board = _dashboard("lifeline-orders", "工单 Work orders", panels, [], annotate=False)
    board["time"] = {"from": "now-30d", "to": "now"}
    board["refresh"] = "1m"
    return board


def dashboards(registry: Registry) -> dict[str, dict[str, Any]]:
    out = {"overview.json": overview(registry), "pipeline.json": pipeline(),
           "alarm.json": alarm_history(), "orders.json": orders(registry)}
    for kind in FacilityKind:
        out[f"{kind.value}.json"] = kind_dashboard(registry, kind)
    return out


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def write(registry: Registry, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, board in dashboards(registry).items():
        path = folder / name
        path.write_text(render(board), encoding="utf-8")
        written.append(path)
    return written


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every InfluxQL query of a dashboard: (where, query). SQL targets (the work orders'
    PostgreSQL) are :func:`sql_queries`'."""
    for p in board["panels"]:
        for t in p["targets"]:
            if t["datasource"]["uid"] == DATASOURCE["uid"]:
                yield f"{board['uid']}/{p['title']}/{t['refId']}", t["query"]
    for v in board["templating"]["list"]:
        if v["type"] == "query":  # a textbox's "query" is its default text
            yield f"{board['uid']}/variable {v['name']}", v["query"]
    for a in board["annotations"]["list"]:
        yield f"{board['uid']}/annotation {a['name']}", a["query"]


def sql_queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every SQL query of a dashboard (targets of the PostgreSQL data source): (where, SQL)."""
    for p in board["panels"]:
        for t in p["targets"]:
            if t["datasource"]["uid"] == PG_DATASOURCE["uid"]:
                yield f"{board['uid']}/{p['title']}/{t['refId']}", t["rawSql"]
