"""The diurnal baseline of sewage flow and level: what is normal at this hour of the day.

Sewage follows the town's day (low at night, peaks in the morning and evening), so a
value only means something beside what is usual at that local hour. Per sensor, 24
hourly values (registry time zone) are kept as exponentially weighted means with a
memory of about a week (each reading weighs ``interval_s / (7 × 3600)``), and each
reading is stored with the baseline of its hour as field ``baseline`` — once that hour
has been seen for ``warmup_h`` hours. At start the profiles are rebuilt from the
database's own hourly aggregates of the last seven days (``long.reading_1h``), so a
restart does not forget a week of learning.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from schemas.kinds import FacilityKind, Metric
from schemas.registry import Registry

WATCHED = {Metric.FLOW, Metric.WATER_LEVEL}
MEMORY_S = 7 * 3600  # an hour-slot sees one hour a day: a week of it is seven hours


class DiurnalBaseline:
    def __init__(self, registry: Registry, warmup_h: float = 1.0) -> None:
        self.warmup_h = warmup_h
        self.profiles: dict[tuple[str, str], list[float | None]] = {}
        self.seen: dict[tuple[str, str], list[float]] = {}
        self.use_registry(registry)

    def use_registry(self, registry: Registry) -> None:
        """Watch the sewage flow and level sensors of ``registry`` (at start and after a
        reload): what was learned of sensors still registered is kept, sensors removed are
        forgotten, new ones start warming up."""
        self.zone = ZoneInfo(registry.timezone)
        # (facility, sensor) -> (weight per reading, readings needed before use)
        self.sensors: dict[tuple[str, str], tuple[float, float]] = {
            (f.id, s.id): (min(1.0, s.interval_s / MEMORY_S),
                           self.warmup_h * 3600 / s.interval_s)
            for f in registry.facilities if f.kind is FacilityKind.SEWAGE
            for s in f.sensors if s.metric in WATCHED}
        for gone in [k for k in self.profiles if k not in self.sensors]:
            del self.profiles[gone]
            self.seen.pop(gone, None)

    def watches(self, facility: str, sensor: str) -> bool:
        return (facility, sensor) in self.sensors

    def hour(self, ts_ms: int) -> int:
        return datetime.fromtimestamp(ts_ms / 1000, self.zone).hour

    def update(self, facility: str, sensor: str, ts_ms: int, value: float) -> float | None:
        """Learn from one reading; return the baseline of its hour (None while warming up).

        The baseline returned is the one *before* this reading, so a spike is compared
        with what was usual, not with itself."""
        key = (facility, sensor)
        weight, needed = self.sensors[key]
        h = self.hour(ts_ms)
        prof = self.profiles.setdefault(key, [None] * 24)
        seen = self.seen.setdefault(key, [0.0] * 24)
        before = prof[h]
        prof[h] = value if before is None else before + weight * (value - before)
        seen[h] += 1
        return before if seen[h] > needed and before is not None else None

    def bootstrap(self, rows: Iterable[tuple[str, str, int, float]]) -> int:
        """Rebuild profiles from hourly means (facility, sensor, hour start ms, mean):
        the mean of each local hour over the days given. Returns sensors restored."""
        sums: dict[tuple[str, str], list[list[float]]] = {}
        for fid, sid, t_ms, mean in rows:
            key = (fid, sid)
            if key not in self.sensors or mean is None:
                continue
            slots = sums.setdefault(key, [[0.0, 0.0] for _ in range(24)])
            slot = slots[self.hour(t_ms)]
            slot[0] += mean
            slot[1] += 1
        for key, slots in sums.items():
            _, needed = self.sensors[key]
            self.profiles[key] = [s[0] / s[1] if s[1] else None for s in slots]
            self.seen[key] = [needed + 1 if s[1] else 0.0 for s in slots]
        return len(sums)

