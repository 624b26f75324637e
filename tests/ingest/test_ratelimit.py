"""Per-gateway rate limits in ingest (services/ingest/ratelimit.py): the token bucket, and
the rule that tells a store-and-forward backlog from a flood."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.ingest.ratelimit import BACKLOG, LIMITED, LIVE, GatewayLimiter, GatewayPolicy, gateway_of


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


# ---------------------------------------------------------------- backlog or flood
NOW = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def _policy(**over: float) -> GatewayPolicy:
    kw: dict[str, float] = {"rate": 20, "burst": 1000, "hard_rate": 500, "hard_burst": 20000}
    kw.update(over)
    return GatewayPolicy(**kw)  # type: ignore[arg-type]


def test_a_days_backlog_sent_at_once_is_admitted_whole() -> None:
    p = _policy()
    start = NOW - timedelta(days=1)
    lanes = [p.admit("GW", start + timedelta(minutes=i), NOW, 0.0).lane for i in range(1440)]
    assert lanes == [BACKLOG] * 1440  # none of it used the live rate
    # ... so the gateway's live reports beside it are not limited either
    assert all(p.admit("GW", NOW - timedelta(seconds=1), NOW, 0.0).lane == LIVE
               for _ in range(1000))


def test_a_flood_of_one_event_time_is_limited_after_the_burst() -> None:
    p = _policy()
    old = NOW - timedelta(hours=2)
    decisions = [p.admit("GW", old, NOW, 0.0) for _ in range(3000)]
    assert decisions[0].lane == BACKLOG  # the first of them could be a backlog's
    assert sum(d.lane == LIVE for d in decisions) == 1000  # then the burst
    limited = [d for d in decisions if d.lane == LIMITED]
    assert len(limited) == 1999
    assert "over its rate" in limited[0].detail and "repeat or a flood" in limited[0].detail


def test_near_now_and_future_floods_are_not_backlogs() -> None:
    for when in (NOW - timedelta(seconds=5), NOW + timedelta(seconds=30), None):
        p = _policy()
        lanes = [p.admit("GW", when, NOW, 0.0).lane for _ in range(1500)]
        assert BACKLOG not in lanes
        assert lanes.count(LIVE) == 1000 and lanes.count(LIMITED) == 500


def test_a_crawling_flood_gets_one_backlog_report_per_second_of_event_time() -> None:
    p = _policy(burst=10)
    t0 = NOW - timedelta(minutes=10)
    lanes = [p.admit("GW", t0 + timedelta(milliseconds=i), NOW, 0.0).lane
             for i in range(3000)]  # 1 ms apart: 3 s of event time
    assert lanes.count(BACKLOG) == 3 and lanes.count(LIVE) == 10
    assert lanes.count(LIMITED) == 3000 - 13


def test_a_backlog_cannot_go_back_or_repeat() -> None:
    p = _policy(burst=1)
    t = NOW - timedelta(hours=1)
    assert p.admit("GW", t, NOW, 0.0).lane == BACKLOG
    assert p.admit("GW", t - timedelta(minutes=5), NOW, 0.0).lane == LIVE  # the one token
    assert p.admit("GW", t, NOW, 0.0).lane == LIMITED
    assert p.admit("GW", t + timedelta(seconds=1), NOW, 0.0).lane == BACKLOG
    p.reset_backlogs()  # a reconnect: the broker redelivers what was not acknowledged
    assert p.admit("GW", t, NOW, 0.0).lane == BACKLOG


def test_the_hard_cap_limits_even_a_backlog() -> None:
    p = _policy(burst=10, hard_rate=100, hard_burst=500)
    start = NOW - timedelta(days=3)
    lanes = [p.admit("GW", start + timedelta(minutes=i), NOW, 0.0).lane for i in range(800)]
    assert lanes.count(BACKLOG) == 500 and lanes.count(LIMITED) == 300
    d = p.admit("GW", NOW - timedelta(minutes=1), NOW, 0.0)
    assert d.lane == LIMITED and "hard cap" in d.detail
    assert p.admit("GW", NOW - timedelta(minutes=1), NOW, 1.0).lane == BACKLOG  # refilled
    assert p.admit("OTHER", NOW, NOW, 0.0).lane == LIVE  # others are not affected


def test_the_hard_cap_follows_a_raised_rate() -> None:
    p = _policy(rate=1e6, burst=1e6)
    assert p.hard_rate == 1e6 and p.hard_burst == 1e6
    assert all(p.admit("GW", NOW, NOW, 0.0).lane == LIVE for _ in range(50_000))


def test_backlog_state_is_bounded() -> None:
    p = GatewayPolicy(rate=1, burst=1, hard_rate=1, hard_burst=1, max_keys=100)
    for i in range(1000):
        p.admit(f"fake-{i}", NOW - timedelta(hours=1), NOW, 0.0)
    assert len(p._cursor) == 100 and len(p.live._buckets) <= 100
