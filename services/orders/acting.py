"""One step on an order, as the CLI and the order page take it: check it against the
current state (a refusal sends nothing), send the event to ``lifeline.orders`` (the source
of truth), and wait until the store shows it applied — or refused, when another step got
there first."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.codec import ORDER_EVENT
from schemas.workorder import OrderAction, OrderEvent, TransitionRefused, WorkOrder, apply, event_id_for
from services.core import topics
from services.orders.errors import NotApplied
from services.orders.store import Store

APPLIED_WAIT_S = 20.0  # how long a step waits for the orders service to apply its event


async def act(store: Store, producer: AIOKafkaProducer, order_id: str, action: OrderAction,
              by: str, *, wait_s: float = APPLIED_WAIT_S, **fields: Any) -> WorkOrder:
    """Take ``action`` on ``order_id`` as ``by``; the order after it."""
    order = await store.order(order_id)  # OrderNotFound: nothing sent
    at = datetime.now(UTC)
    ev = OrderEvent(event_id=event_id_for(order_id, action, at, by), order_id=order_id,
                    action=action, at=at, actor=by,
                    **{k: v for k, v in fields.items() if v not in (None, ())})
    apply(order, ev)  # TransitionRefused here: nothing is sent
    await (await producer.send(topics.ORDERS, key=order_id.encode(), value=ORDER_EVENT.encode(ev)))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while loop.time() < deadline:
        if await store.has_event(ev.event_id):  # applied (maybe followed by a verify)
            now: WorkOrder = await store.order(order_id)
            return now
        refused = [r for r in await store.refused(order_id) if r["event_id"] == ev.event_id]
        if refused:
            raise TransitionRefused(refused[0]["reason"])
        await asyncio.sleep(0.2)
    raise NotApplied(f"order {order_id}: {action} sent, not applied within {wait_s:g} s — is "
                     f"`lifeline orders serve` running?")
