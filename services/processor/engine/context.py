"""Context that crosses facilities: is a district under rain?

The partition key is the facility, so one worker sees only its own facilities' gauges.
Every worker keeps this small map for all districts: it updates it from the gauges it
evaluates itself and from the ``lifeline.context`` topic, where each worker publishes what
its gauges saw (at most once a minute per district). Updates are idempotent (the newest
event time wins), so at-least-once redelivery and several workers give the same map.
"""

from __future__ import annotations

PUBLISH_EVERY_MS = 60_000


class RainContext:
    """Per district: the newest event time (ms) at which one of its gauges had measured at
    least the policy's hourly rainfall."""

    def __init__(self) -> None:
        self.last_rain: dict[str, int] = {}
        self._published: dict[str, int] = {}

    def observe(self, district: str, ts: int) -> bool:
        """A local gauge saw rain at ``ts``; True when other workers should be told."""
        self.apply(district, ts)
        if ts - self._published.get(district, -PUBLISH_EVERY_MS) >= PUBLISH_EVERY_MS:
            self._published[district] = ts
            return True
        return False

    def apply(self, district: str, ts: int) -> None:
        if ts > self.last_rain.get(district, 0):
            self.last_rain[district] = ts

    def raining(self, district: str, at_ms: int, hold_ms: int) -> bool:
        """Rain in the district at or after ``at_ms - hold_ms`` (event time)."""
        last = self.last_rain.get(district)
        return last is not None and last >= at_ms - hold_ms
