"""What the writer does with one record of each input topic, and with one batch of them.

No Faust here: services/writer/app.py hands the agents' events (alarms, on-call records,
pipeline health) and the readings consumer's batches (services/writer/readings.py) to
these, so each step runs on plain bytes in a test.

One record: decoded by its contract's codec (schemas/codec.py) and turned into points
(services/writer/points.py). A record that cannot be read (not JSON, not its contract, a
point that cannot be built: :data:`~services.writer.errors.UNREADABLE`) is dead-lettered
with its bytes and reason (services.core.dlq.InternalDeadLetters, counted ``rejected`` and
``dead_lettered``) and the rest of its batch is stored.

One batch: its points in one write (services/writer/batch.py: retried while the database is
unavailable — backpressure, never a skip — and, when the database refuses some points,
isolated so that only their events are dead-lettered).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.codec import ALARM_EVENT, DEAD_LETTER, ONCALL_RECORD
from schemas.deadletter import Problem, RejectReason, dead_letter
from services.core import topics
from services.core.dlq import InternalDeadLetters
from services.core.health import Counters, Health
from services.core.logging import get_logger
from services.writer.batch import Batch, BatchWriter, merge
from services.writer.config import WriterSettings
from services.writer.errors import UNREADABLE, SinkRejected
from services.writer.points import PointBuilder
from services.writer.sinks import Sink

log = get_logger("lifeline.writer")

# Points per write of minute aggregates (issue 16: 125,001 in one request timed out).
ROLLUP_CHUNK_POINTS = 20_000

Send = Callable[[bytes | None, bytes], Awaitable[Any]]
"""Sends (key, value) to the dead-letter topic ``lifeline.readings.dlq``."""


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record as the handlers see it (a Faust event's value and message)."""

    value: bytes
    topic: str
    partition: int
    offset: int
    key: bytes | None = None

    @property
    def source(self) -> str:
        return f"kafka:{self.topic}[{self.partition}]@{self.offset}"


class Handlers:
    """The writer's steps for one record and one batch of each input topic."""

    def __init__(self, points: PointBuilder, sink: Sink, counters: Counters, health: Health,
                 settings: WriterSettings, send: Send) -> None:
        self.points = points
        self.counters = counters
        self.send = send
        self.dead = InternalDeadLetters("writer", send, counters)
        self.writer = BatchWriter(sink, counters, health, settings.retry_max_s, self.refused,
                                  settings.isolate_max_requests)
        # The map's facility points (time 0: rewriting one overwrites it) as stored so far;
        # after a registry reload only the new and changed ones are written.
        self.stored_facilities: set[str] = set()
        self._facilities_lock = asyncio.Lock()

    # ------------------------------------------------------------ one record → its points
    def alarm_lines(self, raw: bytes) -> list[str]:
        """A ``lifeline.alarms`` event: its ``alarm_event`` and ``alarm_state`` points."""
        ev = ALARM_EVENT.decode(raw)
        return [self.points.alarm(ev), self.points.alarm_state(ev)]

    def health_lines(self, raw: bytes) -> list[str]:
        """A ``lifeline.health`` record: its ``pipeline`` point."""
        return [self.points.pipeline(raw)]

    def oncall_lines(self, raw: bytes) -> tuple[str, str | None]:
        """A ``lifeline.oncall`` record: its audit point (ns precision) and, for an
        acknowledgement or resolution, the alarm's ``alarm_state`` fields (ms)."""
        rec = ONCALL_RECORD.decode(raw)
        return self.points.oncall(rec), self.points.ack_state(rec)

    def reading_lines(self, raw: bytes) -> list[str]:
        """A ``lifeline.readings`` batch: one ``reading`` point per reading (the hot path)."""
        return self.points.readings_raw(raw)

    # ------------------------------------------------------------ one batch of records
    async def store(self, records: Sequence[Record], topic: str,
                    to_lines: Callable[[bytes], list[str]], counter: str,
                    long_term: bool = False) -> None:
        """Store the points of ``records`` (alarms, pipeline health) in one write; count
        every record under ``counter``."""
        batch = Batch()
        for rec in records:
            try:
                lines = to_lines(rec.value)
            except UNREADABLE as exc:
                await self.unreadable(rec, exc)
                continue
            batch.add(rec.value, rec.source, lines)
        await self.writer.store_or_dead_letter(batch, f"kafka:{topic}", long_term)
        self.counters.inc(counter, len(records))

    async def store_oncall(self, records: Sequence[Record]) -> None:
        """The on-call audit trail (ns precision) and the acknowledgements' alarm states
        (ms): two writes, one dead letter per refused record."""
        audit, acks = Batch(), Batch()
        for rec in records:
            try:
                line, ack = self.oncall_lines(rec.value)
            except UNREADABLE as exc:
                await self.unreadable(rec, exc)
                continue
            audit.add(rec.value, rec.source, [line])
            if ack is not None:
                acks.add(rec.value, rec.source, [ack])
        source = f"kafka:{topics.ONCALL}"
        refused = await self.writer.store_events(audit, source, True, "ns")
        refused += await self.writer.store_events(acks, source, True)
        await self.writer.send_refused(merge(refused))
        self.counters.inc("processed_oncall_records", len(records))

    async def store_readings(self, batch: Batch) -> None:
        """A batch the readings consumer converted (services/writer/readings.py)."""
        await self.writer.store_or_dead_letter(batch, f"kafka:{topics.READINGS}", readings=True)

    async def store_rollup(self, lines: list[str]) -> None:
        """The 1-minute aggregates the readings consumer closed (``long``; retried while
        the database is unavailable). Refused — which only a field type conflict with
        older points could cause — they are logged and counted, not dead-lettered: their
        readings are stored.

        In requests of at most ``ROLLUP_CHUNK_POINTS``: a minute of 125,000 series in one
        request timed out (10 s) beside the readings writes and was sent again whole."""
        for start in range(0, len(lines), ROLLUP_CHUNK_POINTS):
            chunk = lines[start:start + ROLLUP_CHUNK_POINTS]
            try:
                await self.writer.store(chunk, "rollup", long_term=True)
            except SinkRejected as exc:
                self.counters.inc("rollup_refused", len(chunk))
                log.error("writer.rollup_refused", points=len(chunk), error=str(exc)[:300])

    async def store_facilities(self) -> int:
        """The registry's facility points not stored yet (all at start, the new and
        changed ones after a reload); returns how many were written."""
        async with self._facilities_lock:
            lines = [line for line in self.points.facilities()
                     if line not in self.stored_facilities]
            if lines:
                await self.writer.store(lines, "registry", long_term=True)
                self.stored_facilities.update(lines)
            return len(lines)

    # ------------------------------------------------------------ what is not stored
    async def unreadable(self, rec: Record, exc: Exception) -> None:
        """A record of an input topic the writer cannot read: dead-lettered, not stored."""
        self.counters.inc("rejected")
        await self.dead.undecodable(rec.value, exc, topic=rec.topic, partition=rec.partition,
                                    offset=rec.offset, key=rec.key)

    async def unreadable_reading(self, raw: bytes, source: str, reason: RejectReason,
                                 detail: str) -> None:
        """A ``lifeline.readings`` value the readings consumer cannot read."""
        self.counters.inc("rejected")
        await self.dead.record(raw, reason, detail, topic=topics.READINGS, source=source)

    async def refused(self, raw: bytes, source: str, reason: RejectReason, detail: str,
                      problems: list[Problem] | None = None,
                      facility_id: str | None = None) -> None:
        """An event whose points the database refused (the BatchWriter's dead letter)."""
        self.counters.inc("rejected")
        log.warning("writer.rejected", source=source, reason=str(reason), detail=detail[:300])
        dl = dead_letter(problems=problems or [Problem(reason=reason, detail=detail[:1000])],
                         service="writer", source=source, payload=raw, facility_id=facility_id,
                         received_at=datetime.now(UTC), keep_bytes=65536)
        await self.send(None, DEAD_LETTER.encode(dl))
