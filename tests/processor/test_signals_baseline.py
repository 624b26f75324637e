"""Baselines learned per sensor and local hour, weekdays and weekends apart: the deviation
and night-minimum signals, silent until learned, restored exactly after a restart, and
facility states of the versions before them still loading."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas.alarm import AlarmEvent
from schemas.registry import Registry
from services.processor.engine import AlarmEngine, FacilityState
from services.processor.engine.state import StateVersionError
from tests.support.engine_helpers import T0, Feeder, lv, make_registry, path, sensor

LOCAL = ZoneInfo("Asia/Shanghai")
STEP_S = 600
DAY_S = 86400
# T0 is Wednesday 2026-07-01 08:00 local.
Flow = Callable[[datetime], float]


def usual(at: datetime) -> float:
    """Dry-weather flow: 20 L/s at night (02:00-05:00), 100 on weekdays, 60 at weekends."""
    if 2 <= at.hour < 5:
        return 20.0
    return 60.0 if at.weekday() >= 5 else 100.0


def local(e: AlarmEvent) -> datetime:
    return e.ts.astimezone(LOCAL)


def flow_registry(*rules: dict[str, Any], **baseline: Any) -> Registry:
    extra = {"baseline": baseline} if baseline else {}
    return make_registry(sensor("Q", "flow", *rules, rng=(0, 1000), interval=STEP_S, **extra))


def feed(f: Feeder, start_s: int, end_s: int, flow: Flow = usual) -> None:
    for t in range(start_s, end_s, STEP_S):
        f.report(t, ("Q", flow((T0 + timedelta(seconds=t)).astimezone(LOCAL))))


def with_anomaly(day: int, hour: int, extra: float, base: Flow = usual) -> Flow:
    """``base`` plus ``extra`` during one local hour of the day ``day`` days after T0's."""
    first = T0.astimezone(LOCAL).date()

    def flow(at: datetime) -> float:
        hit = (at.date() - first).days == day and at.hour == hour
        return base(at) + (extra if hit else 0.0)
    return flow


DEVIATION = {"signal": "deviation", "levels": [lv("yellow", 30, 20)]}


def test_no_deviation_before_the_hour_is_learned_then_the_reading_against_its_usual() -> None:
    f = Feeder(flow_registry(DEVIATION, min_days=3))
    feed(f, 0, DAY_S, with_anomaly(0, 14, 50))  # Wednesday: nothing learned yet
    assert f.events == []
    # Thu, Fri, (weekend), Mon: the weekday 15:00 hour has 4 days; Tuesday's is 50 above.
    feed(f, DAY_S, 7 * DAY_S, with_anomaly(6, 15, 50))
    assert path(f.events) == [("raised", "yellow"), ("cleared", None)]
    raised, cleared = f.events
    assert raised.value == pytest.approx(50) and raised.unit == "L/s"
    assert (local(raised).strftime("%a %H:%M"), local(cleared).strftime("%a %H:%M")) == \
        ("Tue 15:00", "Tue 16:00")


def test_weekends_are_learned_apart_from_weekdays() -> None:
    f = Feeder(flow_registry(DEVIATION, min_days=2))
    weekday_flow_on_saturday = with_anomaly(10, 14, 40)  # Saturday 2026-07-11, 60 + 40
    feed(f, 0, 11 * DAY_S, weekday_flow_on_saturday)
    [raised, _] = f.events
    assert local(raised).strftime("%a %H:%M") == "Sat 14:00"
    assert raised.value == pytest.approx(40)


def test_last_nights_minimum_raw() -> None:
    f = Feeder(flow_registry({"signal": "night_minimum", "levels": [lv("yellow", 50)]}))

    def infiltration(at: datetime) -> float:  # the third night's flow stays at 80
        night3 = (T0.astimezone(LOCAL) + timedelta(days=3)).date()
        return 80.0 if at.date() == night3 and 2 <= at.hour < 5 else usual(at)
    feed(f, 0, 5 * DAY_S, infiltration)
    assert path(f.events) == [("raised", "yellow"), ("cleared", None)]
    raised, cleared = f.events
    assert raised.value == 80 and raised.rule == "night_minimum-upper"
    assert (local(raised).strftime("%d %H:%M"), local(cleared).strftime("%d %H:%M")) == \
        ("04 05:00", "05 05:00")


def test_last_nights_minimum_against_the_nights_before_needs_min_days_nights() -> None:
    f = Feeder(flow_registry({"signal": "night_minimum", "deviation_as": "difference",
                              "levels": [lv("yellow", 30)]}, min_days=3))
    minima = {2: 20.0, 3: 22.0, 4: 18.0, 5: 80.0, 6: 80.0}  # local day of July -> night flow

    def nights(at: datetime) -> float:
        return minima.get(at.day, 20.0) if 2 <= at.hour < 5 else usual(at)
    feed(f, 0, 5 * DAY_S + 3600, nights)  # to Mon 06 09:00 local
    [raised] = f.events  # night 5 against 20, 22, 18 (night 6 is not yet over)
    assert local(raised).strftime("%d %H:%M") == "05 05:00"
    assert raised.value == pytest.approx(60)


@pytest.mark.parametrize(("floor", "raised"), [(0.0, True), (10.0, False)])
def test_deviation_in_spreads(floor: float, raised: bool) -> None:
    f = Feeder(flow_registry({**DEVIATION, "deviation_as": "spreads",
                              "levels": [lv("yellow", 3)]}, min_days=3, spread_floor=floor))

    def noisy(at: datetime) -> float:  # weekdays alternate 95 / 105 (spread 5), Tue 120
        if at.weekday() >= 5 or 2 <= at.hour < 5:
            return usual(at)
        if at.weekday() == 1 and at.hour == 15:
            return 120.0
        return 95.0 if at.day % 2 else 105.0
    feed(f, 0, 6 * DAY_S + 8 * 3600, noisy)
    if raised:
        [e] = f.events
        assert e.value == pytest.approx(4.0) and e.unit == "σ"
    else:
        assert f.events == []


def scenario_flow(at: datetime) -> float:
    """Usual flow, but 70 L/s more all through Monday's night (02:00-05:00 on July 6:
    infiltration) and 50 more on Tuesday from 15:00 to 16:00."""
    night = at.day == 6 and 2 <= at.hour < 5
    return with_anomaly(6, 15, 50)(at) + (70.0 if night else 0.0)


def rules() -> Registry:
    return flow_registry(DEVIATION, {"signal": "night_minimum", "deviation_as": "difference",
                                     "levels": [lv("yellow", 30)]}, min_days=3)


@pytest.mark.parametrize("restart_s", [DAY_S + 1800, 3 * DAY_S + 19 * 3600 + 1200,
                                       6 * DAY_S + 7 * 3600])
def test_a_restart_restores_the_baseline_exactly(restart_s: int) -> None:
    whole = Feeder(rules())
    feed(whole, 0, 7 * DAY_S, scenario_flow)
    part = Feeder(rules())
    feed(part, 0, restart_s, scenario_flow)
    part.state = FacilityState.loads(part.state.dumps())
    part.engine = AlarmEngine(part.registry)
    feed(part, restart_s, 7 * DAY_S, scenario_flow)
    assert [local(e).strftime("%a %H:%M") for e in whole.events] == \
        ["Mon 05:00", "Tue 05:00", "Tue 15:00", "Tue 16:00"]
    assert [e.model_dump() for e in part.events] == [e.model_dump() for e in whole.events]
    assert part.state.dumps() == whole.state.dumps()


def test_a_version_2_state_loads_and_starts_learning() -> None:
    old = Feeder(flow_registry({"levels": [lv("yellow", 500)]}))
    feed(old, 0, 3600)
    saved = json.loads(old.state.dumps())
    assert saved["v"] == 2 and all(len(s) == 5 for s in saved["sensors"].values())
    f = Feeder(rules())
    f.state = FacilityState.from_json(saved)
    feed(f, 3600, 7 * DAY_S, scenario_flow)
    assert f.state.to_json()["v"] == 3
    # Monday's night alarm holds until the next night is over.
    assert [local(e).strftime("%a %H:%M") for e in f.events] == \
        ["Mon 05:00", "Tue 05:00", "Tue 15:00", "Tue 16:00"]
    with pytest.raises(StateVersionError, match="version 4"):
        FacilityState.from_json({**f.state.to_json(), "v": 4})
