"""The step-change signal: a jump between the medians of the newest readings, blind to one
spike (k >= 3), exact across a restart."""

from __future__ import annotations

from typing import Any

import pytest

from services.processor.engine import AlarmEngine, FacilityState
from tests.support.engine_helpers import T0, Feeder, lv, make_registry, path, sensor

BEFORE, AFTER = [1.0] * 6, [1.6] * 6


def step_feeder(k: int, direction: str = "upper", raise_at: float = 0.5) -> Feeder:
    rule: dict[str, Any] = {"signal": "step", "direction": direction,
                            "levels": [lv("yellow", raise_at)]}
    if k != 3:
        rule["step_k"] = k
    return Feeder(make_registry(sensor("L", "water_level", rule, rng=(0, 7))))


def test_a_sustained_step_raises_once_two_of_k_readings_show_it() -> None:
    f = step_feeder(3)
    f.series("L", BEFORE + AFTER)
    assert path(f.events) == [("raised", "yellow"), ("cleared", None)]
    raised = f.events[0]
    assert raised.rule == "step-k3-upper" and raised.value == pytest.approx(0.6)
    assert raised.unit == "m" and raised.threshold == 0.5
    # Raised at the second reading at the new level; over once the older median has moved.
    assert [int((e.ts - T0).total_seconds() // 60) for e in f.events] == [7, 10]


def test_one_spike_is_not_a_step_with_medians_but_is_between_consecutive_readings() -> None:
    spike = [*BEFORE, 2.5, *BEFORE]
    robust = step_feeder(3)
    robust.series("L", spike)
    assert robust.events == []
    raw = step_feeder(1)
    raw.series("L", spike)
    assert path(raw.events) == [("raised", "yellow"), ("cleared", None)]
    assert raw.events[0].rule == "step-k1-upper" and raw.events[0].value == pytest.approx(1.5)


def test_a_drop_is_a_lower_step() -> None:
    f = step_feeder(3, direction="lower", raise_at=-0.5)
    f.series("L", AFTER + BEFORE)
    assert path(f.events) == [("raised", "yellow"), ("cleared", None)]
    assert f.events[0].value == pytest.approx(-0.6)


def test_a_duplicated_reading_replaces_its_first_copy_and_is_not_a_new_reading() -> None:
    f = step_feeder(1)
    f.series("L", [1.0, 2.0])
    assert path(f.events) == [("raised", "yellow")]
    f.report(60, ("L", 2.0))  # the same reading again: still a jump from 1.0, not 0
    f.report(60, ("L", 2.0))
    assert path(f.events) == [("raised", "yellow")]
    f.report(120, ("L", 2.0))  # a new reading at the same level: the jump is over
    assert path(f.events) == [("raised", "yellow"), ("cleared", None)]


@pytest.mark.parametrize("restart_at", [3, 7, 9])
def test_a_restart_continues_exactly(restart_at: int) -> None:
    values = BEFORE + AFTER + [1.0, 2.4, 1.0] + BEFORE
    whole = step_feeder(3)
    whole.series("L", values)
    part = step_feeder(3)
    part.series("L", values[:restart_at])
    part.state = FacilityState.loads(part.state.dumps())
    part.engine = AlarmEngine(part.registry)
    part.series("L", values[restart_at:], start_s=60 * restart_at)
    assert [e.model_dump() for e in part.events] == [e.model_dump() for e in whole.events]
    assert part.state.dumps() == whole.state.dumps()
    assert whole.state.to_json()["v"] == 3
