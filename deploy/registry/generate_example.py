"""Generate the example registry ``wenzhou-bay.yaml`` (deterministic; re-run after edits).

The district: the Wenzhou Bay New Area's zones merged in operation with Longwan District
(DOMAIN.md). Thresholds are shipped defaults with their source; every one is marked
``default: true`` and must be replaced by the facility's own design values.

    python deploy/registry/generate_example.py > deploy/registry/wenzhou-bay.yaml
"""

from __future__ import annotations

import random
import sys
from typing import Any

import yaml

ZONES = [  # code, English, Chinese, centre lat, centre lon
    ("BH", "Binhai Park", "滨海园区", 27.875, 120.930),
    ("OF", "Oufei Reclamation", "瓯飞工程", 27.830, 120.890),
    ("KG", "Airport New Area", "空港新区", 27.915, 120.850),
    ("KJ", "Science and Technology City", "科技城", 27.950, 120.780),
    ("LW", "Longwan", "龙湾区", 27.935, 120.815),
]

SRC_MANHOLE = ("GB 50014-2021 (storm and combined sewers run full: surcharge above the crown, "
               "overflow at the cover); placeholder freeboards below the cover of the "
               "manhole's geometry (1.2 / 0.75 / 0.3 / 0.05 m), replace with the "
               "drainage plan's")
SRC_GEOMETRY = ("placeholder geometry for the example: DN800-DN1500 storm pipes at 1/D "
                "per mille slope, Manning n 0.013 (concrete), 3.0 m manholes on reclaimed land 3.5-5 m "
                "above the datum; replace with the survey or as-built drawings")
SRC_PONDING = ("city practice for road ponding: 10 cm moderate (forecast grading), 25 cm road "
               "closure (Shenyang), 30 cm cars should not pass, 50 cm impassable (Wujin)")
SRC_WETWELL = "placeholder: fractions of the wet-well depth; replace with the station's start/alarm levels"
SRC_DEFLECTION = ("placeholder: 50/70/85/100 % of an assumed 40 mm design deflection; "
                  "replace with the bridge's design calculation (JT/T 1037-2022)")
SRC_CRACK = "placeholder around JTG 3362 crack-width limits (0.2-0.3 mm); replace per bridge"
SRC_TILT = ("JT/T 1037-2022 warning values per bridge; placeholder: replace with the pier/tower "
            "design tilt limits")
SRC_ACCEL = ("JT/T 1037-2022 warning values per bridge; placeholder: replace with the bridge's "
             "vibration limits")
SRC_STRAIN = ("JT/T 1037-2022 warning values per bridge; placeholder: replace with the design strain "
              "of the instrumented section")
SRC_BEARING = ("JT/T 1037-2022 warning values per bridge; placeholder: replace with the bearing's "
               "design displacement")
SRC_H2S = ("instantaneous detector levels, GB/T 50493-2019 toxic gas first alarm <= 100 % OEL, "
           "second <= 200 % OEL: H2S 10 / 20 mg/m3 (GBZ 2.1-2019 MAC 10, a ceiling, so "
           "instantaneous); red 50 mg/m3 a placeholder well below IDLH 430")
SRC_CH4 = ("instantaneous detector levels, GB/T 50493-2019 combustible gas: first alarm 25 %LEL, "
           "second 50 %LEL")
SRC_CO = ("instantaneous detector levels, GB/T 50493-2019 toxic gas first/second alarm "
          "100 % / 200 % OEL: CO 20 / 40 mg/m3")
SRC_CO_TWA = "time-weighted 8 h mean against GBZ 2.1-2019 CO PC-TWA 20 mg/m3"
SRC_CO_STEL = "time-weighted 15 min mean against GBZ 2.1-2019 CO PC-STEL 30 mg/m3"
SRC_O2 = ("below 19.5 %vol is oxygen-deficient (GBZ 2.1 practice), above 23 %vol enriched (the "
          "usual high alarm); 18 %vol a placeholder for the red")
SRC_QUALITY = "GB/T 31962-2015 grade B limits for sewage discharged into municipal sewers"


SRC_RAIN = ("national rainstorm warning signals: blue >=50 mm/12 h, yellow >=50 mm/6 h, "
            "orange >=50 mm/3 h, red >=100 mm/3 h (CMA rainstorm signal rules, secondary copy)")
SRC_RAIN_1H = "short-duration heavy rain >=20 mm/h (CMA usage; verify)"
SRC_RISE = ("drainage operation practice: a fast rise during rain warns before any level is "
            "reached; placeholder: 5 cm/min")
SRC_FLOW = ("GB 50014-2021 hydraulic design (full-bore capacity); placeholder: replace with the "
            "pipe's design value")
SRC_DRY_FLOW = ("雨污分流 checks (CJJ 68-2016: 分流制严禁雨污混接): water standing in a separated "
                "storm pipe after a dry day is sewage from a misconnection; 1-hour mean depth "
                "0.12 m over the near-empty pipe's 3 cm floor and 24 h without rain (any gauge "
                "of the district) assumed; cleared after a whole day below 0.08 m")
SRC_DISTRICT_RAIN = ("one rainstorm alarm per district (Lifeline): the worst of the district's "
                     "rain gauges' CMA rainstorm-signal levels; the gauges' own alarms are "
                     "recorded, not paged")
SRC_DISTRICT_FLOOD = ("assumed (Lifeline default): three or more drainage facilities of one "
                      "district at orange or worse is district-wide waterlogging (区域内涝): the "
                      "district's emergency response, red")
DISTRICT_RULES: list[dict[str, Any]] = [
    {"id": "rainstorm", "name": "rainstorm", "name_zh": "暴雨", "kind": "drainage",
     "members": {"metric": ["rainfall"]}, "at_least": "blue", "min_facilities": 1,
     "groups": True, "source": SRC_DISTRICT_RAIN, "default": True,
     "description": "区域暴雨：辖区雨量计中最严重的暴雨等级 the district's worst rain-gauge level"},
    {"id": "district-waterlogging", "name": "district-wide waterlogging", "name_zh": "区域内涝",
     "kind": "drainage", "members": {"kind": ["drainage"],
                                     "metric": ["water_level", "ponding_depth"]},
     "at_least": "orange", "min_facilities": 3, "level": "red", "source": SRC_DISTRICT_FLOOD,
     "default": True,
     "description": "区域内涝：三处及以上排水设施橙色以上 three or more drainage facilities at orange"},
]
SRC_CAPACITY = ("GB 50014-2021 full-pipe capacity Q = (1/n) A R^(2/3) S^(1/2) of the manhole's "
                "outgoing pipe (geometry): a flow at it runs the pipe full, above it under "
                "pressure (surcharge); cleared below 90 %")
SRC_WEIR = ("厂网一体化: a sewage pumping well whose level reaches its emergency overflow weir "
            "spills raw sewage to the river (污水溢流); crest 6.0 m over the wet-well floor "
            "assumed: replace with the well's drawings")
SRC_COVER = ("CJJ 68-2016 (排水管渠运行维护): a lifted or missing cover is made safe (barriers, "
             "a temporary cover) within 2 h of the report; smart cover (智能井盖) tilt switch; "
             "orange: dispatch at once (Lifeline default), two reports in a row")
SRC_PUMP = "placeholder: rated motor current of the pump; replace with the nameplate value"
SRC_TEMP = "placeholder: structural temperature outside the design range"


def lv(level: str, raise_at: float | dict[str, Any], clear_at: float | dict[str, Any] | None,
       source: str) -> dict[str, Any]:
    d: dict[str, Any] = {"level": level, "raise_at": raise_at}
    if clear_at is not None:
        d["clear_at"] = clear_at
    d["source"] = source
    d["default"] = True
    return d


def rule(levels: list[dict[str, Any]], *, signal: str = "value", window_s: float | None = None,
         direction: str = "upper", **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"signal": signal}
    if window_s is not None:
        d["window_s"] = window_s
    d["direction"] = direction
    d.update(extra)
    d["levels"] = levels
    return d


def t(level: str, raise_at: float, clear_at: float | None, source: str,
      direction: str = "upper") -> dict[str, Any]:
    """A single-level value rule (kept short for the many one-level defaults)."""
    return rule([lv(level, raise_at, clear_at, source)], direction=direction)


def value_rule(levels: list[dict[str, Any]], direction: str = "upper", **extra: Any
               ) -> dict[str, Any]:
    return rule(levels, direction=direction, **extra)


def sensor(sid: str, metric: str, unit: str, rng: tuple[float, float], interval: float,
           rules: list[dict[str, Any]] | None = None, stuck_after_s: float | None = None
           ) -> dict[str, Any]:
    d: dict[str, Any] = {"id": sid, "metric": metric, "unit": unit, "range": list(rng),
                         "interval_s": interval}
    if stuck_after_s is not None:
        d["stuck_after_s"] = stuck_after_s
    if rules:
        d["rules"] = rules
    return d


def pump_off(fid: str, cid: str, level: str, high_sensor: str, high: float, after_s: float,
             source: str) -> dict[str, Any]:
    """Composite: a sensor high while the facility's pump (S1) is stopped."""
    return {"id": cid, "level": level,
            "all_of": [{"sensor": high_sensor, "op": ">=", "value": high},
                       {"sensor": f"{fid}-S1", "op": "<=", "value": 0.5}],
            "raise_after_s": after_s, "source": source, "default": True}


def rain_gauge(sid: str) -> dict[str, Any]:
    return sensor(sid, "rainfall", "mm", (0.0, 50.0), 300, [
        rule([lv("blue", 20, 15, SRC_RAIN_1H)], signal="sum", window_s=3600),
        rule([lv("orange", 50, 45, SRC_RAIN), lv("red", 100, 90, SRC_RAIN)], signal="sum",
             window_s=3 * 3600),
        rule([lv("yellow", 50, 45, SRC_RAIN)], signal="sum", window_s=6 * 3600),
        rule([lv("blue", 50, 45, SRC_RAIN)], signal="sum", window_s=12 * 3600),
    ])


def below_cover(freeboard_m: float) -> dict[str, Any]:
    """A level ``freeboard_m`` below the manhole's cover, taken from its geometry when the
    registry loads."""
    return {"geometry": "cover", "offset_m": -freeboard_m}


# Ground (cover) elevation of each zone's first manhole, m above the datum: reclaimed land
# 3.5-5 m (Oufei, the newest reclamation, lowest; the older Longwan plain highest).
GROUND_M = {"BH": 4.3, "OF": 3.7, "KG": 4.5, "KJ": 4.8, "LW": 4.9}
MANHOLE_DEPTH_M = 3.0  # cover to invert: the simulator's drainage manholes are this deep


def manhole_geometry(fid: str, diameter_m: float) -> dict[str, Any]:
    """A storm manhole: invert, crown and cover elevations, the ground falling 0.1 m per
    manhole towards the sea with a few centimetres of scatter (a random generator of its
    own: the coordinates' sequence is unchanged), and the outgoing pipe's slope and
    roughness — 1/D ‰ (the flat reclaimed land: larger pipes laid flatter) and Manning n
    0.013 (concrete), the simulator's full-bore flow 760 L/s × D^(13/6) — so that its flow
    level is the full-pipe capacity (decision 0023)."""
    n = int(fid[-3:])
    jitter = random.Random(f"geometry {fid}").uniform(-0.08, 0.08)
    cover = round(GROUND_M[fid.split("-")[1]] - 0.1 * (n - 1) + jitter, 2)
    invert = round(cover - MANHOLE_DEPTH_M, 2)
    return {"datum": "1985 National Height Datum", "invert_m": invert,
            "crown_m": round(invert + diameter_m, 2), "cover_m": cover,
            "diameter_m": diameter_m, "slope": round(0.001 / diameter_m, 6),
            "roughness_n": 0.013,
            "source": SRC_GEOMETRY}


def manhole(fid: str) -> dict[str, Any]:
    diameter_m = (0.8, 1.0, 1.2, 1.5)[int(fid[-3:]) % 4]
    level = sensor(f"{fid}-L1", "water_level", "m", (0.0, 7.0), 60, [
            value_rule([lv("blue", below_cover(1.2), below_cover(1.3), SRC_MANHOLE),
                        lv("yellow", below_cover(0.75), below_cover(0.85), SRC_MANHOLE),
                        lv("orange", below_cover(0.3), below_cover(0.4), SRC_MANHOLE),
                        lv("red", below_cover(0.05), below_cover(0.15), SRC_MANHOLE)],
                       raise_after_count=2),
            rule([lv("yellow", 0.05, 0.02, SRC_RISE)], signal="rate", window_s=600,
                 rate_per_s=60, raise_after_count=2),
            rule([lv("blue", 0.12, 0.08, SRC_DRY_FLOW)], signal="mean", window_s=3600,
                 id="dry-weather-flow", when_dry_for_s=86400, clear_after_s=86400,
                 description="旱天雨水管有水：疑似雨污混接 water in a storm pipe in dry weather"),
        ], stuck_after_s=6 * 3600)
    level["pipe_diameter_m"] = diameter_m  # as the geometry's: the simulator reads it here
    # A smart cover (智能井盖) reports whether it is seated — the manholes are under the
    # district's roads, and an open manhole on a road is a fall hazard, not a level.
    cover = sensor(f"{fid}-C1", "cover_state", "state", (0.0, 1.0), 60, [
        value_rule([lv("orange", 1, 0.5, SRC_COVER)], raise_after_count=2)])
    return {"geometry": manhole_geometry(fid, diameter_m), "sensors": [
        level, cover,
        sensor(f"{fid}-Q1", "flow", "L/s", (0.0, 5000.0), 60,
               [value_rule([lv("yellow", {"geometry": "capacity", "fraction": 1.0},
                               {"geometry": "capacity", "fraction": 0.9}, SRC_CAPACITY)],
                           raise_after_count=2)],
               stuck_after_s=6 * 3600),
        rain_gauge(f"{fid}-R1"),
    ], "composites": [{
        "id": "rain-and-rising", "level": "orange", "clear_after_s": 1800,
        "all_of": [
            {"sensor": f"{fid}-R1", "signal": "sum", "window_s": 3600, "op": ">=", "value": 20},
            {"sensor": f"{fid}-L1", "signal": "rate", "window_s": 600, "op": ">=",
             "value": 0.05},
        ],
        "source": ("drainage operation practice: heavy rain (>=20 mm/h, CMA) AND a fast rise "
                   "warns before levels are reached; placeholder: 5 cm/min; held 30 min after "
                   "the last fast rise (a rain band rises in bursts: no flapping)"),
        "default": True}]}


def underpass(fid: str) -> dict[str, Any]:
    return {"sensors": [
        sensor(f"{fid}-P1", "ponding_depth", "cm", (0.0, 200.0), 60, [value_rule([
            lv("blue", 10, 8, SRC_PONDING), lv("yellow", 25, 22, SRC_PONDING),
            lv("orange", 30, 27, SRC_PONDING), lv("red", 50, 45, SRC_PONDING)])]),
        rain_gauge(f"{fid}-R1"),
    ]}


def pump_station(fid: str) -> dict[str, Any]:
    return {"sensors": [
        sensor(f"{fid}-W1", "water_level", "m", (0.0, 10.0), 30, [value_rule([
            lv("yellow", 4.0, 3.8, SRC_WETWELL), lv("red", 5.5, 5.2, SRC_WETWELL)])],
            stuck_after_s=6 * 3600),
        sensor(f"{fid}-S1", "pump_state", "state", (0.0, 1.0), 30),
        sensor(f"{fid}-I1", "pump_current", "A", (0.0, 400.0), 30,
               [t("yellow", 320, 300, SRC_PUMP)]),
    ], "composites": [pump_off(fid, "wet-well-high-pump-off", "red", f"{fid}-W1", 4.0, 60,
                               "pump station operation practice: pumps off while the wet-well "
                               "level is above the start level; placeholder start level")]}


def bridge(fid: str) -> dict[str, Any]:
    return {"sensors": [
        sensor(f"{fid}-D1", "deflection", "mm", (-100.0, 100.0), 10, [value_rule([
            lv("blue", 20, 18, SRC_DEFLECTION), lv("yellow", 28, 26, SRC_DEFLECTION),
            lv("orange", 34, 32, SRC_DEFLECTION), lv("red", 40, 38, SRC_DEFLECTION)],
            raise_after_count=3)], stuck_after_s=3600),
        sensor(f"{fid}-E1", "strain", "µε", (-1500.0, 1500.0), 10, [value_rule([
            lv("yellow", 400, 380, SRC_STRAIN), lv("red", 600, 570, SRC_STRAIN)],
            raise_after_count=3)], stuck_after_s=3600),
        sensor(f"{fid}-C1", "crack_width", "mm", (0.0, 5.0), 600, [value_rule([
            lv("blue", 0.2, None, SRC_CRACK), lv("yellow", 0.3, None, SRC_CRACK),
            lv("red", 0.5, None, SRC_CRACK)])]),
        sensor(f"{fid}-T1", "tilt", "deg", (-5.0, 5.0), 60, [value_rule([
            lv("yellow", 0.3, 0.28, SRC_TILT), lv("red", 0.5, 0.48, SRC_TILT)])]),
        sensor(f"{fid}-A1", "acceleration", "m/s²", (0.0, 20.0), 10, [rule([
            lv("yellow", 1.5, 1.3, SRC_ACCEL), lv("red", 3.0, 2.7, SRC_ACCEL)],
            signal="rms", window_s=60)]),
        sensor(f"{fid}-B1", "bearing_displacement", "mm", (-150.0, 150.0), 60, [value_rule([
            lv("yellow", 40, 38, SRC_BEARING), lv("red", 60, 57, SRC_BEARING)])]),
        sensor(f"{fid}-K1", "temperature", "°C", (-30.0, 70.0), 60,
               [t("yellow", 60, 55, SRC_TEMP)], stuck_after_s=6 * 3600),
    ]}


def gas_sensors(fid: str) -> list[dict[str, Any]]:
    """H2S and CH4 detectors, as installed in sewer manholes and pumping wells."""
    return [
        sensor(f"{fid}-H1", "h2s", "mg/m³", (0.0, 200.0), 60, [value_rule([
            lv("yellow", 10, 8, SRC_H2S), lv("orange", 20, 17, SRC_H2S),
            lv("red", 50, 45, SRC_H2S)])]),
        sensor(f"{fid}-M1", "ch4", "%LEL", (0.0, 100.0), 60, [value_rule([
            lv("yellow", 25, 22, SRC_CH4), lv("red", 50, 45, SRC_CH4)])]),
    ]


def gas_manhole(fid: str) -> dict[str, Any]:
    return {"sensors": [
        *gas_sensors(fid),
        sensor(f"{fid}-G1", "co", "mg/m³", (0.0, 500.0), 60, [
            value_rule([lv("yellow", 20, 18, SRC_CO), lv("orange", 40, 36, SRC_CO)]),
            rule([lv("yellow", 20, 18, SRC_CO_TWA)], signal="twa", window_s=8 * 3600),
            rule([lv("yellow", 30, 27, SRC_CO_STEL)], signal="twa", window_s=15 * 60)]),
        sensor(f"{fid}-O1", "o2", "%vol", (0.0, 30.0), 60, [
            value_rule([lv("yellow", 19.5, 19.8, SRC_O2), lv("red", 18.0, 18.5, SRC_O2)],
                       "lower"),
            value_rule([lv("yellow", 23.0, 22.7, SRC_O2)], "upper", id="o2-enriched")]),
        sensor(f"{fid}-L1", "water_level", "m", (0.0, 5.0), 60, [value_rule([
            lv("yellow", 3.5, 3.3, SRC_MANHOLE), lv("red", 4.5, 4.3, SRC_MANHOLE)])],
            stuck_after_s=6 * 3600),
    ]}


def quality_station(fid: str) -> dict[str, Any]:
    return {"sensors": [
        sensor(f"{fid}-Q1", "flow", "L/s", (0.0, 3000.0), 60, [t("yellow", 2500, 2300, SRC_FLOW)],
               stuck_after_s=6 * 3600),
        sensor(f"{fid}-C1", "cod", "mg/L", (0.0, 3000.0), 300, [t("yellow", 500, 450, SRC_QUALITY)]),
        sensor(f"{fid}-N1", "nh3n", "mg/L", (0.0, 300.0), 300, [t("yellow", 45, 40, SRC_QUALITY)]),
        sensor(f"{fid}-P1", "ph", "pH", (0.0, 14.0), 300, [
            t("yellow", 9.5, 9.3, SRC_QUALITY), t("yellow", 6.5, 6.7, SRC_QUALITY, "lower")]),
    ]}


def sewage_pumping_well(fid: str) -> dict[str, Any]:
    return {"sensors": [
        *gas_sensors(fid),
        sensor(f"{fid}-W1", "water_level", "m", (0.0, 8.0), 30, [value_rule([
            lv("yellow", 5.0, 4.8, SRC_WETWELL), lv("red", 6.5, 6.2, SRC_WETWELL)]),
            value_rule([lv("orange", 6.0, 5.8, SRC_WEIR)], id="weir-overflow",
                       description="污水溢流入河（应急溢流堰）sewage over the emergency weir "
                                   "to the river")],
            stuck_after_s=6 * 3600),
        sensor(f"{fid}-S1", "pump_state", "state", (0.0, 1.0), 30),
    ], "composites": [pump_off(fid, "h2s-high-pump-off", "orange", f"{fid}-H1", 10, 120,
                               "sewage pumping-well practice: H2S building up while the pump is "
                               "stopped (GB/T 50493-2019 first alarm 10 mg/m3)")]}


PLAN = [  # prefix, kind, name (en), name (zh), sensors, how many per zone
    ("DR", "drainage", "manhole", "排水检查井", manhole, 3),
    ("DU", "drainage", "underpass", "下穿通道", underpass, 1),
    ("DP", "drainage", "pump station", "排涝泵站", pump_station, 1),
    ("BR", "bridge", "bridge", "桥梁", bridge, 2),
    ("SG", "sewage", "sewer manhole (gas)", "污水井", gas_manhole, 2),
    ("SQ", "sewage", "sewage quality station", "污水水质站", quality_station, 1),
    ("SP", "sewage", "sewage pumping well", "污水泵井", sewage_pumping_well, 1),
]


# Facilities whose silence is itself an alarm (a pump station's blackout takes its RTU down
# with the pumps: DOMAIN.md "life safety first").
CRITICAL = ("DP", "SP")

# Maintenance windows the example ships, so tests and scenarios exercise them: a weekly
# dredging of a sewage pumping well with a crew below ground (confined-space entry: gas
# alarms page the crew leader), and night works on a pump station's electrics that silence
# only instrument and gateway alarms up to yellow.
WINDOWS: dict[str, list[dict[str, Any]]] = {
    "SP-OF-001": [{
        "reason": "清淤 dredging of the pumping well, crew below ground (confined-space entry)",
        "daily_from": "09:00", "daily_to": "11:00",
        "categories": ["facility", "sensor"], "metrics": ["water_level", "pump_state"],
        "silence_up_to": "orange",
        "entry": True, "crew_leader": "李强 Li Qiang", "crew_phone": "13800000031"}],
    "DP-KG-001": [{
        "reason": "夜间施工 night works on the station's electrics",
        "daily_from": "00:00", "daily_to": "05:00",
        "categories": ["sensor", "gateway"], "silence_up_to": "yellow"}],
}


# The unit that owns each kind of facility (权属单位), whom its work orders go to; a site's
# is its contractor. Invented names for the example.
OWNER_UNITS = {
    "drainage": "温州湾新区排水有限公司 Wenzhou Bay Drainage Co.",
    "sewage": "温州湾新区排水有限公司 Wenzhou Bay Drainage Co.",
    "bridge": "瓯江桥梁养护有限公司 Oujiang Bridge Maintenance Co.",
    "plant": "瓯飞污水处理有限公司 Oufei Wastewater Treatment Co.",
    "outfall": "温州湾新区排水有限公司 Wenzhou Bay Drainage Co.",
    "building": "龙湾区住房和城乡建设局 Longwan housing section",
    "site": "温州湾新区住建局 bureau (background station)",
}


def with_owner(f: dict[str, Any]) -> dict[str, Any]:
    """``f`` with its ``owner_unit`` after the district."""
    from example_duties import CONTRACTORS

    owner = CONTRACTORS[f["id"]]["company"] if f["id"] in CONTRACTORS else OWNER_UNITS[f["kind"]]
    out: dict[str, Any] = {}
    for k, v in f.items():
        out[k] = v
        if k == "district_zh":
            out["owner_unit"] = owner
    return out


def main() -> None:
    rnd = random.Random(20260701)
    facilities = []
    for code, zone_en, zone_zh, lat, lon in ZONES:
        for prefix, kind, what, what_zh, make, count in PLAN:
            for n in range(1, count + 1):
                fid = f"{prefix}-{code}-{n:03d}"
                facilities.append({
                    "id": fid, "kind": kind,
                    "name": f"{zone_en} {what} {n}",
                    "name_zh": f"{zone_zh}{what_zh}{n}号",
                    "district": zone_en,
                    "district_zh": zone_zh,
                    **({"criticality": "critical"} if prefix in CRITICAL else {}),
                    "lat": round(lat + rnd.uniform(-0.02, 0.02), 5),
                    "lon": round(lon + rnd.uniform(-0.02, 0.02), 5),
                    **make(fid),
                    **({"maintenance": WINDOWS[fid]} if fid in WINDOWS else {}),
                })
    facilities += __import__("example_duties").facilities(rnd)  # the other duties (0020)
    facilities = [with_owner(f) for f in facilities]
    doc = {"version": 1, "name": "Wenzhou Bay New Area and Longwan (example)",
           "timezone": "Asia/Shanghai",
           "policy": {"allowed_lateness_s": 300, "flap_window_s": 900, "flap_max_transitions": 6,
                      "sensor_offline_after_intervals": 3, "gateway_offline_after_intervals": 3,
                      "gap_clear_reports": 10, "checkpoint_interval_s": 60},
           "facilities": facilities, "district_rules": DISTRICT_RULES}
    sys.stdout.write("# Example registry, generated by deploy/registry/generate_example.py.\n"
                     "# Thresholds marked default: true are placeholders with their source.\n")
    yaml.safe_dump(doc, sys.stdout, allow_unicode=True, sort_keys=False, width=120)


if __name__ == "__main__":
    main()
