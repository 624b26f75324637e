"""The orders service: ``lifeline.alarms`` → ``open`` events on ``lifeline.orders``, and
``lifeline.orders`` → PostgreSQL (the current state and history of every work order).

Two consumer groups, each committing a batch's offsets only once the batch is done — for the
alarms, once its ``open`` events are acknowledged by the broker; for the orders, once every
event is in PostgreSQL — so a crash (kill -9) redelivers what was not finished, and the
deterministic ids make the redelivery change nothing. While PostgreSQL is unavailable the
batch is retried (backoff up to ``retry_max_s``), never skipped: health reports the problem
``postgres`` (503) until it answers again.

A third loop, every ``tick_s``: orders past their deadline are escalated (督办, an
``escalate`` event), and the messages the applied events queued in PostgreSQL (dispatch,
escalation, return — services/orders/notices.py) are sent through the notifier's channels.
The order page (services/orders/page.py) is served on the public port.

No Faust here: plain aiokafka loops and aiohttp servers, like ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.codec import ORDER_EVENT
from schemas.errors import LifelineError
from schemas.oncall import OnCallConfig, load_oncall
from schemas.registry import Registry, load_registry
from services.core import topics
from services.core.dlq import InternalDeadLetters
from services.core.health import Counters, Health, serve
from services.core.kafka import producer_kwargs, security_kwargs
from services.core.logging import get_logger
from services.core.reload import WatchedFile
from services.notifier.channels import Senders
from services.orders.config import OrdersConfig
from services.orders.errors import StoreRefused, StoreUnavailable
from services.orders.handlers import COUNTERS, Handlers
from services.orders.links import OrderSigner
from services.orders.notices import Outbox
from services.orders.page import OrderPage
from services.orders.store import Store
from services.reports.data import ReportKind
from services.reports.files import report_path, write_report

log = get_logger("lifeline.orders")

Handle = Callable[..., Awaitable[Any]]


class Orders:
    """The wired orders service: :meth:`run` until SIGTERM or SIGINT; ``.health``."""

    app = None  # no Faust app

    def __init__(self, cfg: OrdersConfig, registry: Registry,
                 oncall: OnCallConfig | None = None) -> None:
        self.cfg = cfg
        self.registry = registry
        self.oncall = oncall
        self.health = Health("orders", Counters(*COUNTERS))
        url = cfg.postgres.url.get_secret_value()
        self.store = Store(url)  # the orders loop's connection
        self.alarm_store = Store(url, create=False)  # the alarms loop's
        self.tick_store = Store(url, create=False)  # the escalation and outbox loop's
        self.page_store = Store(url, create=False)  # the order page's
        self.producer: AIOKafkaProducer | None = None  # made in run(): needs the loop
        self.dead = InternalDeadLetters("orders", self._send_dlq, self.health.counters)
        s = cfg.orders
        self.signer = OrderSigner(s.link_secret.get_secret_value(), s.link_ttl_s)
        self.handlers = Handlers(registry, s, self.store, self.health.counters,
                                 self.dead, alarm_store=self.alarm_store, oncall=oncall,
                                 signer=self.signer, suspect=self._suspect)
        self.tick_handlers = Handlers(registry, s, self.tick_store, self.health.counters,
                                      self.dead, oncall=oncall, signer=self.signer)
        self.page = OrderPage(s, self.page_store, self.signer, self._p, lambda: self.registry,
                              lambda: self.oncall, self.health.counters)
        # Both files reload while the service runs (validated first; a bad one is refused and
        # the version in use kept): a new unit, a new manager, a new facility's owner.
        self.oncall_file = (WatchedFile("oncall", s.oncall, load_oncall, self._use_oncall,
                                        self.health) if oncall is not None else None)
        self.registry_file = WatchedFile("registry", cfg.common.registry, load_registry,
                                         self._use_registry, self.health)
        self._stopping = asyncio.Event()
        self._report_retry: dict[tuple[str, date], datetime] = {}
        self._report_retry_all = datetime.min.replace(tzinfo=UTC)
        self._unmarked: dict[str, tuple[datetime, str, str]] = {}  # sent, not yet marked

    def _use_oncall(self, oncall: OnCallConfig) -> None:
        self.oncall = oncall
        for h in (self.handlers, self.tick_handlers):
            h.oncall = oncall

    def _use_registry(self, registry: Registry) -> None:
        self.registry = registry
        for h in (self.handlers, self.tick_handlers):
            h.use_registry(registry)

    def _suspect(self, sensor: str, facility: str, count: int) -> None:
        self.health.warning(f"sensor.{sensor}", f"{sensor} ({facility}): {count} false alarms "
                            f"in 30 days — check or recalibrate it (its alarms still page)",
                            ttl_s=7 * 86400)
        log.warning("orders.sensor_suspect", facility_id=facility, sensor_id=sensor,
                    false_alarms_30d=count)

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
                for other in (self.alarm_store, self.tick_store, self.page_store):
                    await other.connect()
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

    async def _reports(self, now: datetime) -> None:
        """The scheduled reports: yesterday's daily report, and on Mondays last week's, once
        the local time is past ``reports_after`` and the file is not there yet. A report that
        fails is a warning and is tried again ten minutes later."""
        s = self.cfg.orders
        if s.reports_dir is None or now < self._report_retry_all:
            return
        zone = self.oncall.zone if self.oncall is not None else ZoneInfo("Asia/Shanghai")
        local = now.astimezone(zone)
        if local.time() < s.reports_after:
            return
        day = local.date() - timedelta(days=1)
        due: list[tuple[ReportKind, date]] = [("daily", day)]
        if local.weekday() == 0:
            due.append(("weekly", day - timedelta(days=6)))
        for kind, first in due:
            key = (kind, first)
            if report_path(s.reports_dir, kind, first).exists() or (
                    self._report_retry.get(key, now) > now):
                continue
            try:
                files = await write_report(
                    kind, first, s.reports_dir, store_url=self.cfg.postgres.url.get_secret_value(),
                    influx=self.cfg.influx, registry=self.registry, tz=zone)
            except LifelineError as exc:
                self._report_retry[key] = now + timedelta(minutes=10)
                self.health.counters.inc("reports_failed")
                self.health.warning("reports", f"the {kind} report of {first} failed: {exc}",
                                    ttl_s=3600)
                log.warning("orders.report_failed", kind=kind, day=first.isoformat(),
                            error=str(exc))
                continue
            self.health.counters.inc("reports_written")
            log.info("orders.report_written", kind=kind, day=first.isoformat(),
                     files=[str(f) for f in files])

    async def _report_loop(self) -> None:
        """The schedule, on a task of its own (a report takes seconds to minutes: it must
        not hold up 督办 or the messages). Nothing a report does stops the service."""
        every = min(60.0, self.cfg.orders.tick_s)
        while not self._stopping.is_set():
            try:
                await self._reports(datetime.now(UTC))
            except Exception as exc:  # noqa: BLE001 — a report never stops the service
                self.health.counters.inc("reports_failed")
                log.error("orders.report_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                self._report_retry_all = datetime.now(UTC) + timedelta(minutes=10)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), every)

    async def _send_notices(self, outbox: Outbox, now: datetime) -> None:
        s = self.cfg.orders
        # Sent but not yet marked (PostgreSQL failed right after the channel accepted):
        # marked first, never sent again by this process.
        for nid, (at, via, said) in list(self._unmarked.items()):
            await self.tick_store.notice_sent(nid, at, via, said)
            del self._unmarked[nid]
        for row in await self.tick_store.due_notices(now):
            if row["notice_id"] in self._unmarked:
                continue
            ok, detail, channel = await outbox.send(row)
            if ok and channel is not None:
                self._unmarked[row["notice_id"]] = (datetime.now(UTC), channel, detail)
                await self.tick_store.notice_sent(row["notice_id"], datetime.now(UTC), channel,
                                                  detail)
                del self._unmarked[row["notice_id"]]
                self.health.counters.inc("notices_sent")
                log.info("orders.notice_sent", order_id=row["order_id"], notice=row["kind"],
                         person=row["person"], channel=channel)
                continue
            last = row["attempts"] + 1 >= s.notice_attempts
            await self.tick_store.notice_failed(
                row["notice_id"], None if last else now + timedelta(seconds=s.notice_backoff_s),
                detail)
            self.health.counters.inc("notices_failed" if last else "notices_retried")
            log.warning("orders.notice_failed" if last else "orders.notice_retry",
                        order_id=row["order_id"], notice=row["kind"], person=row["person"],
                        error=detail)
            if last:
                self.health.warning("notices", f"a message about {row['order_id']} to "
                                    f"{row['person']} could not be sent: {detail}", ttl_s=3600)

    async def _ticks(self, outbox: Outbox) -> None:
        """Every ``tick_s``: escalate what is overdue, send what is queued. A failure is
        logged and the next tick tries again; none stops the service."""
        s = self.cfg.orders
        while not self._stopping.is_set():
            now = datetime.now(UTC)
            steps: tuple[Callable[[], Awaitable[None]], ...] = (
                functools.partial(self._escalate, now),
                functools.partial(self._send_notices, outbox, now))
            for step in steps:
                try:
                    await step()
                    self.health.ok("postgres")
                except StoreUnavailable as exc:
                    self.health.problem("postgres", str(exc))
                    with contextlib.suppress(StoreUnavailable):
                        await self.tick_store.connect()
                except (StoreRefused, KafkaError) as exc:
                    log.error("orders.tick_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), s.tick_s)

    async def _escalate(self, now: datetime) -> None:
        await self._produce(list(await self.tick_handlers.escalations(now)))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        s = self.cfg.orders
        runner: web.AppRunner | None = await serve(self.health, s.health_host, s.health_port)
        page_runner = web.AppRunner(self.page.app(), access_log=None)
        await page_runner.setup()
        session = aiohttp.ClientSession()
        outbox = Outbox(lambda: self.oncall, Senders(session),
                        view_link=lambda order_id, person: self.handlers.url_for(
                            order_id, person, "view"))
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
            # The page once its store and producer are there (a step sends an event).
            await web.TCPSite(page_runner, s.public_host, s.public_port).start()
            self.health.counters.gauge("assigned_partitions",
                                       lambda: len(alarms.assignment() | orders.assignment()))
            log.info("orders.started", open_from=str(s.open_from))
            tasks = [asyncio.create_task(self._loop(alarms, self.handlers.alarm,
                                                    self.alarm_store, self._produce)),
                     asyncio.create_task(self._loop(orders, self.handlers.order, self.store,
                                                    self._produce)),
                     asyncio.create_task(self._ticks(outbox)),
                     asyncio.create_task(self._report_loop()),
                     asyncio.create_task(self.registry_file.watch(self.cfg.common.reload_check_s))]
            if self.oncall_file is not None:
                tasks.append(asyncio.create_task(
                    self.oncall_file.watch(self.cfg.common.reload_check_s)))
            stop = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        except KafkaError as exc:
            log.error("orders.kafka_unavailable", error=repr(exc))
        finally:
            await page_runner.cleanup()  # no request in flight while the stores close
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
            for store in (self.store, self.alarm_store, self.tick_store, self.page_store):
                await store.close()
            await session.close()
            if runner is not None:
                await runner.cleanup()
            log.info("orders.stopped", counters=self.health.counters.snapshot())


def main() -> None:
    cfg = OrdersConfig()
    oncall = load_oncall(cfg.orders.oncall)
    asyncio.run(Orders(cfg, load_registry(cfg.common.registry), oncall).run())

