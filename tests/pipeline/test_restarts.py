"""Crash (kill -9) and restart each service mid-stream: no reading lost, duplicates
harmless, no second 'raised' and no lost 'cleared'."""

from __future__ import annotations

import threading
import time

import pytest

from services.core import topics
from simulators.publisher import Publisher
from tests.support.pipeline import Pipeline
from tests.support.stack_helpers import influx_count, influx_query, now_ms, report, topic_records, wait_for

# Each service killed (-9) mid-stream; integration through the `pipeline` fixture.
pytestmark = pytest.mark.chaos

N = 300
FACILITY = {"ingest": "DR-OF-001", "processor": "DR-OF-002", "writer": "DR-OF-003"}


@pytest.mark.parametrize("service", ["ingest", "processor", "writer"])
def test_kill_and_restart_mid_stream(pipeline: Pipeline, publisher: Publisher,
                                     service: str) -> None:
    stack = pipeline.stack
    fac = FACILITY[service]
    topic = f"lifeline/drainage/{fac}/telemetry"
    t0 = now_ms() - 5 * 60_000

    def level(seq: int) -> float:
        return 3.2 if 140 <= seq < 220 else 0.9  # one red episode spanning the crash

    def publish_all() -> None:
        for seq in range(1, N + 1):
            publisher.publish(topic, report(seq, t0 + seq * 100,
                                            [(f"{fac}-L1", "water_level", level(seq), "m"),
                                             (f"{fac}-Q1", "flow", float(seq), "L/s")]))
            time.sleep(0.02)  # ~6 s of traffic: the second half arrives while it is down

    t = threading.Thread(target=publish_all)
    t.start()
    # Let some reports through, then crash the service while the stream continues.
    wait_for(lambda: publisher.published >= N // 2, what="half published")
    pipeline.restart(service, kill=True)
    t.join(60)
    assert publisher.flush(30)

    where = f"facility='{fac}' AND time >= {t0}ms AND time <= {t0 + N * 100}ms"
    wait_for(lambda: influx_count(stack, where) == 2 * N, timeout=90,
             what=f"{2 * N} readings stored")
    per_sensor = influx_query(stack, f"SELECT count(value), count(seq) FROM reading WHERE {where} "
                                     "GROUP BY sensor")
    assert sorted(s["values"][0][1] for s in per_sensor) == [N, N]  # duplicates overwrote

    def alarm_events() -> list[dict[str, object]]:
        return [a for a in topic_records(stack, topics.ALARMS)
                if a["facility_id"] == fac and a["rule"] == "value-upper"]

    events = wait_for(lambda: (a := alarm_events()) and any(e["event"] == "cleared" for e in a)
                      and a, timeout=60, what="the episode cleared")
    distinct = {e["event_id"]: (e["event"], e["level"]) for e in events}
    assert sorted(distinct.values(), key=str) == sorted([("raised", "red"), ("cleared", None)],
                                                        key=str), events
    stored = wait_for(lambda: influx_query(
        stack, f"SELECT count(alarm_id) FROM long.alarm_event WHERE facility='{fac}' "
               "AND rule='value-upper' GROUP BY event"),
        what="alarm events stored")
    assert {s["tags"]["event"]: s["values"][0][1] for s in stored} == {"raised": 1, "cleared": 1}
