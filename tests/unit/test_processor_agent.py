"""The processor agent through Faust's test_context (no broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

import pytest

from schemas.reading import Reading, ReadingBatch
from schemas.registry import Registry
from services.processor.app import build
from services.processor.config import ProcessorConfig

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def batch(value: float, minute: int, seq: int) -> bytes:
    ts = T0 + timedelta(minutes=minute)
    return ReadingBatch(
        facility_id="DR-BH-001", kind="drainage", seq=seq, received_at=ts,
        readings=[Reading(sensor="DR-BH-001-L1", metric="water_level", value=value, unit="m",
                          ts=ts)],
    ).model_dump_json().encode()


@pytest.fixture
def processor(registry: Registry, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    return build(ProcessorConfig(), registry)


async def test_agent_raises_escalates_and_clears(processor: Any) -> None:
    sent: list[dict[str, Any]] = []

    async def capture(*, key: bytes, value: bytes) -> None:
        sent.append(json.loads(value))

    with patch.object(processor.alarms, "send", side_effect=capture):
        async with processor.agent.test_context() as agent:
            for i, v in enumerate([0.8, 1.9, 1.95, 3.0, 2.9, 0.5, 0.6]):
                await agent.put(batch(v, i, i + 1), key=b"DR-BH-001")
    assert [(e["event"], e["level"]) for e in sent] == [
        ("raised", "blue"), ("escalated", "red"), ("cleared", None)]
    assert len({e["alarm_id"] for e in sent}) == 1
    assert processor.state.get("DR-BH-001") is None
    assert processor.health.counters.get("processed_readings") == 7


async def test_agent_keeps_state_between_batches(processor: Any) -> None:
    with patch.object(processor.alarms, "send") as send:
        async with processor.agent.test_context() as agent:
            await agent.put(batch(2.3, 0, 1), key=b"DR-BH-001")
            held = processor.state.get("DR-BH-001")
            await agent.put(batch(2.3, 1, 2), key=b"DR-BH-001")
    assert send.call_count == 1
    assert held is not None and held["alarms"]["DR-BH-001-L1|threshold-upper"]["level"] == "yellow"


async def test_agent_dead_letters_an_undecodable_event(processor: Any) -> None:
    dlq: list[dict[str, Any]] = []

    async def capture(*, key: Any, value: bytes) -> None:
        dlq.append(json.loads(value))

    with patch.object(processor.dlq, "send", side_effect=capture), \
            patch.object(processor.alarms, "send") as alarms:
        async with processor.agent.test_context() as agent:
            await agent.put(b"{not json", key=b"DR-BH-001")
            await agent.put(batch(3.2, 0, 1), key=b"DR-BH-001")
    assert [d["reason"] for d in dlq] == ["undecodable_event"]
    assert alarms.call_count == 1  # the good event after the bad one was still evaluated
