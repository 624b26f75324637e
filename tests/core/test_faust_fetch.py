"""A fetch answered after Faust's flow stopped is put back, not lost (services.core.faust.fetch).

The race, replayed through Faust's own ``Consumer.getmany``: the fetch starts while the
flow is active, a rebalance stops the flow while aiokafka holds the call, and the answer
arrives afterwards. Unpatched, Faust drops the batch (the aiokafka positions have already
moved past it); patched, the partitions are sought back to the batch's first offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust
import pytest
from aiokafka.structs import TopicPartition
from faust.types import TP

from services.core.faust import fetch as faust_fetch


@dataclass
class _Record:
    offset: int


@dataclass
class _State:
    position: int | None

    @property
    def has_valid_position(self) -> bool:
        return self.position is not None


@dataclass
class _Assignment:
    states: dict[TopicPartition, _State]

    def state_value(self, tp: TopicPartition) -> _State | None:
        return self.states.get(tp)


@dataclass
class _AioConsumer:
    """The parts of aiokafka's consumer ``rewind_unreturned`` reads and moves."""

    positions: dict[TopicPartition, int | None]
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        assignment = _Assignment({tp: _State(p) for tp, p in self.positions.items()})
        self._subscription = type("S", (), {"subscription": type("X", (), {
            "assignment": assignment})()})()
        self._states = assignment.states

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))
        self._states[tp].position = offset


class _Thread:
    def __init__(self, aio: _AioConsumer) -> None:
        self.aio = aio

    def _ensure_consumer(self) -> _AioConsumer:
        return self.aio

    async def call_thread(self, fun: Any, *args: Any) -> Any:
        return await fun(*args)

    def highwater(self, tp: TopicPartition) -> int:
        return 3


CHANGELOG = TopicPartition("lifeline-processor-alarm_state-changelog", 0)
READINGS = TopicPartition("lifeline.readings", 2)


def test_rewind_puts_back_only_partitions_nobody_moved() -> None:
    aio = _AioConsumer({CHANGELOG: 160, READINGS: 50,
                        TopicPartition("lifeline.ticks", 1): None})
    records = {CHANGELOG: [_Record(o) for o in range(160)],
               READINGS: [_Record(o) for o in range(40, 45)],  # sought to 50 meanwhile
               TopicPartition("lifeline.ticks", 1): [_Record(3)],  # revoked meanwhile
               TopicPartition("lifeline.ticks", 9): [_Record(0)],  # not assigned at all
               TopicPartition("lifeline.ticks", 0): []}
    assert faust_fetch.rewind_unreturned(aio, records) == {CHANGELOG: 0}
    assert aio.seeks == [(CHANGELOG, 0)]
    assert aio._states[READINGS].position == 50


def _faust_consumer(aio: _AioConsumer, batch: dict[TopicPartition, list[_Record]]) -> Any:
    app = faust.App("lifeline-test-fetch", broker="kafka://127.0.0.1:1")
    consumer: Any = app.consumer
    consumer._thread = _Thread(aio)
    consumer._active_partitions = {TP(tp.topic, tp.partition) for tp in batch}
    consumer.flow_active = True
    seeks_to_committed: list[bool] = []

    async def getmany(active_partitions: Any, timeout: float) -> Any:  # noqa: ASYNC109
        consumer.flow_active = False  # a rebalance began while aiokafka held the call
        return batch

    async def perform_seek() -> None:  # Faust's answer to a stopped flow
        seeks_to_committed.append(True)

    consumer._getmany = getmany
    consumer.perform_seek = perform_seek
    consumer.seeks_to_committed = seeks_to_committed
    return consumer


async def _drain(consumer: Any) -> list[Any]:
    return [m async for m in consumer.getmany(timeout=1.0)]


@pytest.fixture
def unpatched() -> Any:
    from faust.transport.consumer import Consumer

    patched = Consumer._wait_next_records
    original = getattr(patched, "__wrapped__", patched)
    Consumer._wait_next_records = original  # type: ignore[method-assign]
    yield
    Consumer._wait_next_records = patched  # type: ignore[method-assign]


async def test_faust_alone_loses_a_batch_fetched_across_a_flow_stop(unpatched: Any) -> None:
    """The bug this module exists for, shown on Faust's own code."""
    aio = _AioConsumer({CHANGELOG: 160})
    consumer = _faust_consumer(aio, {CHANGELOG: [_Record(o) for o in range(160)]})
    assert await _drain(consumer) == []
    assert consumer.seeks_to_committed == [True]
    assert aio.seeks == []  # a changelog has no commit: nothing puts it back


async def test_patched_consumer_puts_the_batch_back() -> None:
    faust_fetch.install()
    faust_fetch.install()  # idempotent: wrapped once
    from faust.transport.consumer import Consumer

    assert getattr(Consumer._wait_next_records.__wrapped__, "__wrapped__", None) is None
    aio = _AioConsumer({CHANGELOG: 160})
    consumer = _faust_consumer(aio, {CHANGELOG: [_Record(o) for o in range(160)]})
    consumer._read_offset[CHANGELOG] = 159  # left by an earlier standby read
    assert await _drain(consumer) == []
    assert aio.seeks == [(CHANGELOG, 0)]  # fetched again once the flow resumes
    assert consumer._read_offset[CHANGELOG] is None  # nothing below 159 dropped as "seen"


async def test_patched_consumer_passes_batches_through_while_flowing() -> None:
    faust_fetch.install()
    aio = _AioConsumer({READINGS: 3})
    consumer = _faust_consumer(aio, {READINGS: [_Record(0), _Record(1), _Record(2)]})

    async def getmany(active_partitions: Any, timeout: float) -> Any:  # noqa: ASYNC109
        return {READINGS: [_Record(0), _Record(1), _Record(2)]}

    consumer._getmany = getmany
    consumer._to_message = lambda tp, record: (tp, record.offset)
    out = await _drain(consumer)
    assert [m[1][1] for m in out] == [0, 1, 2]
    assert aio.seeks == []
