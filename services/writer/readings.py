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
stored before the commit. What one batch does is services/writer/handlers.py's.

The 1-minute aggregates (``long.reading_1m``) are computed here from the same records
(services/writer/rollup.py): the minutes a batch closes are stored beside the next
readings writes (not in front of them), every later commit waiting for them; each
partition's commit is held back to the first record of its oldest open minute, with the
newest closed minute as the commit's metadata, so a restart or a new owner replays every
open minute whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from tenacity import AsyncRetrying, wait_exponential

from schemas.codec import READING_BATCH
from schemas.deadletter import RejectReason
from services.core import topics
from services.core.crash import crash_point
from services.core.dlq import decode_reason, error_detail
from services.core.health import Counters, Health
from services.core.kafka import security_kwargs
from services.core.latency import Budget
from services.core.logging import get_logger
from services.core.settings import KafkaSettings
from services.writer.batch import Batch
from services.writer.errors import UNREADABLE
from services.writer.rollup import MinuteRollup, Recompute

log = get_logger("lifeline.writer.readings")

Store = Callable[[Batch], Awaitable[None]]
StoreLines = Callable[[list[str]], Awaitable[None]]
RecomputeHours = Callable[[list[Recompute], int], Awaitable[None]]
# Per partition: the offset to commit, its metadata, and the next offset stored by then.
Offsets = dict[TopicPartition, tuple[int, str, int]]
DeadLetter = Callable[[bytes, str, RejectReason, str], Awaitable[None]]


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
                 batch_events: int, batch_seconds: float,
                 rollup: MinuteRollup | None = None,
                 store_rollup: StoreLines | None = None,
                 recompute_hours: RecomputeHours | None = None) -> None:
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
        # The latency budget (services/core/latency.py): a batch's oldest record from its
        # broker timestamp to fetched and to stored, and the write itself.
        self.budget: Budget | None = None
        # The 1-minute tier and how its lines are stored (``long``); None: not computed.
        self.rollup = rollup
        self.store_rollup = store_rollup
        # Hours of partitions taken over mid-hour, computed from the stored minutes once
        # closed (services/writer/rollup.py), after the minutes closing them are stored.
        self.recompute_hours = recompute_hours
        self.recompute: list[Recompute] = []
        self.fetched: dict[TopicPartition, int] = {}  # next offset to fetch, per partition
        # The write of closed minutes in flight, and the commits that wait for it.
        self.rolling: asyncio.Task[None] | None = None
        self.held: Offsets = {}

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
        c = self.consumer = AIOKafkaConsumer(**consumer_kwargs(self.kafka))
        c.subscribe([topics.READINGS], listener=_Rebalance(self, c))
        await c.start()
        in_flight: tuple[asyncio.Task[None], Offsets, int, float, float, int] | None = None
        try:
            while not self.stopping.is_set():
                batch = await c.getmany(timeout_ms=self.batch_ms, max_records=self.batch_events)
                self._consuming()
                if not batch:
                    if in_flight is not None:
                        await self._finish(c, *in_flight)
                        in_flight = None
                    # A quiet partition's open minutes close by the wall clock.
                    closed, commits = self._close_minutes(c)
                    if closed or self.recompute:
                        await self._roll(c, closed)
                        await self._stored(c, commits)
                    else:
                        await self._commit_held(c)
                    continue
                oldest_ms = min(r.timestamp for records in batch.values() for r in records)
                if self.budget is not None:
                    self.budget.since_epoch_ms("writer.kafka_wait", oldest_ms)
                events = Batch()
                rollup = self.rollup
                for tp, records in batch.items():
                    where = f"kafka:{tp.topic}[{tp.partition}]@"
                    for rec in records:
                        # One batch, or a pack of them (one per line, ingest's pack.py):
                        # each converted, dead-lettered or stored on its own.
                        pieces = READING_BATCH.unpack(rec.value or b"")
                        packed = len(pieces) > 1
                        kept: list[str] = []
                        for i, value in enumerate(pieces):
                            at = f"{where}{rec.offset}#{i}" if packed else f"{where}{rec.offset}"
                            try:
                                lines = self.to_lines(value)
                            except UNREADABLE as exc:  # pydantic's ValidationError included
                                await self.dead_letter(value, at, decode_reason(exc),
                                                       error_detail(exc))
                                continue
                            events.add(value, at, lines)
                            kept.extend(lines)
                        if rollup is not None and kept:
                            rollup.add(tp, rec.offset, kept)
                    self.fetched[tp] = records[-1].offset + 1
                closed, offsets = self._close_minutes(c, batch)
                if in_flight is not None:
                    await self._finish(c, *in_flight)
                write = asyncio.ensure_future(self.store(events))
                if closed or self.recompute:
                    await self._roll(c, closed)
                in_flight = (write, offsets, sum(len(r) for r in batch.values()), oldest_ms,
                             time.monotonic(), len(events))
            if in_flight is not None:
                await self._finish(c, *in_flight)
                in_flight = None
            if self.rolling is not None:
                await self.rolling
            await self._commit_held(c)
        finally:
            # Not committed: re-read after the restart.
            for task in (in_flight[0] if in_flight is not None else None, self.rolling):
                if task is not None:
                    task.cancel()
            self.rolling = None
            self.held = {}
            self.consumer = None
            await c.stop()

    def _close_minutes(self, c: AIOKafkaConsumer,
                       batch: dict[TopicPartition, Any] | None = None
                       ) -> tuple[list[str], Offsets]:
        """The minute aggregates closed now and what to commit once they and the batch are
        stored: every fetched partition when minutes are computed (their commits are held
        back), else the batch's partitions at their next offset."""
        rollup = self.rollup
        if rollup is None:
            return [], {tp: (self.fetched[tp], "", self.fetched[tp]) for tp in batch or ()}
        now_ms = int(time.time() * 1000)
        closed: list[str] = []
        commits: Offsets = {}
        assigned = c.assignment()
        for tp, position in self.fetched.items():
            if tp not in assigned:
                continue
            high = c.highwater(tp)
            closed += rollup.close(tp, now_ms, high is not None and position >= high)
            commits[tp] = (*rollup.commit(tp, position), position)
        if rollup.hours is not None:
            self.recompute += rollup.hours.take_recompute()
        if not closed:  # nothing new to commit for quiet partitions
            commits = {tp: o for tp, o in commits.items() if batch is not None and tp in batch}
        return closed, commits

    async def _store_minutes(self, closed: list[str], recompute: list[Recompute],
                             partitions: int) -> None:
        if self.store_rollup is not None:
            await self.store_rollup(closed)
            self.counters.inc("rollup_points", len(closed))
        if recompute and self.recompute_hours is not None:
            await self.recompute_hours(recompute, partitions)

    async def _roll(self, c: AIOKafkaConsumer, closed: list[str]) -> None:
        """Store the minute aggregates just closed beside the readings, not in front of
        them: one write of every series' minute (125,000 points at a province's scale)
        held the next readings batch for seconds (issue 16). Every commit from now on
        waits for it (``held``): a crash before it is stored replays those minutes whole,
        with the same values. One such write at a time, in order."""
        if self.rolling is not None:
            await self.rolling  # the previous minute's, still being written
            await self._commit_held(c)
        recompute, self.recompute = self.recompute, []
        partitions = len(c.partitions_for_topic(topics.READINGS) or ()) if recompute else 0
        self.rolling = asyncio.ensure_future(self._store_minutes(closed, recompute, partitions))

    async def _stored(self, c: AIOKafkaConsumer, offsets: Offsets) -> None:
        """What is stored up to ``offsets``: committed, or held while minute aggregates
        are being written (the commit waits for them too)."""
        self.held.update(offsets)
        await self._commit_held(c)
        for tp, (_, _, stored) in offsets.items():
            self.positions[tp] = stored  # the commit may be held back for the rollup

    async def _commit_held(self, c: AIOKafkaConsumer) -> None:
        """Commit what waited for the minute aggregates once they are stored."""
        rolling = self.rolling
        if rolling is not None:
            if not rolling.done():
                return
            self.rolling = None
            rolling.result()  # raises only on shutdown (the store retries until stored)
        if not self.held:
            return
        offsets, self.held = self.held, {}
        try:
            await c.commit({tp: (o, meta) if meta else o for tp, (o, meta, _) in offsets.items()})
        except KafkaError as exc:
            # A rebalance took the partitions away: their new owner re-reads from the
            # last commit and overwrites the same points (event time).
            self.counters.inc("commit_failures")
            log.warning("writer.commit_failed", error=repr(exc)[:300])

    async def _finish(self, c: AIOKafkaConsumer, write: asyncio.Task[None],
                      offsets: Offsets, events: int, oldest_ms: float,
                      started: float, reports: int) -> None:
        # Retries until stored (backpressure), refused points isolated and their events
        # dead-lettered; raises only on shutdown.
        await write
        if self.budget is not None and events:  # not for a quiet partition's minutes
            self.budget.stage("writer.write").observe(time.monotonic() - started)
            self.budget.since_epoch_ms("writer.kafka_to_stored", oldest_ms)
        # Stored, not committed: a crash here re-reads the batch after the restart and
        # writes the same points again (tests/writer/test_crash_replay.py). Only writes of
        # readings count as passes (a quiet partition's minute aggregates alone do not).
        if events:
            crash_point("writer.after_write")
        await self._stored(c, offsets)
        self.counters.inc("processed_events", events)  # Kafka records
        self.counters.inc("processed_reports", reports)  # batches in them (packs: several)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Partitions taken and given up: the rollup's state follows them (services/writer/
    rollup.py); a partition taken over starts from its last commit and its metadata."""

    def __init__(self, owner: ReadingsConsumer, consumer: AIOKafkaConsumer) -> None:
        self.owner = owner
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:
            self.owner.fetched.pop(tp, None)
            self.owner.held.pop(tp, None)  # its new owner replays from the last commit
            if self.owner.rollup is not None:
                self.owner.rollup.revoke(tp)
        # Their hours to recompute are their new owners' now.
        self.owner.recompute = [r for r in self.owner.recompute if r.part not in revoked]

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        rollup = self.owner.rollup
        if rollup is None or not assigned:
            return
        # aiokafka's committed() returns the offset only; the metadata is the coordinator's.
        committed = await self.consumer._coordinator.fetch_committed_offsets(list(assigned))
        for tp in assigned:
            self.owner.fetched.pop(tp, None)
            got = committed.get(tp)
            rollup.assign(tp, got.metadata if got is not None else None, got is not None)
        log.info("writer.rollup_assigned", partitions=len(assigned),
                 closed_through={f"{tp.partition}": rollup.parts[tp].closed_through
                                 for tp in assigned})
