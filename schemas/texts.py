"""Words for people: the bilingual (Chinese first, English second) templates of every alarm
text the engine writes and every page the notifier sends.

Pure: no I/O, no registry. Nothing a person reads carries an internal key (``value-upper``,
``gateway-seq-gap``); ids appear only in brackets next to names, for the duty room.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

from schemas.kinds import AlarmLevel, FacilityKind, Metric


class Bi(NamedTuple):
    """One text in Chinese and English."""

    zh: str
    en: str

    def __str__(self) -> str:
        return f"{self.zh} {self.en}" if self.en and self.en != self.zh else self.zh


# ------------------------------------------------------------------ levels, kinds, metrics

LEVEL_COLOUR_ZH = {AlarmLevel.BLUE: "蓝色", AlarmLevel.YELLOW: "黄色", AlarmLevel.ORANGE: "橙色",
                   AlarmLevel.RED: "红色"}
CLEARED = Bi("已解除", "cleared")


def _as_level(level: AlarmLevel | str | None) -> AlarmLevel | None:
    if level is None or level == "":
        return None
    try:
        return AlarmLevel(level)
    except ValueError:
        return None


def level_words(level: AlarmLevel | str | None) -> Bi:
    """``红色预警（I级）`` / ``red (level I)``; cleared when there is no level."""
    lv = _as_level(level)
    if lv is None:
        return CLEARED
    return Bi(f"{LEVEL_COLOUR_ZH[lv]}预警（{lv.grade}级）", f"{lv.value} (level {lv.grade})")


def level_colour(level: AlarmLevel | str | None) -> Bi:
    """The colour alone (``红色`` / ``red``), for thresholds: "above the red threshold"."""
    lv = _as_level(level)
    if lv is None:
        return Bi("", "")
    return Bi(LEVEL_COLOUR_ZH[lv], lv.value)


KIND_WORDS: dict[FacilityKind, Bi] = {
    FacilityKind.DRAINAGE: Bi("排水设施", "drainage"),
    FacilityKind.BRIDGE: Bi("桥梁", "bridge"),
    FacilityKind.SEWAGE: Bi("污水设施", "sewage"),
    FacilityKind.SITE: Bi("在建工地", "construction site"),
    FacilityKind.PLANT: Bi("污水处理厂", "treatment plant"),
    FacilityKind.OUTFALL: Bi("排口", "outfall"),
    FacilityKind.BUILDING: Bi("房屋", "building"),
}


def kind_words(kind: FacilityKind | str) -> Bi:
    try:
        return KIND_WORDS[FacilityKind(kind)]
    except ValueError:
        return Bi(str(kind), str(kind))


METRIC_WORDS: dict[Metric, Bi] = {
    Metric.RAINFALL: Bi("雨量", "rainfall"),
    Metric.WATER_LEVEL: Bi("水位", "water level"),
    Metric.PONDING_DEPTH: Bi("积水深度", "ponding depth"),
    Metric.FLOW: Bi("流量", "flow"),
    Metric.PUMP_STATE: Bi("水泵运行状态", "pump state"),
    Metric.PUMP_CURRENT: Bi("水泵电流", "pump current"),
    Metric.COVER_STATE: Bi("井盖状态", "manhole cover"),
    Metric.DEFLECTION: Bi("挠度", "deflection"),
    Metric.STRAIN: Bi("应变", "strain"),
    Metric.CRACK_WIDTH: Bi("裂缝宽度", "crack width"),
    Metric.TILT: Bi("倾斜", "tilt"),
    Metric.ACCELERATION: Bi("振动加速度", "vibration acceleration"),
    Metric.TEMPERATURE: Bi("温度", "temperature"),
    Metric.BEARING_DISPLACEMENT: Bi("支座位移", "bearing displacement"),
    Metric.H2S: Bi("硫化氢", "hydrogen sulphide (H2S)"),
    Metric.CH4: Bi("甲烷", "methane (CH4)"),
    Metric.CO: Bi("一氧化碳", "carbon monoxide (CO)"),
    Metric.O2: Bi("氧气", "oxygen (O2)"),
    Metric.NH3: Bi("氨气", "ammonia (NH3)"),
    Metric.SO2: Bi("二氧化硫", "sulphur dioxide (SO2)"),
    Metric.CL2: Bi("氯气", "chlorine (Cl2)"),
    Metric.COD: Bi("化学需氧量", "chemical oxygen demand (COD)"),
    Metric.NH3N: Bi("氨氮", "ammonia nitrogen (NH3-N)"),
    Metric.PH: Bi("pH值", "pH"),
    Metric.PM10: Bi("可吸入颗粒物PM10", "PM10"),
    Metric.PM25: Bi("细颗粒物PM2.5", "PM2.5"),
    Metric.TSP: Bi("总悬浮颗粒物", "total suspended particulate (TSP)"),
    Metric.NOISE: Bi("噪声", "noise"),
    Metric.WIND_SPEED: Bi("风速", "wind speed"),
    Metric.WIND_DIRECTION: Bi("风向", "wind direction"),
    Metric.SPRAY_STATE: Bi("喷淋雾炮状态", "spray / mist cannon state"),
    Metric.BOD5: Bi("五日生化需氧量", "biochemical oxygen demand (BOD5)"),
    Metric.TN: Bi("总氮", "total nitrogen (TN)"),
    Metric.TP: Bi("总磷", "total phosphorus (TP)"),
    Metric.SETTLEMENT: Bi("沉降", "settlement"),
    Metric.GNSS_DISPLACEMENT: Bi("GNSS位移", "GNSS displacement"),
}


def metric_words(metric: Metric | str | None) -> Bi:
    if metric is None:
        return Bi("", "")
    try:
        return METRIC_WORDS[Metric(metric)]
    except ValueError:
        return Bi(str(metric), str(metric).replace("_", " "))


SIGNAL_WORDS: dict[str, Bi] = {
    "value": Bi("", ""),
    "rate": Bi("变化率", "rate of change"),
    "sum": Bi("累计", "total"),
    "mean": Bi("平均值", "mean"),
    "min": Bi("最小值", "minimum"),
    "max": Bi("最大值", "maximum"),
    "rms": Bi("均方根值", "RMS"),
    "twa": Bi("时间加权平均浓度", "time-weighted average"),
    "step": Bi("突变", "step change"),
    "count": Bi("日超标次数", "exceedances today"),
    "deviation": Bi("偏离常值", "deviation from the usual"),
    "night_minimum": Bi("夜间最小值", "night minimum"),
}

CATEGORY_WORDS: dict[str, Bi] = {
    "facility": Bi("设施告警", "facility alarm"),
    "sensor": Bi("仪表故障", "sensor fault"),
    "gateway": Bi("通信故障", "gateway fault"),
    "district": Bi("区域告警", "district alarm"),
}

EVENT_WORDS: dict[str, Bi] = {
    "raised": Bi("发布", "raised"),
    "escalated": Bi("升级", "escalated"),
    "deescalated": Bi("降级", "lowered"),
    "cleared": Bi("解除", "cleared"),
    "flapping": Bi("频繁变化", "flapping"),
    "settled": Bi("稳定", "settled"),
    "updated": Bi("更新", "updated"),
}


def category_words(category: str) -> Bi:
    return CATEGORY_WORDS.get(category, Bi(category, category))


def event_words(event: str) -> Bi:
    return EVENT_WORDS.get(event, Bi(event, event))


def duration_words(seconds: float) -> Bi:
    """A duration the way people say it: 45 s, 10 min, 1.5 h, 3 d."""
    s = abs(seconds)
    if s < 120:
        n = f"{seconds:.0f}"
        return Bi(f"{n}秒", f"{n} s")
    if s < 3600 or (s < 2 * 3600 and s % 3600):
        n = f"{seconds / 60:.3g}"
        return Bi(f"{n}分钟", f"{n} min")
    if s < 3 * 86400:
        n = f"{seconds / 3600:.3g}"
        return Bi(f"{n}小时", f"{n} h")
    n = f"{seconds / 86400:.3g}"
    return Bi(f"{n}天", f"{n} d")


def quantity(value: float | None, unit: str = "") -> str:
    """A value with its unit (``2.96 m``); ``未知 unknown`` when there is none."""
    if value is None:
        return "未知 unknown"
    return f"{value:.4g} {unit}".rstrip()


# ------------------------------------------------------------------ rules

_HEALTH: dict[str, Bi] = {
    "sensor-out-of-range": Bi("仪表读数超出量程", "sensor reading outside its instrument range"),
    "sensor-stuck": Bi("仪表读数长时间不变（卡滞）", "sensor stuck (reading does not change)"),
    "sensor-offline": Bi("仪表离线", "sensor offline"),
    "gateway-offline": Bi("网关离线（通信中断）", "gateway offline (no reports)"),
    "gateway-seq-gap": Bi("网关报文丢失", "gateway losing reports"),
    "facility-dark": Bi("关键设施失联（停电或通信中断）",
                        "critical facility dark (power or communication lost)"),
}
HEALTH_RULES = frozenset(_HEALTH)
_RULE_KEY = re.compile(r"^(value|rate|sum|mean|min|max|rms|twa|step|count|deviation|night_minimum)"
                       r"(?:-([0-9.e+]+)s|-k\d+)?-(upper|lower)$")
DIRECTION_WORDS = {"upper": Bi("超上限", "above its upper limit"),
                   "lower": Bi("低于下限", "below its lower limit")}


def signal_words(metric: Metric | str | None, signal: str, window_s: float | None) -> Bi:
    """What a rule looks at: ``水位`` / ``water level``, ``雨量1小时累计`` / ``rainfall total
    over 1 h``."""
    m = metric_words(metric)
    sig = SIGNAL_WORDS.get(signal, Bi(signal, signal))
    if not sig.en:
        return m
    if window_s:
        d = duration_words(window_s)
        return Bi(f"{m.zh}{d.zh}{sig.zh}", f"{m.en} {sig.en} over {d.en}".strip())
    return Bi(f"{m.zh}{sig.zh}", f"{m.en} {sig.en}".strip())


def rule_words(rule: str, metric: Metric | str | None = None,
               description: str | None = None) -> Bi:
    """A rule in words, from its key: sensor and gateway faults, the dark facility, a
    level rule's signal and direction; other rules (composites, rules with their own id) by
    their registry description, else by what they watch."""
    health = _HEALTH.get(rule)
    if health is not None:
        return health
    m = _RULE_KEY.match(rule)
    if m is not None and metric is not None:
        signal, window, direction = m.group(1), m.group(2), m.group(3)
        what = signal_words(metric, signal, float(window) if window else None)
        d = DIRECTION_WORDS[direction]
        return Bi(f"{what.zh}{d.zh}", f"{what.en} {d.en}")
    if description:
        return Bi(description, description)
    if metric is not None:
        w = metric_words(metric)
        return Bi(f"{w.zh}阈值告警", f"{w.en} threshold alarm")
    return Bi("组合条件告警", "combined-condition alarm")


# ------------------------------------------------------------------ times and places

def local_time(at: datetime, zone: ZoneInfo, seconds: bool = False) -> str:
    """``2026-12-01 16:00 (Asia/Shanghai, UTC+08:00)``: local time with the zone named."""
    t = at.astimezone(zone)
    off = t.strftime("%z")
    return f"{t:%Y-%m-%d %H:%M{':%S' if seconds else ''}} ({zone.key}, UTC{off[:3]}:{off[3:]})"


def map_urls(lat: float, lon: float, name: str) -> tuple[str, str]:
    """Map links from WGS-84 coordinates: Amap (高德, told ``coordinate=wgs84``: it shows
    GCJ-02) and OpenStreetMap. ``name`` is URL-quoted by the caller's HTML escaping only."""
    from urllib.parse import quote

    amap = (f"https://uri.amap.com/marker?position={lon:.6f},{lat:.6f}&name={quote(name)}"
            f"&coordinate=wgs84&callnative=0")
    osm = f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=17/{lat:.6f}/{lon:.6f}"
    return amap, osm


# ------------------------------------------------------------------ work orders

ORDER_STATE_WORDS: dict[str, Bi] = {
    "open": Bi("待派发", "open"), "dispatched": Bi("已派发", "dispatched"),
    "accepted": Bi("已接单", "accepted"), "in_progress": Bi("处置中", "in progress"),
    "reported": Bi("已反馈", "reported"), "verified": Bi("已复核", "verified"),
    "closed": Bi("已销号", "closed"), "returned": Bi("已退回", "returned"),
    "false_alarm": Bi("误报", "false alarm"),
}
ORDER_ACTION_WORDS: dict[str, Bi] = {
    "open": Bi("生成工单", "opened"), "dispatch": Bi("派单", "dispatched"),
    "accept": Bi("接单", "accepted"), "start": Bi("开始处置", "started"),
    "report": Bi("反馈处置结果", "reported"), "verify": Bi("复核通过", "verified"),
    "return": Bi("退回", "returned"), "close": Bi("销号", "closed"),
    "false_alarm": Bi("判定误报", "marked a false alarm"), "escalate": Bi("督办", "escalated"),
    "comment": Bi("备注", "comment"),
}


def order_state_words(state: str) -> Bi:
    """``已派发`` / ``dispatched``: a work order's state in words."""
    return ORDER_STATE_WORDS.get(state, Bi(state, state))


def order_action_words(action: str) -> Bi:
    return ORDER_ACTION_WORDS.get(action, Bi(action, action))


# ------------------------------------------------------------------ facilities and sensors

def facility_words(*, facility_id: str, name: str | None = None, name_zh: str | None = None,
                   district: str | None = None, district_zh: str | None = None) -> str:
    """``滨海园区排水检查井1号（Binhai Park manhole 1，滨海园区 Binhai Park）``; the id
    alone only when the record carries no name."""
    head = name_zh or name or facility_id
    inner: list[str] = []
    if name and name != head:
        inner.append(name)
    place = " ".join(dict.fromkeys(x for x in (district_zh, district) if x))
    if place and place not in head:
        inner.append(place)
    return f"{head}（{'，'.join(inner)}）" if inner else head


def sensor_words(sensor_id: str, metric: Metric | str | None) -> Bi:
    """``水位仪表 [DR-BH-001-L1]`` / ``water level sensor [DR-BH-001-L1]``."""
    m = metric_words(metric)
    return Bi(f"{m.zh}仪表 [{sensor_id}]", f"{m.en} sensor [{sensor_id}]".strip())


# ------------------------------------------------------------------ the engine's messages
#
# Each returns the facts of one transition as a :class:`Bi`; :func:`compose` puts the level
# and the transition in front (``【红色预警（I级）发布】… — red (level I) raised: …``).

def compose(place: str, body: Bi, event: str, level: AlarmLevel | str | None) -> str:
    """The alarm message: level and transition, the facility, the facts, Chinese first."""
    ev = event_words(event)
    lv = _as_level(level)
    if lv is None:
        head = Bi(f"【告警{ev.zh}】" if event == "cleared" else f"【{ev.zh}】", ev.en)
    else:
        words = level_words(lv)
        head = Bi(f"【{words.zh}{ev.zh}】", f"{words.en} {ev.en}")
    return f"{head.zh}{place}{body.zh} — {head.en}: {body.en}"


def rule_message(metric: Metric | str, signal: str, window_s: float | None, direction: str,
                 value: float | None, unit: str, level: AlarmLevel | str | None,
                 threshold: float | None) -> Bi:
    """A level rule: ``水位 2.96 m 高于红色阈值 2.95 m`` / ``water level 2.96 m at or above
    the red threshold 2.95 m``; without a level: back within limits."""
    what = signal_words(metric, signal, window_s)
    shown = quantity(value, unit) if value is not None else None
    v_zh = shown if shown is not None else "未知"
    v_en = shown if shown is not None else "unknown"
    if _as_level(level) is None:
        return Bi(f"{what.zh} {v_zh}，已恢复正常", f"{what.en} {v_en}: back within limits")
    colour = level_colour(level)
    limit = quantity(threshold, unit) if threshold is not None else ""
    if direction == "lower":
        return Bi(f"{what.zh} {v_zh} 低于{colour.zh}阈值 {limit}".rstrip(),
                  f"{what.en} {v_en} at or below the {colour.en} threshold {limit}".rstrip())
    return Bi(f"{what.zh} {v_zh} 高于{colour.zh}阈值 {limit}".rstrip(),
              f"{what.en} {v_en} at or above the {colour.en} threshold {limit}".rstrip())


def out_of_range(sensor: Bi, value: float, unit: str, lo: float, hi: float) -> Bi:
    q = quantity(value, unit)
    return Bi(f"{sensor.zh}读数 {q} 超出量程 [{lo:g}, {hi:g}]",
              f"{sensor.en} reads {q}, outside its instrument range [{lo:g}, {hi:g}]")


def back_in_range(sensor: Bi) -> Bi:
    return Bi(f"{sensor.zh}读数恢复到量程内", f"{sensor.en} back inside its instrument range")


def sensor_reports_again(sensor: Bi) -> Bi:
    return Bi(f"{sensor.zh}恢复上报", f"{sensor.en} reports again")


def sensor_stuck(sensor: Bi, value: float, unit: str, for_s: float, after_s: float) -> Bi:
    q, d, a = quantity(value, unit), duration_words(for_s), duration_words(after_s)
    return Bi(f"{sensor.zh}读数 {q} 已持续 {d.zh} 不变（超过 {a.zh} 判为卡滞）",
              f"{sensor.en} has read {q} for {d.en} (stuck after {a.en})")


def sensor_changes_again(sensor: Bi, value: float, unit: str) -> Bi:
    q = quantity(value, unit)
    return Bi(f"{sensor.zh}读数恢复变化（{q}）", f"{sensor.en} changes again ({q})")


def sensor_offline(sensor: Bi, for_s: float, interval_s: float) -> Bi:
    d, i = duration_words(for_s), duration_words(interval_s)
    return Bi(f"{sensor.zh}已 {d.zh} 无数据，网关仍在上报（应每 {i.zh} 一次）",
              f"{sensor.en} silent for {d.en} while its gateway reports "
              f"(expected every {i.en})")


FAIL_DANGEROUS = Bi("（危险侧故障：故障前仪表处于严重或上升状态，相关告警保持原级别）",
                    " — fail-dangerous: the sensor was serious or rising, its alarm is held")


def fault_held(sensor: Bi, fault: str) -> Bi:
    f = rule_words(fault)
    return Bi(f"{sensor.zh}在告警严重或上升时故障（{f.zh}）：保持此级别，按告警仍存在处理",
              f"{sensor.en} failed ({f.en}) while this alarm was serious or rising: held at "
              f"its level, treat as still there")


def fault_over(sensor: Bi) -> Bi:
    return Bi(f"{sensor.zh}故障已排除：告警依据其自身读数",
              f"{sensor.en} fault over: the alarm stands on its own readings")


def gateway_silent(for_s: float, interval_s: float) -> Bi:
    d, i = duration_words(for_s), duration_words(interval_s)
    return Bi(f"网关已 {d.zh} 无上报（应每 {i.zh} 一次）",
              f"gateway silent for {d.en} (expected a report every {i.en})")


GATEWAY_STALE = Bi("网关无上报：告警级别为最后已知状态",
                   "gateway silent: the level is the last known one")
GATEWAY_BACK = Bi("网关恢复上报", "gateway reports again")
GATEWAY_FRESH = Bi("网关恢复上报：告警数据已是最新", "gateway reports again: the alarm's data is current")
DARK_BACK = Bi("关键设施恢复上报", "critical facility reports again")
UNSILENCED = Bi("维护时段结束：告警仍然存在", "maintenance window over: the alarm is still active")
RULE_REMOVED = Bi("规则已从设施登记中删除", "rule removed from the registry")


def gateway_gap(missing: int, last: int, seq: int) -> Bi:
    return Bi(f"网关丢失 {missing} 条报文（序号 {last} → {seq}）",
              f"gateway lost {missing} report(s) (seq {last} → {seq})")


def gateway_in_sequence(count: int) -> Bi:
    return Bi(f"网关连续 {count} 条报文序号正常", f"gateway: {count} reports in sequence again")


def facility_dark(for_s: float, *, district: Bi | None, was_level: AlarmLevel | str | None) -> Bi:
    """A critical facility silent while its district is under rain (``district``) or while
    it was in alarm (``was_level``)."""
    d = duration_words(for_s)
    if district is not None:
        why = Bi(f"{district.zh}正在降雨", f"{district.en} under rain")
    else:
        lv = level_words(was_level)
        why = Bi(f"设施处于{lv.zh}", f"it was in alarm ({lv.en})")
    return Bi(f"关键设施已 {d.zh} 失联，{why.zh}：停电或通信中断，按设施故障处理",
              f"critical facility dark for {d.en} while {why.en}: power or communication "
              f"lost — treat as a facility failure")


def condition_words(metric: Metric | str | None, sensor_id: str, signal: str,
                    window_s: float | None, op: str, value: float, unit: str) -> Bi:
    what = signal_words(metric, signal, window_s)
    q = quantity(value, "" if unit == "state" else unit)
    zh_op, en_op = ("≥", "at least") if op == ">=" else ("≤", "at most")
    return Bi(f"{what.zh} [{sensor_id}] {zh_op} {q}", f"{what.en} [{sensor_id}] {en_op} {q}")


def composite(title: str | None, conditions: Iterable[Bi], holds: bool) -> Bi:
    """A composite rule: its description (if the registry gives one) and its conditions."""
    conds = list(conditions)
    zh = "且".join(c.zh for c in conds)
    en = " and ".join(c.en for c in conds)
    head = Bi(f"{title}：", f"{title}: ") if title else Bi("组合条件：", "combined condition: ")
    if holds:
        return Bi(f"{head.zh}{zh}", f"{head.en}{en}")
    return Bi(f"{head.zh}{zh} 不再成立", f"{head.en}{en} no longer holds")


def region_words(district: str | None, district_zh: str | None) -> Bi:
    """A district, e.g. for rain: ``滨海园区`` / ``Binhai Park``."""
    en = district or district_zh or ""
    return Bi(district_zh or en, en)


# ------------------------------------------------------------------ pages (alarm records)

_SILENCE_RULES = frozenset({"gateway-offline", "facility-dark", "sensor-offline"})


def value_words(rule: str, value: float | None, threshold: float | None, unit: str) -> str:
    """An alarm's value and threshold in words, in the unit the rule means: a silence in
    time, lost reports as a count, a reading with its unit."""
    if value is None:
        return ""
    if rule in _SILENCE_RULES:
        d = duration_words(value)
        limit = "" if threshold is None else f"（超过 {duration_words(threshold).zh} 即告警 " \
                                             f"limit {duration_words(threshold).en}）"
        return f"已 {d.zh} 无数据 silent for {d.en}{limit}"
    if rule == "gateway-seq-gap":
        return f"丢失 {value:g} 条报文 {value:g} report(s) lost"
    q = quantity(value, unit)
    if threshold is None:
        return q
    if rule == "sensor-stuck":
        d = duration_words(threshold)
        return f"{q}（不变超过 {d.zh} 判为卡滞 unchanged beyond {d.en}）"
    if rule == "sensor-out-of-range":
        return f"{q}（量程界限 range limit {quantity(threshold, unit)}）"
    return f"{q}（阈值 threshold {quantity(threshold, unit)}）"


def place_of(alarm: dict[str, object]) -> str:
    """The facility of an alarm record (AlarmEvent as JSON, or the notifier's summary) in
    words, falling back to its id for records made before names."""
    def get(key: str) -> str | None:
        v = alarm.get(key)
        return v if isinstance(v, str) and v and v != "unknown" else None

    return facility_words(facility_id=str(alarm.get("facility_id", "?")),
                          name=get("facility_name"), name_zh=get("facility_name_zh"),
                          district=get("district"), district_zh=get("district_zh"))


def short_place(alarm: dict[str, object]) -> str:
    """For titles: the Chinese (else English) name with the id in brackets."""
    fid = str(alarm.get("facility_id", "?"))
    name = alarm.get("facility_name_zh") or alarm.get("facility_name")
    return f"{name} [{fid}]" if isinstance(name, str) and name else fid


def district_rule_words(region: Bi, name_zh: str, name: str, count: int,
                        min_facilities: int) -> Bi:
    """A district rule's alarm: the district, what it is, how many facilities are in it."""
    return Bi(f"{region.zh}·{name_zh}：告警设施 {count} 个（规则：至少 {min_facilities} 个）",
              f"{region.en} district, {name}: facilities in alarm {count} (rule: at least "
              f"{min_facilities})")
