"""Every processor worker reads ``lifeline.context`` in full (all partitions, no consumer
group) into its :class:`SharedContext`: what the other workers' rain gauges saw and the
signals their sensors share (district rules' members are the district desk's).

A plain aiokafka consumer, not a Faust agent: each worker needs *every* partition, which a
group would split between them (a Faust GlobalTable would do it through Faust's table
recovery, which LOCAL_STACK.md shows to be fragile on the local broker). Records are
idempotent (newest time wins), so reading from the beginning after a restart is correct.
A record that cannot be read is counted (``context_rejected``), logged with its source and
— with a dead-letter sink (the processor's) — dead-lettered with its bytes and reason
(services.core.dlq.InternalDeadLetters); never fatal. Each worker reads the topic in full,
so a bad record is dead-lettered once per worker and start (not again when the feed
reconnects): the copies share ``source`` and ``payload_sha256``. What one record does is
handlers.py's ``apply_context``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from services.core import topics
from services.core.dlq import InternalDeadLetters
from services.core.health import Counters
from services.core.kafka import security_kwargs
from services.core.logging import get_logger
from services.core.settings import KafkaSettings
from services.processor.engine.context import SharedContext
from services.processor.handlers import apply_context

log = get_logger("lifeline.processor.context")


def consumer_kwargs(kafka: KafkaSettings, client_id: str) -> dict[str, Any]:
    kw: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap, "client_id": client_id,
                          "enable_auto_commit": False, "group_id": None,
                          **security_kwargs(kafka)}
    if kafka.flavor == "tansu":
        kw["fetch_max_wait_ms"] = 250  # Tansu holds every fetch for its full max wait
    return kw


class ContextFeed:
    def __init__(self, kafka: KafkaSettings, context: SharedContext, counters: Counters,
                 dead: InternalDeadLetters | None = None) -> None:
        self.kafka = kafka
        self.context = context
        self.counters = counters
        self.dead = dead  # where records that cannot be read are dead-lettered
        self.dead_lettered: set[tuple[int, int]] = set()  # (partition, offset), this process

    async def take(self, topic: str, partition: int, offset: int, key: bytes | None,
                   value: bytes | None) -> None:
        """One record of ``lifeline.context``: applied, or dead-lettered with its reason."""
        if value is None:
            return
        exc = apply_context(self.context, value, self.counters,
                            f"kafka:{topic}[{partition}]@{offset}")
        if exc is not None and self.dead is not None \
                and (partition, offset) not in self.dead_lettered:
            self.dead_lettered.add((partition, offset))
            await self.dead.undecodable(value, exc, topic=topic, partition=partition,
                                        offset=offset, key=key)

    async def run(self) -> None:
        while True:
            c = AIOKafkaConsumer(**consumer_kwargs(self.kafka, "lifeline-processor-context"))
            try:
                await c.start()
                await c.topics()  # fetch metadata of every topic
                parts = c.partitions_for_topic(topics.CONTEXT) or set()
                if not parts:
                    await asyncio.sleep(2.0)  # not created yet: look again
                    continue
                tps = [TopicPartition(topics.CONTEXT, p) for p in sorted(parts)]
                c.assign(tps)
                await c.seek_to_beginning(*tps)
                while True:
                    batches = await c.getmany(timeout_ms=1000, max_records=1000)
                    for tp, records in batches.items():
                        for r in records:
                            await self.take(tp.topic, tp.partition, r.offset, r.key, r.value)
            except KafkaError as exc:
                log.warning("context.kafka_error", error=str(exc)[:300])
                await asyncio.sleep(2.0)
            finally:
                await c.stop()
