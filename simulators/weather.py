"""Design storms: the Chicago hyetograph (Keifer & Chu, 1957) on China's storm-intensity
formula ``i = A (1 + C lg P) / (t + b)^n`` (mm/min, t in minutes, P in years), the form of
GB 50014 (outdoor drainage design). Parameters are placeholders of the right magnitude for
a coastal Zhejiang city (1-year 1-hour rain about 34 mm, 5-year about 50 mm); replace them
with the district's own published formula.

A typhoon is not a 2-hour design storm: its rain comes in bands of hours at 60–110 mm/h
(Malakas 2016: 69.4 mm/h in 鹿城; 鲇鱼 2016: 109.7 mm/h, 532 mm in 24 h). A storm with
``intensity_mm_h`` is such a band: ``i = I sin²(π x)``-shaped, rising to ``I`` at its
``peak`` (``x`` the position in the band, stretched so that the peak falls there).

Outfall boundaries (``Boundary``): ``level = mean + R(t)/2 cos(2π (t − t_hw) / 12.42 h)
+ surge + river`` in metres above the outfall invert, the range ``R`` swinging from the
spring range to the neap range and back over 14.77 days, surge and river wave sin² bumps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.scenario import SPRING_NEAP_S, TIDE_PERIOD_S, Boundary, Storm

A, C, B, N = 14.0, 0.7, 12.0, 0.75  # default: true — placeholders, see the module docstring


@dataclass(frozen=True)
class Hyetograph:
    """Instantaneous rain intensity (mm/h) of one design storm over simulated time."""

    start_s: float
    duration_s: float
    return_period_y: float
    peak: float
    band_mm_h: float | None = None  # a rain band's peak intensity (None: a design storm)

    @classmethod
    def of(cls, storm: Storm) -> Hyetograph:
        return cls(storm.start_s, storm.duration_s, storm.return_period_y, storm.peak,
                   storm.intensity_mm_h)

    def intensity(self, t: float) -> float:
        """mm/h at simulated second ``t`` (0 outside the storm)."""
        if not self.start_s <= t < self.start_s + self.duration_s:
            return 0.0
        if self.band_mm_h is not None:
            x = (t - self.start_s) / self.duration_s
            y = x / self.peak / 2 if x < self.peak else 0.5 + (x - self.peak) / (1 - self.peak) / 2
            return self.band_mm_h * math.sin(math.pi * y) ** 2
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


def _bump(t: float, peak_s: float, duration_s: float) -> float:
    """0 … 1 … 0: a sin² bump of ``duration_s`` centred at ``peak_s``."""
    x = (t - peak_s) / duration_s + 0.5
    return math.sin(math.pi * x) ** 2 if 0.0 <= x <= 1.0 else 0.0


def outfall_level(b: Boundary, t: float) -> float:
    """The water level at the outfall (m above its invert) at simulated second ``t``."""
    spring = 0.5 + 0.5 * math.cos(2 * math.pi * (t - b.spring_s) / SPRING_NEAP_S)
    tide_range = b.neap_range_m + (b.spring_range_m - b.neap_range_m) * spring
    tide = tide_range / 2 * math.cos(2 * math.pi * (t - b.high_water_s) / TIDE_PERIOD_S)
    return (b.mean_m + tide + b.surge_m * _bump(t, b.surge_peak_s, b.surge_duration_s)
            + b.river_rise_m * _bump(t, b.river_peak_s, b.river_duration_s))


class Outfalls:
    """The outfall boundary of each district that has one."""

    def __init__(self, boundaries: list[Boundary]) -> None:
        self.by_district = {d: b for b in boundaries for d in b.districts}

    def level(self, district: str, t: float) -> tuple[float, bool] | None:
        """(outfall level, tide gate shut) for ``district`` at ``t``; None: a free outfall."""
        b = self.by_district.get(district)
        if b is None:
            return None
        h = outfall_level(b, t)
        return h, b.tide_gate and h > b.gate_sill_m
