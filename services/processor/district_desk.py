"""The district desk: every processor worker runs one, in one consumer group
(``lifeline-processor-districts``) on ``lifeline.context`` — key = district, so each
district's records are evaluated by exactly one worker, in order (docs/decisions/0023).

On taking a partition the desk reads it from the beginning: records before the group's
committed offset only rebuild the districts' state (:class:`DistrictBook` is a function of
the records in order), records from it on produce their district alarm events to
``lifeline.alarms``; offsets are committed once the broker has acknowledged those events.
A crash in between produces the same events again with the same ids (the writer and the
notifier drop duplicates). Rain and shared-signal records are the context feed's: skipped
here. A record that cannot be read is counted and logged (the context feed dead-letters it,
once per worker), never fatal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas.codec import ALARM_EVENT, CONTEXT_RECORD
from schemas.context import MemberAlarm
from schemas.registry import Registry
from services.core import topics
from services.core.health import Counters
from services.core.logging import get_logger
from services.core.settings import KafkaSettings
from services.processor.context_feed import consumer_kwargs
from services.processor.engine.districts import DistrictBook
from services.processor.handlers import Sink

log = get_logger("lifeline.processor.districts")

GROUP = "lifeline-processor-districts"
COUNTERS = ("district_members", "district_events", "district_rejected", "district_replayed")


class DistrictDesk:
    def __init__(self, kafka: KafkaSettings, registry: Callable[[], Registry], alarms: Sink,
                 counters: Counters) -> None:
        self.kafka = kafka
        self.registry = registry  # the registry in use now (reloads)
        self.alarms = alarms
        self.counters = counters
        self.book = DistrictBook(registry())
        self.replay_until: dict[int, int] = {}  # partition -> first offset to produce from
        self.owned: dict[str, int] = {}  # district -> its partition

    async def take(self, partition: int, offset: int, value: bytes | None) -> list[Any]:
        """One record; the sends (futures) of the district alarm events it caused."""
        if value is None:
            return []
        try:
            rec = CONTEXT_RECORD.decode(value).root
        except (ValidationError, ValueError) as exc:
            self.counters.inc("district_rejected")
            log.warning("districts.rejected", source=f"kafka:{topics.CONTEXT}[{partition}]"
                        f"@{offset}", detail=str(exc)[:300])
            return []
        if not isinstance(rec, MemberAlarm):
            return []
        reg = self.registry()
        if reg is not self.book.registry:
            self.book.use(reg)
        self.owned[rec.district] = partition
        self.counters.inc("district_members")
        events = self.book.apply(rec)
        if offset < self.replay_until.get(partition, 0):
            if events:
                self.counters.inc("district_replayed", len(events))
            return []
        sent = []
        for ev in events:
            sent.append(await self.alarms.send(key=ev.facility_id.encode(),
                                               value=ALARM_EVENT.encode(ev)))
            self.counters.inc("district_events")
            log.info(f"alarm.{ev.event.value}", facility_id=ev.facility_id, rule=ev.rule,
                     level=ev.level, category=ev.category, alarm_id=ev.alarm_id,
                     district=ev.district, facilities=ev.value, event_time=ev.ts.isoformat())
        return sent

    def revoke(self, partitions: set[int]) -> None:
        gone = {d for d, p in self.owned.items() if p in partitions}
        self.book.forget(gone)
        for d in gone:
            self.owned.pop(d, None)
        for p in partitions:
            self.replay_until.pop(p, None)

    async def run(self) -> None:
        while True:
            kw = consumer_kwargs(self.kafka, "lifeline-processor-districts")
            kw.update(group_id=GROUP, auto_offset_reset="earliest")
            c = AIOKafkaConsumer(**kw)
            try:
                await c.start()
                c.subscribe([topics.CONTEXT], listener=_Rebalance(self, c))
                while True:
                    batches = await c.getmany(timeout_ms=1000, max_records=1000)
                    commit: dict[TopicPartition, int] = {}
                    pending: list[Any] = []
                    for tp, records in batches.items():
                        for r in records:
                            pending += await self.take(tp.partition, r.offset, r.value)
                        if records and records[-1].offset >= self.replay_until.get(
                                tp.partition, 0):
                            commit[tp] = records[-1].offset + 1
                    for fut in pending:
                        if isinstance(fut, asyncio.Future):
                            await fut  # on the broker before the offset moves on
                    if commit:
                        await c.commit(commit)
            except KafkaError as exc:
                log.warning("districts.kafka_error", error=str(exc)[:300])
                await asyncio.sleep(2.0)
            finally:
                self.revoke(set(self.replay_until))
                self.book.forget()
                self.owned.clear()
                await c.stop()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """A partition taken over is read again from its beginning (state) and produced from
    its committed offset on; one given up is forgotten."""

    def __init__(self, desk: DistrictDesk, consumer: AIOKafkaConsumer) -> None:
        self.desk = desk
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.desk.revoke({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if not assigned:
            return
        for tp in assigned:
            committed = await self.consumer.committed(tp)
            self.desk.replay_until[tp.partition] = committed or 0
        await self.consumer.seek_to_beginning(*assigned)
        log.info("districts.assigned", partitions=sorted(tp.partition for tp in assigned),
                 replay_until={str(p): o for p, o in self.desk.replay_until.items()})
