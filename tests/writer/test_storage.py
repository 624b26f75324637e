"""The storage layout on the real InfluxDB: retention policies, the 1-minute tier computed
by the writer (no continuous query for it any more), alarms kept long-term, and the current
alarm state."""

from __future__ import annotations

from simulators.publisher import Publisher
from tests.support.pipeline import Pipeline
from tests.support.stack_helpers import influx_query, now_ms, report, wait_for


def test_retention_policies_and_continuous_query(pipeline: Pipeline) -> None:
    stack = pipeline.stack
    rps = {row[0]: row for row in influx_query(stack, "SHOW RETENTION POLICIES ON lifeline")[0]
           ["values"]}
    assert rps["raw"][1] == "720h0m0s" and rps["raw"][4] is True  # 30 days, default
    assert rps["long"][1] == "0s"  # kept forever
    cqs = influx_query(stack, "SHOW CONTINUOUS QUERIES")
    names = [row[0] for s in cqs if s["name"] == "lifeline" for row in s.get("values", [])]
    # Every tier is the writer's (services/writer/rollup.py): no continuous query is left.
    assert not {"reading_1m", "reading_1h", "district_1h"} & set(names), names


def test_database_downsamples_readings_to_one_minute(pipeline: Pipeline,
                                                     publisher: Publisher) -> None:
    """Readings of the current minute (the pipeline's writer folds readings up to 2 s late,
    LIFELINE_WRITER_ROLLUP_LATENESS_S): once the minute has closed by event time or by the
    wall clock, its mean/min/max are in long.reading_1m — exactly those of the readings."""
    stack = pipeline.stack
    fac = "TEST-RU-1"  # used by no other test
    start = now_ms()
    minute = start - start % 60_000
    step = max(1, (60_000 - start % 60_000 - 1_000) // 4)  # four readings inside the minute
    topic = f"lifeline/drainage/{fac}/telemetry"
    values = [0.4, 0.8, 1.2, 1.6]
    for i, v in enumerate(values):
        ts = min(now_ms(), start + i * step)
        publisher.publish(topic, report(i + 1, ts, [(f"{fac}-L1", "water_level", v, "m")]))
    q = (f"SELECT mean, min, max FROM long.reading_1m WHERE facility='{fac}' "
         f"AND sensor='{fac}-L1' AND time = {minute}ms")
    rows = wait_for(lambda: influx_query(stack, q), timeout=120,
                    what="the writer's 1-minute aggregate")
    assert rows[0]["values"] == [[minute, 1.0, 0.4, 1.6]]


def test_alarms_are_kept_long_term_with_their_current_state(pipeline: Pipeline,
                                                            publisher: Publisher) -> None:
    stack = pipeline.stack
    FAC = "DR-LW-002"
    topic = f"lifeline/drainage/{FAC}/telemetry"
    t0 = now_ms() - 30 * 60_000
    for i, v in enumerate([3.2, 3.3]):  # two readings: the manhole rule raises after 2
        publisher.publish(topic, report(100 + i, t0 + i * 1000,
                                        [(f"{FAC}-L1", "water_level", v, "m")]))
    active = (f"SELECT * FROM (SELECT last(severity) AS severity, last(level) AS level "
              f"FROM long.alarm_state WHERE facility='{FAC}' AND category='facility' "
              "GROUP BY facility, sensor, rule) "
              "WHERE severity > 0")
    rows = wait_for(lambda: influx_query(stack, active), what="active alarm state")
    cols = rows[0]["columns"]
    row = dict(zip(cols, rows[0]["values"][0], strict=True))
    assert row["level"] == "red" and row["severity"] == 4
    publisher.publish(topic, report(102, t0 + 2000, [(f"{FAC}-L1", "water_level", 0.5, "m")]))
    wait_for(lambda: not influx_query(stack, active), what="state cleared")
    events = influx_query(stack, f"SELECT count(alarm_id) FROM long.alarm_event "
                                 f"WHERE facility='{FAC}' AND rule='value-upper' GROUP BY event")
    assert {s["tags"]["event"]: s["values"][0][1] for s in events} == {"raised": 1, "cleared": 1}


def test_pipeline_health_of_every_service_is_stored(pipeline: Pipeline) -> None:
    stack = pipeline.stack

    def latest() -> dict[str, dict[str, object]]:
        out = {}
        for s in influx_query(stack, "SELECT last(healthy) AS healthy FROM pipeline "
                                     "GROUP BY service"):
            out[s["tags"]["service"]] = dict(zip(s["columns"], s["values"][0], strict=True))
        return out

    got = wait_for(lambda: (x := latest()) and {"ingest", "processor", "writer"} <= set(x) and x,
                   timeout=60, what="pipeline health from every service")
    assert all(v["healthy"] is True for v in got.values())
    fields = influx_query(stack, "SHOW FIELD KEYS FROM pipeline")[0]["values"]
    names = {f[0] for f in fields}
    assert {"accepted_readings", "processed_readings", "stored_points", "lag"} <= names
