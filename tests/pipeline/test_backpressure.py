"""InfluxDB down: the writer retries the same batch, reports the outage in its health,
Kafka retains the rest, and everything is stored once InfluxDB is back."""

from __future__ import annotations

from simulators.publisher import Publisher
from tests.support.pipeline import Pipeline
from tests.support.stack_helpers import influx_count, now_ms, report, wait_for

FAC = "DR-KG-001"


def test_writer_holds_data_while_influx_is_down(pipeline: Pipeline,
                                                publisher: Publisher) -> None:
    stack = pipeline.stack
    writer = pipeline.services["writer"]
    topic = f"lifeline/drainage/{FAC}/telemetry"
    t0 = now_ms() - 30 * 60_000
    stack.stop("influxd")
    try:
        for seq in range(1, 101):
            publisher.publish(topic, report(seq, t0 + seq * 1000,
                                            [(f"{FAC}-L1", "water_level", 1.0, "m")]))
        assert publisher.flush(20)
        _code, body = wait_for(lambda: (h := writer.health())[0] == 503 and h,
                              what="writer reports the outage")
        assert "sink" in body["problems"]
        assert writer.counters()["sink_retries"] >= 1
    finally:
        stack.start("influxd")
    where = f"facility='{FAC}' AND time >= {t0}ms AND time <= {t0 + 100_000}ms"
    wait_for(lambda: influx_count(stack, where) == 100, timeout=60, what="all 100 stored")
    wait_for(lambda: writer.health()[0] == 200, what="writer healthy again")
    assert writer.running
