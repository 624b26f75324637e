"""What the orders service does with one alarm event and with one order event.

- An alarm event (``lifeline.alarms``) that calls for handling — a *facility* alarm raised or
  escalated to ``open_from`` or worse, not suppressed by a sensor or gateway fault, not
  silenced by maintenance — opens the alarm's work order: an ``open`` event on
  ``lifeline.orders`` (id from the alarm episode, deadline from the policy, the facility's
  owner unit from the registry). An episode opens one order, whatever is replayed: the
  order id and the event id are deterministic, and the projector drops a repeated id.
- An order event (``lifeline.orders``) is folded into PostgreSQL (services/orders/store.py).
- Verification from the data (复核 by the sensor itself): an order whose unit has reported is
  verified by ``verifier`` once its alarm has *cleared* — the engine clears an alarm only
  when the signal has stayed back under the rule's clear level for its ``clear_after_s`` /
  ``clear_after_count`` (an hourly PM10 under the limit for an hour: ``clear_after_s:
  3600``). The clear may come first (the unit reports after the level fell: verified at the
  report) or after the report (verified at the clear). Anything else stays ``reported`` for
  a person to verify or return.

A record that is not its topic's contract is dead-lettered with its bytes and reason
(``lifeline.readings.dlq``); a valid event the lifecycle refuses is recorded in the store's
``work_order_refused`` with the reason. Neither stops the service.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from schemas.alarm import AlarmCategory, AlarmEvent, AlarmEventType
from schemas.codec import ALARM_EVENT, ORDER_EVENT
from schemas.deadletter import RejectReason
from schemas.oncall import OnCallConfig
from schemas.registry import Registry
from schemas.workorder import (
    DeadlinePolicy,
    OrderAction,
    OrderEvent,
    OrderState,
    WorkOrder,
    event_id_for,
    order_id_for,
)
from services.core.dlq import InternalDeadLetters, decode_reason, error_detail, kafka_source
from services.core.health import Counters
from services.core.logging import get_logger
from services.orders.config import OrdersSettings
from services.orders.errors import StoreRefused
from services.orders.links import OrderLink, OrderSigner, Role
from services.orders.notices import Notice, notices_for
from services.orders.store import Applied, Store

log = get_logger("lifeline.orders")

COUNTERS = ("alarm_events", "orders_opened", "orders_verified_from_data", "order_events",
            "applied", "duplicates", "refused", "rejected", "dead_lettered", "dispatched_auto",
            "escalations", "notices_sent", "notices_retried", "notices_failed", "page_views",
            "page_steps", "page_refused", "reports_written", "reports_failed")
SYSTEM = "system"
VERIFIER = "verifier"


class Handlers:
    def __init__(self, registry: Registry, settings: OrdersSettings, store: Store,
                 counters: Counters, dead: InternalDeadLetters,
                 alarm_store: Store | None = None, oncall: OnCallConfig | None = None,
                 signer: OrderSigner | None = None,
                 suspect: Callable[[str, str, int], None] | None = None) -> None:
        self.suspect = suspect  # (sensor, facility, count): a sensor reached the limit
        self.registry = registry
        self.oncall = oncall
        self.signer = signer
        self.settings = settings
        self.store = store  # the orders loop's connection
        # The alarms loop's own connection: its statements never join the orders loop's
        # transaction (one connection is one session).
        self.alarm_store = alarm_store or store
        self.counters = counters
        self.dead = dead
        self.facilities = {f.id: f for f in registry.facilities}
        self._opened: dict[str, None] = {}  # order ids this process opened (bounded)
        # Escalations sent, per order, deadline (a new dispatch restarts 督办) and level.
        self._escalated: dict[tuple[str, datetime, int], None] = {}

    def use_registry(self, registry: Registry) -> None:
        """A reloaded registry: owner units and names of facilities from now on."""
        self.registry = registry
        self.facilities = {f.id: f for f in registry.facilities}

    # ------------------------------------------------------------ who is told
    def link_for(self, order: WorkOrder, person: str) -> str:
        """The order page for ``person``: the bureau's desk (the section chief) verifies and
        closes; anyone else acts for the owner unit."""
        desk = self.oncall.orders if self.oncall is not None else None
        role: Role = "desk" if desk is not None and person == desk.section_chief else "unit"
        return self.url_for(order.order_id, person, role)

    def url_for(self, order_id: str, person: str, role: Role) -> str:
        if self.signer is None:
            return ""
        token = self.signer.sign(OrderLink(order_id, person, role))
        return f"{self.settings.public_url.rstrip('/')}/order/{token}"

    def notices(self, ev: OrderEvent, order: WorkOrder, overdue_count: int) -> list[Notice]:
        return notices_for(ev, order, self.oncall, self.facilities.get(order.facility_id),
                           self.link_for, overdue_count)

    def dispatch_event(self, order: WorkOrder) -> OrderEvent | None:
        """The automatic dispatch of a new order to its unit's contact (None: the unit is
        not in the on-call file, or automatic dispatch is off)."""
        if not self.settings.auto_dispatch or self.oncall is None:
            return None
        unit = self.oncall.unit(order.owner_unit)
        if unit is None:
            return None
        self.counters.inc("dispatched_auto")
        at = order.opened_at
        return OrderEvent(event_id=event_id_for(order.order_id, OrderAction.DISPATCH, at, SYSTEM),
                          order_id=order.order_id, action=OrderAction.DISPATCH, at=at,
                          actor=SYSTEM, assignee=unit.contact,
                          note="按权属单位自动派单 dispatched to the owner unit automatically")

    async def _false_alarm(self, order: WorkOrder) -> None:
        """研判 said false alarm: count it against the sensor; at the limit the sensor is
        suspect (a health warning, its count on the page of its next orders). Its alarms
        are never muted for it: a sensor that cried wolf may still see the wolf."""
        sensor = order.sensor_id or order.facility_id
        count = await self.store.false_alarms_of(sensor)
        log.info("orders.false_alarm_counted", order_id=order.order_id,
                 facility_id=order.facility_id, sensor_id=sensor, false_alarms_30d=count)
        if count >= self.settings.false_alarm_limit and self.suspect is not None:
            self.suspect(sensor, order.facility_id, count)

    async def escalations(self, now: datetime) -> list[OrderEvent]:
        """督办: an ``escalate`` for every order past its deadline whose escalation due is
        above the one it has (a reported order waits for the centre, not the unit: not
        escalated). Sent again after a crash only until the store shows it: a second one is
        refused there (not above the current escalation) and tells nobody."""
        step = self.oncall.orders.escalation_step_hours if (
            self.oncall is not None and self.oncall.orders is not None) else 2.0
        out = []
        for order in await self.store.orders(overdue_at=now, limit=1000):
            if order.state is OrderState.REPORTED:
                continue
            due = DeadlinePolicy.escalation_due(order, now, step)
            key = (order.order_id, order.deadline, due)
            if due <= order.escalation or key in self._escalated:
                continue
            self._escalated[key] = None
            if len(self._escalated) > 100_000:
                self._escalated.pop(next(iter(self._escalated)))
            self.counters.inc("escalations")
            log.warning("orders.escalated", order_id=order.order_id,
                        facility_id=order.facility_id, sensor_id=order.sensor_id,
                        owner_unit=order.owner_unit, escalation=due,
                        deadline=order.deadline.isoformat())
            out.append(OrderEvent(
                event_id=event_id_for(order.order_id, OrderAction.ESCALATE, now, SYSTEM, due),
                order_id=order.order_id, action=OrderAction.ESCALATE, at=now, actor=SYSTEM,
                escalation=due))
        return out

    def opens(self, ev: AlarmEvent) -> bool:
        """The alarm event calls for a work order."""
        return (ev.category is AlarmCategory.FACILITY
                and ev.event in (AlarmEventType.RAISED, AlarmEventType.ESCALATED)
                and ev.level is not None
                and ev.level.severity >= self.settings.open_from.severity
                and ev.suppressed_by is None and not ev.silenced
                and ev.grouped_into is None)  # weather a district alarm stands for

    def open_event(self, ev: AlarmEvent) -> OrderEvent:
        """The ``open`` event of the alarm's order (deterministic ids)."""
        assert ev.level is not None  # opens() checked it
        order_id = order_id_for(ev.alarm_id)
        facility = self.facilities.get(ev.facility_id)
        owner = (facility.owner_unit if facility is not None and facility.owner_unit
                 else self.settings.default_owner_unit)
        at = ev.ts
        return OrderEvent(
            event_id=event_id_for(order_id, OrderAction.OPEN, at, SYSTEM), order_id=order_id,
            action=OrderAction.OPEN, at=at, actor=SYSTEM, alarm_id=ev.alarm_id,
            facility_id=ev.facility_id,
            sensor_id=None if ev.sensor == ev.facility_id else ev.sensor, rule=ev.rule,
            level=ev.level, kind=ev.kind, district=ev.district, owner_unit=owner,
            deadline=self.settings.deadlines.deadline_for(ev.level, ev.kind, at),
            note=ev.message[:2000])

    async def _reject(self, raw: bytes, reason: RejectReason, detail: str, topic: str,
                      partition: int, offset: int, key: bytes | None) -> None:
        """Count and dead-letter one record this service cannot use (it goes on)."""
        self.counters.inc("rejected")
        await self.dead.record(raw, reason, detail, topic=topic, partition=partition,
                               offset=offset, key=key)

    async def alarm(self, raw: bytes, *, topic: str, partition: int, offset: int,
                    key: bytes | None) -> OrderEvent | None:
        """The ``open`` event to produce for one alarm record, or None."""
        self.counters.inc("alarm_events")
        try:
            ev = ALARM_EVENT.decode(raw)
        except ValueError as exc:
            await self._reject(raw, decode_reason(exc), error_detail(exc), topic, partition,
                               offset, key)
            return None
        if ev.event is AlarmEventType.CLEARED:
            return await self._cleared(ev)
        if not self.opens(ev):
            return None
        order_id = order_id_for(ev.alarm_id)
        if order_id in self._opened or await self.alarm_store.exists(order_id):
            return None  # escalated: the episode's order is open already
        self._opened[order_id] = None
        if len(self._opened) > 100_000:
            self._opened.pop(next(iter(self._opened)))
        self.counters.inc("orders_opened")
        log.info("orders.opened", order_id=order_id, alarm_id=ev.alarm_id,
                 facility_id=ev.facility_id, sensor_id=ev.sensor, level=str(ev.level))
        return self.open_event(ev)

    async def _cleared(self, ev: AlarmEvent) -> OrderEvent | None:
        """The alarm cleared: remember it; a reported order of it is verified now. Only a
        facility alarm cleared by the data counts: a clear without a value is the engine
        dropping an alarm whose rule left the registry (no evidence of anything)."""
        if ev.category is not AlarmCategory.FACILITY or ev.value is None:
            return None
        await self.alarm_store.cleared(ev.alarm_id, ev.ts)
        order_id = order_id_for(ev.alarm_id)
        if not await self.alarm_store.exists(order_id):
            return None
        order = await self.alarm_store.order(order_id)
        return self.verify_event(order, ev.ts) if order.state is OrderState.REPORTED else None

    def verify_event(self, order: WorkOrder, cleared_at: datetime) -> OrderEvent:
        """``verifier`` verifies ``order``: its alarm cleared at ``cleared_at``."""
        at = max(cleared_at, order.updated_at)
        self.counters.inc("orders_verified_from_data")
        log.info("orders.verified_from_data", order_id=order.order_id,
                 facility_id=order.facility_id, sensor_id=order.sensor_id,
                 cleared_at=cleared_at.isoformat())
        return OrderEvent(
            event_id=event_id_for(order.order_id, OrderAction.VERIFY, at, VERIFIER),
            order_id=order.order_id, action=OrderAction.VERIFY, at=at, actor=VERIFIER,
            note=(f"传感器已回落至解除值以下 the sensor has been back under its clear level since "
                  f"{cleared_at.isoformat()} (the alarm cleared)"))

    async def order(self, raw: bytes, *, topic: str, partition: int, offset: int,
                    key: bytes | None) -> OrderEvent | None:
        """Fold one ``lifeline.orders`` record into the store; returns the ``verify`` to
        send when it was a report of an order whose alarm has cleared already."""
        self.counters.inc("order_events")
        source = kafka_source(topic, partition, offset)
        try:
            ev = ORDER_EVENT.decode(raw)
        except ValueError as exc:
            await self._reject(raw, decode_reason(exc), error_detail(exc), topic, partition,
                               offset, key)
            return None
        if key is not None and key.decode(errors="replace") != ev.order_id:
            await self._reject(raw, RejectReason.INVALID_CONTRACT,
                               f"key {key[:60]!r} is not the event's order id {ev.order_id}",
                               topic, partition, offset, key)
            return None
        try:
            what, order, why = await self.store.apply(ev, source, self.notices)
        except StoreRefused as exc:  # e.g. a text PostgreSQL cannot store: set aside
            await self._reject(raw, RejectReason.UNPROCESSABLE, str(exc), topic, partition,
                               offset, key)
            return None
        self.counters.inc(str(what) if what is not Applied.DUPLICATE else "duplicates")
        fields: dict[str, Any] = {"order_id": ev.order_id, "action": str(ev.action),
                                  "actor": ev.actor, "source": source}
        if order is not None:
            fields.update(facility_id=order.facility_id, sensor_id=order.sensor_id,
                          state=str(order.state))
        if what is Applied.REFUSED:
            log.warning("orders.event_refused", reason=why, **fields)
        elif what is Applied.APPLIED:
            log.info("orders.event_applied", **fields)
        # A report (applied now, or redelivered after a crash that came before its verify
        # was sent) of an order whose alarm cleared already — the level fell before the unit
        # reported: verified now. The verify's id is deterministic, so sending it twice is one.
        if what is Applied.APPLIED and order is not None and ev.action is OrderAction.FALSE_ALARM:
            await self._false_alarm(order)
        if (what is not Applied.REFUSED and order is not None and ev.action is OrderAction.OPEN
                and order.state is OrderState.OPEN):
            return self.dispatch_event(order)  # deterministic id: a redelivery sends it again
        if (what is not Applied.REFUSED and order is not None and ev.action is OrderAction.REPORT
                and order.state is OrderState.REPORTED):
            cleared = await self.store.cleared_at(order.alarm_id)
            if cleared is not None:
                return self.verify_event(order, cleared)
        return None
