"""Property-based tests of the alarm engine over generated reading sequences."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.alarm import AlarmEvent
from services.processor.engine import FacilityState
from tests.support.engine_helpers import Feeder, lv, make_registry, sensor

LEVEL_NAMES = ["blue", "yellow", "orange", "red"]
VALUES = st.sampled_from([0.5, 0.9, 1.0, 1.1, 1.5, 1.9, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5])
NO_FLAP = {"flap_max_transitions": 10_000, "sensor_offline_after_intervals": 1000}


@st.composite
def rules(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(1, 4))
    names = sorted(draw(st.lists(st.sampled_from(LEVEL_NAMES), min_size=n, max_size=n,
                                 unique=True)), key=LEVEL_NAMES.index)
    gap = draw(st.sampled_from([0.0, 0.2, 0.5]))
    return {"levels": [lv(name, float(i + 1), float(i + 1) - gap) for i, name in enumerate(names)],
            "raise_after_count": draw(st.integers(1, 3)),
            "clear_after_count": draw(st.integers(1, 3))}


def run(rule: dict[str, Any], values: list[float]) -> tuple[Feeder, list[list[AlarmEvent]]]:
    f = Feeder(make_registry(sensor("L", "water_level", rule, rng=(0, 7)), policy=NO_FLAP))
    per_reading = [f.report(i * 60.0, ("L", v)) for i, v in enumerate(values)]
    return f, per_reading


SEV = {None: 0, "blue": 1, "yellow": 2, "orange": 3, "red": 4}


@settings(max_examples=300, deadline=None)
@given(rules(), st.lists(VALUES, min_size=1, max_size=60))
def test_lifecycles_are_well_formed(rule: dict[str, Any], values: list[float]) -> None:
    f, _ = run(rule, values)
    active: str | None = None
    alarm_id: str | None = None
    for e in f.events:
        level = e.level.value if e.level else None
        if e.event.value == "raised":
            assert active is None, "raised twice in one episode"
            alarm_id = e.alarm_id
        else:
            assert active is not None, f"{e.event} without a raise"
            assert e.alarm_id == alarm_id
            if e.event.value == "escalated":
                assert SEV[level] > SEV[active]
            elif e.event.value == "deescalated":
                assert 0 < SEV[level] < SEV[active]
            else:
                assert e.event.value == "cleared" and level is None
        assert SEV[e.previous_level.value if e.previous_level else None] == SEV[active]
        active = level


@settings(max_examples=300, deadline=None)
@given(rules(), st.lists(VALUES, min_size=1, max_size=60))
def test_no_alarm_without_a_sustained_breach(rule: dict[str, Any], values: list[float]) -> None:
    _, per_reading = run(rule, values)
    raise_at = {lv_["level"]: lv_["raise_at"] for lv_ in rule["levels"]}
    lowest_clear = min(lv_["clear_at"] for lv_ in rule["levels"])
    a, c = rule["raise_after_count"], rule["clear_after_count"]
    for i, events in enumerate(per_reading):
        for e in events:
            if e.event.value in ("raised", "escalated"):
                assert e.level is not None and i + 1 >= a
                assert all(v >= raise_at[e.level.value] for v in values[i - a + 1:i + 1])
            if e.event.value == "cleared":
                assert i + 1 >= c
                assert all(v < lowest_clear for v in values[i - c + 1:i + 1])


@settings(max_examples=300, deadline=None)
@given(rules(), st.lists(VALUES, min_size=1, max_size=60))
def test_sustained_breach_raises_once_and_sustained_calm_clears(rule: dict[str, Any],
                                                    values: list[float]) -> None:
    _f, per_reading = run(rule, values)
    lowest = min(lv_["raise_at"] for lv_ in rule["levels"])
    lowest_clear = min(lv_["clear_at"] for lv_ in rule["levels"])
    a, c = rule["raise_after_count"], rule["clear_after_count"]
    run_len = below = 0
    active = False
    raises_in_run = 0
    for v, events in zip(values, per_reading, strict=True):
        for e in events:
            active = e.event.value != "cleared"
        run_len = run_len + 1 if v >= lowest else 0
        if run_len >= a:
            assert active, f"breach held for {run_len} readings (needs {a}) but no alarm"
        below = below + 1 if v < lowest_clear else 0
        if below >= c:
            assert not active, f"clear condition held for {below} readings (needs {c}) but active"
        # While nothing could clear it, an episode raises at most once.
        if v < lowest_clear:
            raises_in_run = 0
        raises_in_run += sum(1 for e in events if e.event.value == "raised")
        assert raises_in_run <= 1


@settings(max_examples=200, deadline=None)
@given(rules(), st.lists(VALUES, min_size=1, max_size=30), st.lists(VALUES, min_size=1, max_size=30),
       st.randoms(use_true_random=False))
def test_interleaving_of_sensors_does_not_matter(rule: dict[str, Any], a_values: list[float],
                                                 b_values: list[float], rnd: Any) -> None:
    def registry() -> Any:
        return make_registry(sensor("A", "water_level", rule, rng=(0, 7), interval=86400),
                             sensor("B", "water_level", rule, rng=(0, 7), interval=86400),
                             policy=NO_FLAP)

    def alone(sid: str, values: list[float]) -> list[str]:
        f = Feeder(registry())
        for i, v in enumerate(values):
            f.report(i * 60.0, (sid, v))
        return [e.event_id for e in f.events if e.sensor == sid]

    order = ["A"] * len(a_values) + ["B"] * len(b_values)
    rnd.shuffle(order)
    f = Feeder(registry())
    idx = {"A": 0, "B": 0}
    for sid in order:
        values = a_values if sid == "A" else b_values
        i = idx[sid]
        f.report(i * 60.0, (sid, values[i]))
        idx[sid] += 1
    for sid, values in (("A", a_values), ("B", b_values)):
        assert [e.event_id for e in f.events if e.sensor == sid] == alone(sid, values)


@settings(max_examples=200, deadline=None)
@given(rules(), st.lists(VALUES, min_size=2, max_size=50), st.integers(1, 49))
def test_restoring_saved_state_continues_identically(rule: dict[str, Any], values: list[float],
                                                     cut: int) -> None:
    cut = min(cut, len(values) - 1)
    straight, _ = run(rule, values)
    f = Feeder(make_registry(sensor("L", "water_level", rule, rng=(0, 7)), policy=NO_FLAP))
    for i, v in enumerate(values[:cut]):
        f.report(i * 60.0, ("L", v))
    f.state = FacilityState.from_json(f.state.to_json())
    for i, v in enumerate(values[cut:], start=cut):
        f.report(i * 60.0, ("L", v))
    assert [e.event_id for e in f.events] == [e.event_id for e in straight.events]
