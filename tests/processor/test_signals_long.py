"""Long windows (over 7 days, up to 90): crack growth per month and settlement per day on
coarse buckets of their own — bounded state, short windows left at full resolution, exact
across a restart."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from schemas.alarm import AlarmEvent
from schemas.reading import Reading, ReadingBatch
from schemas.registry import Registry
from services.processor.engine import AlarmEngine, FacilityState
from tests.support.engine_helpers import T0, lv, make_registry, path

DAY_S = 86400
MONTH_S = 30 * DAY_S
HOUR_S = 3600


def crack(*rules: dict[str, Any], interval: int = HOUR_S) -> Registry:
    return make_registry({"id": "C", "metric": "crack_width", "unit": "mm", "range": [0, 10],
                          "interval_s": interval, "rules": list(rules)}, kind="bridge")


class Bridge:
    """Feeds one crack gauge, one report a reading."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.engine = AlarmEngine(registry)
        self.state = FacilityState()
        self.seq = 0
        self.events: list[AlarmEvent] = []

    def report(self, t_s: int, value: float) -> None:
        self.seq += 1
        ts = T0 + timedelta(seconds=t_s)
        batch = ReadingBatch(facility_id="F-1", kind="bridge", seq=self.seq, received_at=ts,
                             readings=[Reading(sensor="C", metric="crack_width", unit="mm",
                                               value=value, ts=ts)])
        self.events.extend(self.engine.evaluate(batch, self.state).events)

    def restart(self) -> None:
        self.state = FacilityState.loads(self.state.dumps())
        self.engine = AlarmEngine(self.registry)


GROWTH = {"id": "crack-growth-month", "signal": "rate", "window_s": MONTH_S,
          "rate_per_s": MONTH_S, "levels": [lv("yellow", 0.1, 0.05)]}
SHORT_RATE = {"signal": "rate", "window_s": 6 * HOUR_S, "rate_per_s": HOUR_S,
              "levels": [lv("orange", 0.05)]}


def growing(t_s: int) -> float:
    """0.2 mm, opening 0.15 mm a month."""
    return 0.2 + 0.15 * t_s / MONTH_S


def test_crack_growth_per_month_over_a_30_day_window() -> None:
    b = Bridge(crack(GROWTH, SHORT_RATE))
    for t in range(0, 40 * DAY_S, HOUR_S):
        b.report(t, growing(t))
    [raised] = b.events
    assert raised.rule == "crack-growth-month" and raised.unit == "mm/30d"
    assert raised.value == pytest.approx(0.15, rel=1e-6)
    # Known once half the window is covered.
    assert (raised.ts - T0).total_seconds() == pytest.approx(15 * DAY_S, abs=8 * HOUR_S)
    ss = b.state.sensors["C"]
    assert ss.window is not None and ss.window.bucket_ms == HOUR_S * 1000  # not coarsened
    assert ss.long_window is not None and ss.long_window.bucket_ms == 8 * HOUR_S * 1000
    assert len(ss.long_window) <= 91


def test_settlement_per_day_sees_a_slow_sink_a_short_window_cannot() -> None:
    settle = {"id": "settlement-day", "signal": "rate", "window_s": 10 * DAY_S,
              "rate_per_s": DAY_S, "levels": [lv("yellow", 0.02)]}
    b = Bridge(crack(settle, {**SHORT_RATE, "levels": [lv("orange", 0.002)]}))
    for t in range(0, 12 * DAY_S, HOUR_S):  # 0.03 mm a day, noise-free
        b.report(t, 1.0 + 0.03 * t / DAY_S)
    assert [e.rule for e in b.events] == ["settlement-day"]
    assert b.events[0].value == pytest.approx(0.03, rel=1e-6) and b.events[0].unit == "mm/d"


def test_a_90_day_window_keeps_bounded_state() -> None:
    b = Bridge(crack({"signal": "max", "window_s": 90 * DAY_S, "levels": [lv("red", 5)]},
                     interval=600))
    for t in range(0, 100 * DAY_S, 600):
        b.report(t, 1.0 + (t % DAY_S) / DAY_S)
    ss = b.state.sensors["C"]
    assert ss.window is None and ss.long_window is not None
    assert ss.long_window.bucket_ms == DAY_S * 1000 and len(ss.long_window) <= 91
    assert len(json.dumps(b.state.to_json())) < 60_000
    b.report(100 * DAY_S, 5.5)
    assert path(b.events) == [("raised", "red")]


@pytest.mark.parametrize("restart_day", [3, 16, 31])
def test_a_restart_continues_exactly(restart_day: int) -> None:
    def run(restart: bool) -> Bridge:
        b = Bridge(crack(GROWTH, SHORT_RATE))
        for t in range(0, 40 * DAY_S, HOUR_S):
            if restart and t == restart_day * DAY_S + 5 * HOUR_S:
                b.restart()
            b.report(t, growing(t) + (0.4 if t // HOUR_S == 800 else 0.0))  # and a spike
        return b
    whole, part = run(False), run(True)
    assert [e.rule for e in whole.events] == ["crack-growth-month"]
    assert [e.model_dump() for e in part.events] == [e.model_dump() for e in whole.events]
    assert part.state.dumps() == whole.state.dumps()
