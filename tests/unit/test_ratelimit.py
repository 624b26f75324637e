"""Per-gateway rate limits in ingest (services/ingest/ratelimit.py)."""

from __future__ import annotations

from services.ingest.ratelimit import GatewayLimiter, gateway_of


def test_bucket_allows_a_burst_then_the_rate() -> None:
    lim = GatewayLimiter(rate=10, burst=100)
    assert sum(lim.allow("A", 0.0) for _ in range(150)) == 100  # the burst
    assert sum(lim.allow("A", 1.0) for _ in range(50)) == 10  # then 10 per second
    assert all(lim.allow("B", 1.0) for _ in range(100))  # others are not affected


def test_bucket_refills_to_the_burst_only() -> None:
    lim = GatewayLimiter(rate=10, burst=5)
    assert sum(lim.allow("A", 0.0) for _ in range(5)) == 5
    assert sum(lim.allow("A", 3600.0) for _ in range(50)) == 5


def test_invented_topics_cannot_grow_memory() -> None:
    lim = GatewayLimiter(rate=1, burst=1, max_keys=1000)
    for i in range(10_000):
        lim.allow(f"fake-{i}", 0.0)
    assert len(lim._buckets) == 1000


def test_gateway_of_topic() -> None:
    assert gateway_of("lifeline/drainage/DR-BH-001/telemetry") == "DR-BH-001"
    assert gateway_of("x" * 500) == "x" * 100
