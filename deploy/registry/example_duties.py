"""Example facilities of issue 18's duties (decision 0020): construction sites, a treatment
plant, storm outfalls and self-built houses in the example district's zones.

``facilities(rng)`` returns registry facility dicts of the shape
``generate_example.py`` writes (its helpers are reused: ``lv`` marks every level
``default: true`` with its ``source``), to be appended after the generator's own
facilities. Every threshold is a shipped default with the practice it comes from; where a
number is not from a text checked here, its source says *assumed*.

Sensor-id conventions the simulator reads (simulators/facilities.py): a site facility with
no spray sensor is a background station; a plant's effluent sensors hold ``-EF-`` in their
id; an outfall's river/tide gauge ends in ``T1``.
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_example import ZONES, lv, rule, sensor, value_rule

ZONE = {code: (en, zh, lat, lon) for code, en, zh, lat, lon in ZONES}

# --- construction sites ----------------------------------------------------------------
SRC_PM10_HOURLY = ("Wuhan construction-dust practice as given in issue 18: hourly PM10 mean "
                   "150 ug/m3 warning, 200 stop work, resume below 150 (the city document "
                   "not checked here); yellow's 10 ug/m3 hysteresis assumed")
SRC_PM10_COUNT = ("form of DB13/2934-2019 (Hebei: the site's PM10 minus the area's at the same "
                  "time, limit 80 ug/m3, at most 2 a day - secondary source) and DB31/964-2016 "
                  "(Shanghai, the same form): 15-minute means of the excess over the regional "
                  "background station AB-KG-001, more than 2 a day")
SRC_PM25 = ("assumed: 115 ug/m3, the HJ 633-2012 24-hour PM2.5 breakpoint of moderate "
            "pollution, applied to the site's hourly mean")
SRC_TSP = ("DB61/1078-2017 (Shaanxi, secondary source): hourly TSP at most 0.8 mg/m3 during "
           "demolition and earthworks, 0.7 in the structure stage")
SRC_NOISE = ("GB 12523-2011 site-boundary noise: 70 dB(A) by day, 55 at night (22:00-06:00; "
             "the night's maximum at most 15 above: 70); 20-minute mean of the interval "
             "levels (an arithmetic mean of dB, not an energy mean: assumed close enough)")
SRC_WIND = ("Beaufort force 6 from 10.8 m/s (10-minute mean); earthworks and lifting stop in "
            "strong wind - the force that stops work varies by city (6 assumed)")
SRC_SPRAY = ("closed-loop dust handling (扬尘治理闭环管理): a dust warning must be met with the "
             "spray / mist cannon on; 30 minutes to switch it on assumed")
NOISE_DAY_WINDOW = {
    "reason": "昼间 daytime: the night limit 55 dB(A) of GB 12523 applies 22:00-06:00",
    "daily_from": "06:00", "daily_to": "22:00",
    "categories": ["facility"], "metrics": ["noise"], "silence_up_to": "blue"}

CONTRACTORS: dict[str, dict[str, str]] = {
    "CS-KG-001": {"company": "温州湾建工集团 Wenzhou Bay Construction Group",
                  "responsible": "陈建国 Chen Jianguo", "phone": "13800000101"},
    "CS-KG-002": {"company": "瓯江路桥工程有限公司 Oujiang Road and Bridge Co.",
                  "responsible": "林海 Lin Hai", "phone": "13800000102"},
    "CS-KG-003": {"company": "龙湾城建有限公司 Longwan Urban Construction Co.",
                  "responsible": "郑晓东 Zheng Xiaodong", "phone": "13800000103"},
}
"""Each site's contractor and its responsible person (项目负责人): for the on-call file
until the registry has facility contacts (decision 0020)."""


BACKGROUND = "AB-KG-001"  # the regional background station the sites' excess is over


def _dust_sensors(fid: str, rules: bool) -> list[dict[str, Any]]:
    def r(*made: dict[str, Any]) -> list[dict[str, Any]] | None:
        return list(made) if rules else None

    return [
        sensor(f"{fid}-PM10", "pm10", "µg/m³", (0.0, 2000.0), 60, r(
            rule([lv("yellow", 150, 140, SRC_PM10_HOURLY), lv("orange", 200, 150, SRC_PM10_HOURLY)],
                 signal="mean", window_s=3600),
            rule([lv("yellow", 3, 0, SRC_PM10_COUNT)], signal="count", of="mean",
                 window_s=900, count_above=80, id="excess-15min-count",
                 minus={"facility": BACKGROUND, "sensor": f"{BACKGROUND}-PM10"},
                 description="15分钟PM10超出区域背景80次数 15-minute PM10 excesses over the "
                             "background")), stuck_after_s=6 * 3600),
        sensor(f"{fid}-PM25", "pm25", "µg/m³", (0.0, 1000.0), 60, r(
            rule([lv("blue", 115, 105, SRC_PM25)], signal="mean", window_s=3600))),
        sensor(f"{fid}-TSP", "tsp", "µg/m³", (0.0, 5000.0), 60, r(
            rule([lv("yellow", 800, 750, SRC_TSP)], signal="mean", window_s=3600))),
    ]


def site(fid: str) -> dict[str, Any]:
    """A construction site's boundary monitor (扬尘在线监测): dust, noise, wind, spray."""
    return {"sensors": [
        *_dust_sensors(fid, rules=True),
        sensor(f"{fid}-N1", "noise", "dB(A)", (30.0, 130.0), 60, [
            rule([lv("blue", 55, 53, SRC_NOISE), lv("yellow", 70, 68, SRC_NOISE)],
                 signal="mean", window_s=1200)]),
        sensor(f"{fid}-WS", "wind_speed", "m/s", (0.0, 60.0), 60, [
            rule([lv("blue", 10.8, 10.0, SRC_WIND)], signal="mean", window_s=600)]),
        sensor(f"{fid}-WD", "wind_direction", "deg", (0.0, 360.0), 60),
        sensor(f"{fid}-SP", "spray_state", "state", (0.0, 1.0), 60),
    ], "composites": [{
        "id": "dust-high-spray-off", "level": "orange",
        "all_of": [{"sensor": f"{fid}-PM10", "signal": "mean", "window_s": 3600, "op": ">=",
                    "value": 150},
                   {"sensor": f"{fid}-SP", "op": "<=", "value": 0.5}],
        "raise_after_s": 1800, "source": SRC_SPRAY, "default": True,
        "description": "扬尘预警而喷淋未开启 dust warning with the spray off"}],
        "maintenance": [NOISE_DAY_WINDOW]}


def background_station(fid: str) -> dict[str, Any]:
    """The regional background (区域背景站): the same instruments, no rules — the
    background alone must not raise an alarm; site rules will read it as context."""
    return {"sensors": _dust_sensors(fid, rules=False)}


# --- treatment plant -------------------------------------------------------------------
SRC_1A = ("GB 18918-2002 grade 1A, daily mean: COD 50, BOD5 10, NH3-N 5 (8 at water <= 12 C: "
          "not applied, assumed warm water), TN 15, TP 0.5 mg/L; the 2-hour mean at 80 % of "
          "the limit is an early warning (assumed)")
SRC_INFLOW_BOD = ("national practice, 城镇污水处理提质增效三年行动方案 (2019-2021): plants "
                  "whose inflow BOD is below "
                  "100 mg/L need a network plan (一厂一策): a chronic condition, the daily mean "
                  "below it for a whole day (a mean over the first hours of a window is "
                  "the night's, not the day's)")
SRC_PLANT_FLOW = ("assumed design flow 100,000 m3/d (1157 L/s); hourly mean above 1.3x is "
                  "hydraulic overload (assumed peaking allowance)")
SRC_DILUTION = ("厂网一体化 practice: inflow rising while its COD falls is rain or river water "
                "entering the sewers; 1.2x design flow with COD under 150 mg/L assumed")
SRC_INFILTRATION = ("infiltration: the night minimum inflow far above the plant's usual night "
                    "(3 spreads of the learned nights: assumed)")


def _effluent(fid: str, metric: str, code: str, limit: float, top: float) -> dict[str, Any]:
    return sensor(f"{fid}-EF-{code}", metric, "mg/L", (0.0, top), 300, [
        rule([lv("blue", round(0.8 * limit, 3), round(0.7 * limit, 3), SRC_1A)],
             signal="mean", window_s=7200),
        rule([lv("orange", limit, round(0.9 * limit, 3), SRC_1A)], signal="mean",
             window_s=86400)])


def plant(fid: str) -> dict[str, Any]:
    """A treatment plant's inflow and effluent analysers (进水/出水在线监测)."""
    inflow = [sensor(f"{fid}-IN-{code}", metric, "mg/L", (0.0, top), 300)
              for metric, code, top in (("cod", "COD", 2000.0), ("nh3n", "NH3N", 200.0),
                                        ("tn", "TN", 200.0), ("tp", "TP", 50.0))]
    return {"criticality": "critical", "sensors": [
        sensor(f"{fid}-IN-Q", "flow", "L/s", (0.0, 3000.0), 60, [
            rule([lv("yellow", 1504, 1400, SRC_PLANT_FLOW)], signal="mean", window_s=3600),
            rule([lv("blue", 3, 2, SRC_INFILTRATION)], signal="night_minimum",
                 deviation_as="spreads")], stuck_after_s=6 * 3600),
        *inflow,
        sensor(f"{fid}-IN-BOD5", "bod5", "mg/L", (0.0, 1000.0), 3600, [
            rule([lv("blue", 100, 110, SRC_INFLOW_BOD)], signal="mean", window_s=86400,
                 direction="lower", raise_after_s=86400)]),
        _effluent(fid, "cod", "COD", 50, 500.0),
        _effluent(fid, "bod5", "BOD5", 10, 200.0),
        _effluent(fid, "nh3n", "NH3N", 5, 100.0),
        _effluent(fid, "tn", "TN", 15, 100.0),
        _effluent(fid, "tp", "TP", 0.5, 20.0),
        sensor(f"{fid}-R1", "rainfall", "mm", (0.0, 50.0), 300),
    ], "composites": [{
        "id": "inflow-dilution", "level": "blue",
        "all_of": [{"sensor": f"{fid}-IN-Q", "signal": "mean", "window_s": 3600, "op": ">=",
                    "value": 1388},
                   {"sensor": f"{fid}-IN-COD", "signal": "mean", "window_s": 3600, "op": "<=",
                    "value": 150}],
        "source": SRC_DILUTION, "default": True,
        "description": "进水稀释：流量上升而COD下降 inflow diluted: flow up, COD down"}]}


# --- outfalls --------------------------------------------------------------------------
# The river above the outfall's crown (1.5 m: backwater into the network) happens at every
# high tide here: context for the rain rules, not an alarm of its own (a blue level there
# raised two alarms a day at every outfall on a dry day — found by the scenarios' scorer).
SRC_TIDE = ("placeholder: 4.0 m over the outfall invert (assumed warning level); replace with "
            "the nearest tide station's 警戒潮位 in the outfall's datum")
SRC_PIPE = ("placeholder: a storm pipe at its outfall 3.5 m deep (assumed): water at 3.0 m "
            "behind a shut flap gate is near flooding")
SRC_MISCONNECTION = ("清污分流 checks (CJJ 68: 分流制严禁雨污混接): COD or a standing level in a storm "
                     "outfall after 3 days without rain is sewage; 100 mg/L (GB 3838 class V "
                     "is 40) and 0.1 m assumed; cleared after a whole day without (a "
                     "misconnection's sewage follows the town's day: it is not gone at night)")


def outfall(fid: str) -> dict[str, Any]:
    """A storm outfall (雨水排口) to the tidal river: the pipe's level and COD, the river
    outside, a rain gauge."""
    return {"sensors": [
        sensor(f"{fid}-T1", "water_level", "m", (-3.0, 8.0), 300, [value_rule([
            lv("yellow", 4.0, 3.9, SRC_TIDE)])],
            stuck_after_s=6 * 3600),
        sensor(f"{fid}-L1", "water_level", "m", (0.0, 4.0), 60, [value_rule([
            lv("orange", 3.0, 2.9, SRC_PIPE)])]),
        sensor(f"{fid}-C1", "cod", "mg/L", (0.0, 2000.0), 300),
        sensor(f"{fid}-R1", "rainfall", "mm", (0.0, 50.0), 300),
    ], "composites": [
        {"id": "dry-weather-cod", "level": "yellow",
         "all_of": [{"sensor": f"{fid}-C1", "signal": "mean", "window_s": 3600, "op": ">=",
                     "value": 100},
                    {"sensor": f"{fid}-R1", "signal": "sum", "window_s": 3 * 86400, "op": "<=",
                     "value": 1}],
         "clear_after_s": 86400, "source": SRC_MISCONNECTION, "default": True,
         "description": "旱天雨水排口COD高：疑似雨污混接 COD in a storm outfall in dry weather"},
        {"id": "dry-weather-flow", "level": "yellow",
         "all_of": [{"sensor": f"{fid}-L1", "signal": "min", "window_s": 3600, "op": ">=",
                     "value": 0.1},
                    {"sensor": f"{fid}-R1", "signal": "sum", "window_s": 3 * 86400, "op": "<=",
                     "value": 1}],
         "clear_after_s": 86400, "source": SRC_MISCONNECTION, "default": True,
         "description": "旱天雨水管有水：疑似雨污混接 water in a storm pipe in dry weather"}]}


# --- buildings -------------------------------------------------------------------------
def _deg(ratio: float) -> float:
    """A tilt ratio (offset over height) in the canonical degrees."""
    return round(math.degrees(math.atan(ratio)), 4)


SRC_TILT_B = ("JGJ 125-2016 danger grades as provenance: grade B at 0.4 % tilt ratio (the "
              "GB 50007-2011 allowable tilt of a building up to 24 m, as recalled) = 0.229 deg; "
              "the grade-to-colour mapping (B blue, C orange, D red) is assumed")
SRC_TILT_C = ("JGJ 125-2016 grade C: masonry wall tilt ratio above 0.7 % a danger point (as "
              "recalled, verify the clause) = 0.401 deg")
SRC_TILT_D = ("JGJ 125-2016 grade D: tilt ratio above 1 % from foundation settlement (as "
              "recalled, verify the clause) = 0.573 deg")
SRC_TILT_STEP = ("assumed: a tilt step of 0.05 deg (0.9 per mille) between 3-reading medians is "
                 "sudden movement (excavation nearby): inspect at once")
SRC_CRACK_B = "assumed: 1 mm, a visible crack to watch (JGJ 125 grade B as provenance)"
SRC_CRACK_C = ("JGJ 125-2016: several parallel settlement cracks wider than 5 mm (as recalled, "
               "verify); grade C")
SRC_CRACK_D = ("JGJ 125-2016: a single settlement crack wider than 10 mm (as recalled, verify); "
               "grade D")
SRC_CRACK_GROWTH = "assumed: a crack still growing 0.2 mm per 30 days (JGJ 125: 裂缝持续发展)"
SRC_SETTLE_RATE = ("JGJ 125-2016: settlement faster than 4 mm/month for two months, not "
                   "converging (multi-storey; as recalled, verify): rate over 60 days per 30 days")
SRC_SETTLE_DAY = ("GB 50497-2019 warning rates for buildings next to an excavation are of "
                  "1-3 mm/d (as recalled); 2 mm/d assumed, held for 6 hourly readings (a "
                  "day's slope of 0.3 mm readings wanders by ~0.7 mm/d: found by the "
                  "house-excavation scenario)")
SRC_GNSS = "assumed: 10 / 20 / 30 mm hourly-mean horizontal displacement (GNSS noise ~3 mm)"


def building(fid: str) -> dict[str, Any]:
    """A self-built house (自建房) under watch: tilt, crack, settlement, roof GNSS."""
    return {"sensors": [
        sensor(f"{fid}-T1", "tilt", "deg", (-5.0, 5.0), 600, [
            value_rule([lv("blue", _deg(0.004), _deg(0.0037), SRC_TILT_B),
                        lv("orange", _deg(0.007), _deg(0.0067), SRC_TILT_C),
                        lv("red", _deg(0.010), _deg(0.0097), SRC_TILT_D)],
                       raise_after_count=3),
            rule([lv("orange", 0.05, 0.02, SRC_TILT_STEP)], signal="step")]),
        sensor(f"{fid}-C1", "crack_width", "mm", (0.0, 50.0), 600, [
            value_rule([lv("blue", 1.0, 0.95, SRC_CRACK_B), lv("orange", 5.0, 4.9, SRC_CRACK_C),
                        lv("red", 10.0, 9.9, SRC_CRACK_D)], raise_after_count=3),
            rule([lv("yellow", 0.2, 0.1, SRC_CRACK_GROWTH)], signal="rate",
                 window_s=30 * 86400, rate_per_s=30 * 86400)]),
        sensor(f"{fid}-S1", "settlement", "mm", (-50.0, 300.0), 3600, [
            rule([lv("orange", 4.0, 3.0, SRC_SETTLE_RATE)], signal="rate",
                 window_s=60 * 86400, rate_per_s=30 * 86400),
            rule([lv("yellow", 2.0, 1.0, SRC_SETTLE_DAY)], signal="rate", window_s=86400,
                 rate_per_s=86400, raise_after_count=6)]),
        sensor(f"{fid}-G1", "gnss_displacement", "mm", (0.0, 1000.0), 600, [
            rule([lv("blue", 10, 8, SRC_GNSS), lv("yellow", 20, 18, SRC_GNSS),
                  lv("orange", 30, 28, SRC_GNSS)], signal="mean", window_s=3600)]),
    ]}


# --- the plan --------------------------------------------------------------------------
PLAN = [  # prefix, zone, kind, name (en), name (zh), sensors, how many
    ("CS", "KG", "site", "construction site", "在建工地", site, 3),
    ("AB", "KG", "site", "dust background station", "扬尘区域背景站", background_station, 1),
    ("PL", "OF", "plant", "wastewater treatment plant", "污水处理厂", plant, 1),
    ("OF", "OF", "outfall", "storm outfall", "雨水排口", outfall, 2),
    ("HB", "LW", "building", "self-built house", "自建房", building, 3),
]


def facilities(rng: random.Random) -> list[dict[str, Any]]:
    """The duty facilities, coordinates drawn from ``rng`` (the generator's, after its own
    facilities: theirs stay where they are)."""
    out = []
    for prefix, code, kind, what, what_zh, make, count in PLAN:
        zone_en, zone_zh, lat, lon = ZONE[code]
        for n in range(1, count + 1):
            fid = f"{prefix}-{code}-{n:03d}"
            made = make(fid)
            criticality = made.pop("criticality", None)
            out.append({
                "id": fid, "kind": kind,
                "name": f"{zone_en} {what} {n}", "name_zh": f"{zone_zh}{what_zh}{n}号",
                "district": zone_en, "district_zh": zone_zh,
                **({"criticality": criticality} if criticality else {}),
                "lat": round(lat + rng.uniform(-0.02, 0.02), 5),
                "lon": round(lon + rng.uniform(-0.02, 0.02), 5),
                **made})
    return out
