"""Work orders through real Kafka (Tansu) and a real PostgreSQL, both started by the
session's stack: an alarm opens one order however often it is delivered, the CLI walks it
to closed through lifeline.orders, a reported order is verified from the data once its
alarm clears, refusals change nothing, bad records are dead-lettered and the service goes
on, and a kill -9 mid-lifecycle loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from schemas.alarm import AlarmCategory, AlarmEvent, AlarmEventType, alarm_id_for, event_id_for
from schemas.codec import ALARM_EVENT, ORDER_EVENT
from schemas.kinds import AlarmLevel, FacilityKind, Metric
from schemas.workorder import OrderAction, OrderEvent, WorkOrder, order_id_for
from schemas.workorder import event_id_for as order_event_id
from services.core import topics
from services.orders.store import Store
from services.stack.manager import Stack, free_port
from services.stack.services import ServiceProcess
from tests.support.stack_helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
FACILITY = "TEST-WO-1"  # no other test (nor the notifier's routes) knows it


@pytest.fixture(scope="module")
def orders(stack: Stack, pipeline_env: dict[str, str]) -> Iterator[ServiceProcess]:
    env = {**pipeline_env, "LIFELINE_ORDERS_OPEN_FROM": "orange",
           "LIFELINE_ORDERS_PUBLIC_PORT": str(free_port())}
    svc = ServiceProcess("orders", env, stack.logs, free_port())
    svc.start()
    svc.wait_ready(90, ready=lambda b: b and b["counters"].get("assigned_partitions", 0) > 0)
    yield svc
    svc.stop()


def produce(stack: Stack, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    async def run() -> None:
        p = AIOKafkaProducer(bootstrap_servers=stack.env()["LIFELINE_KAFKA_BOOTSTRAP"])
        await p.start()
        try:
            for key, value in records:
                await (await p.send(topic, key=key, value=value))
        finally:
            await p.stop()

    asyncio.run(run())


def store_call(stack: Stack, fn: Any) -> Any:
    async def run() -> Any:
        s = Store(stack.env()["LIFELINE_POSTGRES_URL"])
        await s.connect()
        try:
            return await fn(s)
        finally:
            await s.close()

    return asyncio.run(run())


def order_or_none(stack: Stack, order_id: str) -> WorkOrder | None:
    async def get(s: Store) -> WorkOrder | None:
        return await s.order(order_id) if await s.exists(order_id) else None
    return store_call(stack, get)


def alarm(level: AlarmLevel, event: AlarmEventType = AlarmEventType.RAISED, *,
          silenced: bool = False, started: datetime | None = None) -> AlarmEvent:
    t = started or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    sensor = f"{FACILITY}-L1"
    aid = alarm_id_for(FACILITY, sensor, f"value-upper-{uuid.uuid4().hex[:6]}", t)
    return AlarmEvent(event_id=event_id_for(aid, event, level, t), alarm_id=aid, event=event,
                      level=level, previous_level=None, category=AlarmCategory.FACILITY,
                      facility_id=FACILITY, kind=FacilityKind.DRAINAGE, district="D1",
                      sensor=sensor, metric=Metric.WATER_LEVEL, rule="value-upper", value=2.8,
                      threshold=2.7, unit="m", ts=t, message="橙色 test 水位 water level",
                      silenced=silenced)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", "orders", *args], env=env,
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def test_an_alarm_opens_one_order_and_the_cli_walks_it_to_closed(
        stack: Stack, pipeline_env: dict[str, str], orders: ServiceProcess) -> None:
    ev = alarm(AlarmLevel.ORANGE)
    key = FACILITY.encode()
    # Delivered three times (a replay) and then escalated: one order, one open event.
    produce(stack, topics.ALARMS, [(key, ALARM_EVENT.encode(ev))] * 3)
    oid = order_id_for(ev.alarm_id)
    order = wait_for(lambda: order_or_none(stack, oid), timeout=30)
    assert order.state == "open" and order.level == "orange" and order.owner_unit == "bureau-duty"
    assert order.deadline - order.opened_at == timedelta(hours=4)  # orange: 4 h by default
    esc = ev.model_copy(update={"event": AlarmEventType.ESCALATED, "level": AlarmLevel.RED,
                                "event_id": "esc-" + ev.event_id})
    produce(stack, topics.ALARMS, [(key, ALARM_EVENT.encode(esc))])
    env = {**os.environ, **pipeline_env}
    steps = [("dispatch", "--to", "zhang.wei", "--by", "li.na"),
             ("accept", "--by", "zhang.wei"), ("start", "--by", "zhang.wei"),
             ("report", "--by", "zhang.wei", "--note", "清理雨水口, 水位回落"),
             ("verify", "--by", "li.na"), ("close", "--by", "li.na")]
    for step in steps:
        done = cli(env, step[0], oid, *step[1:])
        assert done.returncode == 0, (step, done.stderr)
    shown = cli(env, "show", oid)
    assert shown.returncode == 0 and shown.stdout.startswith(f"{oid}  closed")
    history = store_call(stack, lambda s: s.history(oid))
    assert [e.action for e in history] == ["open", "dispatch", "accept", "start", "report",
                                           "verify", "close"]
    listed = cli(env, "list", "--state", "closed", "--format", "json")
    assert oid in listed.stdout
    # A step the lifecycle does not allow is refused by name and changes nothing.
    again = cli(env, "verify", oid, "--by", "li.na")
    assert again.returncode == 1
    assert f"order {oid}: cannot verify an order that is closed" in again.stderr
    assert len(store_call(stack, lambda s: s.history(oid))) == 7


def test_silenced_and_yellow_alarms_open_nothing_and_unknown_orders_are_refused(
        stack: Stack, pipeline_env: dict[str, str], orders: ServiceProcess) -> None:
    quiet, low = alarm(AlarmLevel.RED, silenced=True), alarm(AlarmLevel.YELLOW)
    marker = alarm(AlarmLevel.RED)  # after the two: once it is open, they were judged
    produce(stack, topics.ALARMS, [(FACILITY.encode(), ALARM_EVENT.encode(a))
                                   for a in (quiet, low, marker)])
    wait_for(lambda: order_or_none(stack, order_id_for(marker.alarm_id)), timeout=30)
    assert order_or_none(stack, order_id_for(quiet.alarm_id)) is None
    assert order_or_none(stack, order_id_for(low.alarm_id)) is None
    env = {**os.environ, **pipeline_env}
    missing = cli(env, "accept", "WO-0000000000000000", "--by", "zhang.wei")
    assert missing.returncode == 1 and "no work order WO-0000000000000000" in missing.stderr


def test_bad_records_are_dead_lettered_duplicates_and_refusals_change_nothing(
        stack: Stack, orders: ServiceProcess) -> None:
    ev = alarm(AlarmLevel.ORANGE)
    produce(stack, topics.ALARMS, [(FACILITY.encode(), ALARM_EVENT.encode(ev))])
    oid = order_id_for(ev.alarm_id)
    wait_for(lambda: order_or_none(stack, oid), timeout=30)
    before = orders.counters()
    at = datetime.now(UTC)
    dispatch = OrderEvent(event_id=order_event_id(oid, OrderAction.DISPATCH, at, "li.na"),
                          order_id=oid, action=OrderAction.DISPATCH, at=at, actor="li.na",
                          assignee="zhang.wei")
    close = OrderEvent(event_id=order_event_id(oid, OrderAction.CLOSE, at, "li.na"),
                       order_id=oid, action=OrderAction.CLOSE, at=at, actor="li.na")
    k = oid.encode()
    nul = ORDER_EVENT.encode(dispatch.model_copy(update={"note": "x"})).replace(
        b'"note":"x"', b'"note":"\\u0000"')
    assert b"\\u0000" in nul
    produce(stack, topics.ORDERS, [(k, b"not json {"), (k, b'{"order_id": "x"}'), (k, nul),
                                   (b"WO-other", ORDER_EVENT.encode(dispatch)),
                                   (k, ORDER_EVENT.encode(dispatch)),
                                   (k, ORDER_EVENT.encode(dispatch)),  # redelivered
                                   (k, ORDER_EVENT.encode(close))])  # not allowed: dispatched
    refused = wait_for(lambda: store_call(stack, lambda s: s.refused(oid)) or None, timeout=30)
    assert "cannot close an order that is dispatched" in refused[0]["reason"]
    order = order_or_none(stack, oid)
    assert order is not None and order.state == "dispatched" and order.events == 2
    after = orders.counters()
    assert after["dead_lettered"] - before.get("dead_lettered", 0) == 4
    assert after["duplicates"] - before.get("duplicates", 0) == 1
    code, body = orders.health()
    assert code == 200 and body["status"] == "ok"


def test_kill_9_mid_lifecycle_loses_and_duplicates_nothing(
        stack: Stack, pipeline_env: dict[str, str], orders: ServiceProcess) -> None:
    ev = alarm(AlarmLevel.RED)
    produce(stack, topics.ALARMS, [(FACILITY.encode(), ALARM_EVENT.encode(ev))])
    oid = order_id_for(ev.alarm_id)
    wait_for(lambda: order_or_none(stack, oid), timeout=30)
    assert orders.proc is not None
    os.kill(orders.proc.pid, signal.SIGKILL)
    orders.proc.wait(10)
    base = datetime.now(UTC)
    events = []
    for i, (action, who, extra) in enumerate([
            (OrderAction.DISPATCH, "li.na", {"assignee": "zhang.wei"}),
            (OrderAction.ACCEPT, "zhang.wei", {}), (OrderAction.START, "zhang.wei", {}),
            (OrderAction.REPORT, "zhang.wei", {"note": "done"})]):
        at = base + timedelta(seconds=i)
        events.append(OrderEvent(event_id=order_event_id(oid, action, at, who), order_id=oid,
                                 action=action, at=at, actor=who, **extra))
    # Sent while the service is down, the alarm replayed too: all applied once it is back.
    produce(stack, topics.ORDERS, [(oid.encode(), ORDER_EVENT.encode(e)) for e in events])
    produce(stack, topics.ALARMS, [(FACILITY.encode(), ALARM_EVENT.encode(ev))])
    orders.start()
    orders.wait_ready(90, ready=lambda b: b and b["counters"].get("assigned_partitions", 0) > 0)
    order = wait_for(lambda: (o := order_or_none(stack, oid)) and o.state == "reported" and o,
                     timeout=40)
    assert order.events == 5
    history = store_call(stack, lambda s: s.history(oid))
    assert [e.action for e in history] == ["open", "dispatch", "accept", "start", "report"]


def cleared(ev: AlarmEvent, after: timedelta) -> AlarmEvent:
    t = ev.ts + after
    return ev.model_copy(update={"event": AlarmEventType.CLEARED, "level": None,
                                 "previous_level": ev.level, "ts": t,
                                 "event_id": event_id_for(ev.alarm_id, AlarmEventType.CLEARED,
                                                          None, t)})


def test_a_reported_order_is_verified_from_the_data_when_its_alarm_clears(
        stack: Stack, pipeline_env: dict[str, str], orders: ServiceProcess) -> None:
    env = {**os.environ, **pipeline_env}
    key = FACILITY.encode()
    before, after = alarm(AlarmLevel.ORANGE), alarm(AlarmLevel.ORANGE)
    produce(stack, topics.ALARMS, [(key, ALARM_EVENT.encode(a)) for a in (before, after)])
    first, second = order_id_for(before.alarm_id), order_id_for(after.alarm_id)
    for oid in (first, second):
        wait_for(lambda oid=oid: order_or_none(stack, oid), timeout=30)
        for step in (("dispatch", "--to", "zhang.wei", "--by", "li.na"),
                     ("accept", "--by", "zhang.wei")):
            assert cli(env, step[0], oid, *step[1:]).returncode == 0
    # The first: reported while still in alarm — stays reported; verified when it clears.
    assert cli(env, "report", first, "--by", "zhang.wei", "--note", "疏通").returncode == 0
    time.sleep(2)  # a wrong verify would have come by now
    assert order_or_none(stack, first).state == "reported"  # type: ignore[union-attr]
    produce(stack, topics.ALARMS, [(key, ALARM_EVENT.encode(cleared(before, timedelta(0))))])
    done = wait_for(lambda: (o := order_or_none(stack, first)) and o.state == "verified" and o,
                    timeout=30)
    last = store_call(stack, lambda s: s.history(first))[-1]
    assert last.actor == "verifier" and "clear" in (last.note or "")
    # The second: its alarm cleared before the unit reported — verified at the report.
    produce(stack, topics.ALARMS, [(key, ALARM_EVENT.encode(cleared(after, timedelta(0))))])
    wait_for(lambda: store_call(stack, lambda s: s.cleared_at(after.alarm_id)), timeout=30)
    assert cli(env, "report", second, "--by", "zhang.wei", "--note", "已处置").returncode == 0
    wait_for(lambda: (o := order_or_none(stack, second)) and o.state == "verified" and o,
             timeout=30)
    assert cli(env, "close", first, "--by", "li.na").returncode == 0
    assert order_or_none(stack, first).state == "closed"  # type: ignore[union-attr]
    assert done.events == 5
    assert [e.actor for e in store_call(stack, lambda s: s.history(second))][-1] == "verifier"


def test_postgres_down_holds_the_work_and_loses_nothing(
        stack: Stack, orders: ServiceProcess) -> None:
    """The store stopped under the running service: health says so, the alarm waits
    (retried, never skipped) and its order is there once PostgreSQL is back."""
    stack.stop("postgres")
    try:
        ev = alarm(AlarmLevel.RED)
        produce(stack, topics.ALARMS, [(FACILITY.encode(), ALARM_EVENT.encode(ev))])
        _code, body = wait_for(lambda: (h := orders.health())[0] == 503 and h, timeout=30)
        assert "postgres" in body["problems"]
    finally:
        stack.start("postgres")
    order = wait_for(lambda: order_or_none(stack, order_id_for(ev.alarm_id)), timeout=60)
    assert order.state == "open"
    wait_for(lambda: orders.health()[0] == 200, timeout=30)


def test_the_roles_are_not_superusers_and_the_reader_reads_orders_only(
        stack: Stack, orders: ServiceProcess) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(stack.postgres_url("lifeline_orders"), autocommit=True) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                            ).fetchone() == (False,)
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'work_order'"
                            ).fetchone() == ("lifeline_orders",)
    with psycopg.connect(stack.postgres_url("lifeline_reader"), autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM work_order").fetchone()
        conn.execute("SELECT count(*) FROM work_order_event").fetchone()
        for table in ("work_order_upload", "work_order_notice"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM work_order")
