"""Per-gateway rate limits: one flooding gateway must not starve the others.

A token bucket per facility (the topic's ``{facility_id}``): ``rate`` messages per second
on average, bursts up to ``burst`` — enough for a gateway emptying its store-and-forward
queue after an outage. The number of buckets is bounded (least recently seen dropped), so
a client inventing topics cannot grow ingest's memory.
"""

from __future__ import annotations

from services.core.ratelimit import TokenBuckets

# One bucket per gateway (facility).
GatewayLimiter = TokenBuckets


def gateway_of(topic: str) -> str:
    """The facility segment of ``lifeline/{kind}/{facility}/telemetry`` (or the topic)."""
    parts = topic.split("/")
    return parts[2] if len(parts) == 4 else topic[:100]
