"""Every query of every generated dashboard (panels, variables, annotations), run against
the real InfluxDB after a simulated round of the whole district and one acknowledgement on
``lifeline.oncall``: none may come back empty, and the overview's active-alarm table shows
the acknowledged alarm with its registry names, district and who acknowledged it."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.oncall import OnCallRecord, RecordType
from schemas.registry import load_registry
from services.core import topics
from services.dashboards.generate import dashboards, queries
from services.stack.manager import Stack
from simulators.basic import SteadySimulator
from simulators.publisher import Publisher
from tests.support.pipeline import Pipeline
from tests.support.stack_helpers import influx_query, wait_for

# Facilities other integration tests drive with their own (older) timestamps: leave them.
BUSY = re.compile(r"^(DR-(BH-001|KG-001|KJ-001|KJ-003|LW-001|LW-002|OF-00\d)|DU-LW-001|"
                  r"SG-(BH|KG|KJ|OF)-00\d)$")


def substitute(query: str, alarm_id: str = "", sensor: str = ".*",
               time_filter: str = "time > now() - 1h") -> str:
    return (query.replace("$timeFilter", time_filter).replace("$__interval", "5s")
            .replace("$district", ".*").replace("$facility", ".*").replace("$sensor", sensor)
            .replace("$alarm_id", alarm_id))


def send_oncall(stack: Stack, rec: OnCallRecord) -> None:
    async def go() -> None:
        p = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{stack.ports.kafka}")
        await p.start()
        try:
            await p.send_and_wait(topics.ONCALL, rec.model_dump_json().encode(),
                                  key=rec.facility_id.encode())
        finally:
            await p.stop()

    asyncio.run(go())


def rows(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(zip(s["columns"], v, strict=True)) for s in series for v in s["values"]]


def test_every_dashboard_query_returns_data(pipeline: Pipeline, publisher: Publisher,
                                            registry_file: Path) -> None:
    stack = pipeline.stack
    registry = load_registry(registry_file)
    sim = SteadySimulator(registry, seed=5)
    sim.gateways = [g for g in sim.gateways
                    if not BUSY.match(g.facility.id) and not g.facility.id.startswith("TEST-")]
    # Alarms of each kind, and a sensor fault for the health table.
    for sensor, value in (("DR-BH-002-Q1", 4500.0), ("BR-KG-001-T1", 0.6),
                          ("SP-BH-001-H1", 60.0), ("SQ-BH-001-Q1", 5000.0)):
        sim.breach(sensor, value)
    start = time.time() - 120
    hour = time.time() // 3600 * 3600  # the zone's hours are UTC's (+08:00)
    if start < hour:
        # The diurnal baseline is stored from a sensor's second reading of a local hour:
        # two minutes across the hour's start would give none (found in CI at 14:01 UTC).
        start = hour - 125
    for step in range(0, 120, 10):
        for topic, payload in sim.reports(start + step):
            publisher.publish(topic, payload)
    assert publisher.flush(30)
    wait_for(lambda: influx_query(
        stack, "SELECT count(severity) FROM long.alarm_state WHERE facility='SQ-BH-001' "
               "AND category='sensor'"), timeout=60, what="scenario alarms stored")
    # Acknowledge the drainage alarm as the notifier does (services/notifier/escalation.py):
    # a record on lifeline.oncall, written by the writer beside the alarm's state.
    fid = "DR-BH-002"
    [state] = rows(wait_for(lambda: influx_query(
        stack, 'SELECT "alarm_id", "level", "sensor", "rule", "kind" FROM (SELECT '
               'last("alarm_id") AS "alarm_id", last("level") AS "level", last("severity") '
               'AS "severity" FROM "long"."alarm_state" WHERE "category" = \'facility\' AND '
               f'"facility" = \'{fid}\' GROUP BY "sensor", "rule", "kind") WHERE '
               '"severity" > 0'), timeout=30, what=f"an active alarm at {fid}"))
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # what the record carries
    send_oncall(stack, OnCallRecord(
        record_id=str(uuid.uuid4()), type=RecordType.ACKNOWLEDGED, ts=now,
        alarm_id=state["alarm_id"], facility_id=fid, sensor=state["sensor"],
        rule=state["rule"], category="facility", facility_kind=state["kind"], person="ann",
        channel="cli", level=state["level"], detail="on my way 正在处理", state_ts=now))
    boards = dashboards(registry)
    [table] = [p for p in boards["overview.json"]["panels"]
               if p["title"] == "活动告警 Active alarms"]

    def acknowledged() -> dict[str, Any] | None:
        found = [r for r in rows(influx_query(stack, substitute(table["targets"][0]["query"])))
                 if r["alarm_id"] == state["alarm_id"]]
        return found[0] if found and found[0]["acked_by"] else None

    row = wait_for(acknowledged, timeout=30, what="the acknowledgement in the alarm table")
    assert row is not None
    facility = registry.facility(fid)
    assert facility is not None and facility.name_zh
    assert (row["facility_name"], row["facility_name_zh"], row["district"], row["facility"],
            row["sensor"], row["kind"], row["acked_by"], row["level"]) == (
        facility.name, facility.name_zh, facility.district, fid, state["sensor"], "drainage",
        "ann", state["level"])
    assert row["acked_at"] == now.isoformat()
    assert row["silenced"] is False and row["suppressed"] is False
    assert isinstance(row["since_ms"], int) and row["history_from"] == row["since_ms"] - 3_600_000
    assert row["since_ms"] <= time.time() * 1000
    # The alarm history dashboard as the table's row link opens it: this alarm, its sensor.
    # From the start of the first reading's hour: the hourly rollups are stamped there, which is
    # more than an hour ago when the readings were moved back before the hour (found in CI when
    # the test ran at hh:00-hh:02 UTC; Grafana gives the 30-day panels 30 days).
    since = f"time >= {int(start // 3600 * 3600)}s"
    pending = {where: substitute(q, state["alarm_id"], state["sensor"]
                                 if board["uid"] == "lifeline-alarm" else ".*", since)
               for board in boards.values() for where, q in queries(board)}
    # Rates need a few pipeline-health rounds (every 2 s); the diurnal baseline waits for the
    # writer's next batch — 30 s was once too short on a loaded 2-core CI machine.
    deadline = time.monotonic() + 90
    while pending and time.monotonic() < deadline:
        pending = {w: q for w, q in pending.items() if not influx_query(stack, q)}
        time.sleep(1)
    assert pending == {}, f"queries that returned nothing: {sorted(pending)}"
