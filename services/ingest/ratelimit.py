"""Per-gateway rate limits: one flooding gateway must not starve the others.

A token bucket per facility (the topic's ``{facility_id}``): ``rate`` messages per second
on average, bursts up to ``burst`` — enough for a gateway emptying its store-and-forward
queue after an outage. The number of buckets is bounded (least recently seen dropped), so
a client inventing topics cannot grow ingest's memory.
"""

from __future__ import annotations

from collections import OrderedDict


class GatewayLimiter:
    def __init__(self, rate: float, burst: float, max_gateways: int = 200_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_gateways = max_gateways
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, at]

    def allow(self, key: str, now: float) -> bool:
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = [self.burst, now]
            if len(self._buckets) > self.max_gateways:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
        if b[0] >= 1.0:
            b[0] -= 1.0
            return True
        return False


def gateway_of(topic: str) -> str:
    """The facility segment of ``lifeline/{kind}/{facility}/telemetry`` (or the topic)."""
    parts = topic.split("/")
    return parts[2] if len(parts) == 4 else topic[:100]
