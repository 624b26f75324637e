"""Facility models: the physics, simple and documented, that make a facility's sensors
move together the way the real ones do — and the ground truth of when a facility is really
at risk (``hazards``), which the scorer judges alarms against.

Every model advances in fixed simulated steps (``advance``), answers the current value of
any of its sensors (``value``, canonical units) and the hazards present now (``hazards``,
from the noise-free physics, never from the registry's alarm thresholds). Which quantities
a facility has comes from its registry sensors, so one model per kind covers every
facility of that kind.

Drainage — a separated storm sewer (the Wenzhou Bay New Area's networks), per manhole:
  - rainfall: the district's storm (simulators/weather.py); a gauge reports the depth
    collected during its interval;
  - catchment: runoff ``c × rain`` (c = 20–30 L/s per mm/h: ~10 ha at a coefficient of
    0.6) through a linear reservoir (lag ``tau`` 10–20 min); 5 % of it recharges a slow
    interflow/infiltration store (recession 3 h) that keeps a trickle after rain; plus the
    upstream manhole's passed flow and its overland spill, ten
    minutes later (upstream → downstream by facility number within a district);
  - dry weather: only the recession trickle and 0.5–2 L/s of infiltration: the pipe is
    near-empty, and below 3 cm (the radar's floor over the invert channel) the gauge reads
    its floor, exactly, for hours — the ``stuck`` false alarm of real separated sewers.
    A ``misconnection`` adds a diurnal sewage flow (peak 60 L/s): a level that breathes
    with the town in dry weather is a misconnection (CJJ 68: 分流制严禁雨污混接);
  - level from the passed flow: part-full ``h = D (Q/Qf)^0.6``; surcharged (pressure flow)
    ``h = D + Hs ((Q/Qf)² − 1)``; Qf = 760 L/s × D^(13/6) (Manning n 0.013 at the flat
    reclaimed land's slope of 1/D ‰: 0.1 % for 1.0 m; D the level sensor's
    ``pipe_diameter_m``), Hs = 0.6 m; each manhole carries all of its upstream (a trunk);
    with an outfall boundary
    (tide, surge, river) the level is at least ``b + Hs (Q/Qf)²``, ``b`` the outfall level
    less the manhole's invert height above it (0.4 m at the last manhole, 0.5 m more per
    manhole upstream): backwater that holds levels up between rain bursts; above the cover
    nothing more passes — the excess *spills*: half runs over the road to the next
    manhole, half ponds (m³) around the cover and drains back when the pipe has room (at
    most 0.2 m³/s). The flow sensor reads the flow that passes, not the inflow;
  - pump station: fed by its catchment's network (30 % of the district's last manhole's
    outflow, all of it while a tide gate is shut) plus 20 L/s and 40 % of its own
    catchment's runoff; wet well 400 m²,
    8 m deep; a duty pump (800 L/s) starts at 3.0 m, the standby (800 L/s) at 3.6 m, the
    standby stops at 2.5 m and the duty at 1.5 m; the current sensor reads the duty
    motor: 190 A + 25 A per running pump (shared rising main) + 8 A per metre of draw-down
    below 3.0 m (head), 0 when stopped; a pump or power failure stops both (power state
    off), the well fills;
  - underpass ponding: rain above 30 mm/h (the inlets' capacity) collects, 1.5 cm per
    minute per 60 mm/h of excess, and drains at 0.6 cm per minute;
  - blockage: debris backs the water up towards the cover (reached over the first 30 % of
    the incident at severity 1) and the pipe passes at most 20 % of its capacity.
  Hazards: ``surcharge`` (h above the crown), ``overflow`` (water at the cover or ponded
  on the road), ``heavy_rain`` (≥ 20 mm in an hour or ≥ 50 mm in 3 h, at a rain gauge),
  ``ponding`` (≥ 10 cm in the underpass), ``wet_well_high`` (above 4.0 m, less the
  gauge's 3 cm tolerance: both pumps cannot hold it), ``pumps_down``, ``misconnection``,
  ``cover_open``.
Bridge: daily temperature cycle (peak 15:00 local) driving the *thermal* deflection, strain
  and bearing displacement — independent of stiffness, as for a statically determinate
  span; traffic with heavy vehicles (Poisson, ~6 per hour) as live-load bursts. Damage is
  stiffness loss ``k`` (EI relative to new), and the *load* responses scale with 1/k: the
  live load (8 mm and 150 µε per design truck) and the dead-load deflection change from
  the installation baseline (35 mm × (1/k − 1)). ``bridge_damage`` loses 60 % × severity of
  the stiffness over the incident (progressive prestress loss), cracks and bearing
  displacement grow with it; ``bridge_strike``, ``bearing_slip`` and ``pier_tilt`` are
  steps; ``overload`` is a 2.5× truck crawling across; ``vortex_vibration`` shakes the
  deck without traffic. Hazards: ``structural_damage`` (stiffness loss ≥ 20 %, crack
  ≥ 0.3 mm, bearing ≥ 40 mm or tilt ≥ 0.3°: assumed serviceability limits, placeholders
  like the registry's), ``overload`` (live-load deflection above 16 mm, twice the design
  truck's), ``vibration`` (acceleration RMS ≥ 1.5 m/s²).
Sewage: diurnal flow and level (low at 04:00, peaks morning and evening), rain inflow
  (8 L/s per mm/h at 30 mg/L COD) *diluting* the sewage (COD 250–310 mg/L dry); NH3-N
  diluted alike; pH with noise; an illegal-discharge pulse; H2S and CH4 build-up in
  manholes (toxic_gas: over 30 % of the incident) and a fast release when dredging stirs
  up the sludge (gas_release: to the plateau within 20 minutes); the gas background
  follows the sewer temperature (22 ± 6 °C over the year, peak late July; sulphide
  production ×1.07 per °C) and the pumps: each start strips H2S (+3 mg/m³, decaying over
  5 minutes); a pumping well (100 m²) with duty/standby pumps (300 L/s each, start 3.5 /
  4.2 m, stop 1.5 / 2.5 m), stopped by a pump or power failure; blockages raising the
  level. Hazards: ``toxic_gas`` (H2S ≥ 10 mg/m³, CO ≥ 20 mg/m³ or O2 < 19.5 %),
  ``explosive_gas`` (CH4 ≥ 25 %LEL), ``pollution`` (COD > 500 mg/L, NH3-N > 45 mg/L or pH
  outside 6–9), ``wet_well_high`` (pumping well above 5.0 m, less 3 cm), ``pumps_down``,
  ``surcharge`` (sewer manhole level above 3.5 m).

Level gauges under a cover (manholes) know where the cover is (``cover_m``): the scenario
runner drowns a gauge with a ``submerged`` fault while the water is there.

Construction site (decision 0020): a regional background the same at every site of the
  day (:func:`regional_pm10`: 25-65 µg/m³ over the year, the morning and evening inversions,
  +40 on one day in ten of regional haze — never 150 alone) plus the site's own dust at the
  monitor, ``E × (1 − 0.6 spray) × 2 / (1 + u)``: works 07:00-12:00 and 13:00-18:00 at
  E = 30-50 µg/m³, muck trucks (``heavy_traffic``) 250 × severity, wind-blown bare soil
  8 (u − 5)² above 5 m/s; the wind a sea breeze (1-4 m/s, from 120° by day, 280° by night);
  the spray/mist cannon switched by the site's controller (on at 100 µg/m³, off below 70);
  PM2.5 0.55 × background + 0.2 × site dust, TSP 1.8 × background + 2.5 × site dust (a
  site's dust is coarse); noise the energy sum of the background (50 / 42 dB(A) day / night)
  and the works (62-67 dB(A), trucks 72). A site facility without a spray sensor is a
  background station: background only. Hazards: ``dust`` (the hourly mean of the site's
  excess over the background ≥ 80 µg/m³: DB13/2934's monitoring-point limit read as an
  excess — assumed), ``noise`` (≥ 70 dB(A) 06:00-22:00, ≥ 55 at night: GB 12523),
  ``strong_wind`` (≥ 10.8 m/s, force 6).
Treatment plant: inflow = sewage (55 % of the design flow, 0.7-1.3 over the day; COD 330,
  BOD5 150, NH3-N 30, TN 40, TP 4.5 mg/L) + extraneous water (infiltration 15-30 % of the
  design flow, and rain-derived inflow ``0.027 Q_design per mm/h`` through a 1.5 h
  reservoir with a 12 h tail; COD 20, BOD5 4, NH3-N 1, TN 2, TP 0.1): rain *dilutes* the
  inflow — COD falls while the flow rises; an ``illegal_discharge`` adds an industrial
  slug (50 L/s × severity at COD 3000, NH3-N 150) and halves nitrification. Effluent:
  ``floor + (C_in − floor)(1 − removal)`` with removals cut by hydraulic overload above the
  design flow, through a 6 h lag (the plant's retention). Sensors whose id holds ``-EF-``
  are effluent, the others inflow. Hazards: ``effluent_exceedance`` (an effluent at or
  above GB 18918 grade 1A: COD 50, BOD5 10, NH3-N 5, TN 15, TP 0.5 mg/L), ``inflow_dilution``
  (extraneous water at least half the inflow).
Outfall: a storm pipe (DN1500, 1.5 m) to a tidal river with a flap gate: the outside level
  from simulators/weather.py's tide (``Env.backwater_m`` when the runner gives the
  district's boundary, else :data:`OUTFALL_TIDE`); runoff 40-80 L/s per mm/h (20 min lag),
  0.5 L/s infiltration, a ``misconnection``'s sewage (40 L/s × severity × diurnal, COD
  300 mg/L); while the river is above the water in the pipe the gate is shut and the pipe
  fills its 600 m² of storage. COD: 25 mg/L standing water, a first flush of 60 + 150
  e^(−P / 5 mm) in runoff (P the event's rain so far). The river gauge's id ends in ``T1``.
  Hazards: ``misconnection``, ``overflow`` (the pipe at the ground behind the outfall,
  3.5 m), ``high_water`` (the river at 4.0 m over the outfall invert: assumed warning level).
Building: a self-built house with a surveyed initial tilt (0.05-0.2°), settlement (2-8 mm)
  and crack (0.3-1.0 mm), creeping on soft clay (0.05 mm/day), a daily thermal swing; a
  ``pier_tilt`` incident is nearby excavation: a tilt step of 0.2° × severity, then a
  consolidation tail (0.1°, 10 days), settlement 8 mm (3 days) + 0.15 mm/day, the crack
  opening 1.5 mm (5 days), the roof's GNSS antenna moving with the tilt (height 9-15 m);
  held for the incident's duration, like the bridge's steps. Hazards: ``building_danger``
  (tilt ratio ≥ 0.7 %, crack ≥ 5 mm, or settlement faster than 4 mm per 30 days once a day
  of it is known: JGJ 125 danger points as recalled — assumed, see decision 0020).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from schemas.kinds import FacilityKind, Metric
from schemas.registry import Facility, Sensor
from schemas.scenario import GAS_RELEASE_RAMP_S, Boundary, Incident, IncidentKind
from simulators.weather import outfall_level

COVER_M = 3.0  # drainage manhole: water at the cover is overflow
SEWER_COVER_M = 5.0  # sewer manhole depth (its gauge's range)
WET_WELL_DEPTH_M = 8.0  # pump station wet well: above it the station floods
WEIR_CREST_M = 6.0  # a sewage pumping well's emergency overflow weir to the river (assumed)
# A wet well's level "at the limit" within its gauge's accuracy (3 sd of its 1 cm noise): a
# reading over the limit while the true level is within this of it has seen the limit,
# not raised a false alarm (found by the physics scorer on summer-rainstorm's DP-LW-001).
GAUGE_TOLERANCE_M = 0.03
GAUGE_FLOOR_M = 0.03  # a radar gauge cannot see less water than this over the invert
SURCHARGE_HEAD_M = 0.6  # Hs: head in the manhole per (Q/Qf)² of pressure flow
FULL_BORE_LS = 760.0  # Qf of a 1.0 m pipe (Manning n 0.013, 0.1 % slope), × D^(13/6)
ROUTE_DELAY_S = 600.0  # flow reaches the next manhole this much later
DEAD_LOAD_MM = 35.0  # dead-load deflection change per unit of 1/k − 1
TRUCK_MM, TRUCK_UE = 8.0, 150.0  # the design truck's live-load deflection and strain


class Hazard(StrEnum):
    """What really puts a facility at risk, from the physics (the scorer's ground truth)."""

    SURCHARGE = "surcharge"
    OVERFLOW = "overflow"
    HEAVY_RAIN = "heavy_rain"
    PONDING = "ponding"
    WET_WELL_HIGH = "wet_well_high"
    PUMPS_DOWN = "pumps_down"
    MISCONNECTION = "misconnection"
    COVER_OPEN = "cover_open"
    STRUCTURAL_DAMAGE = "structural_damage"
    OVERLOAD = "overload"
    VIBRATION = "vibration"
    TOXIC_GAS = "toxic_gas"
    EXPLOSIVE_GAS = "explosive_gas"
    POLLUTION = "pollution"
    DUST = "dust"
    NOISE = "noise"
    STRONG_WIND = "strong_wind"
    EFFLUENT_EXCEEDANCE = "effluent_exceedance"
    INFLOW_DILUTION = "inflow_dilution"
    HIGH_WATER = "high_water"
    BUILDING_DANGER = "building_danger"
    SEWAGE_OVERFLOW = "sewage_overflow"  # a sewage pumping well over its emergency weir


_LEVELS = {Metric.WATER_LEVEL, Metric.FLOW}
_PUMPS = {Metric.WATER_LEVEL, Metric.PUMP_STATE, Metric.PUMP_CURRENT}
_STRUCTURE = {Metric.DEFLECTION, Metric.STRAIN, Metric.CRACK_WIDTH, Metric.TILT,
              Metric.BEARING_DISPLACEMENT, Metric.ACCELERATION}
_GAS = {Metric.H2S, Metric.CH4, Metric.CO, Metric.O2}
# Which sensors' alarms a hazard explains (alarms without a metric — composites,
# facility-dark — are explained by any hazard of their facility).
HAZARD_METRICS: dict[Hazard, set[Metric]] = {
    Hazard.SURCHARGE: _LEVELS, Hazard.OVERFLOW: _LEVELS | {Metric.PONDING_DEPTH},
    Hazard.HEAVY_RAIN: {Metric.RAINFALL}, Hazard.PONDING: {Metric.PONDING_DEPTH},
    Hazard.WET_WELL_HIGH: _PUMPS, Hazard.PUMPS_DOWN: _PUMPS,
    Hazard.MISCONNECTION: _LEVELS | {Metric.COD}, Hazard.COVER_OPEN: _LEVELS | {Metric.COVER_STATE},
    Hazard.STRUCTURAL_DAMAGE: _STRUCTURE, Hazard.OVERLOAD: _STRUCTURE,
    Hazard.VIBRATION: {Metric.ACCELERATION}, Hazard.TOXIC_GAS: _GAS,
    Hazard.EXPLOSIVE_GAS: _GAS, Hazard.POLLUTION: {Metric.COD, Metric.NH3N, Metric.PH,
                                                   Metric.FLOW},
    Hazard.DUST: {Metric.PM10, Metric.PM25, Metric.TSP, Metric.SPRAY_STATE},
    Hazard.NOISE: {Metric.NOISE}, Hazard.STRONG_WIND: {Metric.WIND_SPEED},
    Hazard.EFFLUENT_EXCEEDANCE: {Metric.COD, Metric.BOD5, Metric.NH3N, Metric.TN, Metric.TP},
    Hazard.INFLOW_DILUTION: {Metric.FLOW, Metric.COD, Metric.BOD5, Metric.NH3N, Metric.TN,
                             Metric.TP, Metric.RAINFALL},
    Hazard.HIGH_WATER: {Metric.WATER_LEVEL},
    Hazard.BUILDING_DANGER: {Metric.TILT, Metric.CRACK_WIDTH, Metric.SETTLEMENT,
                             Metric.GNSS_DISPLACEMENT},
    Hazard.SEWAGE_OVERFLOW: {Metric.WATER_LEVEL},
}


@dataclass
class Env:
    """What a model sees at a step: rain over its district, its incidents, its upstream,
    the outfall boundary."""

    t: float
    local_hour: float
    rain_mm_h: float
    incidents: list[tuple[Incident, float]]  # (incident, progress 0..1) active now
    upstream_flow: float = 0.0  # L/s arriving from upstream (or, at a station, the network)
    day_of_year: int = 180
    backwater_m: float | None = None  # outfall level above this manhole's invert (None: free)
    upstream_misconnected: bool = False  # a misconnection upstream sends sewage down here

    def incident(self, kind: IncidentKind) -> tuple[Incident, float] | None:
        return next(((i, p) for i, p in self.incidents if i.kind is kind), None)

    def elapsed_s(self, kind: IncidentKind) -> float | None:
        """Seconds since the start of the active incident of ``kind`` (None: none)."""
        found = self.incident(kind)
        return None if found is None else found[1] * found[0].duration_s

    @property
    def pumps_down(self) -> bool:
        """A pump failure or a power failure: the pumps cannot run."""
        return any(i.kind in (IncidentKind.PUMP_FAILURE, IncidentKind.POWER_FAILURE)
                   for i, _ in self.incidents)

    @property
    def gateway_dark(self) -> bool:
        """A power failure without a UPS: the RTU is down with the pumps."""
        return any(i.kind is IncidentKind.POWER_FAILURE and not i.ups for i, _ in self.incidents)


def diurnal(local_hour: float) -> float:
    """Town water use over the day, 0 (04:00) … 1 (peaks around 08:00 and 20:00)."""
    return math.sin((local_hour - 4) / 24 * 2 * math.pi) ** 2


@dataclass
class PumpSet:
    """Duty and standby pumps on a wet well: staged starts and stops (hysteresis)."""

    area_m2: float
    pump_ls: float
    duty_on: float
    standby_on: float
    standby_off: float
    duty_off: float
    level: float
    running: int = 0
    starts: int = 0  # pump starts so far (stripping peaks of H2S)
    last_start_t: float = -1e9

    def advance(self, t: float, q_in: float, failed: bool, dt: float, top: float) -> None:
        before = self.running
        if failed:
            self.running = 0
        else:
            if self.level >= self.duty_on and self.running == 0:
                self.running = 1
            if self.level >= self.standby_on:
                self.running = 2
            if self.running == 2 and self.level <= self.standby_off:
                self.running = 1
            if self.level <= self.duty_off:
                self.running = 0
        if self.running > before:
            self.starts += self.running - before
            self.last_start_t = t
        q_out = self.running * self.pump_ls
        self.level = min(top, max(0.3, self.level + (q_in - q_out) / 1000 / self.area_m2 * dt))


@dataclass
class Model:
    facility: Facility
    rnd: random.Random
    state: dict[str, float] = field(default_factory=dict)

    def advance(self, env: Env, dt: float) -> None:
        raise NotImplementedError

    def value(self, sensor: Sensor, env: Env) -> float:
        raise NotImplementedError

    def hazards(self, env: Env) -> set[Hazard]:
        """What really puts the facility at risk now (the physics, noise-free)."""
        raise NotImplementedError

    def noise(self, sd: float) -> float:
        return self.rnd.gauss(0.0, sd)

    def cover_m(self, sensor: Sensor) -> float | None:
        """The level at which this water-level gauge is under water (its manhole's cover);
        None when the model has no cover for it."""
        return None


def _free_level(q: float, d: float, qf: float) -> float:
    """Level (m over the invert) of flow ``q`` in a pipe of crown ``d`` and capacity ``qf``
    with a free outfall: part-full, then surcharged (pressure flow)."""
    r = max(0.0, q) / qf
    return d * r ** 0.6 if r <= 1 else d + SURCHARGE_HEAD_M * (r * r - 1)


class DrainageModel(Model):
    def __init__(self, facility: Facility, rnd: random.Random) -> None:
        super().__init__(facility, rnd)
        self.c = rnd.uniform(20, 30)  # runoff L/s per mm/h (catchment ~10 ha, coefficient 0.6)
        self.tau = rnd.uniform(600, 1200)  # catchment lag, s (~0.6 × a 10-ha Tc of 15-30 min)
        self.storm_flow = 0.0
        self.recession = rnd.uniform(20, 40)  # L/s: the last rain's interflow, draining off
        self.infiltration = rnd.uniform(0.5, 2.0)  # L/s: groundwater into the pipe
        self.history: deque[tuple[float, float]] = deque()  # (t, passed + spilled) downstream
        self.pond_cm = 0.0  # underpass
        self.pond_m3 = 0.0  # water spilled around the manhole cover
        self.spill = 0.0  # L/s over the road to the next manhole now
        self.passed = 0.0  # L/s through the pipe now
        self.h = 0.0  # true level over the invert, m
        self.pumps = PumpSet(400, 800, 3.0, 3.6, 2.5, 1.5, rnd.uniform(1.5, 2.5))
        self.gauge: dict[str, float] = {}  # rain gauge id -> mm collected since last report
        self.rain_steps: deque[float] = deque()  # mm per step over the last 3 hours
        self.rain_hour: deque[float] = deque()  # … and over the last hour
        self.rain_1h = self.rain_3h = 0.0
        self.upstream = 0.0
        self.misconnected = False  # sewage in this storm pipe: misconnected here or upstream
        level = next((s for s in facility.sensors if s.metric is Metric.WATER_LEVEL
                      and not s.id.endswith("W1")), None)
        self.crown = (level.pipe_diameter_m or 1.0) if level is not None else 1.0
        self.qf = FULL_BORE_LS * self.crown ** (13 / 6)
        self.has_rain = any(s.metric is Metric.RAINFALL for s in facility.sensors)
        self.has_pond = any(s.metric is Metric.PONDING_DEPTH for s in facility.sensors)
        self.is_station = any(s.id.endswith("W1") for s in facility.sensors)
        self.is_manhole = level is not None

    def dry_flow(self, env: Env) -> float:
        """Dry-weather flow: infiltration, the recession, and a misconnection's sewage."""
        mis = env.incident(IncidentKind.MISCONNECTION)
        sewage = 60 * diurnal(env.local_hour) * mis[0].severity if mis else 0.0
        self.misconnected = mis is not None or env.upstream_misconnected
        return self.infiltration + self.recession + sewage

    def advance(self, env: Env, dt: float) -> None:
        inflow = self.c * env.rain_mm_h
        self.storm_flow += (inflow - self.storm_flow) * (1 - math.exp(-dt / self.tau))
        self.recession += 0.05 * self.storm_flow * dt / 10800 - self.recession * dt / 10800
        self.upstream = env.upstream_flow
        step_mm = env.rain_mm_h * dt / 3600
        self.rain_1h += step_mm
        self.rain_hour.append(step_mm)
        if len(self.rain_hour) > round(3600 / dt):
            self.rain_1h -= self.rain_hour.popleft()
        self.rain_3h += step_mm
        self.rain_steps.append(step_mm)
        if len(self.rain_steps) > round(10800 / dt):
            self.rain_3h -= self.rain_steps.popleft()
        for sid in self.gauge:
            self.gauge[sid] += step_mm
        # Underpass: inlets take 30 mm/h; above it water collects (cm).
        excess = env.rain_mm_h - 30
        self.pond_cm = max(0.0, self.pond_cm + (1.5 * excess / 60 if excess > 0 else -0.6)
                           * dt / 60)
        if self.is_manhole:
            self._route(env, dt)
        if self.is_station:  # fed by the network and its own catchment (40 % to the well)
            self.pumps.advance(env.t, 20 + 0.4 * self.storm_flow + env.upstream_flow,
                               env.pumps_down, dt, WET_WELL_DEPTH_M)

    def _route(self, env: Env, dt: float) -> None:
        """The manhole: what passes the pipe, what spills over the cover, the level."""
        blocked = env.incident(IncidentKind.BLOCKAGE)
        q_in = self.dry_flow(env) + self.storm_flow + self.upstream
        bw = env.backwater_m
        # The largest flow that passes with the water at the cover.
        q_cap = self.qf * math.sqrt((COVER_M - self.crown) / SURCHARGE_HEAD_M + 1)
        if bw is not None:
            q_cap = min(q_cap, self.qf * math.sqrt(max(0.0, COVER_M - bw) / SURCHARGE_HEAD_M))
        if blocked is not None:  # debris: the pipe passes a fraction of its capacity
            q_cap *= 1 - 0.8 * min(1.0, blocked[1] / 0.3) * min(1.0, blocked[0].severity)
        back = min(self.pond_m3 * 1000 / dt, 200.0, max(0.0, q_cap - q_in))
        self.pond_m3 -= back * dt / 1000
        q = q_in + back
        spilled = max(0.0, q - q_cap)
        self.passed = q - spilled
        self.pond_m3 += 0.5 * spilled * dt / 1000
        self.spill = 0.5 * spilled
        h = _free_level(self.passed, self.crown, self.qf)
        if bw is not None:
            h = max(h, bw + SURCHARGE_HEAD_M * (self.passed / self.qf) ** 2)
        if blocked is not None:  # backed up behind the debris, to the cover at severity 1
            h += (COVER_M - h) * min(1.0, blocked[1] / 0.3) * blocked[0].severity
        self.h = min(COVER_M, h) if spilled == 0 else COVER_M
        self.history.append((env.t, self.passed + self.spill))
        while self.history and self.history[0][0] < env.t - ROUTE_DELAY_S - 300:
            self.history.popleft()

    def delayed_outflow(self, t: float) -> float:
        """What left this manhole ten minutes ago — through the pipe and over the road —
        and reaches the next one now."""
        for ht, q in self.history:
            if ht >= t - ROUTE_DELAY_S:
                return q
        return self.passed + self.spill

    def hazards(self, env: Env) -> set[Hazard]:
        out: set[Hazard] = set()
        if self.is_manhole:
            if self.h > self.crown:
                out.add(Hazard.SURCHARGE)
            if self.h >= COVER_M - 1e-9 or self.pond_m3 > 1.0:
                out.add(Hazard.OVERFLOW)
            # Sewage in the storm pipe — from a misconnection here or carried down from one
            # upstream (what a dry-weather check finds at every manhole below it).
            if env.incident(IncidentKind.MISCONNECTION) or env.upstream_misconnected:
                out.add(Hazard.MISCONNECTION)
            if env.incident(IncidentKind.COVER_OPEN):
                out.add(Hazard.COVER_OPEN)
        if self.has_rain and (self.rain_1h >= 20 or self.rain_3h >= 50):
            out.add(Hazard.HEAVY_RAIN)
        if self.has_pond and self.pond_cm >= 10:
            out.add(Hazard.PONDING)
        if self.is_station:
            if self.pumps.level > 4.0 - GAUGE_TOLERANCE_M:
                out.add(Hazard.WET_WELL_HIGH)
            if env.pumps_down:
                out.add(Hazard.PUMPS_DOWN)
        return out

    def value(self, sensor: Sensor, env: Env) -> float:
        m = sensor.metric
        if m is Metric.RAINFALL:
            mm = self.gauge.get(sensor.id, 0.0)
            self.gauge[sensor.id] = 0.0  # the bucket is read: what fell since the last report
            return round(mm, 2)
        if m is Metric.FLOW:
            return max(0.0, self.passed + self.noise(3))
        if m is Metric.WATER_LEVEL:
            if sensor.id.endswith("W1"):  # pump station wet well
                return self.pumps.level + self.noise(0.01)
            if env.incident(IncidentKind.COVER_OPEN):
                return sensor.range[0]  # the gauge under the lifted cover sees the road
            if self.h < GAUGE_FLOOR_M:
                return GAUGE_FLOOR_M  # the radar's floor: exactly, again and again
            return min(COVER_M, self.h + self.noise(0.003))
        if m is Metric.PONDING_DEPTH:
            return self.pond_cm
        if m is Metric.COVER_STATE:  # the smart cover's tilt switch
            return 1.0 if env.incident(IncidentKind.COVER_OPEN) else 0.0
        if m is Metric.PUMP_STATE:
            return 1.0 if self.pumps.running else 0.0
        if m is Metric.PUMP_CURRENT:
            if not self.pumps.running:
                return 0.0
            draw_down = max(0.0, 3.0 - self.pumps.level)
            return 190 + 25 * self.pumps.running + 8 * draw_down + self.noise(4)
        raise KeyError(m)

    def register_gauge(self, sensor: Sensor) -> None:
        self.gauge.setdefault(sensor.id, 0.0)

    def cover_m(self, sensor: Sensor) -> float | None:
        if sensor.metric is Metric.WATER_LEVEL and not sensor.id.endswith("W1"):
            return COVER_M
        return None


class BridgeModel(Model):
    def __init__(self, facility: Facility, rnd: random.Random) -> None:
        super().__init__(facility, rnd)
        self.temp = 18.0
        self.truck = 0.0  # load of the vehicle on the span now, in design trucks
        self.convoy = False
        self.viv = 0.0  # vortex-induced vibration amplitude, m/s²

    def advance(self, env: Env, dt: float) -> None:
        self.temp = 18 + 7 * math.sin((env.local_hour - 9) / 24 * 2 * math.pi)
        heavy = env.incident(IncidentKind.HEAVY_TRAFFIC)
        rate = 6 / 3600 if heavy is None else 1 / 12  # heavy vehicles per second
        self.convoy = heavy is not None
        self.truck = self.rnd.uniform(0.6, 1.0) if self.rnd.random() < rate * dt else 0.0
        over = env.incident(IncidentKind.OVERLOAD)
        if over is not None:
            self.truck = max(self.truck, 2.5 * over[0].severity)
        viv = env.incident(IncidentKind.VORTEX_VIBRATION)
        self.viv = 0.0 if viv is None else 2.0 * math.sqrt(2) * viv[0].severity

    def stiffness(self, env: Env) -> float:
        """EI now relative to new: progressive loss and strikes (at least 10 % left)."""
        loss = 0.0
        d = env.incident(IncidentKind.BRIDGE_DAMAGE)
        if d is not None:
            loss += 0.6 * min(1.0, d[1] * d[0].severity)
        s = env.incident(IncidentKind.BRIDGE_STRIKE)
        if s is not None:
            loss += 0.3 * s[0].severity
        return max(0.1, 1 - loss)

    def progress(self, env: Env) -> float:
        d = env.incident(IncidentKind.BRIDGE_DAMAGE)
        return 0.0 if d is None else min(1.0, d[1] * d[0].severity)

    def _step(self, env: Env, kind: IncidentKind) -> float:
        found = env.incident(kind)
        return 0.0 if found is None else found[0].severity

    def live_mm(self, env: Env) -> float:
        return TRUCK_MM * self.truck / self.stiffness(env)

    def physical(self, m: Metric, env: Env) -> float:
        """The noise-free response (canonical units)."""
        dT, k, p = self.temp - 18, self.stiffness(env), self.progress(env)
        if m is Metric.TEMPERATURE:
            return self.temp
        if m is Metric.DEFLECTION:
            return 4 + 0.35 * dT + DEAD_LOAD_MM * (1 / k - 1) + self.live_mm(env)
        if m is Metric.STRAIN:
            return 120 + 8 * dT + 60 * (1 / k - 1) + TRUCK_UE * self.truck / k
        if m is Metric.ACCELERATION:
            if self.convoy:
                return 2.3
            return 0.15 + 1.4 * min(1.0, self.truck) / math.sqrt(k)
        if m is Metric.CRACK_WIDTH:
            return (0.12 + 0.004 * dT + 0.45 * p * p
                    + 0.15 * self._step(env, IncidentKind.BRIDGE_STRIKE))
        if m is Metric.BEARING_DISPLACEMENT:
            return 5 + 0.5 * dT + 50 * p + 40 * self._step(env, IncidentKind.BEARING_SLIP)
        if m is Metric.TILT:
            return 0.05 + 0.4 * p + 0.3 * self._step(env, IncidentKind.PIER_TILT)
        raise KeyError(m)

    def hazards(self, env: Env) -> set[Hazard]:
        out: set[Hazard] = set()
        if (self.stiffness(env) <= 0.8 or self.physical(Metric.CRACK_WIDTH, env) >= 0.3
                or self.physical(Metric.BEARING_DISPLACEMENT, env) >= 40
                or self.physical(Metric.TILT, env) >= 0.3):
            out.add(Hazard.STRUCTURAL_DAMAGE)
        if self.live_mm(env) > 2 * TRUCK_MM:
            out.add(Hazard.OVERLOAD)
        if self.convoy or self.viv / math.sqrt(2) >= 1.5:
            out.add(Hazard.VIBRATION)
        return out

    def value(self, sensor: Sensor, env: Env) -> float:
        m = sensor.metric
        v = self.physical(m, env)
        if m is Metric.TEMPERATURE:
            return v + self.noise(0.2)
        if m is Metric.DEFLECTION:
            return v + self.noise(0.3)
        if m is Metric.STRAIN:
            return v + self.noise(4)
        if m is Metric.ACCELERATION:
            if self.convoy:
                return abs(v + self.noise(0.3))
            viv = abs(self.viv * math.sin(self.rnd.uniform(0, 2 * math.pi))) if self.viv else 0.0
            return abs(0.15 + self.noise(0.08)) + (v - 0.15) + viv
        if m is Metric.CRACK_WIDTH:
            return v + self.noise(0.002)
        if m is Metric.BEARING_DISPLACEMENT:
            return v + self.noise(0.3)
        if m is Metric.TILT:
            return v + self.noise(0.003)
        raise KeyError(m)


_SEWAGE_NOISE: dict[Metric, float] = {
    Metric.H2S: 0.3, Metric.CH4: 0.4, Metric.CO: 0.6, Metric.O2: 0.04, Metric.FLOW: 8.0,
    Metric.COD: 15.0, Metric.NH3N: 1.5, Metric.PH: 0.05}  # sensor noise, sd


def sewer_temperature(day_of_year: int, local_hour: float) -> float:
    """Sewer air temperature, °C: 22 ± 6 over the year (warmest late July), ±1.5 a day."""
    return (22 + 6 * math.cos(2 * math.pi * (day_of_year - 210) / 365)
            + 1.5 * diurnal(local_hour))


class SewageModel(Model):
    def __init__(self, facility: Facility, rnd: random.Random) -> None:
        super().__init__(facility, rnd)
        self.pumps = PumpSet(100, 300, 3.5, 4.2, 2.5, 1.5, rnd.uniform(1.5, 3.0))
        self.rain = 0.0
        self.base = rnd.uniform(450, 650)
        self.is_well = any(s.id.endswith("W1") for s in facility.sensors)

    def advance(self, env: Env, dt: float) -> None:
        self.rain = env.rain_mm_h
        q_in = 60 + 60 * diurnal(env.local_hour) + 3 * env.rain_mm_h  # L/s
        self.pumps.advance(env.t, q_in, env.pumps_down, dt, 8.0)

    def gas(self, env: Env) -> float:
        """The incidents' gas, 0 (none) … ~2.3 (a dredging release at severity 1)."""
        gas = env.incident(IncidentKind.TOXIC_GAS)
        g = min(1.0, gas[1] / 0.3) * gas[0].severity if gas else 0.0  # build-up, then held
        rel = env.incident(IncidentKind.GAS_RELEASE)
        if rel is not None:  # dredging: fast, to the plateau within the ramp, then held
            g += 1.3 * min(1.0, rel[1] * rel[0].duration_s / GAS_RELEASE_RAMP_S) * rel[0].severity
        return g

    def spill(self, env: Env) -> float:
        spill = env.incident(IncidentKind.ILLEGAL_DISCHARGE)
        return math.sin(math.pi * spill[1]) * spill[0].severity if spill else 0.0  # a pulse

    def dilution(self, env: Env) -> float:
        """The sewage's share of the flow: rain inflow at 8 L/s per mm/h dilutes it."""
        sewage = self.base * (0.6 + 0.8 * diurnal(env.local_hour))
        return sewage / (sewage + 8 * self.rain)

    def physical(self, m: Metric, env: Env) -> float:
        h, g, s = env.local_hour, self.gas(env), self.spill(env)
        if m is Metric.H2S:
            warm = math.exp(math.log(1.07) * (sewer_temperature(env.day_of_year, h) - 20))
            since = env.t - self.pumps.last_start_t
            stripped = 3 * math.exp(-since / 300) if since >= 0 else 0.0
            return 2 * warm + 0.5 * diurnal(h) + stripped + 70 * g
        if m is Metric.CH4:
            return 3 + 0.5 * diurnal(h) + 35 * g
        if m is Metric.CO:
            return 4 + 3 * g
        if m is Metric.O2:
            return 20.8 - 0.6 * g
        if m is Metric.FLOW:
            return self.base * (0.6 + 0.8 * diurnal(h)) + 8 * self.rain
        if m is Metric.COD:
            w = self.dilution(env)
            return (250 + 60 * diurnal(h)) * w + 30 * (1 - w) + 700 * s
        if m is Metric.NH3N:
            return (25 + 5 * diurnal(h)) * self.dilution(env) + 40 * s
        if m is Metric.PH:
            return 7.2 - 1.4 * s
        raise KeyError(m)

    def hazards(self, env: Env) -> set[Hazard]:
        out: set[Hazard] = set()
        metrics = self.facility.metrics
        if metrics & {Metric.H2S, Metric.CO, Metric.O2} and (
                self.physical(Metric.H2S, env) >= 10 or self.physical(Metric.CO, env) >= 20
                or self.physical(Metric.O2, env) < 19.5):
            out.add(Hazard.TOXIC_GAS)
        if Metric.CH4 in metrics and self.physical(Metric.CH4, env) >= 25:
            out.add(Hazard.EXPLOSIVE_GAS)
        if metrics & {Metric.COD, Metric.NH3N, Metric.PH} and (
                self.physical(Metric.COD, env) > 500 or self.physical(Metric.NH3N, env) > 45
                or not 6 <= self.physical(Metric.PH, env) <= 9):
            out.add(Hazard.POLLUTION)
        if self.is_well:
            if self.pumps.level > 5.0 - GAUGE_TOLERANCE_M:
                out.add(Hazard.WET_WELL_HIGH)
            if self.pumps.level >= WEIR_CREST_M - GAUGE_TOLERANCE_M:
                out.add(Hazard.SEWAGE_OVERFLOW)  # raw sewage over the weir to the river
            if env.pumps_down:
                out.add(Hazard.PUMPS_DOWN)
        elif Metric.WATER_LEVEL in metrics and self.manhole_level(env) > 3.5:
            out.add(Hazard.SURCHARGE)
        return out

    def manhole_level(self, env: Env) -> float:
        blocked = env.incident(IncidentKind.BLOCKAGE)
        extra = 3.6 * min(1.0, blocked[1] / 0.3) * blocked[0].severity if blocked else 0.0
        return min(SEWER_COVER_M, 1.2 + 0.3 * diurnal(env.local_hour) + 0.01 * self.rain
                   + extra)

    def value(self, sensor: Sensor, env: Env) -> float:
        m = sensor.metric
        if m is Metric.WATER_LEVEL:
            if sensor.id.endswith("W1"):  # pumping well
                return self.pumps.level + self.noise(0.01)
            return min(SEWER_COVER_M, self.manhole_level(env) + self.noise(0.01))
        if m is Metric.PUMP_STATE:
            return 1.0 if self.pumps.running else 0.0
        v = self.physical(m, env) + self.noise(_SEWAGE_NOISE[m])
        return max(0.0, v) if m in (Metric.H2S, Metric.CH4, Metric.CO) else v

    def cover_m(self, sensor: Sensor) -> float | None:
        if sensor.metric is Metric.WATER_LEVEL and not sensor.id.endswith("W1"):
            return SEWER_COVER_M
        return None


# --------------------------------------------------------------------- issue 18's duties


def _lag(current: float, target: float, tau_s: float, dt: float) -> float:
    """One step of a first-order lag (a linear reservoir) towards ``target``."""
    return current + (target - current) * (1 - math.exp(-dt / tau_s))


class _RainGauges:
    """Tipping-bucket gauges of a facility: mm collected since each one's last report."""

    def __init__(self, facility: Facility) -> None:
        self.mm = {s.id: 0.0 for s in facility.sensors if s.metric is Metric.RAINFALL}

    def collect(self, rain_mm_h: float, dt: float) -> None:
        for sid in self.mm:
            self.mm[sid] += rain_mm_h * dt / 3600

    def read(self, sensor: Sensor) -> float:
        mm, self.mm[sensor.id] = self.mm.get(sensor.id, 0.0), 0.0
        return round(mm, 2)


def regional_pm10(day_of_year: int, local_hour: float) -> float:
    """The district's background PM10, µg/m³ (every site and the background station see
    it alike): 45 ± 20 over the year (worst mid-January), +15 at the morning and evening
    inversions, +40 on the haze days (one in ten, the same everywhere on a given day)."""
    haze = 40.0 if random.Random(f"haze {day_of_year}").random() < 0.1 else 0.0
    season = 20 * math.cos(2 * math.pi * (day_of_year - 15) / 365)
    return 45 + season + 15 * diurnal(local_hour) + haze


def _works(local_hour: float) -> float:
    """Share of the site's machinery working: 07:00-12:00 and 13:00-18:00, 0.3 at lunch."""
    if 7 <= local_hour < 12 or 13 <= local_hour < 18:
        return 1.0
    return 0.3 if 12 <= local_hour < 13 else 0.0


def _db_sum(*levels: float) -> float:
    """Energy sum of sound levels, dB(A)."""
    return 10 * math.log10(sum(10 ** (v / 10) for v in levels))


DUST_EXCESS_UG = 80.0  # the site's hourly excess over the background that is a risk
DUST_WARNING_UG = 150.0  # the city's hourly PM10 warning at the site's boundary (Wuhan)
DUST_WORKS_UG = 20.0  # … its own share at least this: the site is working, not only the air
NOISE_DAY_DBA, NOISE_NIGHT_DBA = 70.0, 55.0  # GB 12523-2011, day 06:00-22:00
STRONG_WIND_MS = 10.8  # Beaufort force 6


class SiteModel(Model):
    """A construction site's dust, noise and wind (see the module docstring)."""

    def __init__(self, facility: Facility, rnd: random.Random) -> None:
        super().__init__(facility, rnd)
        self.base = rnd.uniform(30, 50)  # µg/m³ of the works' dust at the monitor at 1 m/s
        self.works_db = rnd.uniform(62, 67)
        self.wind_offset = rnd.uniform(-0.3, 0.3)
        self.background_only = Metric.SPRAY_STATE not in facility.metrics
        self.spray = False
        self.wind = 2.5
        self.background = 45.0
        self.excess = 0.0  # the site's own PM10 at the monitor now
        self.noise_dba = 50.0
        self.hour: deque[float] = deque()  # the site's excess per step over the last hour
        self.hour_sum = 0.0
        self.hour_total: deque[float] = deque()  # … and PM10 at the monitor (with the air)
        self.total_sum = 0.0
        self.steps_per_hour = 360

    def advance(self, env: Env, dt: float) -> None:
        h = env.local_hour
        self.wind = max(0.3, 2.5 + 1.5 * math.sin(2 * math.pi * (h - 8) / 24) + self.wind_offset)
        self.background = regional_pm10(env.day_of_year, h)
        trucks = env.incident(IncidentKind.HEAVY_TRAFFIC)
        sev = trucks[0].severity if trucks is not None else 0.0
        if self.background_only:
            self.excess = 0.0
        else:
            emission = (self.base * _works(h) + 250 * sev
                        + 8 * max(0.0, self.wind - 5) ** 2)
            self.excess = emission * (1 - 0.6 * self.spray) * 2 / (1 + self.wind)
            pm10 = self.background + self.excess  # what the site's controller sees
            self.spray = pm10 >= 100 or (self.spray and pm10 >= 70)
        day = 6 <= h < 22
        levels = [50.0 if day else 42.0]
        if not self.background_only:
            levels += [self.works_db] * (_works(h) > 0) + [72.0] * (sev > 0)
        self.noise_dba = _db_sum(*levels)
        self.steps_per_hour = round(3600 / dt)
        self.hour.append(self.excess)
        self.hour_sum += self.excess
        if len(self.hour) > self.steps_per_hour:
            self.hour_sum -= self.hour.popleft()
        total = self.background + self.excess
        self.hour_total.append(total)
        self.total_sum += total
        if len(self.hour_total) > self.steps_per_hour:
            self.total_sum -= self.hour_total.popleft()

    @property
    def hourly_excess(self) -> float:
        return self.hour_sum / len(self.hour) if self.hour else 0.0

    @property
    def hourly_pm10(self) -> float:
        return self.total_sum / len(self.hour_total) if self.hour_total else 0.0

    def physical(self, m: Metric, env: Env) -> float:
        bg, x = self.background, self.excess
        if m is Metric.PM10:
            return bg + x
        if m is Metric.PM25:
            return 0.55 * bg + 0.2 * x
        if m is Metric.TSP:
            return 1.8 * bg + 2.5 * x
        if m is Metric.NOISE:
            return self.noise_dba
        if m is Metric.WIND_SPEED:
            return self.wind
        if m is Metric.WIND_DIRECTION:
            return 120.0 if 9 <= env.local_hour < 20 else 280.0
        if m is Metric.SPRAY_STATE:
            return 1.0 if self.spray else 0.0
        raise KeyError(m)

    def hazards(self, env: Env) -> set[Hazard]:
        out: set[Hazard] = set()
        metrics = self.facility.metrics
        # Dust: the site's own hourly excess is large, or the air at its boundary is over
        # the city's warning with the site's works in it (a haze day and muck trucks). The
        # background alone (the site idle) is never the site's hazard.
        excess = self.hourly_excess
        if metrics & {Metric.PM10, Metric.PM25, Metric.TSP} and (
                excess >= DUST_EXCESS_UG
                or (excess >= DUST_WORKS_UG and self.hourly_pm10 >= DUST_WARNING_UG)):
            out.add(Hazard.DUST)
        limit = NOISE_DAY_DBA if 6 <= env.local_hour < 22 else NOISE_NIGHT_DBA
        if Metric.NOISE in metrics and self.noise_dba >= limit:
            out.add(Hazard.NOISE)
        if Metric.WIND_SPEED in metrics and self.wind >= STRONG_WIND_MS:
            out.add(Hazard.STRONG_WIND)
        return out

    def value(self, sensor: Sensor, env: Env) -> float:
        m = sensor.metric
        v = self.physical(m, env)
        if m in (Metric.PM10, Metric.PM25, Metric.TSP):
            return max(0.0, v * (1 + self.noise(0.05)))  # a light-scattering monitor, ±5 %
        if m is Metric.NOISE:
            return v + self.noise(0.5)
        if m is Metric.WIND_SPEED:
            return max(0.0, v + self.noise(0.3))
        if m is Metric.WIND_DIRECTION:
            return (v + self.noise(15)) % 360
        return v


PLANT_DESIGN_LS = 1157.0  # 100,000 m³/d: the example plant's design flow (assumed)
# Inflow: sewage and extraneous (infiltration, rain) water, mg/L.
_SEWAGE_MG_L = {Metric.COD: 330.0, Metric.BOD5: 150.0, Metric.NH3N: 30.0, Metric.TN: 40.0,
                Metric.TP: 4.5}
_EXTRANEOUS_MG_L = {Metric.COD: 20.0, Metric.BOD5: 4.0, Metric.NH3N: 1.0, Metric.TN: 2.0,
                    Metric.TP: 0.1}
_SLUG_MG_L = {Metric.COD: 3000.0, Metric.BOD5: 900.0, Metric.NH3N: 150.0, Metric.TN: 180.0,
              Metric.TP: 10.0}
# Treatment: what no process removes, and the share of the rest removed at design load.
_FLOOR_MG_L = {Metric.COD: 12.0, Metric.BOD5: 2.0, Metric.NH3N: 0.5, Metric.TN: 1.5,
               Metric.TP: 0.05}
_REMOVAL = {Metric.COD: 0.93, Metric.BOD5: 0.97, Metric.NH3N: 0.97, Metric.TN: 0.75,
            Metric.TP: 0.93}
GRADE_1A_MG_L = {Metric.COD: 50.0, Metric.BOD5: 10.0, Metric.NH3N: 5.0, Metric.TN: 15.0,
                 Metric.TP: 0.5}
"""GB 18918-2002 grade 1A, daily mean (NH3-N 5; 8 at water temperatures ≤ 12 °C)."""


def is_effluent(sensor: Sensor) -> bool:
    """A treatment plant's effluent sensor (its id holds ``-EF-``); the others read the
    inflow."""
    return "-EF-" in sensor.id


class PlantModel(Model):
    """A treatment plant's inflow (sewage diluted by infiltration and rain) and effluent."""

    def __init__(self, facility: Facility, rnd: random.Random) -> None:
        super().__init__(facility, rnd)
        self.infiltration = rnd.uniform(0.15, 0.30) * PLANT_DESIGN_LS
        self.rdii = 0.0  # rain-derived inflow, L/s
        self.tail = 0.0  # its slow part (interflow), L/s
        self.sewage = 0.55 * PLANT_DESIGN_LS
        self.slug = 0.0
        self.inflow = {m: _SEWAGE_MG_L[m] for m in _SEWAGE_MG_L}
        self.effluent = {m: _FLOOR_MG_L[m] + (c - _FLOOR_MG_L[m]) * (1 - _REMOVAL[m])
                         for m, c in self.inflow.items()}
        self.gauges = _RainGauges(facility)

    @property
    def extraneous(self) -> float:
        return self.infiltration + self.rdii + self.tail

    @property
    def flow(self) -> float:
        return self.sewage + self.extraneous + self.slug

    def advance(self, env: Env, dt: float) -> None:
        self.gauges.collect(env.rain_mm_h, dt)
        self.sewage = 0.55 * PLANT_DESIGN_LS * (0.7 + 0.6 * diurnal(env.local_hour))
        self.rdii = _lag(self.rdii, 0.027 * PLANT_DESIGN_LS * env.rain_mm_h, 5400, dt)
        self.tail = _lag(self.tail, 0.3 * self.rdii, 43200, dt)
        spill = env.incident(IncidentKind.ILLEGAL_DISCHARGE)
        self.slug = 50 * spill[0].severity if spill is not None else 0.0
        q = self.flow
        overload = max(0.0, q / PLANT_DESIGN_LS - 1)
        for m in self.inflow:
            self.inflow[m] = (self.sewage * _SEWAGE_MG_L[m] + self.extraneous
                              * _EXTRANEOUS_MG_L[m] + self.slug * _SLUG_MG_L[m]) / q
            removal = _REMOVAL[m] * (1 - 0.5 * overload)
            if spill is not None and m in (Metric.NH3N, Metric.TN):
                removal *= 0.5  # the slug inhibits nitrification
            floor = _FLOOR_MG_L[m]
            target = floor + max(0.0, self.inflow[m] - floor) * (1 - max(0.0, removal))
            self.effluent[m] = _lag(self.effluent[m], target, 6 * 3600, dt)

    def hazards(self, env: Env) -> set[Hazard]:
        out: set[Hazard] = set()
        effluent = {s.metric for s in self.facility.sensors if is_effluent(s)}
        if any(self.effluent[m] >= GRADE_1A_MG_L[m] for m in effluent if m in GRADE_1A_MG_L):
            out.add(Hazard.EFFLUENT_EXCEEDANCE)
        if Metric.FLOW in self.facility.metrics and self.extraneous >= 0.5 * self.flow:
            out.add(Hazard.INFLOW_DILUTION)
        return out

    def value(self, sensor: Sensor, env: Env) -> float:
        m = sensor.metric
        if m is Metric.RAINFALL:
            return self.gauges.read(sensor)
        if m is Metric.FLOW:
            return max(0.0, self.flow + self.noise(10.0))
        if m in self.inflow:
            v = self.effluent[m] if is_effluent(sensor) else self.inflow[m]
            return max(0.0, v * (1 + self.noise(0.03)))  # online analysers, ±3 %
        raise KeyError(m)


OUTFALL_TIDE = Boundary(districts=["*"], mean_m=1.2, spring_range_m=4.5, neap_range_m=2.2)
"""The tidal river at an outfall when the runner gives no boundary: m over the outfall
invert, a 4.5 m spring range (of the Oujiang estuary's order: assumed)."""
OUTFALL_PIPE_M = 1.5  # DN1500 storm pipe
OUTFALL_STORE_M2 = 600.0  # water surface of the pipe behind a shut flap gate
OUTFALL_GROUND_M = 3.5  # the ground behind the outfall, over its invert
OUTFALL_NEAR_M = 0.5  # the storm pipe this close to the ground is near flooding (truth)
OUTFALL_WARNING_M = 4.0  # the river's warning level over the outfall invert (assumed)


def is_river_gauge(sensor: Sensor) -> bool:
    """An outfall's river/tide level gauge (its id ends in ``T1``); other levels are the
    storm pipe's."""
    return sensor.metric is Metric.WATER_LEVEL and sensor.id.endswith("T1")


class OutfallModel(Model):
    """A storm outfall to a tidal river behind a flap gate (see the module docstring)."""

    def __init__(self, facility: Facility, rnd: random.Random) -> None:
        super().__init__(facility, rnd)
        self.c = rnd.uniform(40, 80)  # runoff L/s per mm/h
        self.storm = 0.0
        self.sewage = 0.0
        self.river = OUTFALL_TIDE.mean_m
        self.h = 0.0
        self.gate_shut = False
        self.event_mm = 0.0  # rain of the current event so far (first flush)
        self.dry_s = 0.0  # seconds since it last rained
        self.qf = FULL_BORE_LS * OUTFALL_PIPE_M ** (13 / 6)
        self.gauges = _RainGauges(facility)

    @property
    def flow(self) -> float:
        return 0.5 + self.storm + self.sewage

    def advance(self, env: Env, dt: float) -> None:
        self.gauges.collect(env.rain_mm_h, dt)
        if env.rain_mm_h > 0:
            self.event_mm += env.rain_mm_h * dt / 3600
            self.dry_s = 0.0
        else:
            self.dry_s += dt
            if self.dry_s >= 6 * 3600:
                self.event_mm = 0.0
        self.storm = _lag(self.storm, self.c * env.rain_mm_h, 1200, dt)
        mis = env.incident(IncidentKind.MISCONNECTION)
        self.sewage = 40 * diurnal(env.local_hour) * mis[0].severity if mis else 0.0
        self.river = (env.backwater_m if env.backwater_m is not None
                      else outfall_level(OUTFALL_TIDE, env.t))
        free = _free_level(self.flow, OUTFALL_PIPE_M, self.qf)
        self.gate_shut = self.river >= max(self.h, free) and self.river > free
        if self.gate_shut:  # the river holds the gate shut: the pipe stores its inflow
            self.h = min(OUTFALL_GROUND_M, max(self.h, free)
                         + self.flow * dt / 1000 / OUTFALL_STORE_M2)
        else:
            self.h = max(free, min(self.h, self.river))

    def cod(self) -> float:
        runoff = 60 + 150 * math.exp(-self.event_mm / 5)
        total = 0.5 * 25 + self.storm * runoff + self.sewage * 300
        return total / self.flow

    def hazards(self, env: Env) -> set[Hazard]:
        out: set[Hazard] = set()
        if env.incident(IncidentKind.MISCONNECTION):
            out.add(Hazard.MISCONNECTION)
        if self.h >= OUTFALL_GROUND_M - 1e-9:
            out.add(Hazard.OVERFLOW)
        if self.h >= OUTFALL_GROUND_M - OUTFALL_NEAR_M:
            out.add(Hazard.SURCHARGE)  # stored behind a shut gate to within 0.5 m of the ground
        if any(is_river_gauge(s) for s in self.facility.sensors) \
                and self.river >= OUTFALL_WARNING_M:
            out.add(Hazard.HIGH_WATER)
        return out

    def value(self, sensor: Sensor, env: Env) -> float:
        m = sensor.metric
        if m is Metric.RAINFALL:
            return self.gauges.read(sensor)
        if m is Metric.WATER_LEVEL:
            if is_river_gauge(sensor):
                return self.river + self.noise(0.01)
            return max(GAUGE_FLOOR_M, self.h + self.noise(0.003))
        if m is Metric.FLOW:
            return max(0.0, self.flow + self.noise(1.0))
        if m is Metric.COD:
            return max(0.0, self.cod() * (1 + self.noise(0.05)))
        raise KeyError(m)


TILT_DANGER_DEG = math.degrees(math.atan(0.007))  # a 0.7 % tilt ratio
CRACK_DANGER_MM = 5.0
SETTLEMENT_DANGER_MM_30D = 4.0
MOVING_S = 86400.0  # a house is moving for a day after an excavation's step (truth)


class BuildingModel(Model):
    """A self-built house on soft clay; ``pier_tilt`` is nearby excavation."""

    def __init__(self, facility: Facility, rnd: random.Random) -> None:
        super().__init__(facility, rnd)
        # The house as built and surveyed: the same in every scenario (a generator of the
        # facility's own), so scenarios run one after another on one stack see one house —
        # not a crack that jumps by a millimetre between them (a 30-day rate alarm).
        house = random.Random(f"house {facility.id}")
        self.tilt0 = house.uniform(0.05, 0.20)  # deg, surveyed when the sensor was installed
        self.settle0 = house.uniform(2.0, 8.0)  # mm
        self.crack0 = house.uniform(0.3, 1.0)  # mm
        self.height_m = house.uniform(9.0, 15.0)  # the GNSS antenna on the roof
        self.excavation_s: float | None = None  # seconds since nearby excavation began
        self.severity = 0.0
        self.daily: deque[tuple[float, float]] = deque()  # (t, settlement) once an hour

    def advance(self, env: Env, dt: float) -> None:
        found = env.incident(IncidentKind.PIER_TILT)
        self.excavation_s = env.elapsed_s(IncidentKind.PIER_TILT)
        self.severity = found[0].severity if found is not None else 0.0
        if not self.daily or env.t - self.daily[-1][0] >= 3600:
            self.daily.append((env.t, self.physical(Metric.SETTLEMENT, env)))
            while self.daily[0][0] < env.t - 30 * 86400:
                self.daily.popleft()

    def _excavation(self, tau_days: float) -> float:
        """0 … 1: how far the consolidation after the excavation has gone."""
        if self.excavation_s is None:
            return 0.0
        return self.severity * (1 - math.exp(-self.excavation_s / (tau_days * 86400)))

    def tilt_change(self) -> float:
        """Tilt since installation, deg: the excavation's step and tail."""
        step = 0.2 * self.severity if self.excavation_s is not None else 0.0
        return step + 0.1 * self._excavation(10)

    def physical(self, m: Metric, env: Env) -> float:
        days = env.t / 86400
        sun = math.sin(2 * math.pi * (env.local_hour - 8) / 24)  # the façade warmest at 14:00
        if m is Metric.TILT:
            return self.tilt0 + 0.005 * sun + self.tilt_change()
        if m is Metric.SETTLEMENT:
            exc = 8 * self._excavation(3)
            if self.excavation_s is not None:
                exc += 0.15 * self.severity * self.excavation_s / 86400
            return self.settle0 + 0.05 * days + exc
        if m is Metric.CRACK_WIDTH:
            return self.crack0 + 0.02 * sun + 1.5 * self._excavation(5)
        if m is Metric.GNSS_DISPLACEMENT:
            return self.height_m * 1000 * math.tan(math.radians(self.tilt_change()))
        raise KeyError(m)

    def settlement_rate_30d(self) -> float | None:
        """Settlement per 30 days over the known history (None: less than a day of it)."""
        if len(self.daily) < 2 or self.daily[-1][0] - self.daily[0][0] < 86400:
            return None
        (t0, s0), (t1, s1) = self.daily[0], self.daily[-1]
        return (s1 - s0) / (t1 - t0) * 30 * 86400

    def hazards(self, env: Env) -> set[Hazard]:
        metrics = self.facility.metrics
        rate = self.settlement_rate_30d()
        danger = ((Metric.TILT in metrics
                   and self.physical(Metric.TILT, env) >= TILT_DANGER_DEG)
                  or (Metric.CRACK_WIDTH in metrics
                      and self.physical(Metric.CRACK_WIDTH, env) >= CRACK_DANGER_MM)
                  or (Metric.SETTLEMENT in metrics and rate is not None
                      and rate > SETTLEMENT_DANGER_MM_30D)
                  # The excavation's step: the house moves now (GB 50497: a sudden change
                  # is an alarm at once, whatever the totals).
                  or (self.excavation_s is not None and self.excavation_s < MOVING_S))
        return {Hazard.BUILDING_DANGER} if danger else set()

    def value(self, sensor: Sensor, env: Env) -> float:
        m = sensor.metric
        sd = {Metric.TILT: 0.002, Metric.SETTLEMENT: 0.3, Metric.CRACK_WIDTH: 0.005,
              Metric.GNSS_DISPLACEMENT: 3.0}[m]
        return self.physical(m, env) + self.noise(sd)


# The physics of each facility kind (a new kind needs its model: docs/contributing.md).
MODELS: dict[FacilityKind, Callable[[Facility, random.Random], Model]] = {
    FacilityKind.DRAINAGE: DrainageModel, FacilityKind.BRIDGE: BridgeModel,
    FacilityKind.SEWAGE: SewageModel, FacilityKind.SITE: SiteModel,
    FacilityKind.PLANT: PlantModel, FacilityKind.OUTFALL: OutfallModel,
    FacilityKind.BUILDING: BuildingModel}


def model_for(facility: Facility, rnd: random.Random) -> Model:
    make = MODELS.get(facility.kind)
    if make is None:
        raise ValueError(f"no simulator model for facility kind {facility.kind!r} "
                         f"({facility.id})")
    model = make(facility, rnd)
    if isinstance(model, DrainageModel):
        for s in facility.sensors:
            if s.metric is Metric.RAINFALL:
                model.register_gauge(s)
    return model
