"""Abort and replay: the writer stops dead right after a write of readings InfluxDB
acknowledged, before that batch's offsets are committed (crash point
``writer.after_write``, services/writer/readings.py), and is restarted.

At-least-once: the restarted writer reads again from the last commit, so the crashed
batch is written a second time. Points are keyed by series and event time, so the second
write overwrites each point with itself: InfluxDB ends with exactly the points an
uninterrupted run stores — the same series, times and values, each once — while the
writer's counters show the replay.

On the shared stack: the pipeline's writer is stopped for the test (its readings consumer
group is the one the crashed writer joins) and started again at the end; the readings
belong to a facility of this test alone, produced straight to ``lifeline.readings`` with
the contract's codec (ingest would refuse a facility the registry does not know; the
writer stores it with district ``unknown``, the processor ignores it).
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from schemas.codec import READING_BATCH
from schemas.kinds import FacilityKind, Metric
from schemas.reading import Reading, ReadingBatch
from services.core import topics
from services.core.crash import CRASH_EXIT
from services.stack.manager import Stack, free_port
from services.stack.services import ServiceProcess
from tests.support.pipeline import Pipeline
from tests.support.stack_helpers import influx_query, now_ms, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

EVENTS = 12  # reading batches (Kafka events) of the test's facility
CRASH_AT = 5  # the writer dies after its 5th write (one event per write: batch size 1)
SENSORS = (("L1", Metric.WATER_LEVEL, "m"), ("Q1", Metric.FLOW, "L/s"),
           ("R1", Metric.RAINFALL, "mm"))

# Every column of a stored reading (``SELECT *``: tags and fields, by name): an extra field
# (fill, baseline) or tag would show.
COLUMNS = ["time", "district", "facility", "kind", "metric", "sensor", "seq", "value"]
Row = tuple[Any, ...]


def batches(fid: str, base_ms: int) -> list[ReadingBatch]:
    def at(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    return [ReadingBatch(facility_id=fid, kind=FacilityKind.DRAINAGE, seq=i,
                         received_at=at(base_ms + i * 1000 + 50),
                         readings=[Reading(sensor=f"{fid}-{s}", metric=m, unit=u,
                                           value=round(1.25 + 0.01 * i + 0.1 * j, 3),
                                           ts=at(base_ms + i * 1000))
                                   for j, (s, m, u) in enumerate(SENSORS)])
            for i in range(EVENTS)]


def expected_rows(events: list[ReadingBatch]) -> list[Row]:
    """What an uninterrupted writer stores for ``events``: one point per reading."""
    return sorted((int(r.ts.timestamp() * 1000), "unknown", b.facility_id, b.kind.value,
                   r.metric.value, r.sensor, b.seq, r.value)
                  for b in events for r in b.readings)


def stored_rows(stack: Stack, fid: str) -> list[Row]:
    # The columns named (other tests' points give the measurement more fields, e.g. fill).
    series = influx_query(stack, 'SELECT "district"::tag, "facility"::tag, "kind"::tag, '
                                 '"metric"::tag, "sensor"::tag, "seq", "value" FROM "reading" '
                                 f'WHERE "facility" = \'{fid}\'')
    assert all(s["columns"] == COLUMNS for s in series), series
    return sorted(tuple(v) for s in series for v in s["values"])


def produce(stack: Stack, events: list[ReadingBatch]) -> None:
    async def go() -> None:
        p = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{stack.ports.kafka}", acks="all")
        await p.start()
        try:
            for b in events:  # one key: one partition, in this order
                await p.send_and_wait(topics.READINGS, READING_BATCH.encode(b),
                                      key=b.facility_id.encode())
        finally:
            await p.stop()

    asyncio.run(go())


def test_a_writer_killed_after_a_write_replays_it_and_stores_each_point_once(
        pipeline: Pipeline, pipeline_env: dict[str, str]) -> None:
    stack = pipeline.stack
    fid = f"CRASH-W-{uuid.uuid4().hex[:8]}"
    # Recent: their minute is still open (services/writer/rollup.py), so the crashed
    # writer's commit stays at the first of them, whatever the partition closed before.
    events = batches(fid, (now_ms() // 1000 - 15) * 1000)
    want = expected_rows(events)
    per_event = len(SENSORS)
    writer = pipeline.services["writer"]
    # Nothing else waits in the writer's partitions: the crashed writer's writes are ours.
    wait_for(lambda: writer.counters().get("lag") == 0, timeout=30, what="writer lag 0")
    # …and no minute of other facilities open: a commit held back for one (services/writer/
    # rollup.py) would make both writers replay those records too (the stop commits the rest).
    wait_for(lambda: writer.counters().get("rollup_open_minutes") == 0, timeout=150,
             what="the writer's open minutes closed")
    writer.stop()
    crashing = ServiceProcess("writer", {**pipeline_env, "LIFELINE_CRASH_AT":
                                         f"writer.after_write:{CRASH_AT}",
                                         "LIFELINE_WRITER_BATCH_EVENTS": "1"},
                              stack.logs, free_port(), instance="-crash")
    offset = crashing.log.stat().st_size if crashing.log.exists() else 0
    try:
        produce(stack, events)
        crashing.start()
        assert crashing.proc is not None
        try:
            code = crashing.proc.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the writer did not reach its crash point:\n{crashing.tail()}")
        log = crashing.log.read_text(errors="replace")[offset:]
        assert code == CRASH_EXIT, log[-3000:]
        hits = [line for line in log.splitlines() if '"crash_point.hit"' in line]
        assert hits == ['{"event": "crash_point.hit", "point": "writer.after_write", '
                        f'"pass": {CRASH_AT}}}'], log[-3000:]
        # Dead after its 5th write: exactly the first five events are stored (the 5th
        # acknowledged by InfluxDB, its offset not committed; the 6th not written).
        assert stored_rows(stack, fid) == expected_rows(events[:CRASH_AT])

        writer.start()  # the pipeline's own writer, without the crash point
        pipeline.wait_ready("writer")
        wait_for(lambda: len(stored_rows(stack, fid)) >= len(want), timeout=60,
                 what="every point of the test facility stored")
        # Everything read is committed (the counter is bumped after the commit).
        wait_for(lambda: (c := writer.counters()).get("processed_events", 0) > 0
                 and c.get("lag") == 0, timeout=30, what="the restarted writer's commits")
    finally:
        crashing.kill()
        if not writer.running:
            writer.start()
            pipeline.wait_ready("writer")
    # Exactly what an uninterrupted run stores: every series, time and value once...
    got = stored_rows(stack, fid)
    assert got == want
    count = influx_query(stack, f"SELECT count(\"value\") FROM \"reading\" WHERE "
                                f"\"facility\" = '{fid}'")
    assert count[0]["values"][0][1] == EVENTS * per_event
    # ...although the first five events' points were written twice: 5 events before the
    # crash (one per write, the stderr line counts them), all 12 after it (the restarted
    # writer's counter): the commit is held back to the first record of the oldest open
    # minute (the 1-minute tier, services/writer/rollup.py), here the first event.
    processed = writer.counters()["processed_events"]
    assert processed == EVENTS  # events 1..12: the first five replayed
    assert (CRASH_AT + processed) * per_event == len(want) + CRASH_AT * per_event
    # The latency budget (issue 16) saw those writes: Kafka → stored, per batch.
    budget = writer.counters()
    assert budget["latency.writer.kafka_to_stored.n"] >= 1
    assert budget["latency.writer.write.n"] >= 1
    assert 0 < budget["latency.writer.write.p99_ms"] <= budget["latency.writer.kafka_to_stored.max_ms"]
