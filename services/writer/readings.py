"""The writer's readings path: ``lifeline.readings`` → InfluxDB through a plain aiokafka
consumer group, batch by batch.

Why not a Faust agent like the writer's other streams: readings are the bulk of the
traffic, and Faust's per-event stream machinery cost about 120 µs of CPU per event here —
more than parsing and formatting the event's ten points — so the writer reached only a
third of the database's own write rate (docs/benchmarks.md). Storing readings needs none
of Faust's features (no table, no state), only a consumer group and commits.

Guarantees are the same: offsets are committed only after the sink stored the batch
(at-least-once; points are keyed by event time, so a replay overwrites), a sink that is
down is retried with backoff while Kafka retains the rest (backpressure, never a skip),
and an event that cannot be read (not JSON, not a reading batch, or one whose points
cannot be built) goes to the dead-letter topic with its bytes and reason
(``undecodable_event``, ``invalid_contract``, ``unprocessable``: services.core.dlq) and
the rest of its batch is stored and committed. When
the database refuses some points of a batch, only their events are dead-lettered (as
``kafka:lifeline.readings[<partition>]@<offset>``, services/writer/batch.py) and the rest is
stored before the commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from tenacity import AsyncRetrying, wait_exponential

from schemas.deadletter import RejectReason
from services.core import topics
from services.core.dlq import decode_reason, error_detail
from services.core.health import Counters, Health
from services.core.kafka import security_kwargs
from services.core.logging import get_logger
from services.core.settings import KafkaSettings
from services.writer.batch import Batch

log = get_logger("lifeline.writer.readings")

Store = Callable[[Batch], Awaitable[None]]
DeadLetter = Callable[[bytes, str, RejectReason, str], Awaitable[None]]
# What converting one record may raise: dead-lettered, never fatal to the consumer (an
# exception escaping run() would restart it on the same record, forever).
UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError)


def consumer_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap,
        "group_id": "lifeline-writer-readings",
        "client_id": "lifeline-writer-readings",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 4 << 20,
        # While InfluxDB is down the loop retries one batch without polling: that is
        # backpressure, not a dead consumer.
        "max_poll_interval_ms": 24 * 3600 * 1000,
        **security_kwargs(kafka),
    }
    if kafka.flavor == "tansu":
        # The same workarounds as the Faust apps (services/core/kafka.py): Tansu holds
        # JoinGroup for half the session timeout and every fetch for its full max wait;
        # each fetch scans every stored batch of the partitions it asks for, so the
        # writer asks four times a second, not twenty.
        kw.update(session_timeout_ms=6000, heartbeat_interval_ms=1500, fetch_max_wait_ms=250)
    return kw


class ReadingsConsumer:
    def __init__(self, kafka: KafkaSettings, to_lines: Callable[[bytes], list[str]],
                 store: Store, dead_letter: DeadLetter, counters: Counters,
                 batch_events: int, batch_seconds: float) -> None:
        self.kafka = kafka
        self.to_lines = to_lines
        self.store = store
        self.dead_letter = dead_letter
        self.counters = counters
        self.batch_events = batch_events
        self.batch_ms = int(batch_seconds * 1000)
        self.consumer: AIOKafkaConsumer | None = None
        self.stopping = asyncio.Event()
        self.positions: dict[TopicPartition, int] = {}  # next offset to store, per partition
        self.health: Health | None = None
        self.failing = False  # the health problem ``kafka`` is ours to clear

    async def supervise(self, health: Health) -> None:
        """run(), restarted with backoff after a Kafka failure. While it fails, health
        reports the problem ``kafka`` (503); the next successful poll clears it."""
        self.health = health
        async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=0.5, max=10)):
            with attempt:
                try:
                    await self.run()
                except KafkaError as exc:
                    self.failing = True
                    health.problem("kafka", f"readings consumer: {exc!r}"[:300])
                    log.error("writer.readings_consumer_failed", error=repr(exc)[:300])
                    raise

    def _consuming(self) -> None:
        if self.failing:
            self.failing = False
            if self.health is not None:
                self.health.ok("kafka")
            log.info("writer.readings_consumer_recovered")

    def lag(self) -> int:
        """Records of the assigned partitions not stored yet (as far as fetched metadata
        tells: the highwater is refreshed with every fetch)."""
        c = self.consumer
        if c is None:
            return 0
        total = 0
        for tp in c.assignment():
            high, pos = c.highwater(tp), self.positions.get(tp)
            if high is not None and pos is not None:
                total += max(0, int(high) - pos)
        return total

    def assigned(self) -> int:
        return len(self.consumer.assignment()) if self.consumer is not None else 0

    async def run(self) -> None:
        """Fetch and convert the next batch while the previous one is being written: two
        batches in flight at most, offsets committed strictly in order after each write."""
        c = self.consumer = AIOKafkaConsumer(topics.READINGS, **consumer_kwargs(self.kafka))
        await c.start()
        in_flight: tuple[asyncio.Task[None], dict[TopicPartition, int], int] | None = None
        try:
            while not self.stopping.is_set():
                batch = await c.getmany(timeout_ms=self.batch_ms, max_records=self.batch_events)
                self._consuming()
                if not batch:
                    if in_flight is not None:
                        await self._finish(c, *in_flight)
                        in_flight = None
                    continue
                events = Batch()
                offsets: dict[TopicPartition, int] = {}
                for tp, records in batch.items():
                    where = f"kafka:{tp.topic}[{tp.partition}]@"
                    for rec in records:
                        value = rec.value or b""
                        try:
                            lines = self.to_lines(value)
                        except UNREADABLE as exc:  # pydantic's ValidationError included
                            await self.dead_letter(value, f"{where}{rec.offset}",
                                                   decode_reason(exc), error_detail(exc))
                            continue
                        events.add(value, f"{where}{rec.offset}", lines)
                    offsets[tp] = records[-1].offset + 1
                if in_flight is not None:
                    await self._finish(c, *in_flight)
                write = asyncio.ensure_future(self.store(events))
                in_flight = (write, offsets, sum(len(r) for r in batch.values()))
            if in_flight is not None:
                await self._finish(c, *in_flight)
                in_flight = None
        finally:
            if in_flight is not None:
                in_flight[0].cancel()  # not committed: re-read after the restart
            self.consumer = None
            await c.stop()

    async def _finish(self, c: AIOKafkaConsumer, write: asyncio.Task[None],
                      offsets: dict[TopicPartition, int], events: int) -> None:
        # Retries until stored (backpressure), refused points isolated and their events
        # dead-lettered; raises only on shutdown.
        await write
        try:
            await c.commit(offsets)
        except KafkaError as exc:
            # A rebalance took the partitions away: their new owner re-reads from the
            # last commit and overwrites the same points (event time).
            self.counters.inc("commit_failures")
            log.warning("writer.commit_failed", error=repr(exc)[:300])
        self.positions.update(offsets)
        self.counters.inc("processed_events", events)
