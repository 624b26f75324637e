"""The count signal: exceedances of a limit per local calendar day (Asia/Shanghai), of the
value or of clock-aligned periods of a windowed signal (a 15-minute mean), from 0 at local
midnight, exact across a restart."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.alarm import AlarmEvent
from schemas.registry import Registry
from services.processor.engine import AlarmEngine, FacilityState
from tests.support.engine_helpers import T0, Feeder, lv, make_registry, path, sensor

# The helpers' T0 is 2026-07-01 00:00 UTC, 08:00 local: local midnight is minute 960.
MIDNIGHT_MIN = 16 * 60
LIMIT = 10.0


def mean_count_registry(**extra: Any) -> Registry:
    """'15-minute mean above 10 more than twice a day' (a stand-in for PM10 > 150)."""
    return make_registry(sensor("H", "h2s", {
        "signal": "count", "of": "mean", "window_s": 900, "count_above": LIMIT,
        "levels": [lv("yellow", 3)], **extra}, rng=(0, 200)), kind="sewage")


def minutes(periods: dict[int, list[float]], until_min: int) -> list[float]:
    """A reading a minute; period p (15 min from 08:00 local) has the 15 values given, the
    others read 5."""
    return [periods.get(m // 15, [5.0] * 15)[m % 15] for m in range(until_min)]


def minute(e: AlarmEvent) -> int:
    """The event's minute since T0 (08:00 local)."""
    return int((e.ts - T0).total_seconds() // 60)


HIGH = [20.0] * 15
ALMOST = [20.0] * 7 + [0.0] * 8  # readings above the limit, a mean (9.33) below it


def test_periods_whose_mean_is_above_the_limit_count_once_each() -> None:
    f = Feeder(mean_count_registry())
    f.series("H", minutes({0: HIGH, 1: ALMOST, 2: HIGH, 3: HIGH}, 120))
    [raised] = f.events
    assert raised.rule == "count-900s-upper" and raised.unit == "/d"
    assert raised.value == 3 and raised.threshold == 3
    # The third period (08:45-09:00) is judged by the first reading after it: 09:00.
    assert minute(raised) == 60


def test_the_count_resets_at_local_midnight() -> None:
    f = Feeder(mean_count_registry())
    f.series("H", minutes({0: HIGH, 2: HIGH, 4: HIGH}, MIDNIGHT_MIN + 5))
    assert path(f.events) == [("raised", "yellow"), ("cleared", None)]
    assert minute(f.events[0]) == 75
    # Held all day; the reading that judges the day's last period still sees the day's
    # count, the next one the new day's.
    assert minute(f.events[1]) == MIDNIGHT_MIN + 1


def test_the_days_last_period_counts_to_that_day() -> None:
    last = MIDNIGHT_MIN // 15 - 1  # 23:45-24:00 local
    f = Feeder(mean_count_registry())
    f.series("H", minutes({0: HIGH, 2: HIGH, last: HIGH}, MIDNIGHT_MIN + 3))
    assert path(f.events) == [("raised", "yellow"), ("cleared", None)]
    raised, cleared = f.events
    assert raised.value == 3 and minute(raised) == MIDNIGHT_MIN
    assert cleared.value == 0 and minute(cleared) == MIDNIGHT_MIN + 1


def test_a_count_of_the_value_counts_each_reading_once() -> None:
    f = Feeder(make_registry(sensor("H", "h2s", {
        "signal": "count", "count_above": LIMIT, "levels": [lv("yellow", 4)]}, rng=(0, 200)),
        kind="sewage"))
    f.series("H", [5.0, 12.0, 5.0, 12.0, 12.0])  # three readings above
    f.report(240, ("H", 12.0))  # replays of the last one do not count again
    f.report(240, ("H", 12.0))
    assert f.events == []
    f.report(300, ("H", LIMIT))  # at the limit is not above it
    assert f.events == []
    f.report(360, ("H", 10.5))
    assert path(f.events) == [("raised", "yellow")] and f.events[0].value == 4


@pytest.mark.parametrize("restart_min", [37, 60, MIDNIGHT_MIN, MIDNIGHT_MIN + 1])
def test_a_restart_continues_exactly(restart_min: int) -> None:
    values = minutes({0: HIGH, 1: ALMOST, 2: HIGH, 4: HIGH, 63: HIGH}, MIDNIGHT_MIN + 40)
    whole = Feeder(mean_count_registry())
    whole.series("H", values)
    part = Feeder(mean_count_registry())
    part.series("H", values[:restart_min])
    part.state = FacilityState.loads(part.state.dumps())
    part.engine = AlarmEngine(part.registry)
    part.series("H", values[restart_min:], start_s=60 * restart_min)
    assert len(whole.events) == 2
    assert [e.model_dump() for e in part.events] == [e.model_dump() for e in whole.events]
    assert part.state.dumps() == whole.state.dumps()
