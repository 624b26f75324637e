"""Context that crosses facilities (docs/decisions/0014, 0023).

The partition key is the facility, so one worker sees only its own facilities' sensors.
Every worker keeps this small picture of all districts and of the signals other facilities'
rules read: it updates it from what it evaluates itself and from the ``lifeline.context``
topic, where each worker publishes what its own sensors saw (schemas/context.py). Updates
are idempotent (the newest event time wins, a shared signal's history is keyed by its
time), so at-least-once redelivery and several workers give the same picture.

- **Rain**: per district, the newest event time one of its gauges had measured at least the
  policy's hourly rainfall, and since when its gauges have been heard from without a gap
  of two hours (dry heartbeats, at most one an hour per district): "dry for 3 days" is
  known, not assumed — a day with every gauge silent may have been a wet one.
- **Shared signals**: per (facility, sensor, signal), its recent values by event time; a
  rule reads the newest at or before its own reading's time (an as-of join), so the answer
  does not depend on which worker published first once both are in.
"""

from __future__ import annotations

import bisect

PUBLISH_EVERY_MS = 60_000  # rain: at most one record a minute per district
WET_MM = 0.1  # a gauge's past hour at least this (its resolution): not a dry hour
HEARTBEAT_EVERY_MS = 3_600_000  # dry heartbeats: at most one an hour per district
GAUGES_SILENT_MS = 2 * 3_600_000  # no gauge heard for this long: dry or not is unknown
SHARE_EVERY_MS = 60_000  # a shared signal: at most one record a minute per signal
SHARED_KEEP_MS = 6 * 3_600_000  # how much of a shared signal's history is kept …
SHARED_KEEP_MAX = 720  # … and at most this many values of it

SignalKey = tuple[str, str, str]  # (facility id, sensor id, spec)


class SharedContext:
    """The worker's picture of the other facilities (one per worker, kept on reload)."""

    def __init__(self) -> None:
        self.last_rain: dict[str, int] = {}
        self.last_wet: dict[str, int] = {}  # any measurable rain (rain included)
        self._wet_published: dict[str, int] = {}
        self.first_seen: dict[str, int] = {}  # start of the gauges' current unbroken run
        self.last_seen: dict[str, int] = {}
        self._published: dict[str, int] = {}
        self._heartbeat: dict[str, int] = {}
        self.signals: dict[SignalKey, tuple[list[int], list[float]]] = {}
        self._shared: dict[SignalKey, int] = {}

    # ------------------------------------------------------------------ rain
    def observe(self, district: str, ts: int) -> bool:
        """A local gauge saw rain at ``ts``; True when other workers should be told."""
        self.apply(district, ts)
        if ts - self._published.get(district, -PUBLISH_EVERY_MS) >= PUBLISH_EVERY_MS:
            self._published[district] = ts
            return True
        return False

    def observe_wet(self, district: str, ts: int, mm: float) -> bool:
        """A local gauge measured some rain, under the rain threshold (the start of a storm,
        a drizzle): not dry. True when other workers should be told (once a minute)."""
        self.apply(district, ts, raining=False, mm=mm)
        if ts - self._wet_published.get(district, -PUBLISH_EVERY_MS) >= PUBLISH_EVERY_MS:
            self._wet_published[district] = ts
            return True
        return False

    def observe_dry(self, district: str, ts: int) -> bool:
        """A local gauge reported less than the rain threshold at ``ts``; True when a dry
        heartbeat is due for the other workers."""
        self.apply(district, ts, raining=False)
        if ts - self._heartbeat.get(district, -HEARTBEAT_EVERY_MS) >= HEARTBEAT_EVERY_MS:
            self._heartbeat[district] = ts
            return True
        return False

    def apply(self, district: str, ts: int, raining: bool = True, mm: float = 0.0) -> None:
        if raining and ts > self.last_rain.get(district, 0):
            self.last_rain[district] = ts
        if (raining or mm >= WET_MM) and ts > self.last_wet.get(district, 0):
            self.last_wet[district] = ts
        last = self.last_seen.get(district)
        if last is None or ts - last > GAUGES_SILENT_MS:
            self.first_seen[district] = ts  # heard again after a gap: observed from now
        elif ts < self.first_seen.get(district, ts + 1) \
                and self.first_seen[district] - ts <= GAUGES_SILENT_MS:
            self.first_seen[district] = ts  # a late record of the same run
        if last is None or ts > last:
            self.last_seen[district] = ts

    def raining(self, district: str, at_ms: int, hold_ms: int) -> bool:
        """Rain in the district at or after ``at_ms - hold_ms`` (event time)."""
        last = self.last_rain.get(district)
        return last is not None and last >= at_ms - hold_ms

    def dry_for_ms(self, district: str, at_ms: int) -> int | None:
        """How long (ms) the district is known to have had no rain at ``at_ms``: since any
        of its gauges last measured rain (any amount: a storm's first millimetres count) or
        since its gauges' current unbroken run of reports began. None: not known (no gauge
        heard from, or none for two hours)."""
        first, last = self.first_seen.get(district), self.last_seen.get(district)
        if first is None or last is None or last < at_ms - GAUGES_SILENT_MS:
            return None
        since = max(first, self.last_wet.get(district, first))
        return max(0, at_ms - since)

    # ------------------------------------------------------------------ shared signals
    def share(self, key: SignalKey, ts: int, value: float) -> bool:
        """A local sensor's shared signal at ``ts``; True when other workers should be told."""
        self.put(key, ts, value)
        if ts - self._shared.get(key, -SHARE_EVERY_MS) >= SHARE_EVERY_MS:
            self._shared[key] = ts
            return True
        return False

    def put(self, key: SignalKey, ts: int, value: float) -> None:
        times, values = self.signals.setdefault(key, ([], []))
        i = bisect.bisect_left(times, ts)
        if i < len(times) and times[i] == ts:
            values[i] = value  # the same reading again (redelivery): the same value
            return
        times.insert(i, ts)
        values.insert(i, value)
        keep_after = times[-1] - SHARED_KEEP_MS
        cut = max(bisect.bisect_left(times, keep_after), len(times) - SHARED_KEEP_MAX)
        if cut > 0:
            del times[:cut]
            del values[:cut]

    def as_of(self, key: SignalKey, at_ms: int, max_age_ms: int) -> float | None:
        """The newest value of ``key`` at or before ``at_ms`` and at most ``max_age_ms``
        older; None when there is none."""
        found = self.signals.get(key)
        if found is None:
            return None
        times, values = found
        i = bisect.bisect_right(times, at_ms) - 1
        if i < 0 or times[i] < at_ms - max_age_ms:
            return None
        return values[i]

