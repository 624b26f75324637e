"""Readings and alarms through every real component: MQTT → ingest → Kafka → processor /
writer → InfluxDB."""

from __future__ import annotations

from services.core import topics
from simulators.publisher import Publisher
from tests.support.pipeline import Pipeline
from tests.support.stack_helpers import (
    influx_count,
    influx_query,
    now_ms,
    report,
    topic_records,
    wait_for,
)

FAC = "DR-KJ-001"
TOPIC = f"lifeline/drainage/{FAC}/telemetry"
L1 = f"{FAC}-L1"


def test_reading_stored_at_its_own_time_and_alarm_lifecycle(pipeline: Pipeline,
                                                            publisher: Publisher) -> None:
    stack = pipeline.stack
    t0 = now_ms() - 120_000 + 7  # an odd millisecond: the stored time must be exactly this
    publisher.publish(TOPIC, report(1, t0, [(L1, "water_level", 100.0, "cm"),
                                            (f"{FAC}-Q1", "flow", 0.12, "m3/s")]))
    where = f"facility='{FAC}' AND time >= {t0}ms"
    wait_for(lambda: influx_count(stack, where) == 2, what="two points stored")
    series = influx_query(stack, f"SELECT value, seq FROM reading WHERE {where} AND sensor='{L1}'")
    assert series[0]["values"] == [[t0, 1.0, 1]]  # event time, converted from cm, gateway seq

    # The example registry raises manhole levels after 2 consecutive readings.
    publisher.publish(TOPIC, report(2, t0 + 1000, [(L1, "water_level", 3.1, "m")]))
    publisher.publish(TOPIC, report(3, t0 + 2000, [(L1, "water_level", 3.2, "m")]))
    publisher.publish(TOPIC, report(4, t0 + 3000, [(L1, "water_level", 0.4, "m")]))

    def alarms() -> list[dict[str, object]]:
        return [a for a in topic_records(stack, topics.ALARMS)
                if a["facility_id"] == FAC and a["rule"] == "value-upper"]

    events = wait_for(lambda: (a := alarms()) and len(a) >= 2 and a, what="raised and cleared")
    assert [(e["event"], e["level"]) for e in events] == [("raised", "red"), ("cleared", None)]
    assert events[0]["alarm_id"] == events[1]["alarm_id"]
    assert events[0]["ts"].endswith("Z") and events[0]["value"] == 3.2

    rows = wait_for(lambda: influx_query(
        stack, f"SELECT alarm_id, level, event FROM long.alarm_event WHERE facility='{FAC}' "
               "AND rule='value-upper'"),
        what="alarm events in InfluxDB")
    values = rows[0]["values"]
    assert [(r[0], r[2], r[3]) for r in values] == [
        (t0 + 2000, "red", "raised"), (t0 + 3000, "none", "cleared")]


def test_services_report_health_and_counters(pipeline: Pipeline) -> None:
    for name, svc in pipeline.services.items():
        code, body = svc.health()
        assert code == 200, (name, body)
        assert body["status"] == "ok" and body["service"] == name
        assert "lag" in body["counters"] or name == "ingest"
    assert "pending_acks" in pipeline.services["ingest"].counters()
