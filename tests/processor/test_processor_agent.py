"""The processor agent through Faust's test_context (no broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

import pytest

from schemas.reading import Reading, ReadingBatch
from services.processor.app import build
from services.processor.config import ProcessorConfig
from tests.support.engine_helpers import lv, make_registry, sensor

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
REGISTRY = make_registry(sensor("L", "water_level", {"levels": [
    lv("blue", 1.8, 1.7), lv("yellow", 2.25, 2.15), lv("red", 2.95, 2.85)]}, rng=(0, 7)))


def batch(value: float, minute: int, seq: int) -> bytes:
    ts = T0 + timedelta(minutes=minute)
    return ReadingBatch(
        facility_id="F-1", kind="drainage", seq=seq, received_at=ts,
        readings=[Reading(sensor="L", metric="water_level", value=value, unit="m", ts=ts)],
    ).model_dump_json().encode()


@pytest.fixture
def processor(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    return build(ProcessorConfig(), REGISTRY)


async def test_agent_raises_escalates_and_clears(processor: Any) -> None:
    sent: list[dict[str, Any]] = []

    async def capture(*, key: bytes, value: bytes) -> None:
        sent.append(json.loads(value))

    with patch.object(processor.alarms, "send", side_effect=capture):
        async with processor.agent.test_context() as agent:
            for i, v in enumerate([0.8, 1.9, 1.95, 3.0, 2.9, 0.5, 0.6]):
                await agent.put(batch(v, i, i + 1), key=b"F-1")
    assert [(e["event"], e["level"]) for e in sent] == [
        ("raised", "blue"), ("escalated", "red"), ("cleared", None)]
    assert len({e["alarm_id"] for e in sent}) == 1
    saved = json.loads(processor.state.get("F-1"))
    assert saved["rules"]["L|value-upper"][4] is None  # saved after the clear: nothing emitted
    assert processor.health.counters.get("processed_readings") == 7


async def test_agent_saves_state_between_batches(processor: Any) -> None:
    with patch.object(processor.alarms, "send") as send:
        async with processor.agent.test_context() as agent:
            await agent.put(batch(2.3, 0, 1), key=b"F-1")
            held = json.loads(processor.state.get("F-1"))
            await agent.put(batch(2.3, 1, 2), key=b"F-1")
    assert send.call_count == 1
    assert held["rules"]["L|value-upper"][4] == "yellow"  # emitted level, in the table


async def test_agent_dead_letters_undecodable_and_late_events(processor: Any) -> None:
    dlq: list[dict[str, Any]] = []

    async def capture(*, key: Any, value: bytes) -> None:
        dlq.append(json.loads(value))

    with patch.object(processor.dlq, "send", side_effect=capture), \
            patch.object(processor.alarms, "send") as alarms:
        async with processor.agent.test_context() as agent:
            await agent.put(b"{not json", key=b"F-1")
            await agent.put(batch(3.2, 60, 1), key=b"F-1")
            await agent.put(batch(1.0, 0, 2), key=b"F-1")  # an hour older than the newest
    assert [d["reason"] for d in dlq] == ["undecodable_event", "late"]
    assert alarms.call_count == 1  # the good event after the bad one was still evaluated


async def test_hostile_ticks_are_dead_lettered_and_the_agent_keeps_running(
        processor: Any) -> None:
    """Anyone who can write lifeline.ticks: a non-number, a far-future or an absurd tick is
    dead-lettered with a reason, and readings after it are still evaluated."""
    import time as _time

    from services.core import topics

    sent: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []

    async def alarm(*, key: bytes, value: bytes) -> None:
        sent.append(json.loads(value))

    async def dlq(*, key: Any, value: bytes) -> None:
        dead.append(json.loads(value))

    far = str(int((_time.time() + 365 * 86400) * 1000)).encode()
    with patch.object(processor.alarms, "send", side_effect=alarm), \
            patch.object(processor.dlq, "send", side_effect=dlq):
        async with processor.agent.test_context() as agent:
            await agent.put(batch(1.0, 0, 1), key=b"F-1")
            with patch.object(agent, "_get_strtopic", return_value=topics.TICKS):
                for bad in (b"not-a-number", b"9" * 40, far, b"-1"):
                    await agent.put(bad)
            await agent.put(batch(3.0, 1, 2), key=b"F-1")
    assert len(dead) == 4 and {d["reason"] for d in dead} == {"undecodable_event"}
    assert all(d["source"].startswith("kafka:lifeline.ticks") for d in dead)
    assert [(e["event"], e["level"]) for e in sent] == [("raised", "red")]
