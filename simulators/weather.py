"""Design storms: the Chicago hyetograph (Keifer & Chu, 1957) on China's storm-intensity
formula ``i = A (1 + C lg P) / (t + b)^n`` (mm/min, t in minutes, P in years), the form of
GB 50014 (outdoor drainage design). Parameters are placeholders of the right magnitude for
a coastal Zhejiang city (1-year 1-hour rain about 34 mm, 5-year about 50 mm); replace them
with the district's own published formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.scenario import Storm

A, C, B, N = 14.0, 0.7, 12.0, 0.75  # default: true — placeholders, see the module docstring


@dataclass(frozen=True)
class Hyetograph:
    """Instantaneous rain intensity (mm/h) of one design storm over simulated time."""

    start_s: float
    duration_s: float
    return_period_y: float
    peak: float

    @classmethod
    def of(cls, storm: Storm) -> Hyetograph:
        return cls(storm.start_s, storm.duration_s, storm.return_period_y, storm.peak)

    def intensity(self, t: float) -> float:
        """mm/h at simulated second ``t`` (0 outside the storm)."""
        if not self.start_s <= t < self.start_s + self.duration_s:
            return 0.0
        a = A * (1 + C * math.log10(self.return_period_y))
        minutes = (t - self.start_s) / 60
        peak_min = self.peak * self.duration_s / 60
        if minutes < peak_min:
            tt = (peak_min - minutes) / self.peak
        else:
            tt = (minutes - peak_min) / (1 - self.peak)
        mm_per_min: float = a * ((1 - N) * tt + B) / float((tt + B) ** (1 + N))
        return mm_per_min * 60

    def depth_mm(self, t0: float, t1: float, step: float = 10.0) -> float:
        """Rain between ``t0`` and ``t1`` (what a gauge's bucket collects), mm."""
        total, t = 0.0, t0
        while t < t1:
            dt = min(step, t1 - t)
            total += self.intensity(t + dt / 2) * dt / 3600
            t += dt
        return total


class Weather:
    def __init__(self, storms: list[Storm]) -> None:
        self.by_district: dict[str, list[Hyetograph]] = {}
        for s in storms:
            for d in s.districts:
                self.by_district.setdefault(d, []).append(Hyetograph.of(s))

    def rain(self, district: str, t: float) -> float:
        """mm/h over ``district`` at simulated second ``t``."""
        return sum(h.intensity(t) for h in self.by_district.get(district, ()))
