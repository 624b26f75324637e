"""``lifeline orders``: the orders service, and work orders from the command line.

``serve`` runs the service (services/orders/app.py). The other commands read the current
state from PostgreSQL and change an order by sending one event to ``lifeline.orders`` (the
source of truth), after checking it against the lifecycle (a refusal changes nothing and
names the state and what is allowed), then wait until the store shows it applied.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from schemas.workorder import (
    OrderAction,
    OrderEvent,
    OrderState,
    TransitionRefused,
    WorkOrder,
)

CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "show_default": True,
                           "max_content_width": 110}


def example(*lines: str) -> str:
    return "Example:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


orders_app = typer.Typer(
    help="Work orders (派单 → 处置 → 复核 → 销号): the service, list, show and each step.",
    epilog=example("lifeline orders list --state open --overdue",
                   "lifeline orders dispatch WO-3f2a9c1d0b7e6a54 --to zhang.wei --by li.na"),
    no_args_is_help=True, rich_markup_mode=None, context_settings=CONTEXT)

ById = Annotated[str, typer.Option("--by", help="Who does it (a person id of the on-call file).")]
Note = Annotated[str | None, typer.Option(help="What was done, or a comment.",
                                          show_default="none")]


def _fail(text: str) -> typer.Exit:
    typer.secho(text, fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _line(o: WorkOrder) -> str:
    return (f"{o.order_id}  {o.state:<11} {o.level:<6} {o.facility_id:<14} "
            f"{o.owner_unit:<16} {o.assignee or '-':<14} due "
            f"{o.deadline.astimezone().strftime('%Y-%m-%d %H:%M %Z')}")


async def _store() -> Any:
    from services.core.settings import load
    from services.orders.config import PostgresSettings
    from services.orders.store import Store

    store = Store(load(PostgresSettings).url.get_secret_value(), create=False)
    await store.connect()
    return store


@orders_app.command(epilog=example("lifeline orders serve"))
def serve() -> None:
    """The orders service: alarms → work orders on lifeline.orders → PostgreSQL."""
    from services.core.logging import configure
    from services.core.settings import RegistrySettings, load
    from services.orders.app import main

    configure(load(RegistrySettings).log_level, service="orders")
    main()


@orders_app.command("list", epilog=example("lifeline orders list --state open --state dispatched",
                                           "lifeline orders list --overdue --format json"))
def list_orders(
    state: Annotated[list[OrderState] | None, typer.Option(help="Only these states.",
                                                           show_default="all")] = None,
    overdue: Annotated[bool, typer.Option(help="Only orders past their deadline.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Work orders, newest first (one line each)."""
    async def run() -> list[WorkOrder]:
        store = await _store()
        try:
            found: list[WorkOrder] = await store.orders(
                state or (), overdue_at=datetime.now(UTC) if overdue else None, limit=limit)
            return found
        finally:
            await store.close()

    found = _run(run())
    if fmt == "json":
        typer.echo(json.dumps([o.model_dump(mode="json") for o in found], ensure_ascii=False))
        return
    for o in found:
        typer.echo(_line(o))
    typer.echo(f"{len(found)} order(s)", err=True)


@orders_app.command(epilog=example("lifeline orders show WO-3f2a9c1d0b7e6a54"))
def show(order_id: Annotated[str, typer.Argument(help="The order's id (WO-…).")]) -> None:
    """One order: its state and its whole history."""
    async def run() -> tuple[WorkOrder, list[OrderEvent]]:
        store = await _store()
        try:
            return await store.order(order_id), await store.history(order_id)
        finally:
            await store.close()

    order, history = _run(run())
    typer.echo(_line(order))
    for ev in history:
        extra = ev.note or ev.reason or ev.assignee or ""
        typer.echo(f"  {ev.at.astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}  "
                   f"{ev.action:<11} by {ev.actor:<14} {extra[:100]}")


@orders_app.command(epilog=example(
    "lifeline orders link WO-3f2a9c1d0b7e6a54 --person li.na --role desk",
    "lifeline orders link WO-3f2a9c1d0b7e6a54 --person kg1.chen"))
def link(order_id: Annotated[str, typer.Argument(help="The order's id (WO-…).")],
         person: Annotated[str, typer.Option(help="Whom the link is for (a person id).")],
         role: Annotated[str, typer.Option(help="unit (accept, start, report) or desk "
                                                "(verify, return, close, false alarm).")] = "unit"
         ) -> None:
    """A signed link to the order page for one person (to hand over by phone or chat)."""
    from services.core.settings import load
    from services.orders.config import OrdersSettings
    from services.orders.links import ROLE_ACTIONS, OrderLink, OrderSigner

    if role not in ROLE_ACTIONS:
        raise _fail(f"--role must be unit or desk, not {role!r}")

    async def check() -> WorkOrder:
        store = await _store()
        try:
            found: WorkOrder = await store.order(order_id)
            return found
        finally:
            await store.close()

    _run(check())  # an unknown order: refused here
    s = load(OrdersSettings)
    try:
        signer = OrderSigner(s.link_secret.get_secret_value(), s.link_ttl_s)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    token = signer.sign(OrderLink(order_id, person, role))  # type: ignore[arg-type]
    typer.echo(f"{s.public_url.rstrip('/')}/order/{token}")
    typer.echo(f"valid {s.link_ttl_s / 86400:g} days, for {person} ({role})", err=True)


@orders_app.command("false-alarms", epilog=example("lifeline orders false-alarms --days 90"))
def false_alarms(days: Annotated[float, typer.Option(min=1, max=3650, help="Look back this far."
                                                      )] = 30.0) -> None:
    """Orders closed as false alarms (研判) per sensor: sensors to check first."""
    async def run() -> dict[str, int]:
        store = await _store()
        try:
            found: dict[str, int] = await store.false_alarms(days)
            return found
        finally:
            await store.close()

    counts = _run(run())
    for sensor, n in counts.items():
        typer.echo(f"{sensor:<24} {n}")
    typer.echo(f"{sum(counts.values())} false alarm(s) of {len(counts)} sensor(s) in "
               f"{days:g} days", err=True)


def _run(coro: Any) -> Any:
    from aiokafka.errors import KafkaError
    from pydantic import ValidationError

    from services.orders.errors import NotApplied, OrderNotFound, StoreRefused, StoreUnavailable

    try:
        return asyncio.run(coro)
    except (OrderNotFound, StoreUnavailable, StoreRefused, NotApplied,
            TransitionRefused) as exc:
        raise _fail(str(exc)) from exc
    except ValidationError as exc:  # a blank --by, a note over 2,000 characters …
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "input"
        raise _fail(f"refused: {where}: {err['msg']}") from exc
    except KafkaError as exc:
        raise _fail(f"Kafka unreachable: {type(exc).__name__}") from exc


async def _act(order_id: str, action: OrderAction, by: str, **fields: Any) -> WorkOrder:
    from aiokafka import AIOKafkaProducer

    from services.core.kafka import producer_kwargs
    from services.core.settings import KafkaSettings, load
    from services.orders.acting import act

    store = await _store()
    try:
        producer = AIOKafkaProducer(**producer_kwargs(load(KafkaSettings), "lifeline-orders-cli"))
        await producer.start()
        try:
            order: WorkOrder = await act(store, producer, order_id, action, by, **fields)
            return order
        finally:
            await producer.stop()
    finally:
        await store.close()


def _step(order_id: str, action: OrderAction, by: str, **fields: Any) -> None:
    order = _run(_act(order_id, action, by, **fields))
    typer.echo(_line(order))


OrderId = Annotated[str, typer.Argument(help="The order's id (WO-…).")]


@orders_app.command(epilog=example("lifeline orders dispatch WO-3f2a9c1d0b7e6a54 --to zhang.wei "
                                   "--by li.na"))
def dispatch(order_id: OrderId, to: Annotated[str, typer.Option(help="The person sent.")],
             by: ById, note: Note = None) -> None:
    """派单: send the order to a person of the owner unit."""
    _step(order_id, OrderAction.DISPATCH, by, assignee=to, note=note)


@orders_app.command(epilog=example("lifeline orders accept WO-3f2a9c1d0b7e6a54 --by zhang.wei"))
def accept(order_id: OrderId, by: ById, note: Note = None) -> None:
    """The dispatched person takes the order."""
    _step(order_id, OrderAction.ACCEPT, by, note=note)


@orders_app.command(epilog=example("lifeline orders start WO-3f2a9c1d0b7e6a54 --by zhang.wei"))
def start(order_id: OrderId, by: ById, note: Note = None) -> None:
    """响应处置: work on site has begun."""
    _step(order_id, OrderAction.START, by, note=note)


@orders_app.command(epilog=example("lifeline orders report WO-3f2a9c1d0b7e6a54 --by zhang.wei "
                                   "--note '清理雨水口, 水位回落'"))
def report(order_id: OrderId, by: ById,
           note: Annotated[str, typer.Option(help="What was done.")]) -> None:
    """反馈: the unit reports what it did."""
    _step(order_id, OrderAction.REPORT, by, note=note)


@orders_app.command(epilog=example("lifeline orders verify WO-3f2a9c1d0b7e6a54 --by li.na"))
def verify(order_id: OrderId, by: ById, note: Note = None) -> None:
    """复核: the centre confirms the report."""
    _step(order_id, OrderAction.VERIFY, by, note=note)


@orders_app.command("return", epilog=example("lifeline orders return WO-3f2a9c1d0b7e6a54 --by li.na "
                                             "--reason '水位仍超限'"))
def return_(order_id: OrderId, by: ById,
            reason: Annotated[str, typer.Option(help="Why the report is not accepted.")]) -> None:
    """Send a report back: the work is not done."""
    _step(order_id, OrderAction.RETURN_, by, reason=reason)


@orders_app.command(epilog=example("lifeline orders close WO-3f2a9c1d0b7e6a54 --by li.na"))
def close(order_id: OrderId, by: ById, note: Note = None) -> None:
    """销号: close a verified order."""
    _step(order_id, OrderAction.CLOSE, by, note=note)


@orders_app.command("false-alarm", epilog=example(
    "lifeline orders false-alarm WO-3f2a9c1d0b7e6a54 --by li.na --reason '传感器被淹'"))
def false_alarm(order_id: OrderId, by: ById,
                reason: Annotated[str, typer.Option(help="Why it was no real risk (研判).")]
                ) -> None:
    """研判: close the order as a false alarm, with the reason."""
    _step(order_id, OrderAction.FALSE_ALARM, by, reason=reason)
