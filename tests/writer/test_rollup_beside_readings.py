"""The minute aggregates are stored beside the readings, not in front of them (issue 16):
once a minute the writer stores every series' closed minute (125,000 points at a
province's scale), and while that write took seconds the next readings batches waited
behind it. Now a slow write of minutes holds no readings write back — but every commit
after the minutes closed waits for them, so a crash before they are stored replays those
minutes whole (services/writer/readings.py, services/writer/rollup.py).

The readings path as services/writer/app.py wires it, with Kafka replaced by a consumer
that serves prepared batches and records commits, and the stores by functions that record
what was written when.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from services.core.health import Counters
from services.core.settings import KafkaSettings
from services.writer import readings as readings_mod
from services.writer.batch import Batch
from services.writer.rollup import MinuteRollup

TP = TopicPartition("lifeline.readings", 0)
M0 = 1_780_000_020_000 - 1_780_000_020_000 % 60_000  # a minute's start (ms), in the past
TAGS = ",district=d1,facility=F1,kind=drainage,metric=water_level,sensor=F1-L1"


@dataclass
class Rec:
    value: bytes
    offset: int
    timestamp: int = M0


def reading(t_ms: int, value: float) -> bytes:
    return f"reading{TAGS} seq=1i,value={value} {t_ms}".encode()


class Consumer:
    """aiokafka's consumer as the readings path uses it: ``batches`` one per poll, then
    empty polls until the test stops it."""

    def __init__(self, batches: list[dict[TopicPartition, list[Rec]]]) -> None:
        self.batches = batches
        self.commits: list[dict[TopicPartition, Any]] = []
        self.polls = asyncio.Event()

    def __call__(self, *_a: Any, **_kw: Any) -> Consumer:
        return self

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Rec]]:
        await asyncio.sleep(0.005)
        self.polls.set()
        return self.batches.pop(0) if self.batches else {}

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append(dict(offsets))

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def highwater(self, tp: TopicPartition) -> int | None:
        return None  # never caught up: minutes close by event time only


def offset(commit: dict[TopicPartition, Any]) -> int:
    """The committed offset (aiokafka takes ``offset`` or ``(offset, metadata)``)."""
    value = commit[TP]
    return int(value[0] if isinstance(value, tuple) else value)


async def wait_until(cond: Any) -> None:
    async with asyncio.timeout(5):
        while not cond():  # noqa: ASYNC110 — polls the consumer's state, which has no event
            await asyncio.sleep(0.005)


async def test_a_slow_write_of_minutes_holds_no_readings_back_and_every_later_commit_waits(
        monkeypatch: Any) -> None:
    # Offsets 0-1 in minute M0; offset 2 at M0 + 61 s closes M0 (lateness 0); offsets
    # 3-4 come while M0's aggregate is still being written.
    batches = [{TP: [Rec(reading(M0 + 1_000, 1.0), 0), Rec(reading(M0 + 2_000, 3.0), 1)]},
               {TP: [Rec(reading(M0 + 61_000, 5.0), 2)]},
               {TP: [Rec(reading(M0 + 62_000, 6.0), 3)]},
               {TP: [Rec(reading(M0 + 63_000, 7.0), 4)]}]
    consumer = Consumer(batches)
    monkeypatch.setattr(readings_mod, "AIOKafkaConsumer", consumer)
    stored: list[list[str]] = []
    minutes: list[list[str]] = []
    release = asyncio.Event()

    async def store(batch: Batch) -> None:
        stored.append(list(batch.lines))

    async def store_minutes(lines: list[str]) -> None:
        await release.wait()  # the database taking its time over 125,000 points
        minutes.append(lines)

    rollup = MinuteRollup(lateness_s=0)
    rc = readings_mod.ReadingsConsumer(
        KafkaSettings(bootstrap="127.0.0.1:9092"), lambda raw: [raw.decode()], store,
        _no_dead_letters, Counters("rollup_points", "processed_events", "processed_reports",
                                   "commit_failures"),
        batch_events=100, batch_seconds=0.01, rollup=rollup, store_rollup=store_minutes)
    run = asyncio.ensure_future(rc.run())
    try:
        # Every readings batch is stored while M0's aggregate is not.
        await wait_until(lambda: len(stored) == 4)
        assert [len(s) for s in stored] == [2, 1, 1, 1] and minutes == []
        # Held back to M0's first record: before M0 closed, and after it while unstored.
        assert consumer.commits and all(offset(c) == 0 for c in consumer.commits)
        await wait_until(lambda: rc.positions.get(TP) == 5)  # stored (the lag counts it)
        assert consumer.commits and all(offset(c) == 0 for c in consumer.commits)
        release.set()
        await wait_until(lambda: bool(minutes) and offset(consumer.commits[-1]) != 0)
        assert minutes == [[f"reading_1m{TAGS} max=3,mean=2,min=1 {M0}"]]
        # Held back to the oldest open minute's first record (offset 2, minute M0 + 60 s)
        # with M0 as the newest closed minute.
        assert consumer.commits[-1][TP] == (2, str(M0))
    finally:
        release.set()
        rc.stopping.set()
        await asyncio.wait_for(run, 5)
    assert rc.counters.get("rollup_points") == 1 and rc.rolling is None and rc.held == {}


async def test_a_stop_while_minutes_are_written_commits_nothing_they_cover(
        monkeypatch: Any) -> None:
    """Shutdown cancels the write of minutes: the offsets that waited for it are not
    committed, so the restarted writer replays the minute whole."""
    batches = [{TP: [Rec(reading(M0 + 1_000, 1.0), 0)]},
               {TP: [Rec(reading(M0 + 61_000, 5.0), 1)]}]
    consumer = Consumer(batches)
    monkeypatch.setattr(readings_mod, "AIOKafkaConsumer", consumer)
    started = asyncio.Event()

    async def store(batch: Batch) -> None:
        pass

    async def store_minutes(lines: list[str]) -> None:
        started.set()
        await asyncio.Event().wait()  # never stored

    rc = readings_mod.ReadingsConsumer(
        KafkaSettings(bootstrap="127.0.0.1:9092"), lambda raw: [raw.decode()], store,
        _no_dead_letters, Counters("rollup_points", "processed_events", "processed_reports"),
        batch_events=100, batch_seconds=0.01, rollup=MinuteRollup(lateness_s=0),
        store_rollup=store_minutes)
    run = asyncio.ensure_future(rc.run())
    await asyncio.wait_for(started.wait(), 5)
    await wait_until(lambda: not consumer.batches)
    await asyncio.sleep(0.05)
    rc.stopping.set()
    done, _ = await asyncio.wait({run}, timeout=0.2)
    if not done:  # the loop waits for the minutes on a clean stop; shutdown cancels it
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    assert all(offset(c) == 0 for c in consumer.commits)  # never past minute M0's first record
    assert rc.counters.get("rollup_points") == 0


async def _no_dead_letters(raw: bytes, source: str, reason: Any, detail: str) -> None:
    raise AssertionError(f"dead-lettered {source}: {reason} {detail}")
