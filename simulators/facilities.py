"""Facility models: the physics, simple and documented, that make a facility's sensors
move together the way the real ones do.

Every model advances in fixed simulated steps (``advance``) and answers the current value
of any of its sensors (``value``, canonical units). Which quantities a facility has comes
from its registry sensors, so one model per kind covers every facility of that kind.

Drainage (per facility, parameters drawn from the seed):
  - rainfall: the district's design storm (simulators/weather.py); a gauge reports the
    depth collected during its interval;
  - catchment: runoff ``c × rain`` (L/s per mm/h) through a linear reservoir with lag
    ``tau`` (attenuation and delay), plus half of the upstream manhole's storm flow ten
    minutes later (facilities of one district, upstream → downstream by number);
  - pipe / manhole level from flow (normal-depth shape ``h = h0 + k Q^0.8``), capped at
    the cover (3.0 m): overflow;
  - pump station: the wet well (400 m², 8 m deep) fills with inflow (50 L/s dry weather
    plus 40 % of the catchment's runoff of the rain falling now), pumps (1,200 L/s) start
    at 3.0 m and stop at 1.5 m; a pump failure or a power failure stops them (state 0,
    current 0) and the well fills — a storm fills it metres an hour;
  - underpass ponding: rain above 30 mm/h (the inlets' capacity) collects, 1.5 cm per
    minute per 60 mm/h of excess, and drains at 0.6 cm per minute.
Bridge: daily temperature cycle (peak 15:00 local) driving deflection, strain and bearing
  displacement; traffic noise with heavy vehicles (Poisson, ~6 per hour) as deflection,
  strain and acceleration bursts; damage as stiffness loss (deflection / s), crack growth,
  bearing displacement and pier tilt growing with the incident's progress.
Sewage: diurnal flow and level (low at 04:00, peaks morning and evening), rain
  infiltration; COD / NH3-N / pH with noise and an illegal-discharge pulse; H2S and CH4
  build-up in manholes (toxic_gas: over 30 % of the incident) and a fast release when
  dredging stirs up the sludge (gas_release: to the plateau within 20 minutes); a pumping
  well (100 m²) cycling its pumps, stopped by a pump or power failure; blockages raising
  the level.

Level gauges under a cover (manholes) know where the cover is (``cover_m``): the scenario
runner drowns a gauge with a ``submerged`` fault while the water is there.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas.kinds import FacilityKind, Metric
from schemas.registry import Facility, Sensor
from schemas.scenario import GAS_RELEASE_RAMP_S, Incident, IncidentKind

COVER_M = 3.0  # drainage manhole: water at the cover is overflow
SEWER_COVER_M = 5.0  # sewer manhole depth (its gauge's range)
WET_WELL_DEPTH_M = 8.0  # pump station wet well: above it the station floods


@dataclass
class Env:
    """What a model sees at a step: rain over its district, its incidents, its upstream."""

    t: float
    local_hour: float
    rain_mm_h: float
    incidents: list[tuple[Incident, float]]  # (incident, progress 0..1) active now
    upstream_flow: float = 0.0

    def incident(self, kind: IncidentKind) -> tuple[Incident, float] | None:
        return next(((i, p) for i, p in self.incidents if i.kind is kind), None)

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
class Model:
    facility: Facility
    rnd: random.Random
    state: dict[str, float] = field(default_factory=dict)

    def advance(self, env: Env, dt: float) -> None:
        raise NotImplementedError

    def value(self, sensor: Sensor, env: Env) -> float:
        raise NotImplementedError

    def noise(self, sd: float) -> float:
        return self.rnd.gauss(0.0, sd)

    def cover_m(self, sensor: Sensor) -> float | None:
        """The level at which this water-level gauge is under water (its manhole's cover);
        None when the model has no cover for it."""
        return None


class DrainageModel(Model):
    def __init__(self, facility: Facility, rnd: random.Random) -> None:
        super().__init__(facility, rnd)
        self.c = rnd.uniform(20, 30)  # runoff L/s per mm/h (catchment ~10 ha, coefficient 0.6)
        self.tau = rnd.uniform(900, 1800)  # catchment lag, s
        self.storm_flow = 0.0
        self.history: deque[tuple[float, float]] = deque()  # (t, storm flow) for downstream
        self.pond_cm = 0.0
        self.wet_m = rnd.uniform(1.5, 2.5)
        self.pump_on = False
        self.gauge: dict[str, float] = {}  # rain gauge id -> mm collected since last report
        self.rain = 0.0
        self.base = 100 + rnd.uniform(-15, 15)
        self.upstream = 0.0

    def advance(self, env: Env, dt: float) -> None:
        self.rain = env.rain_mm_h
        inflow = self.c * env.rain_mm_h
        self.storm_flow += (inflow - self.storm_flow) * (1 - math.exp(-dt / self.tau))
        self.upstream = env.upstream_flow
        self.history.append((env.t, self.storm_flow))
        while self.history and self.history[0][0] < env.t - 900:
            self.history.popleft()
        for sid in self.gauge:
            self.gauge[sid] += env.rain_mm_h * dt / 3600
        # Underpass: inlets take 30 mm/h; above it water collects (cm).
        excess = env.rain_mm_h - 30
        self.pond_cm = max(0.0, self.pond_cm + (1.5 * excess / 60 if excess > 0 else -0.6)
                           * dt / 60)
        # Pump station wet well (400 m²): inflow vs the pumps' 1,200 L/s.
        failed = env.pumps_down
        q_in = 50 + 0.4 * self.c * env.rain_mm_h
        if self.wet_m >= 3.0 and not failed:
            self.pump_on = True
        if self.wet_m <= 1.5 or failed:
            self.pump_on = False
        q_out = 1200 if self.pump_on else 0
        self.wet_m = min(WET_WELL_DEPTH_M,
                         max(0.3, self.wet_m + (q_in - q_out) / 1000 / 400 * dt))

    def delayed_storm_flow(self, t: float) -> float:
        """This manhole's storm flow ten minutes ago (what reaches the next one now)."""
        for ht, q in self.history:
            if ht >= t - 600:
                return q
        return self.storm_flow

    def flow(self, env: Env) -> float:
        return self.base * (0.7 + 0.6 * diurnal(env.local_hour)) + self.storm_flow + \
            0.5 * self.upstream

    def value(self, sensor: Sensor, env: Env) -> float:
        m = sensor.metric
        if m is Metric.RAINFALL:
            mm = self.gauge.get(sensor.id, 0.0)
            self.gauge[sensor.id] = 0.0  # the bucket is read: what fell since the last report
            return round(mm, 2)
        if m is Metric.FLOW:
            return self.flow(env) + self.noise(3)
        if m is Metric.WATER_LEVEL:
            if sensor.id.endswith("W1"):  # pump station wet well
                return self.wet_m + self.noise(0.01)
            blocked = env.incident(IncidentKind.BLOCKAGE)
            extra = 2.6 * min(1.0, blocked[1] / 0.3) * blocked[0].severity if blocked else 0.0
            h = 0.5 + 1.6 * float((self.flow(env) / 1000) ** 0.8) + extra + self.noise(0.01)
            return min(COVER_M, h)  # water at the cover: overflow
        if m is Metric.PONDING_DEPTH:
            return self.pond_cm
        if m is Metric.PUMP_STATE:
            return 1.0 if self.pump_on else 0.0
        if m is Metric.PUMP_CURRENT:
            return 250 + self.noise(4) if self.pump_on else 0.0
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
        self.truck = 0.0  # load of the vehicle on the span now, 0..1
        self.convoy = False

    def advance(self, env: Env, dt: float) -> None:
        self.temp = 18 + 7 * math.sin((env.local_hour - 9) / 24 * 2 * math.pi)
        heavy = env.incident(IncidentKind.HEAVY_TRAFFIC)
        rate = 6 / 3600 if heavy is None else 1 / 12  # heavy vehicles per second
        self.convoy = heavy is not None
        self.truck = self.rnd.uniform(0.6, 1.0) if self.rnd.random() < rate * dt else 0.0

    def damage(self, env: Env) -> float:
        d = env.incident(IncidentKind.BRIDGE_DAMAGE)
        return 0.0 if d is None else min(1.0, d[1] * d[0].severity)

    def value(self, sensor: Sensor, env: Env) -> float:
        m, dT, p = sensor.metric, self.temp - 18, self.damage(env)
        if m is Metric.TEMPERATURE:
            return self.temp + self.noise(0.2)
        if m is Metric.DEFLECTION:
            stiffness = 1 / (1 + 9 * p)
            return (4 + 0.35 * dT) / stiffness + 8 * self.truck + self.noise(0.3)
        if m is Metric.STRAIN:
            return 120 + 8 * dT + 150 * self.truck + 150 * p + self.noise(4)
        if m is Metric.ACCELERATION:
            if self.convoy:
                return abs(2.3 + self.noise(0.3))
            return abs(0.15 + self.noise(0.08)) + 1.4 * self.truck
        if m is Metric.CRACK_WIDTH:
            return 0.12 + 0.004 * dT + 0.45 * p * p + self.noise(0.002)
        if m is Metric.BEARING_DISPLACEMENT:
            return 5 + 0.5 * dT + 50 * p + self.noise(0.3)
        if m is Metric.TILT:
            return 0.05 + 0.4 * p + self.noise(0.003)
        raise KeyError(m)


class SewageModel(Model):
    def __init__(self, facility: Facility, rnd: random.Random) -> None:
        super().__init__(facility, rnd)
        self.well_m = rnd.uniform(1.5, 3.0)
        self.pump_on = False
        self.rain = 0.0
        self.base = rnd.uniform(450, 650)

    def advance(self, env: Env, dt: float) -> None:
        self.rain = env.rain_mm_h
        failed = env.pumps_down
        q_in = 60 + 60 * diurnal(env.local_hour) + 3 * env.rain_mm_h  # L/s
        if self.well_m >= 3.5 and not failed:
            self.pump_on = True
        if self.well_m <= 1.5 or failed:
            self.pump_on = False
        q_out = 400 if self.pump_on else 0
        self.well_m = max(0.3, self.well_m + (q_in - q_out) / 1000 / 100 * dt)

    def value(self, sensor: Sensor, env: Env) -> float:
        m, h = sensor.metric, env.local_hour
        gas = env.incident(IncidentKind.TOXIC_GAS)
        g = min(1.0, gas[1] / 0.3) * gas[0].severity if gas else 0.0  # build-up, then held
        rel = env.incident(IncidentKind.GAS_RELEASE)
        if rel is not None:  # dredging: fast, to the plateau within the ramp, then held
            g += 1.3 * min(1.0, rel[1] * rel[0].duration_s / GAS_RELEASE_RAMP_S) * rel[0].severity
        spill = env.incident(IncidentKind.ILLEGAL_DISCHARGE)
        s = math.sin(math.pi * spill[1]) * spill[0].severity if spill else 0.0  # a pulse
        if m is Metric.H2S:
            return max(0.0, 2 + 0.5 * diurnal(h) + 70 * g + self.noise(0.3))
        if m is Metric.CH4:
            return max(0.0, 3 + 0.5 * diurnal(h) + 35 * g + self.noise(0.4))
        if m is Metric.CO:
            return max(0.0, 4 + 3 * g + self.noise(0.6))
        if m is Metric.O2:
            return 20.8 - 0.6 * g + self.noise(0.04)
        if m is Metric.FLOW:
            return self.base * (0.6 + 0.8 * diurnal(h)) + 8 * self.rain + self.noise(8)
        if m is Metric.COD:
            return 250 + 60 * diurnal(h) + 700 * s + self.noise(15)
        if m is Metric.NH3N:
            return 25 + 5 * diurnal(h) + 40 * s + self.noise(1.5)
        if m is Metric.PH:
            return 7.2 - 1.4 * s + self.noise(0.05)
        if m is Metric.WATER_LEVEL:
            if sensor.id.endswith("W1"):  # pumping well
                return self.well_m + self.noise(0.01)
            blocked = env.incident(IncidentKind.BLOCKAGE)
            extra = 3.6 * min(1.0, blocked[1] / 0.3) * blocked[0].severity if blocked else 0.0
            return min(SEWER_COVER_M, 1.2 + 0.3 * diurnal(h) + 0.01 * self.rain + extra
                       + self.noise(0.01))
        if m is Metric.PUMP_STATE:
            return 1.0 if self.pump_on else 0.0
        raise KeyError(m)

    def cover_m(self, sensor: Sensor) -> float | None:
        if sensor.metric is Metric.WATER_LEVEL and not sensor.id.endswith("W1"):
            return SEWER_COVER_M
        return None


# The physics of each facility kind (a new kind needs its model: docs/contributing.md).
MODELS: dict[FacilityKind, Callable[[Facility, random.Random], Model]] = {
    FacilityKind.DRAINAGE: DrainageModel, FacilityKind.BRIDGE: BridgeModel,
    FacilityKind.SEWAGE: SewageModel}


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
