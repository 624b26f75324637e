"""Facility kinds, metrics with their canonical units, and the four alarm levels."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FacilityKind(StrEnum):
    """The kinds of municipal facility Lifeline watches (the MQTT topic's ``{kind}``)."""

    DRAINAGE = "drainage"
    BRIDGE = "bridge"
    SEWAGE = "sewage"
    SITE = "site"  # construction site (在建工地): dust, noise, wind, spray
    PLANT = "plant"  # wastewater treatment plant (污水处理厂): inflow and effluent
    OUTFALL = "outfall"  # storm outfall (排口) with the river/tide level outside it
    BUILDING = "building"  # self-built or dilapidated house (自建房/危房)


class AlarmLevel(StrEnum):
    """China's four-colour warning levels, from general (IV) to especially serious (I)."""

    BLUE = "blue"
    YELLOW = "yellow"
    ORANGE = "orange"
    RED = "red"

    @property
    def severity(self) -> int:
        """1 for blue … 4 for red; higher is worse."""
        return _SEVERITY[self]

    @property
    def grade(self) -> str:
        """The Roman-numeral grade used in Chinese emergency plans (IV … I)."""
        return _GRADE[self]


_SEVERITY = {AlarmLevel.BLUE: 1, AlarmLevel.YELLOW: 2, AlarmLevel.ORANGE: 3, AlarmLevel.RED: 4}
_GRADE = {AlarmLevel.BLUE: "IV", AlarmLevel.YELLOW: "III", AlarmLevel.ORANGE: "II",
          AlarmLevel.RED: "I"}


class Metric(StrEnum):
    """Every quantity a Lifeline sensor may report."""

    # urban drainage
    RAINFALL = "rainfall"
    WATER_LEVEL = "water_level"
    PONDING_DEPTH = "ponding_depth"
    FLOW = "flow"
    PUMP_STATE = "pump_state"
    PUMP_CURRENT = "pump_current"
    COVER_STATE = "cover_state"
    # road bridges
    DEFLECTION = "deflection"
    STRAIN = "strain"
    CRACK_WIDTH = "crack_width"
    TILT = "tilt"
    ACCELERATION = "acceleration"
    TEMPERATURE = "temperature"
    BEARING_DISPLACEMENT = "bearing_displacement"
    # sewage network
    H2S = "h2s"
    CH4 = "ch4"
    CO = "co"
    O2 = "o2"
    NH3 = "nh3"
    SO2 = "so2"
    CL2 = "cl2"
    COD = "cod"
    NH3N = "nh3n"
    PH = "ph"
    # construction sites
    PM10 = "pm10"
    PM25 = "pm25"
    TSP = "tsp"
    NOISE = "noise"
    WIND_SPEED = "wind_speed"
    WIND_DIRECTION = "wind_direction"
    SPRAY_STATE = "spray_state"
    # treatment plants (COD, NH3N, FLOW shared with the sewage network)
    BOD5 = "bod5"
    TN = "tn"
    TP = "tp"
    # buildings (TILT, CRACK_WIDTH shared with bridges)
    SETTLEMENT = "settlement"
    GNSS_DISPLACEMENT = "gnss_displacement"


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricSpec:
    """What a metric means: its canonical unit and which facility kinds report it."""

    metric: Metric
    unit: str
    kinds: frozenset[FacilityKind]
    description: str


_D, _B, _S = FacilityKind.DRAINAGE, FacilityKind.BRIDGE, FacilityKind.SEWAGE
_SI, _P, _O, _BU = (FacilityKind.SITE, FacilityKind.PLANT, FacilityKind.OUTFALL,
                    FacilityKind.BUILDING)


def _spec(metric: Metric, unit: str, kinds: set[FacilityKind], description: str) -> MetricSpec:
    return MetricSpec(metric=metric, unit=unit, kinds=frozenset(kinds), description=description)


METRICS: dict[Metric, MetricSpec] = {
    s.metric: s
    for s in (
        _spec(Metric.RAINFALL, "mm", {_D, _P, _O}, "rain fallen during the report interval"),
        _spec(Metric.WATER_LEVEL, "m", {_D, _S, _O},
              "water level above the pipe/manhole/outfall invert"),
        _spec(Metric.PONDING_DEPTH, "cm", {_D}, "water depth on the road surface"),
        _spec(Metric.FLOW, "L/s", {_D, _S, _P, _O}, "flow rate in the pipe"),
        _spec(Metric.PUMP_STATE, "state", {_D, _S}, "pump run state: 1 running, 0 stopped"),
        _spec(Metric.PUMP_CURRENT, "A", {_D, _S}, "pump motor current"),
        _spec(Metric.COVER_STATE, "state", {_D, _S},
              "manhole cover (smart cover, 智能井盖): 0 seated, 1 lifted or displaced"),
        _spec(Metric.DEFLECTION, "mm", {_B}, "vertical deflection of the span"),
        _spec(Metric.STRAIN, "µε", {_B}, "strain in microstrain"),
        _spec(Metric.CRACK_WIDTH, "mm", {_B, _BU}, "crack width"),
        _spec(Metric.TILT, "deg", {_B, _BU}, "tilt of pier, tower or building from the vertical"),
        _spec(Metric.ACCELERATION, "m/s²", {_B}, "vibration acceleration (RMS of the interval)"),
        _spec(Metric.TEMPERATURE, "°C", {_B, _D, _S}, "structure or air temperature"),
        _spec(Metric.BEARING_DISPLACEMENT, "mm", {_B}, "bearing displacement"),
        _spec(Metric.H2S, "mg/m³", {_S}, "hydrogen sulphide concentration"),
        _spec(Metric.CH4, "%LEL", {_S}, "methane as percent of lower explosive limit"),
        _spec(Metric.CO, "mg/m³", {_S}, "carbon monoxide concentration"),
        _spec(Metric.O2, "%vol", {_S}, "oxygen by volume"),
        _spec(Metric.NH3, "mg/m³", {_S}, "ammonia gas concentration"),
        _spec(Metric.SO2, "mg/m³", {_S}, "sulphur dioxide concentration"),
        _spec(Metric.CL2, "mg/m³", {_S}, "chlorine concentration"),
        _spec(Metric.COD, "mg/L", {_S, _P, _O}, "chemical oxygen demand"),
        _spec(Metric.NH3N, "mg/L", {_S, _P}, "ammonia nitrogen"),
        _spec(Metric.PH, "pH", {_S}, "pH"),
        _spec(Metric.PM10, "µg/m³", {_SI}, "particulate matter up to 10 µm"),
        _spec(Metric.PM25, "µg/m³", {_SI}, "particulate matter up to 2.5 µm"),
        _spec(Metric.TSP, "µg/m³", {_SI}, "total suspended particulate"),
        _spec(Metric.NOISE, "dB(A)", {_SI}, "A-weighted equivalent sound level of the interval"),
        _spec(Metric.WIND_SPEED, "m/s", {_SI}, "wind speed (mean of the interval)"),
        _spec(Metric.WIND_DIRECTION, "deg", {_SI},
              "direction the wind blows from, clockwise from north"),
        _spec(Metric.SPRAY_STATE, "state", {_SI},
              "dust suppression (spray, mist cannon) state: 1 on, 0 off"),
        _spec(Metric.BOD5, "mg/L", {_P}, "five-day biochemical oxygen demand"),
        _spec(Metric.TN, "mg/L", {_P}, "total nitrogen"),
        _spec(Metric.TP, "mg/L", {_P}, "total phosphorus"),
        _spec(Metric.SETTLEMENT, "mm", {_BU},
              "cumulative settlement since the survey baseline, downward positive"),
        _spec(Metric.GNSS_DISPLACEMENT, "mm", {_BU},
              "horizontal GNSS displacement from the reference position"),
    )
}


LIFE_SAFETY_METRICS: frozenset[Metric] = frozenset({
    Metric.H2S, Metric.CH4, Metric.CO, Metric.O2, Metric.NH3, Metric.SO2, Metric.CL2})
"""Gases that kill people in sewers and wells (confined-space work, CJJ 6): a maintenance
window never silences them unless it names them, and a confined-space entry window pages
the crew leader for them."""
