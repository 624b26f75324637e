"""Who is told what about a work order, and the outbox that tells them (decision 0022).

A message carries the order page's link for its person — on a personal channel (SMS, or a
channel marked ``personal``) a link that acts, on a shared one (a group robot, e-mail) a
link that only shows the order, since everyone in the group reads it.

An applied event may call for messages: a ``dispatch`` tells the assignee (with a signed
link to the order page), an ``escalate`` (督办) tells the unit's manager (level 1) or the
bureau's section chief (level 2), a ``return`` tells the assignee that the rectification
was not accepted. :func:`notices_for` decides, from the on-call file's ``units`` and
``orders`` sections; the store writes the notices into ``work_order_notice`` *in the same
transaction* as the event (services/orders/store.py), so an event is never applied without
its messages nor its messages queued twice (a redelivered event is a duplicate there).

:class:`Outbox` sends what is pending through the notifier's channels (the same senders,
so an SMS gateway or a DingTalk robot is configured once) and marks each notice sent, or
retries it with backoff, or gives up after ``attempts`` and records why. What can still
send twice: a crash between a channel accepting a message and the notice being marked sent
— the second message carries the same delivery id (webhook ``X-Lifeline-Delivery``, e-mail
``X-Lifeline-Delivery``), the notifier's own guarantee.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from schemas import texts
from schemas.oncall import OnCallConfig, Person
from schemas.registry import Facility
from schemas.workorder import OrderAction, OrderEvent, WorkOrder
from services.core.logging import get_logger
from services.notifier.channels import Senders
from services.notifier.errors import ChannelError
from services.notifier.messages import Item, Message

log = get_logger("lifeline.orders")


@dataclass(frozen=True)
class Notice:
    """One message to one person about one order event."""

    notice_id: str
    order_id: str
    event_id: str
    kind: str  # dispatched | escalated | returned
    person: str
    channels: tuple[str, ...]
    title: str
    text: str
    link: str | None  # the order page for this person (a signed token in it)


def notice_id_for(event_id: str, person: str) -> str:
    return hashlib.sha256(f"{event_id}|{person}".encode()).hexdigest()[:32]


def facility_words(order: WorkOrder, facility: Facility | None) -> str:
    """The facility's names and district, its id in brackets (the id alone if unknown)."""
    if facility is None:
        return f"[{order.facility_id}]"
    return (texts.facility_words(facility_id=facility.id, name=facility.name,
                                 name_zh=facility.name_zh, district=facility.district,
                                 district_zh=facility.district_zh) + f" [{facility.id}]")


TITLES = {"dispatched": "工单派发 Work order dispatched",
          "escalated": "工单督办 Overdue work order",
          "returned": "工单退回 Work order returned"}


def notices_for(ev: OrderEvent, order: WorkOrder, cfg: OnCallConfig | None,
                facility: Facility | None, link: Callable[[WorkOrder, str], str],
                overdue_count: int = 0) -> list[Notice]:
    """The messages ``ev`` (just applied, ``order`` after it) calls for."""
    if cfg is None:
        return []
    unit = cfg.unit(order.owner_unit)
    desk = cfg.orders
    people = {p.id for p in cfg.people}
    zone = cfg.zone
    targets: list[tuple[str, str, tuple[str, ...]]] = []  # (kind, person, channels)
    channels: tuple[str, ...]
    if ev.action is OrderAction.DISPATCH and order.assignee in people:
        channels = tuple(unit.channels if unit else (desk.channels if desk else []))
        targets.append(("dispatched", order.assignee, channels))
    elif ev.action is OrderAction.RETURN_ and order.assignee in people:
        channels = tuple(unit.channels if unit else (desk.channels if desk else []))
        targets.append(("returned", order.assignee, channels))
    elif ev.action is OrderAction.ESCALATE and ev.escalation is not None:
        if ev.escalation >= 2 and desk is not None:
            targets.append(("escalated", desk.section_chief, tuple(desk.channels)))
        elif unit is not None:
            targets.append(("escalated", unit.manager, tuple(unit.channels)))
        elif desk is not None:  # a unit not in the file: the bureau's desk at once
            targets.append(("escalated", desk.section_chief, tuple(desk.channels)))
    out = []
    where = facility_words(order, facility)
    level = texts.level_words(str(order.level))
    for kind, person, via in targets:
        if not via:
            log.warning("orders.notice_unroutable", order_id=order.order_id,
                        facility_id=order.facility_id, person=person, notice=kind)
            continue
        url = link(order, person)
        lines = [f"{TITLES[kind]} {order.order_id}",
                 f"{where} — {level}",
                 f"责任单位 Unit: {order.owner_unit}",
                 f"截止 Deadline: {texts.local_time(order.deadline, zone)}"]
        if kind == "escalated":
            late = ev.at - order.deadline
            lines.append(f"已超期 Overdue by {max(late, timedelta()).total_seconds() / 3600:.1f} h; "
                         f"状态 state: {texts.order_state_words(str(order.state))}")
            if overdue_count > 1:
                lines.append(f"该单位近30天第{overdue_count}次超期 the unit's overdue order "
                             f"#{overdue_count} in 30 days")
        if kind == "returned" and ev.reason:
            lines.append(f"退回原因 Reason: {ev.reason}")
        if ev.note and kind != "escalated":
            lines.append(ev.note[:300])
        out.append(Notice(notice_id_for(ev.event_id, person), order.order_id, ev.event_id, kind,
                          person, via, TITLES[kind], "\n".join(lines), url))
    return out


def message_of(row: dict[str, Any], person: Person, link: str | None) -> Message:
    """The notifier's :class:`Message` for one outbox row (its delivery id from the notice),
    with ``link`` — the acting link on a personal channel, a view-only one elsewhere."""
    text = row["text"] + (f"\n处理 Open: {link}" if link else "")
    item = Item(notification_id=row["notice_id"], kind=f"order_{row['kind']}",
                alarm_id=row["order_id"], alarm={"order_id": row["order_id"]}, ack_url=link)
    return Message(title=row["title"], text=text,
                   markdown=f"### {row['title']}\n\n" + text.replace("\n", "\n\n"),
                   items=[item], person=person.id)


class Outbox:
    """Sends pending notices through the notifier's channels."""

    def __init__(self, cfg: Callable[[], OnCallConfig | None], senders: Senders, *,
                 view_link: Callable[[str, str], str] | None = None,
                 attempts: int = 5, backoff_s: float = 30.0) -> None:
        self.cfg = cfg
        self.senders = senders
        self.view_link = view_link  # (order id, person) → a link that only shows the order
        self.attempts = attempts
        self.backoff_s = backoff_s

    async def send(self, row: dict[str, Any]) -> tuple[bool, str, str | None]:
        """Try the notice's channels in order: (delivered, detail, channel)."""
        cfg = self.cfg()
        if cfg is None:
            return False, "no on-call file", None
        person = next((p for p in cfg.people if p.id == row["person"]), None)
        if person is None:
            return False, f"{row['person']} is not in the on-call file", None
        channels = {c.id: c for c in cfg.channels}
        errors: list[str] = []
        for cid in row["channels"]:
            channel = channels.get(cid)
            if channel is None:
                errors.append(f"{cid}: not in the on-call file")
                continue
            link = row["link"]
            if link and not channel.is_personal:  # a group, e-mail: readers other than them
                link = self.view_link(row["order_id"], person.id) if self.view_link else None
            try:
                detail = await self.senders.send(channel, person, message_of(row, person, link))
                return True, detail, cid
            except ChannelError as exc:
                errors.append(f"{cid}: {exc}")
        return False, "; ".join(errors)[:500], None
