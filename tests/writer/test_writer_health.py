"""The writer's readings consumer reports a Kafka failure as the health problem ``kafka``
(503) and clears it once it consumes again (services/writer/readings.py ``supervise``).

Kafka is replaced by a consumer class whose ``start`` fails as aiokafka's does when no
broker answers; everything else (the retry loop, the health object) is the writer's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from services.core.health import Counters, Health
from services.core.settings import KafkaSettings
from services.writer import readings as readings_mod
from services.writer.batch import Batch


async def _store(_: Batch) -> None:
    raise AssertionError("nothing to store")


async def _dead(*_: Any) -> None:
    raise AssertionError("nothing to dead-letter")


def consumer(monkeypatch: pytest.MonkeyPatch, failures: int, health: Health,
             seen: list[tuple[str, int, dict[str, str]]]) -> readings_mod.ReadingsConsumer:
    """A ReadingsConsumer whose first ``failures`` starts raise; ``seen`` records each call
    with the health code and problems at that moment."""
    starts = 0
    stop = asyncio.Event()

    class FlakyKafka:
        def __init__(self, *_topics: str, **_kw: Any) -> None:
            pass

        def subscribe(self, topics: list[str], listener: Any = None) -> None:
            pass

        async def start(self) -> None:
            nonlocal starts
            starts += 1
            code, body = health.payload()
            seen.append(("start", code, body["problems"]))
            if starts <= failures:
                raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

        async def stop(self) -> None:
            pass

        async def getmany(self, timeout_ms: int, max_records: int
                          ) -> dict[TopicPartition, list[Any]]:
            code, body = health.payload()
            seen.append(("poll", code, body["problems"]))
            stop.set()
            await asyncio.sleep(0)
            return {}

        def assignment(self) -> set[TopicPartition]:
            return set()

    rc = readings_mod.ReadingsConsumer(KafkaSettings(bootstrap="127.0.0.1:1"), lambda _: [],
                                       _store, _dead, health.counters, batch_events=10,
                                       batch_seconds=0.01)
    rc.stopping = stop
    monkeypatch.setattr(readings_mod, "AIOKafkaConsumer", FlakyKafka)
    return rc


async def test_kafka_problem_is_set_on_failure_and_cleared_by_the_next_poll(
        monkeypatch: pytest.MonkeyPatch) -> None:
    health = Health("writer", Counters("processed_events"))
    seen: list[tuple[str, int, dict[str, str]]] = []
    rc = consumer(monkeypatch, 1, health, seen)
    assert health.payload()[0] == 200

    await asyncio.wait_for(rc.supervise(health), timeout=30)

    text = ("readings consumer: KafkaConnectionError(\"Unable to bootstrap from "
            "[('127.0.0.1', 1)]\")")
    assert seen == [("start", 200, {}),
                    ("start", 503, {"kafka": text}),  # the retry: still a problem
                    ("poll", 503, {"kafka": text})]  # started, but not consumed yet
    code, body = health.payload()
    assert (code, body["problems"], body["status"]) == (200, {}, "ok")


async def test_a_healthy_consumer_never_reports_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    health = Health("writer", Counters("processed_events"))
    seen: list[tuple[str, int, dict[str, str]]] = []
    rc = consumer(monkeypatch, 0, health, seen)
    await asyncio.wait_for(rc.supervise(health), timeout=30)
    assert seen == [("start", 200, {}), ("poll", 200, {})]
    assert health.payload()[0] == 200


async def test_the_clear_is_only_the_consumers_own_problem(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another component's ``kafka`` problem is not cleared by a poll that followed no
    failure of the consumer."""
    health = Health("writer", Counters("processed_events"))
    health.problem("kafka", "someone else's")
    rc = consumer(monkeypatch, 0, health, [])
    await asyncio.wait_for(rc.supervise(health), timeout=30)
    assert health.problems() == {"kafka": "someone else's"}
