"""The orders service: ``lifeline.alarms`` → ``open`` events on ``lifeline.orders``, and
``lifeline.orders`` → PostgreSQL (the current state and history of every work order).

Two consumer groups, each committing a batch's offsets only once the batch is done — for the
alarms, once its ``open`` events are acknowledged by the broker; for the orders, once every
event is in PostgreSQL — so a crash (kill -9) redelivers what was not finished, and the
deterministic ids make the redelivery change nothing. While PostgreSQL is unavailable the
batch is retried (backoff up to ``retry_max_s``), never skipped: health reports the problem
``postgres`` (503) until it answers again.

No Faust here: two plain aiokafka loops and an aiohttp health server, like ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.codec import ORDER_EVENT
from schemas.registry import Registry, load_registry
from services.core import topics
from services.core.dlq import InternalDeadLetters
from services.core.health import Counters, Health, serve
from services.core.kafka import producer_kwargs, security_kwargs
from services.core.logging import get_logger
from services.orders.config import OrdersConfig
from services.orders.errors import StoreUnavailable
from services.orders.handlers import COUNTERS, Handlers
from services.orders.store import Store

log = get_logger("lifeline.orders")

Handle = Callable[..., Awaitable[Any]]


class Orders:
    """The wired orders service: :meth:`run` until SIGTERM or SIGINT; ``.health``."""

    app = None  # no Faust app

    def __init__(self, cfg: OrdersConfig, registry: Registry) -> None:
        self.cfg = cfg
        self.health = Health("orders", Counters(*COUNTERS))
        url = cfg.postgres.url.get_secret_value()
        self.store = Store(url)  # the orders loop's connection
        self.alarm_store = Store(url, create=False)  # the alarms loop's
        self.producer: AIOKafkaProducer | None = None  # made in run(): needs the loop
        self.dead = InternalDeadLetters("orders", self._send_dlq, self.health.counters)
        self.handlers = Handlers(registry, cfg.orders, self.store, self.health.counters,
                                 self.dead, alarm_store=self.alarm_store)
        self._stopping = asyncio.Event()

    def _p(self) -> AIOKafkaProducer:
        if self.producer is None:
            raise RuntimeError("the orders service is not started")
        return self.producer

    async def _send_dlq(self, key: bytes | None, value: bytes) -> Any:
        return await (await self._p().send(topics.READINGS_DLQ, key=key, value=value))

    def _make_consumer(self, topic: str, group: str) -> AIOKafkaConsumer:
        kw: dict[str, Any] = {"bootstrap_servers": self.cfg.kafka.bootstrap,
                              "group_id": group, "client_id": group,
                              "enable_auto_commit": False, "auto_offset_reset": "earliest",
                              **security_kwargs(self.cfg.kafka)}
        if self.cfg.kafka.flavor == "tansu":
            kw.update(session_timeout_ms=6000, heartbeat_interval_ms=1500,
                      fetch_max_wait_ms=250)
        return AIOKafkaConsumer(topic, **kw)

    async def _connect_store(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await self.store.connect()  # makes the tables first
                await self.alarm_store.connect()
                self.health.ok("postgres")
                return
            except StoreUnavailable as exc:
                self.health.problem("postgres", str(exc))
                log.warning("orders.postgres_unavailable", error=str(exc), retry_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.orders.retry_max_s)

    async def _loop(self, consumer: AIOKafkaConsumer, handle: Handle, store: Store,
                    after: Callable[[list[Any]], Awaitable[None]]) -> None:
        """Batches of records → ``handle`` each → ``after(results)`` → commit."""
        while not self._stopping.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            if not batch:
                continue
            results = []
            for records in batch.values():
                for r in records:
                    results.append(await self._retrying(handle, r, store))
            await after(results)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})

    async def _retrying(self, handle: Handle, r: Any, store: Store) -> Any:
        delay = 0.5
        while True:
            try:
                result = await handle(r.value, topic=r.topic, partition=r.partition,
                                      offset=r.offset, key=r.key)
                self.health.ok("postgres")
                return result
            except StoreUnavailable as exc:
                self.health.problem("postgres", str(exc))
                log.warning("orders.postgres_unavailable", error=str(exc), retry_s=delay,
                            source=f"kafka:{r.topic}[{r.partition}]@{r.offset}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.orders.retry_max_s)
                with contextlib.suppress(StoreUnavailable):
                    await store.close()
                    await store.connect()  # this loop's connection only

    async def _produce(self, results: list[Any]) -> None:
        """The order events a batch called for (opens, verifications), acknowledged by the
        broker before the batch's offsets are committed."""
        sends = [await self._p().send(topics.ORDERS, key=ev.order_id.encode(),
                                          value=ORDER_EVENT.encode(ev))
                 for ev in results if ev is not None]
        for fut in sends:
            await fut

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        s = self.cfg.orders
        runner: web.AppRunner | None = await serve(self.health, s.health_host, s.health_port)
        alarms = self._make_consumer(topics.ALARMS, "lifeline-orders-open")
        orders = self._make_consumer(topics.ORDERS, "lifeline-orders-store")
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._connect_store()
            self.producer = AIOKafkaProducer(**producer_kwargs(self.cfg.kafka,
                                                               "lifeline-orders"))
            await self.producer.start()
            await alarms.start()
            await orders.start()
            self.health.counters.gauge("assigned_partitions",
                                       lambda: len(alarms.assignment() | orders.assignment()))
            log.info("orders.started", open_from=str(s.open_from))
            tasks = [asyncio.create_task(self._loop(alarms, self.handlers.alarm,
                                                    self.alarm_store, self._produce)),
                     asyncio.create_task(self._loop(orders, self.handlers.order, self.store,
                                                    self._produce))]
            stop = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        except KafkaError as exc:
            log.error("orders.kafka_unavailable", error=repr(exc))
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            for c in (alarms, orders):
                with contextlib.suppress(Exception):
                    await c.stop()
            if self.producer is not None:
                with contextlib.suppress(Exception):
                    await self.producer.stop()
            await self.store.close()
            await self.alarm_store.close()
            if runner is not None:
                await runner.cleanup()
            log.info("orders.stopped", counters=self.health.counters.snapshot())


def main() -> None:
    cfg = OrdersConfig()
    asyncio.run(Orders(cfg, load_registry(cfg.common.registry)).run())

