"""What a sensor's signals need beyond its window: recent readings for a step change, daily
exceedance counts, and the baseline learned per local hour of day.

All of it is fed in-order readings only (a reading older than the sensor's newest is in the
window, not here), works on *local* time (event time plus the registry zone's UTC offset,
in ms: ``local // DAY_MS`` is the local day, ``local % DAY_MS`` the time of day), is bounded
whatever a gateway sends, and saves to JSON exactly (floats round-trip), so a restored
state continues as if never saved.

- :class:`Steps`: the newest ``2k`` readings; ``step(k)`` is the median of the newest ``k``
  minus the median of the ``k`` before (``k = 1``: the difference of consecutive readings).
  One spike is one of ``k`` in its median group, so for ``k >= 3`` it moves neither median
  beyond the range of the other readings: a spike is not a step.
- :class:`DailyCount`: exceedances of a limit in one local calendar day, from 0 at local
  midnight. Of the value: each reading strictly above the limit counts, a reading counted
  once however often it is replayed. Of a windowed signal: clock-aligned periods of the
  window's length (``00:00-00:15``, …: the window must divide the day) are judged each once,
  at the first reading after the period ended, by the signal over exactly that period; a
  period belongs to the day it starts in (the day's last is judged just after midnight,
  counted to the day before, and that reading sees the day before's count — from the next
  one on, the new day counts from 0).
- :class:`Baseline`: 48 estimates (24 local hours × weekday/weekend), each the
  exponentially weighted mean and variance of that hour's mean reading, folded in once the
  hour is over (so today's hour never judges itself), weight ``max(1/n, 1/memory_days)``
  for its ``n``-th day (the first days: the plain mean and population variance). The
  night's minimum (``night_from``-``night_to``) likewise, folded one night late so last
  night is judged against the nights before it. Days are local; 1970-01-01 was a Thursday.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import median
from typing import Any

from schemas.registry import Baseline as BaselineSpec

HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def _fold(est: list[Any], x: float, memory_days: int) -> None:
    """Fold one day's ``x`` into ``est = [mean, variance, days]``."""
    n = est[2] + 1
    a = max(1.0 / n, 1.0 / memory_days)
    d = x - est[0]
    est[0] += a * d
    est[1] = (1.0 - a) * (est[1] + a * d * d)
    est[2] = n


def _against(x: float, est: list[Any], spec: BaselineSpec, spreads: bool) -> float | None:
    """``x`` minus the learned mean (in spreads if asked); None while not learned."""
    if est[2] < spec.min_days:
        return None
    d = float(x - est[0])
    if not spreads:
        return d
    spread = max(math.sqrt(est[1]), spec.spread_floor)
    return d / spread if spread > 0 else None


def _ms(t: Any) -> int:
    return int((t.hour * 3600 + t.minute * 60 + t.second) * 1000 + t.microsecond // 1000)


class Steps:
    """The newest readings of a sensor, as many as its step rules compare."""

    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: list[list[Any]] = []  # [ts ms, value], oldest first

    def add(self, ts: int, value: float, keep: int) -> None:
        """A reading at ``ts``: the newest (kept), the same time as the newest (replaces
        it) or older (ignored: it was already seen)."""
        s = self.samples
        if s and ts <= s[-1][0]:
            if ts == s[-1][0]:
                s[-1] = [ts, value]
            return
        s.append([ts, value])
        if len(s) > keep:
            del s[:len(s) - keep]

    def step(self, k: int) -> float | None:
        """Median of the newest ``k`` readings minus that of the ``k`` before; None until
        there are ``2k``."""
        s = self.samples
        if len(s) < 2 * k:
            return None
        return float(median(v for _, v in s[-k:]) - median(v for _, v in s[-2 * k:-k]))

    def to_json(self) -> list[Any]:
        return self.samples

    @classmethod
    def from_json(cls, raw: list[Any]) -> Steps:
        s = cls()
        s.samples = [[int(t), float(v)] for t, v in raw]
        return s


class DailyCount:
    """Exceedances of one count rule in one local day (see the module docstring)."""

    __slots__ = ("day", "judged", "last", "n")

    def __init__(self) -> None:
        self.day = 0  # local day index the count is of
        self.n = 0
        # Of the value: event time of the newest reading seen; windowed: index of the newest
        # period judged (local ms // window). None: nothing yet.
        self.last: int | None = None
        self.judged: int | None = None  # event time of the reading that judged periods

    def _count(self, day: int, hit: bool) -> None:
        if day != self.day:
            self.day, self.n = day, 0
        if hit:
            self.n += 1

    def reading(self, ts: int, local: int, value: float, above: float) -> None:
        """Count a reading of the value (once, however often it is replayed)."""
        if self.last is not None and ts <= self.last:
            return
        self.last = ts
        self._count(local // DAY_MS, value > above)

    def periods(self, ts: int, local: int, period_ms: int, above: float,
                signal_before: Callable[[int], float | None]) -> None:
        """Judge the periods ended before the one ``local`` is in, each once; only the last
        two can still have samples in the window (it keeps two periods).
        ``signal_before(end)`` is the signal over the period ending at event time ``end``."""
        now = local // period_ms
        first = now - 2 if self.last is None else max(self.last + 1, now - 2)
        if first >= now:
            return
        offset = local - ts
        for p in range(first, now):
            x = signal_before((p + 1) * period_ms - offset)
            self._count(p * period_ms // DAY_MS, x is not None and x > above)
        self.last = now - 1
        self.judged = ts

    def signal(self, ts: int, local: int) -> float:
        """The count for the reading at ``ts``: its day's, or the day before's at the
        reading that judged the day before's last period."""
        if self.judged == ts or self.day == local // DAY_MS:
            return float(self.n)
        return 0.0

    def to_json(self) -> list[Any]:
        return [self.day, self.n, self.last, self.judged]

    @classmethod
    def from_json(cls, raw: list[Any]) -> DailyCount:
        c = cls()
        c.day, c.n = int(raw[0]), int(raw[1])
        c.last = None if raw[2] is None else int(raw[2])
        c.judged = None if raw[3] is None else int(raw[3])
        return c


class Baseline:
    """A sensor's learned usual per local hour and day type, and its nights."""

    __slots__ = ("hour", "hours", "last_night", "night", "nights")

    def __init__(self) -> None:
        self.hour: list[Any] | None = None  # the hour in progress: [local hour index, sum, n]
        self.hours: list[list[Any]] = [[0.0, 0.0, 0] for _ in range(48)]  # [mean, var, days]
        self.night: list[Any] | None = None  # the night in progress: [local day, minimum]
        self.last_night: list[Any] | None = None  # the newest night over: [local day, minimum]
        self.nights: list[Any] = [0.0, 0.0, 0]  # nights before last_night: [mean, var, n]

    @staticmethod
    def bucket(local: int) -> int:
        """0-23: a weekday's local hour; 24-47: a weekend day's."""
        day = local // DAY_MS
        weekend = (day + 3) % 7 >= 5  # day 0 was a Thursday
        return (24 if weekend else 0) + local % DAY_MS // HOUR_MS

    def add(self, local: int, value: float, spec: BaselineSpec) -> None:
        """A reading newer than any before, at local time ``local``."""
        h = local // HOUR_MS
        acc = self.hour
        if acc is not None and acc[0] != h:  # the hour is over: one more day learned
            _fold(self.hours[self.bucket(acc[0] * HOUR_MS)], acc[1] / acc[2], spec.memory_days)
            acc = None
        if acc is None:
            acc = self.hour = [h, 0.0, 0]
        acc[1] += value
        acc[2] += 1
        day, tod = local // DAY_MS, local % DAY_MS
        night = self.night
        if night is not None and (day > night[0] or tod >= _ms(spec.night_to)):
            if self.last_night is not None:
                _fold(self.nights, self.last_night[1], spec.memory_days)
            self.last_night = night
            night = self.night = None
        if _ms(spec.night_from) <= tod < _ms(spec.night_to):
            if night is None:
                self.night = [day, value]
            elif value < night[1]:
                night[1] = value

    def deviation(self, local: int, x: float, spec: BaselineSpec,
                  spreads: bool) -> float | None:
        """``x`` against the usual of ``local``'s hour and day type."""
        return _against(x, self.hours[self.bucket(local)], spec, spreads)

    def night_minimum(self, local: int, spec: BaselineSpec,
                      relative: str | None) -> float | None:
        """Last night's minimum (raw, or against the nights before); None when the sensor
        said nothing in the newest night window that is over."""
        last = self.last_night
        day, tod = local // DAY_MS, local % DAY_MS
        expected = day if tod >= _ms(spec.night_to) else day - 1
        if last is None or last[0] != expected:
            return None
        if relative is None:
            return float(last[1])
        return _against(last[1], self.nights, spec, relative == "spreads")

    def to_json(self) -> list[Any]:
        return [self.hour, self.hours, self.night, self.last_night, self.nights]

    @classmethod
    def from_json(cls, raw: list[Any]) -> Baseline:
        b = cls()
        hour, hours, night, last, nights = raw
        b.hour = None if hour is None else [int(hour[0]), float(hour[1]), int(hour[2])]
        b.hours = [[float(m), float(v), int(n)] for m, v, n in hours]
        b.night = None if night is None else [int(night[0]), float(night[1])]
        b.last_night = None if last is None else [int(last[0]), float(last[1])]
        b.nights = [float(nights[0]), float(nights[1]), int(nights[2])]
        return b
