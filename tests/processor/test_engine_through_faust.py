"""Every engine semantic once more, through the processor agent and Faust's test_context:
the agent must emit exactly what the engine decides (same events, same order)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from unittest.mock import patch

import pytest

from schemas.registry import Registry
from services.processor.app import build
from services.processor.config import ProcessorConfig
from tests.support.engine_helpers import Feeder, lv, make_registry, sensor

LEVELS = [lv("blue", 1.8, 1.7), lv("yellow", 2.25, 2.15), lv("red", 2.95, 2.85)]


def levels(f: Feeder) -> None:
    f.series("L", [1.0, 1.9, 2.3, 3.0, 2.5, 1.0])


def duration(f: Feeder) -> None:
    f.series("L", [2.0, 2.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0])


def rate(f: Feeder) -> None:
    f.series("L", [0.5 + 0.1 * i for i in range(10)] + [1.4] * 12)


def window_sum(f: Feeder) -> None:
    f.series("R", [5.0] * 6 + [0.0] * 14, step_s=300)


def composite(f: Feeder) -> None:
    f.report(0, ("H", 12.0), ("P", 1.0))
    f.report(60, ("H", 12.0), ("P", 0.0))
    f.report(120, ("H", 2.0), ("P", 0.0))


def health(f: Feeder) -> None:
    f.report(0, ("L", 1.0), ("Q", 1.0), seq=1)
    f.report(60, ("L", 9.9), ("Q", 1.0), seq=2)
    f.report(120, ("L", 1.0), ("Q", 1.0), seq=5)
    for i, t in enumerate(range(180, 601, 60)):
        f.report(t, ("Q", 1.0), seq=6 + i)


def flapping(f: Feeder) -> None:
    f.series("L", [3.0, 1.0] * 5 + [1.0] * 20, step_s=30)


def maintenance(f: Feeder) -> None:
    f.series("L", [3.0, 1.0], start_s=17 * 3600)
    f.series("L", [3.0, 1.0], start_s=18 * 3600 + 60)


def late(f: Feeder) -> None:
    f.series("L", [3.0], start_s=3600)
    f.series("L", [1.0], start_s=0)  # an hour late: dead-lettered, no clear


CASES: dict[str, tuple[Callable[[], Registry], Callable[[Feeder], None]]] = {
    "levels-hysteresis": (lambda: make_registry(sensor("L", "water_level", {"levels": LEVELS},
                                                       rng=(0, 7))), levels),
    "duration": (lambda: make_registry(sensor("L", "water_level", {
        "levels": LEVELS, "raise_after_count": 3, "clear_after_count": 2}, rng=(0, 7))),
        duration),
    "rate": (lambda: make_registry(sensor("L", "water_level", {
        "signal": "rate", "window_s": 600, "levels": [lv("yellow", 0.05, 0.02)]}, rng=(0, 7))),
        rate),
    "window-sum": (lambda: make_registry(sensor("R", "rainfall", {
        "signal": "sum", "window_s": 3600, "levels": [lv("blue", 20, 15)]}, rng=(0, 50),
        interval=300)), window_sum),
    "composite": (lambda: make_registry(
        sensor("H", "h2s", rng=(0, 200)), sensor("P", "pump_state", rng=(0, 1)),
        kind="sewage", composites=[{"id": "c", "level": "orange", "source": "test",
                                    "all_of": [{"sensor": "H", "op": ">=", "value": 10},
                                               {"sensor": "P", "op": "<=", "value": 0.5}]}]),
        composite),
    "sensor-and-gateway-health": (lambda: make_registry(
        sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)),
        sensor("Q", "flow", rng=(0, 100)), policy={"gap_clear_reports": 3}), health),
    "flapping": (lambda: make_registry(sensor("L", "water_level", {"levels": LEVELS},
                                              rng=(0, 7)),
                                       policy={"flap_window_s": 600,
                                               "flap_max_transitions": 4}), flapping),
    "maintenance": (lambda: make_registry(
        sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)),
        maintenance=[{"reason": "night works", "daily_from": "22:00", "daily_to": "02:00"}]),
        maintenance),
    "late-data": (lambda: make_registry(sensor("L", "water_level", {"levels": LEVELS},
                                               rng=(0, 7))), late),
}


class Recorder(Feeder):
    """A Feeder that also keeps every batch it fed, to replay through the agent."""

    def __init__(self, registry: Registry) -> None:
        super().__init__(registry)
        self.batches: list[bytes] = []

    def report(self, t_s: float, *values: tuple[str, float], seq: int | None = None,
               received_s: float | None = None) -> list[Any]:
        real = self.engine.evaluate

        def spy(batch: Any, fs: Any) -> Any:
            self.batches.append(batch.model_dump_json().encode())
            return real(batch, fs)

        with patch.object(self.engine, "evaluate", side_effect=spy):
            return super().report(t_s, *values, seq=seq, received_s=received_s)


@pytest.mark.parametrize("case", sorted(CASES))
async def test_agent_emits_what_the_engine_decides(case: str, tmp_path: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    make, scenario = CASES[case]
    reference = Recorder(make())
    scenario(reference)
    assert reference.events or case == "late-data", "scenario produces no alarm"
    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    proc = build(ProcessorConfig(), make())
    sent: list[str] = []
    dead: list[str] = []

    async def alarm(*, key: bytes, value: bytes) -> None:
        sent.append(json.loads(value)["event_id"])

    async def dlq(*, key: Any, value: bytes) -> None:
        dead.append(json.loads(value)["reason"])

    async def context(*, key: bytes, value: bytes) -> None:
        shared.append(json.loads(value)["district"])

    shared: list[str] = []
    with patch.object(proc.alarms, "send", side_effect=alarm), \
            patch.object(proc.dlq, "send", side_effect=dlq), \
            patch.object(proc.context_topic, "send", side_effect=context):
        async with proc.agent.test_context() as agent:
            for raw in reference.batches:
                await agent.put(raw, key=b"F-1")
    assert sent == [e.event_id for e in reference.events]
    assert dead == ["late" for o in reference.outcomes if o.late]
    assert shared == [c[0] for o in reference.outcomes for c in o.context]


async def test_checkpoints_are_paced_but_alarm_transitions_are_always_saved(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no checkpoint budget left, due checkpoints wait (counted); a transition is
    written anyway — the alarm state must survive a crash."""
    make = lambda: make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)),  # noqa: E731
                                 policy={"checkpoint_interval_s": 60})
    reference = Recorder(make())
    reference.series("L", [1.0] * 10 + [3.0] + [1.0] * 5, step_s=120)  # each report is due
    transitions = sum(1 for o in reference.outcomes if o.save)
    assert transitions >= 2  # raised and cleared
    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LIFELINE_PROCESSOR_MAX_CHECKPOINTS_PER_S", "0.0001")  # burst of 1
    proc = build(ProcessorConfig(), make())

    async def ignore(**_kw: Any) -> None:
        return None

    with patch.object(proc.alarms, "send", side_effect=ignore):
        async with proc.agent.test_context() as agent:
            for raw in reference.batches:
                await agent.put(raw, key=b"F-1")
    counts = proc.health.counters.snapshot()
    assert counts["state_saves"] == 1 + transitions  # the one budgeted checkpoint + transitions
    assert counts["checkpoints_deferred"] == len(reference.batches) - 1 - transitions
