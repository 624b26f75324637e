"""The work orders' queryable store in PostgreSQL: each order's current state
(``work_order``), its whole history (``work_order_event``) and the events that could not be
applied (``work_order_refused``).

The store is a projection of ``lifeline.orders`` (the source of truth): :meth:`Store.apply`
folds one event in one transaction — the order row locked, :func:`schemas.workorder.apply`
deciding, the event inserted with its id as primary key. A redelivered event (at-least-once)
finds its id and changes nothing; an event the lifecycle refuses is recorded with the reason
(keyed by its Kafka position, so a redelivery records it once) and changes nothing.

Grafana's PostgreSQL data source reads the same tables (open and overdue orders, handling
times); the columns are plain SQL types for that, and ``doc`` keeps the contract's JSON.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import psycopg
from psycopg.rows import dict_row

from schemas.codec import ORDER_EVENT
from schemas.workorder import (
    OrderAction,
    OrderEvent,
    OrderState,
    TransitionRefused,
    WorkOrder,
    apply,
)
from services.orders.errors import OrderNotFound, StoreRefused, StoreUnavailable

if TYPE_CHECKING:
    from services.orders.notices import Notice

NoticesFor = Callable[[OrderEvent, WorkOrder, int], "list[Notice]"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS work_order (
        order_id text PRIMARY KEY, state text NOT NULL, alarm_id text NOT NULL,
        facility_id text NOT NULL, sensor_id text, rule text, level text NOT NULL,
        kind text, district text, owner_unit text NOT NULL, assignee text,
        opened_at timestamptz NOT NULL, deadline timestamptz NOT NULL,
        updated_at timestamptz NOT NULL, closed_at timestamptz,
        escalation integer NOT NULL, events integer NOT NULL, last_event_id text NOT NULL,
        false_alarm_reason text, report_note text, doc jsonb NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS work_order_event (
        event_id text PRIMARY KEY, order_id text NOT NULL, action text NOT NULL,
        at timestamptz NOT NULL, actor text NOT NULL, state_after text NOT NULL,
        source text NOT NULL, doc jsonb NOT NULL)""",
    # The order in which events were applied (two events may share a time: a report and
    # the verify it triggered).
    "ALTER TABLE work_order_event ADD COLUMN IF NOT EXISTS seq bigserial",
    "CREATE INDEX IF NOT EXISTS work_order_event_order ON work_order_event (order_id, seq)",
    "CREATE INDEX IF NOT EXISTS work_order_open ON work_order (state, deadline)",
    """CREATE TABLE IF NOT EXISTS alarm_cleared (
        alarm_id text PRIMARY KEY, cleared_at timestamptz NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS work_order_refused (
        source text PRIMARY KEY, event_id text NOT NULL, order_id text NOT NULL,
        action text NOT NULL, reason text NOT NULL, recorded_at timestamptz NOT NULL
        DEFAULT now(), doc jsonb NOT NULL)""",
    # The outbox of messages about orders (services/orders/notices.py), written in the
    # transaction of the event that calls for them.
    """CREATE TABLE IF NOT EXISTS work_order_notice (
        notice_id text PRIMARY KEY, order_id text NOT NULL, event_id text NOT NULL,
        kind text NOT NULL, person text NOT NULL, channels jsonb NOT NULL, title text NOT NULL,
        text text NOT NULL, link text, status text NOT NULL DEFAULT 'pending',
        attempts integer NOT NULL DEFAULT 0, next_at timestamptz NOT NULL DEFAULT now(),
        created_at timestamptz NOT NULL DEFAULT now(), sent_at timestamptz, channel text,
        detail text)""",
    "CREATE INDEX IF NOT EXISTS work_order_notice_due ON work_order_notice (status, next_at)",
    # Grafana's data source role, where the database has it (the local stack's and compose's
    # do): the orders, their history and the refused events — never the uploads or the
    # messages (their links are capabilities).
    """DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lifeline_reader') THEN
            GRANT SELECT ON work_order, work_order_event, work_order_refused TO lifeline_reader;
        END IF;
    END $$""",
    # Evidence uploaded from the order page (photos), referenced by events' ``evidence``.
    """CREATE TABLE IF NOT EXISTS work_order_upload (
        upload_id text PRIMARY KEY, order_id text NOT NULL, content_type text NOT NULL,
        size integer NOT NULL, width integer NOT NULL, height integer NOT NULL,
        uploaded_by text NOT NULL, uploaded_at timestamptz NOT NULL DEFAULT now(),
        data bytea NOT NULL)""",
)

_COLUMNS = ("order_id", "state", "alarm_id", "facility_id", "sensor_id", "rule", "level", "kind",
            "district", "owner_unit", "assignee", "opened_at", "deadline", "updated_at",
            "closed_at", "escalation", "events", "last_event_id", "false_alarm_reason",
            "report_note")


P = ParamSpec("P")
R = TypeVar("R")


def _mapped(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """PostgreSQL's errors as Lifeline's: the connection lost or the server unavailable is
    :class:`StoreUnavailable` (retried); a statement the server refuses for its data
    (``DataError``, ``IntegrityError`` …) is :class:`StoreRefused` (the record is set aside,
    never retried forever)."""
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"PostgreSQL: {type(exc).__name__}") from exc
        except psycopg.Error as exc:
            raise StoreRefused(f"PostgreSQL refused it: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc
    return wrapper


class Applied(StrEnum):
    """What :meth:`Store.apply` did with one event."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # its id is in the history already (a redelivery)
    REFUSED = "refused"  # the lifecycle does not allow it (recorded with the reason)


def _row(order: WorkOrder) -> dict[str, Any]:
    doc = order.model_dump(mode="json")
    row = {c: getattr(order, c) for c in _COLUMNS}
    row.update({k: (str(v) if isinstance(v, StrEnum) else v) for k, v in row.items()})
    row["doc"] = json.dumps(doc, ensure_ascii=False)
    return row


class Store:
    """One connection to the orders database (psycopg 3, asynchronous)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.create = create  # make the tables (the service; a CLI command only reads)
        self.conn: psycopg.AsyncConnection[dict[str, Any]] | None = None

    async def connect(self) -> None:
        await self.close()  # a retry after a partial failure must not leak the old one
        try:
            # Autocommit: a read outside ``transaction()`` must not leave a transaction open
            # (it would hold its locks, and turn the next transaction into a savepoint).
            self.conn = await psycopg.AsyncConnection.connect(self.url, row_factory=dict_row,
                                                              connect_timeout=5, autocommit=True)
            if self.create:
                async with self.conn.transaction():
                    for statement in SCHEMA:
                        await self.conn.execute(statement)
        except psycopg.Error as exc:
            await self.close()
            # The class of the error only: libpq's text can quote the connection string.
            raise StoreUnavailable(f"PostgreSQL: {type(exc).__name__}") from exc

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    def _c(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self.conn is None or self.conn.closed:
            raise StoreUnavailable("PostgreSQL: not connected")
        return self.conn

    @_mapped
    async def apply(self, ev: OrderEvent, source: str,
                    notices: NoticesFor | None = None) -> tuple[Applied, WorkOrder | None, str]:
        """Fold ``ev`` (read from ``source``, a Kafka position) into the store; returns what
        happened, the order after it and, when refused, why. ``notices(ev, order,
        overdue_count)`` gives the messages an applied event calls for: they are queued in
        the same transaction (``overdue_count``: the unit's escalated orders in 30 days)."""
        conn = self._c()
        async with conn.transaction():
            cur = await conn.execute("SELECT doc FROM work_order WHERE order_id = %s "
                                     "FOR UPDATE", (ev.order_id,))
            found = await cur.fetchone()
            order = WorkOrder.model_validate(found["doc"]) if found else None
            cur = await conn.execute("SELECT 1 FROM work_order_event WHERE event_id = %s",
                                     (ev.event_id,))
            if await cur.fetchone() is not None:
                return Applied.DUPLICATE, order, ""
            try:
                after = apply(order, ev)
            except TransitionRefused as exc:
                await conn.execute(
                    "INSERT INTO work_order_refused (source, event_id, order_id, action, "
                    "reason, doc) VALUES (%s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (source) DO NOTHING",
                    (source, ev.event_id, ev.order_id, str(ev.action), str(exc),
                     ORDER_EVENT.encode(ev).decode()))
                return Applied.REFUSED, order, str(exc)
            row = _row(after)
            cols = ", ".join((*_COLUMNS, "doc"))
            marks = ", ".join(["%s"] * (len(_COLUMNS) + 1))
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*_COLUMNS[1:], "doc"))
            await conn.execute(
                f"INSERT INTO work_order ({cols}) VALUES ({marks}) "  # noqa: S608 — constants
                f"ON CONFLICT (order_id) DO UPDATE SET {updates}",
                [row[c] for c in (*_COLUMNS, "doc")])
            await conn.execute(
                "INSERT INTO work_order_event (event_id, order_id, action, at, actor, "
                "state_after, source, doc) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (ev.event_id, ev.order_id, str(ev.action), ev.at, ev.actor,
                 str(after.state), source, ORDER_EVENT.encode(ev).decode()))
            if notices is not None:
                count = 0
                if ev.action is OrderAction.ESCALATE:
                    cur = await conn.execute(
                        "SELECT count(*) AS n FROM work_order WHERE owner_unit = %s AND "
                        "escalation > 0 AND opened_at > %s", (after.owner_unit,
                                                               ev.at - timedelta(days=30)))
                    found = await cur.fetchone()
                    count = int(found["n"]) if found else 0
                for n in notices(ev, after, count):
                    await conn.execute(
                        "INSERT INTO work_order_notice (notice_id, order_id, event_id, kind, "
                        "person, channels, title, text, link) VALUES (%s, %s, %s, %s, %s, %s, "
                        "%s, %s, %s) ON CONFLICT (notice_id) DO NOTHING",
                        (n.notice_id, n.order_id, n.event_id, n.kind, n.person,
                         json.dumps(list(n.channels)), n.title, n.text, n.link))
            return Applied.APPLIED, after, ""

    # ------------------------------------------------------------ the notices' outbox
    @_mapped
    async def due_notices(self, now: datetime, limit: int = 50) -> list[dict[str, Any]]:
        cur = await self._c().execute(
            "SELECT notice_id, order_id, event_id, kind, person, channels, title, text, link, "
            "attempts FROM work_order_notice WHERE status = 'pending' AND next_at <= %s "
            "ORDER BY created_at LIMIT %s", (now, limit))
        return list(await cur.fetchall())

    @_mapped
    async def notice_sent(self, notice_id: str, at: datetime, channel: str, detail: str) -> None:
        await self._c().execute(
            "UPDATE work_order_notice SET status = 'sent', sent_at = %s, channel = %s, "
            "detail = %s, attempts = attempts + 1 WHERE notice_id = %s",
            (at, channel, detail.replace("\x00", "")[:500], notice_id))

    @_mapped
    async def notice_failed(self, notice_id: str, next_at: datetime | None, detail: str) -> None:
        """One attempt failed: try again at ``next_at``, or give up (None)."""
        await self._c().execute(
            "UPDATE work_order_notice SET attempts = attempts + 1, detail = %s, "
            "status = CASE WHEN %s::timestamptz IS NULL THEN 'failed' ELSE 'pending' END, "
            "next_at = COALESCE(%s::timestamptz, next_at) WHERE notice_id = %s",
            (detail.replace("\x00", "")[:500], next_at, next_at, notice_id))

    @_mapped
    async def notices(self, order_id: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT notice_id, order_id, event_id, kind, person, channels, status, attempts, "
               "channel, detail, created_at, sent_at FROM work_order_notice")
        args: list[Any] = []
        if order_id is not None:
            sql += " WHERE order_id = %s"
            args.append(order_id)
        cur = await self._c().execute(sql + " ORDER BY created_at, notice_id", args)
        return list(await cur.fetchall())

    @_mapped
    async def false_alarms(self, days: float = 30.0) -> dict[str, int]:
        """Orders closed as false alarms per sensor (the facility when the alarm was the
        facility's) over the last ``days``: what 研判 said of each sensor's alarms."""
        cur = await self._c().execute(
            "SELECT coalesce(sensor_id, facility_id) AS sensor, count(*) AS n FROM work_order "
            "WHERE state = 'false_alarm' AND closed_at > now() - make_interval(secs => %s) "
            "GROUP BY 1 ORDER BY 2 DESC, 1", (days * 86400.0,))
        return {r["sensor"]: int(r["n"]) for r in await cur.fetchall()}

    @_mapped
    async def false_alarms_of(self, sensor: str, days: float = 30.0) -> int:
        """False alarms of one sensor (or facility) over the last ``days``."""
        cur = await self._c().execute(
            "SELECT count(*) AS n FROM work_order WHERE state = 'false_alarm' AND "
            "coalesce(sensor_id, facility_id) = %s AND closed_at > now() - "
            "make_interval(secs => %s)", (sensor, days * 86400.0))
        found = await cur.fetchone()
        return int(found["n"]) if found else 0

    # ------------------------------------------------------------ uploads (evidence)
    @_mapped
    async def add_upload(self, upload_id: str, order_id: str, content_type: str, width: int,
                         height: int, by: str, data: bytes) -> None:
        await self._c().execute(
            "INSERT INTO work_order_upload (upload_id, order_id, content_type, size, width, "
            "height, uploaded_by, data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (upload_id) DO NOTHING",
            (upload_id, order_id, content_type, len(data), width, height, by, data))

    @_mapped
    async def upload(self, upload_id: str) -> dict[str, Any] | None:
        cur = await self._c().execute(
            "SELECT upload_id, order_id, content_type, size, width, height, uploaded_by, "
            "uploaded_at, data FROM work_order_upload WHERE upload_id = %s", (upload_id,))
        return await cur.fetchone()

    @_mapped
    async def cleared(self, alarm_id: str, at: datetime) -> None:
        """Remember that alarm episode ``alarm_id`` cleared at ``at`` (the first time)."""
        await self._c().execute("INSERT INTO alarm_cleared (alarm_id, cleared_at) VALUES "
                                "(%s, %s) ON CONFLICT (alarm_id) DO NOTHING", (alarm_id, at))

    @_mapped
    async def cleared_at(self, alarm_id: str) -> datetime | None:
        cur = await self._c().execute("SELECT cleared_at FROM alarm_cleared WHERE alarm_id = %s",
                                      (alarm_id,))
        found = await cur.fetchone()
        return None if found is None else found["cleared_at"]

    @_mapped
    async def order(self, order_id: str) -> WorkOrder:
        cur = await self._c().execute("SELECT doc FROM work_order WHERE order_id = %s",
                                      (order_id,))
        found = await cur.fetchone()
        if found is None:
            raise OrderNotFound(f"no work order {order_id}")
        return WorkOrder.model_validate(found["doc"])

    @_mapped
    async def exists(self, order_id: str) -> bool:
        cur = await self._c().execute("SELECT 1 FROM work_order WHERE order_id = %s",
                                      (order_id,))
        return await cur.fetchone() is not None

    @_mapped
    async def has_event(self, event_id: str) -> bool:
        cur = await self._c().execute("SELECT 1 FROM work_order_event WHERE event_id = %s",
                                      (event_id,))
        return await cur.fetchone() is not None

    @_mapped
    async def history(self, order_id: str) -> list[OrderEvent]:
        cur = await self._c().execute("SELECT doc FROM work_order_event WHERE order_id = %s "
                                      "ORDER BY seq", (order_id,))
        return [OrderEvent.model_validate(r["doc"]) for r in await cur.fetchall()]

    @_mapped
    async def orders(self, states: Sequence[OrderState] = (), *,
                     overdue_at: datetime | None = None, limit: int = 100) -> list[WorkOrder]:
        """Orders, newest first: in ``states`` if given; past their deadline at
        ``overdue_at`` (and not final or verified) if given, then the most overdue first."""
        where: list[str] = []
        args: list[Any] = []
        if states:
            where.append("state = ANY(%s)")
            args.append([str(s) for s in states])
        if overdue_at is not None:
            where.append("deadline < %s AND state NOT IN ('closed', 'false_alarm', 'verified')")
            args.append(overdue_at)
        sql = ("SELECT doc FROM work_order"  # noqa: S608 — fixed clauses, values as parameters
               + (" WHERE " + " AND ".join(where) if where else "")
               # overdue: the most overdue first (a limit never starves the oldest)
               + (" ORDER BY deadline LIMIT %s" if overdue_at is not None
                  else " ORDER BY opened_at DESC LIMIT %s"))
        cur = await self._c().execute(sql, [*args, limit])
        return [WorkOrder.model_validate(r["doc"]) for r in await cur.fetchall()]

    @_mapped
    async def refused(self, order_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT source, event_id, order_id, action, reason FROM work_order_refused"
        args: list[Any] = []
        if order_id is not None:
            sql += " WHERE order_id = %s"
            args.append(order_id)
        cur = await self._c().execute(sql + " ORDER BY recorded_at", args)
        return list(await cur.fetchall())
