"""A plain steady-state simulator: every registered sensor near a plausible normal value.

Values follow each metric's usual level with noise and a daily cycle; a sensor can be
pushed over its most severe threshold (``breach``) to produce alarms on purpose. The
physically realistic per-kind simulators and scenarios come on top of this.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from schemas.codec import TELEMETRY
from schemas.kinds import FacilityKind, Metric
from schemas.registry import Direction, Facility, Registry, Sensor, Signal
from schemas.telemetry import telemetry_topic

# metric -> (normal mean, noise sd, daily-cycle amplitude), canonical units
NORMAL: dict[Metric, tuple[float, float, float]] = {
    Metric.RAINFALL: (0.0, 0.0, 0.0),
    Metric.WATER_LEVEL: (0.8, 0.03, 0.1),
    Metric.PONDING_DEPTH: (0.0, 0.0, 0.0),
    Metric.FLOW: (120.0, 8.0, 40.0),
    Metric.PUMP_STATE: (0.0, 0.0, 0.0),
    Metric.PUMP_CURRENT: (0.0, 0.0, 0.0),
    Metric.COVER_STATE: (0.0, 0.0, 0.0),
    Metric.DEFLECTION: (5.0, 0.8, 3.0),
    Metric.STRAIN: (120.0, 8.0, 30.0),
    Metric.CRACK_WIDTH: (0.12, 0.002, 0.01),
    Metric.TILT: (0.05, 0.004, 0.01),
    Metric.ACCELERATION: (0.2, 0.05, 0.0),
    Metric.TEMPERATURE: (18.0, 0.3, 6.0),
    Metric.BEARING_DISPLACEMENT: (5.0, 0.5, 4.0),
    Metric.H2S: (2.0, 0.4, 0.5),
    Metric.CH4: (3.0, 0.5, 0.5),
    Metric.CO: (4.0, 0.8, 1.0),
    Metric.O2: (20.8, 0.05, 0.0),
    Metric.COD: (250.0, 20.0, 60.0),
    Metric.NH3N: (25.0, 2.0, 5.0),
    Metric.PH: (7.2, 0.08, 0.1),
    Metric.NH3: (0.5, 0.1, 0.1),
    Metric.SO2: (0.2, 0.05, 0.05),
    Metric.CL2: (0.05, 0.01, 0.0),
    # The other duties (decision 0020): a clean day at a site, the plant's inflow, a house.
    Metric.PM10: (60.0, 6.0, 15.0),
    Metric.PM25: (35.0, 4.0, 8.0),
    Metric.TSP: (150.0, 15.0, 30.0),
    Metric.NOISE: (48.0, 1.5, 3.0),
    Metric.WIND_SPEED: (2.5, 0.5, 1.0),
    Metric.WIND_DIRECTION: (90.0, 20.0, 0.0),
    Metric.SPRAY_STATE: (1.0, 0.0, 0.0),
    Metric.BOD5: (150.0, 10.0, 30.0),
    Metric.TN: (40.0, 2.0, 6.0),
    Metric.TP: (4.5, 0.3, 0.8),
    Metric.SETTLEMENT: (12.0, 0.05, 0.0),
    Metric.GNSS_DISPLACEMENT: (2.0, 0.5, 0.0),
}
# Where the same metric reads differently by the facility's kind or the sensor's place: a
# plant's effluent (treated, under GB 18918 grade 1A), a storm outfall in dry weather
# (a near-empty pipe, rain-water COD).
EFFLUENT: dict[Metric, tuple[float, float, float]] = {
    Metric.COD: (22.0, 2.0, 3.0), Metric.BOD5: (4.0, 0.5, 1.0), Metric.NH3N: (1.0, 0.2, 0.3),
    Metric.TN: (9.0, 0.5, 1.0), Metric.TP: (0.2, 0.03, 0.05)}
OUTFALL: dict[Metric, tuple[float, float, float]] = {
    Metric.WATER_LEVEL: (0.03, 0.005, 0.0), Metric.COD: (20.0, 3.0, 0.0)}


def breach_value(sensor: Sensor) -> float:
    """A value beyond the worst level of the sensor's first value rule, inside its range."""
    lo, hi = sensor.range
    span = hi - lo
    rules = [r for r in sensor.rules if r.signal is Signal.VALUE]
    if not rules:
        raise ValueError(f"sensor {sensor.id} has no value rule to breach")
    rule = next((r for r in rules if r.direction is Direction.UPPER), rules[0])
    worst = rule.ordered_levels()[-1]
    if rule.direction is Direction.UPPER:
        return float(min(hi, worst.raise_at + 0.05 * span))
    return float(max(lo, worst.raise_at - 0.05 * span))


@dataclass
class _Gateway:
    facility: Facility
    seq: int = 0
    next_due: dict[str, float] = field(default_factory=dict)


def _normal(f: Facility, s: Sensor) -> tuple[float, float, float]:
    """A calm day's mean, noise and daily swing of sensor ``s`` of facility ``f``."""
    if f.kind is FacilityKind.PLANT and "-EF-" in s.id and s.metric in EFFLUENT:
        return EFFLUENT[s.metric]
    if f.kind is FacilityKind.OUTFALL and s.metric in OUTFALL and not s.id.endswith("T1"):
        return OUTFALL[s.metric]  # the pipe (the river gauge, "T1", reads the tide)
    return NORMAL[s.metric]


class SteadySimulator:
    """Produces ``(topic, payload)`` gateway reports for a simulated clock."""

    def __init__(self, registry: Registry, *, seed: int = 1, scale: int = 1) -> None:
        self.rnd = random.Random(seed)
        self.gateways = [_Gateway(f) for f in registry.facilities]
        self.sensors = {s.id: s for f in registry.facilities for s in f.sensors}
        self._normal = {s.id: _normal(f, s) for f in registry.facilities for s in f.sensors}
        self.overrides: dict[str, float] = {}
        self._phase = {sid: self.rnd.uniform(0, 2 * math.pi) for sid in self.sensors}

    def breach(self, sensor_id: str, value: float | None = None) -> float:
        """Hold ``sensor_id`` at ``value`` (default: past its worst threshold)."""
        sensor = self.sensors.get(sensor_id)
        if sensor is None:
            raise KeyError(f"no sensor {sensor_id!r} in the registry")
        v = breach_value(sensor) if value is None else value
        self.overrides[sensor_id] = v
        self._due_now(sensor_id)
        return v

    def release(self, sensor_id: str) -> None:
        self.overrides.pop(sensor_id, None)
        self._due_now(sensor_id)

    def _due_now(self, sensor_id: str) -> None:
        # A gateway reports a changed channel at once (report-on-change), not at its interval.
        for gw in self.gateways:
            if sensor_id in gw.next_due:
                gw.next_due[sensor_id] = 0.0

    def value(self, sensor: Sensor, t: float) -> float:
        if sensor.id in self.overrides:
            return self.overrides[sensor.id]
        mean, sd, amp = self._normal.get(sensor.id) or NORMAL[sensor.metric]
        day = 2 * math.pi * (t % 86400) / 86400
        v = mean + amp * math.sin(day + self._phase[sensor.id]) + self.rnd.gauss(0, sd)
        lo, hi = sensor.range
        return round(min(hi, max(lo, v)), 4)

    def reports(self, t: float) -> list[tuple[str, bytes]]:
        """The reports due at simulated epoch second ``t`` (each gateway at most one)."""
        out = []
        for gw in self.gateways:
            due = []
            for s in gw.facility.sensors:
                if gw.next_due.get(s.id, 0.0) <= t:
                    due.append(s)
                    gw.next_due[s.id] = t + s.interval_s
            if not due:
                continue
            gw.seq += 1
            body = TELEMETRY.encode_plain(
                t, gw.seq, [{"sensor": s.id, "metric": s.metric.value,
                             "value": self.value(s, t), "unit": s.unit} for s in due])
            out.append((telemetry_topic(gw.facility.kind.value, gw.facility.id), body))
        return out
