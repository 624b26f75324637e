"""Delivery: grouping, retries with backoff, channel fall-back, and an audit record for
every attempt.

Grouping (services.notifier.grouping, on the monotonic clock): a recipient (person and
channel list) gets up to ``grouping.burst`` messages at once within ``grouping.window_s``;
notifications beyond that are collected and sent as one message when the window allows.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from schemas.oncall import OnCallConfig, OnCallRecord, Person, RecordType, record_id_for
from services.core.crash import crash_point
from services.core.health import Counters
from services.core.latency import Stage
from services.core.logging import get_logger
from services.notifier.channels import Senders
from services.notifier.errors import ChannelError
from services.notifier.escalation import Notification, OnCall, alarm_fields
from services.notifier.grouping import Grouper, grouping_flags
from services.notifier.links import AckLink, Signer
from services.notifier.messages import Item, render

log = get_logger("lifeline.notifier.delivery")

Emit = Callable[[OnCallRecord], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff_min_s: float = 0.2
    backoff_max_s: float = 5.0


class Deliverer:
    def __init__(self, cfg: OnCallConfig | OnCall, senders: Senders, signer: Signer, public_url: str,
                 emit: Emit, counters: Counters, retry: RetryPolicy | None = None,
                 max_parallel: int = 32) -> None:
        self.live = OnCall.of(cfg)  # the notifier's one reference (reloads replace its cfg)
        self.senders = senders
        self.signer = signer
        self.public_url = public_url.rstrip("/")
        self.emit = emit
        self.counters = counters
        self.retry = retry or RetryPolicy()
        self._grouper: Grouper[Notification] = Grouper(
            lambda: self.cfg.grouping.policy())
        self._known: set[str] = set()
        self._known_order: deque[str] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.Task[None]] = set()  # held batches' flushes (only sleep)
        self._limit = asyncio.Semaphore(max_parallel)
        self.latencies: deque[float] = deque(maxlen=1000)  # created → delivered, seconds
        self.page_stage: Stage | None = None  # the same, in the latency budget

    @property
    def cfg(self) -> OnCallConfig:
        """The on-call file in use now (people, channels, grouping)."""
        return self.live.cfg

    def ack_url(self, n: Notification) -> str:
        # Shared unless every channel of the step reaches the person alone: then whoever
        # opens it must confirm who they are with a one-time code (services.notifier.ackpage).
        token = self.signer.sign(AckLink(n.alarm_id, n.facility_id, n.person, n.notification_id,
                                         n.team, not self.cfg.step_is_personal(n.channels)))
        return f"{self.public_url}/ack/{token}"

    def _remember(self, nid: str) -> bool:
        if nid in self._known:
            return False
        self._known.add(nid)
        self._known_order.append(nid)
        while len(self._known_order) > 50_000:
            self._known.discard(self._known_order.popleft())
        return True

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Typically Kafka gone at shutdown: the notification stays pending in the
            # table and is sent again by whichever worker resumes the partition.
            self.counters.inc("delivery_errors")
            log.error("notifier.delivery_error", error=repr(task.exception())[:300])

    def submit(self, n: Notification) -> None:
        """Hand a notification over (never blocks; duplicates of a known id are dropped)."""
        if not self._remember(n.notification_id):
            self.counters.inc("duplicates_dropped")
            return
        key = (n.person, tuple(n.channels))
        offer = self._grouper.offer(key, n, time.monotonic(), **grouping_flags(n))
        if offer.send:
            if len(offer.send) > 1:
                self.counters.inc("grouped_messages")
            self._spawn(self._send(offer.send))
        if offer.due is not None:
            timer = self._spawn(self._flush_later(key, offer.due - time.monotonic()))
            self._timers.add(timer)
            timer.add_done_callback(self._timers.discard)

    async def _flush_later(self, key: tuple[str, tuple[str, ...]], delay: float) -> None:
        await asyncio.sleep(max(0.0, delay) + 0.0005)
        items = self._grouper.flush(key, time.monotonic())
        if items:
            self._send_held(items)

    def _send_held(self, items: list[Notification]) -> None:
        """A held batch out as one message, in a task of its own (cancelling a timer never
        cuts a send)."""
        self.counters.inc("grouped_messages")
        self._spawn(self._send(items))

    def drop(self, keep: Callable[[Notification], bool]) -> int:
        """Forget buffered notifications ``keep`` rejects (partitions moved to another worker)."""
        dropped = self._grouper.drop(keep)
        for n in dropped:
            self._known.discard(n.notification_id)
        return len(dropped)

    async def drain(self, within_s: float = 10.0) -> None:
        """Wait for everything handed over to be sent (tests, shutdown)."""
        deadline = time.monotonic() + within_s
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self._tasks), timeout=max(0.0, deadline - time.monotonic()))

    async def shut(self, within_s: float) -> int:
        """Shutdown: every held batch goes out now, as the message it would have been at the
        end of its window (a clear must not wait for the next start), then up to
        ``within_s`` for what is in flight. A send not done by then is cancelled — never
        recorded as failed, so the notification stays pending in the table and the worker
        that next owns its partition sends it again (the at-least-once duplicate, if the
        cut request had reached the receiver). Returns how many sends were cut."""
        for timer in list(self._timers):
            timer.cancel()
        for items in self._grouper.release():
            self._send_held(items)
        await self.drain(within_s)
        late = [t for t in self._tasks if not t.done()]
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=1.0)
            self.counters.inc("shutdown_sends_cut", len(late))
        return len(late)

    def _record(self, type_: RecordType, n: Notification, *parts: object, **fields: object
                ) -> OnCallRecord:
        return OnCallRecord(record_id=record_id_for(type_, n.notification_id, *parts),
                            type=type_, ts=datetime.now(UTC), alarm_id=n.alarm_id,
                            facility_id=n.facility_id, notification_id=n.notification_id,
                            kind=n.kind, team=n.team or None, step=n.step, repeat=n.repeat,
                            person=n.person, **alarm_fields(n.alarm),
                            **fields)

    async def _send(self, items: list[Notification]) -> None:
        async with self._limit:
            await self._send_now(items)

    def recipient(self, n: Notification) -> Person | None:
        """Who ``n`` goes to: a person of the on-call file, or its ad-hoc contact (None: a
        person no longer in the file)."""
        if n.contact is not None:
            return Person.model_construct(id=n.person, name=n.contact.get("name", ""),
                                          phone=n.contact.get("phone"), email=None,
                                          wecom_user=None)
        return next((p for p in self.cfg.people if p.id == n.person), None)

    async def _send_now(self, items: list[Notification]) -> None:
        first = items[0]
        person = self.recipient(first)
        if person is None:
            self.counters.inc("notifications_failed", len(items))
            log.error("notifier.undeliverable", person=first.person, channels=first.channels,
                      facility_id=first.facility_id, alarm_id=first.alarm_id,
                      errors="not in the on-call file")
            for n in items:
                await self.emit(self._record(RecordType.FAILED, n, ok=False,
                                             detail=f"{n.person} is not in the on-call file"))
            return
        msg = render([Item(n.notification_id, n.kind, n.alarm_id, n.alarm,
                           None if n.contact is not None else self.ack_url(n))
                      for n in items],
                     person.id, self.cfg.zone, self.cfg.grouping.max_listed)
        failures: list[str] = []
        for cid in first.channels:
            channel = self.cfg.channel(cid)
            attempt_no = 0
            try:
                async for attempt in AsyncRetrying(
                        stop=stop_after_attempt(self.retry.attempts),
                        wait=wait_exponential(min=self.retry.backoff_min_s,
                                              max=self.retry.backoff_max_s),
                        retry=retry_if_exception(lambda e: isinstance(e, ChannelError)
                                                 and e.retryable),
                        reraise=True):
                    with attempt:
                        attempt_no += 1
                        try:
                            how = await self.senders.send(channel, person, msg)
                        except ChannelError as exc:
                            self.counters.inc(f"attempts_failed.{cid}")
                            log.warning("notifier.attempt_failed", channel=cid, person=person.id,
                                        attempt=attempt_no, error=str(exc),
                                        facility_id=first.facility_id, alarm_id=first.alarm_id)
                            for n in items:
                                await self.emit(self._record(RecordType.ATTEMPT, n, cid,
                                                             attempt_no, channel=cid, ok=False,
                                                             detail=str(exc)[:300]))
                            raise
            except ChannelError as exc:
                failures.append(f"{cid}: {exc}")
                continue
            # Delivered, and not yet recorded: a crash here leaves the notification pending
            # in the table, and the worker that resumes the partition sends it again (with
            # the same id) — the one duplicate at-least-once delivery allows.
            crash_point("notifier.after_page")
            now = time.time()
            for n in items:
                self.latencies.append(now - n.created_ms / 1000)
                if self.page_stage is not None:
                    self.page_stage.observe(now - n.created_ms / 1000)
                await self.emit(self._record(RecordType.ATTEMPT, n, cid, attempt_no, channel=cid,
                                             ok=True, detail=how))
                await self.emit(self._record(RecordType.DELIVERED, n, channel=cid, ok=True,
                                             detail=f"{how}; {len(items)} alarm(s) in message"))
            self.counters.inc(f"delivered.{cid}")
            self.counters.inc("messages_sent")
            self.counters.inc("notifications_delivered", len(items))
            log.info("notifier.delivered", channel=cid, person=person.id, alarms=len(items),
                     facility_id=first.facility_id, alarm_id=first.alarm_id,
                     fallback=len(failures) > 0)
            return
        self.counters.inc("notifications_failed", len(items))
        log.error("notifier.undeliverable", person=person.id, channels=first.channels,
                  facility_id=first.facility_id, alarm_id=first.alarm_id,
                  errors="; ".join(failures)[:500])
        for n in items:
            await self.emit(self._record(RecordType.FAILED, n, ok=False,
                                         detail="; ".join(failures)[:500]))
