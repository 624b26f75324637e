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
from schemas.kinds import Metric
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
}


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


class SteadySimulator:
    """Produces ``(topic, payload)`` gateway reports for a simulated clock."""

    def __init__(self, registry: Registry, *, seed: int = 1, scale: int = 1) -> None:
        self.rnd = random.Random(seed)
        self.gateways = [_Gateway(f) for f in registry.facilities]
        self.sensors = {s.id: s for f in registry.facilities for s in f.sensors}
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
        mean, sd, amp = NORMAL[sensor.metric]
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
