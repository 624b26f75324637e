"""Packing: the reports of one partition and window in one ``lifeline.readings`` record.

Every Kafka record costs the same whatever it holds: the producer's bookkeeping in ingest,
the broker's, and for each consumer group the fetch and — in the processor — Faust's
per-event machinery (stream, acks, offsets: about 45 % of the processor's time at one
report per record, docs/benchmarks.md). With ``LIFELINE_INGEST_PACK_MS`` > 0 ingest holds
each accepted report for at most that long and writes the reports of one partition as one
record, one encoded batch per line (``schemas.codec.READING_BATCH.pack``); consumers read
each line as the batch it is (``unpack``), so one bad batch is dead-lettered alone.

What stays the same: the partition of a report is the one the producer would have chosen
for its facility key (aiokafka's default partitioner, murmur2 like the Java client's), so
a facility's reports stay in one partition, in arrival order, and the processor's table
changelog stays on its facility's partition; the record's key is its first report's
facility. A report's MQTT acknowledgement still waits until Kafka took the record that
holds it (its future, :meth:`Packer.add`). A pack is written when its window ends, or at
once when it reaches ``pack_max_reports`` or would pass ``pack_max_bytes``.

The window replaces the producer's own linger for readings: with packing on, ingest's
producer keeps its linger (``LIFELINE_KAFKA_LINGER_MS``) for what packs leave together.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka.partitioner import DefaultPartitioner

from schemas.codec import READING_BATCH
from services.core.health import Counters

PARTITIONS_REFRESH_S = 30.0  # how often the topic's partition count is asked again


class PackProducer(Protocol):
    """What packing uses of aiokafka's producer."""

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None) -> asyncio.Future[Any]: ...

    async def partitions_for(self, topic: str) -> set[int]: ...


@dataclass(slots=True)
class _Pack:
    key: bytes
    due: float  # loop time at which the window ends
    values: list[bytes] = field(default_factory=list)
    futures: list[asyncio.Future[None]] = field(default_factory=list)
    size: int = 0


class Packer:
    """Packs for one topic. :meth:`add` from the pump (in arrival order), :meth:`run` as a
    background task writing packs whose window ended; :meth:`flush_all` on stop."""

    def __init__(self, producer: PackProducer, topic: str, window_s: float, max_bytes: int,
                 max_reports: int, counters: Counters) -> None:
        self.producer = producer
        self.topic = topic
        self.window_s = window_s
        self.max_bytes = max_bytes
        self.max_reports = max_reports
        self.counters = counters
        self._partitioner = DefaultPartitioner()
        self._partitions: list[int] = []
        self._partitions_at = -1e9
        self._chosen: dict[bytes, int] = {}  # key -> partition, for self._partitions
        self._open: dict[int, _Pack] = {}
        self._lock = asyncio.Lock()  # one send at a time: packs of a partition stay in order
        self._opened = asyncio.Event()

    def __len__(self) -> int:
        """Reports waiting in open packs."""
        return sum(len(p.values) for p in self._open.values())

    async def partition(self, key: bytes) -> int:
        """The partition the producer would choose for ``key``."""
        now = time.monotonic()
        if now - self._partitions_at >= PARTITIONS_REFRESH_S or not self._partitions:
            parts = sorted(await self.producer.partitions_for(self.topic))
            if parts != self._partitions:
                self._partitions, self._chosen = parts, {}
            self._partitions_at = now
        chosen = self._chosen.get(key)
        if chosen is None:  # murmur2 in Python: once per facility, not per report
            chosen = self._chosen[key] = self._partitioner(key, self._partitions,
                                                           self._partitions)
        return chosen

    async def add(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Put one encoded batch in its partition's pack; the future is done (or failed
        with Kafka's error) when Kafka took the record holding it."""
        p = await self.partition(key)
        loop = asyncio.get_running_loop()
        pack = self._open.get(p)
        if pack is not None and pack.size + len(value) + 1 > self.max_bytes:
            await self._flush(p)
            pack = None
        if pack is None:
            pack = self._open[p] = _Pack(key, loop.time() + self.window_s)
            self._opened.set()
        fut: asyncio.Future[None] = loop.create_future()
        pack.values.append(value)
        pack.futures.append(fut)
        pack.size += len(value) + 1
        if len(pack.values) >= self.max_reports:
            await self._flush(p)
        return fut

    async def _flush(self, partition: int) -> None:
        pack = self._open.pop(partition, None)
        if pack is None:
            return
        async with self._lock:
            try:
                sent = await self.producer.send(self.topic, READING_BATCH.pack(pack.values),
                                                key=pack.key, partition=partition)
            except Exception as exc:  # noqa: BLE001 — each report is retried (and logged) by its sender
                _fail(pack.futures, exc)
                return
        self.counters.inc("packs_sent")
        self.counters.inc("packed_reports", len(pack.values))
        sent.add_done_callback(lambda f: _settle(pack.futures, f))

    async def flush_all(self) -> None:
        for p in list(self._open):
            await self._flush(p)

    async def run(self) -> None:
        """Write every pack whose window ended, for as long as ingest runs."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._open:
                self._opened.clear()
                await self._opened.wait()
            now = loop.time()
            for p in [p for p, pack in self._open.items() if pack.due <= now]:
                await self._flush(p)
            if self._open:
                await asyncio.sleep(max(0.0, min(k.due for k in self._open.values())
                                        - loop.time()))


def _settle(futures: list[asyncio.Future[None]], sent: asyncio.Future[Any]) -> None:
    """The reports of a pack share its send's outcome."""
    if sent.cancelled():
        for f in futures:
            f.cancel()
        return
    exc = sent.exception()
    if exc is not None:
        _fail(futures, exc)
        return
    for f in futures:
        if not f.done():
            f.set_result(None)


def _fail(futures: list[asyncio.Future[None]], exc: BaseException) -> None:
    for f in futures:
        if not f.done():
            f.set_exception(exc)
