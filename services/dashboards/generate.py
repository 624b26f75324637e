"""Generate Lifeline's Grafana dashboards (JSON model) from the registry.

Every query is InfluxQL against the datasource uid ``lifeline-influx`` (InfluxDB 1.x
directly, 2.x through the DBRP mapping). Thresholds come from the registry's rules, so the
bands drawn are the levels the alarm engine uses. Titles are Chinese and English.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from schemas.kinds import METRICS, FacilityKind, Metric
from schemas.registry import Direction, Registry, Signal
from schemas.storage import Measurement, ident, qualified

DATASOURCE = {"type": "influxdb", "uid": "lifeline-influx"}
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


def _panel(ids: _Ids, kind: str, title: str, grid: tuple[int, int, int, int],
           targets: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    x, y, w, h = grid
    return {"id": ids(), "type": kind, "title": title, "datasource": DATASOURCE,
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


def _alarm_table(ids: _Ids, title: str, grid: tuple[int, int, int, int], cat: str
                 ) -> dict[str, Any]:
    """Active alarms of the categories ``cat``, worst first: names and district from the
    registry (written with each state point), level in its colour, since, who
    acknowledged, maintenance silence and inhibition, and a link on every row to the
    alarm's history."""
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
    return _panel(ids, "table", title, grid, [_target(query, "table")],
                  transformations=[{"id": "sortBy", "options": {
                      "fields": {}, "sort": [{"field": "severity", "desc": True}]}}],
                  fieldConfig={"defaults": {"links": []}, "overrides": overrides},
                  options={"showHeader": True, "cellHeight": "sm"})


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
        _alarm_table(ids, "活动告警 Active alarms", (0, 14, 24, 10), "= 'facility'"),
        _alarm_table(ids, "传感器与网关健康 Sensor and gateway health", (0, 24, 24, 8),
                     "!= 'facility'"),
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


def dashboards(registry: Registry) -> dict[str, dict[str, Any]]:
    out = {"overview.json": overview(registry), "pipeline.json": pipeline(),
           "alarm.json": alarm_history()}
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
    """Every InfluxQL query of a dashboard: (where, query)."""
    for p in board["panels"]:
        for t in p["targets"]:
            yield f"{board['uid']}/{p['title']}/{t['refId']}", t["query"]
    for v in board["templating"]["list"]:
        if v["type"] == "query":  # a textbox's "query" is its default text
            yield f"{board['uid']}/variable {v['name']}", v["query"]
    for a in board["annotations"]["list"]:
        yield f"{board['uid']}/annotation {a['name']}", a["query"]
