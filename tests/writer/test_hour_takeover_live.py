"""The hourly tiers across a change of hands, on real components (a stack of this module's
own: Tansu and InfluxDB 1.x, the writer as a process): a writer stores the first half of
an hour, stops; another takes the partition over mid-hour, stores the rest; once the
hour is closed its ``reading_1h`` and ``district_1h`` points are those of every minute of
the hour — recomputed from the stored minutes (services/writer/rollup.py), not the second
owner's half nor the first owner's last rewrite.

An hour three hours back (event time), on fresh topics: nothing else moves the watermark.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.codec import READING_BATCH
from schemas.kinds import FacilityKind, Metric
from schemas.reading import Reading, ReadingBatch
from services.core import topics
from services.stack.manager import Ports, Stack, check_dependencies, free_port
from services.stack.services import ServiceProcess
from services.writer.rollup import HOUR_MS
from tests.support.pipeline import pipeline_env_of, writer_ready
from tests.support.stack_helpers import influx_query, now_ms, wait_for

pytestmark = pytest.mark.integration

FID = "HOUR-W-1"  # not in the registry: district "unknown"
SENSOR = f"{FID}-L1"
STEP_MS = 20_000  # a reading every 20 s: three a minute


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    missing = check_dependencies()
    if missing:
        pytest.fail("local stack not installed (run scripts/bootstrap.sh): " + "; ".join(missing))
    s = Stack(tmp_path_factory.mktemp("hour-takeover-stack"), Ports.free(), postgres=False)
    s.up()
    yield s
    s.down()


def committed(stack: Stack) -> int:
    """Records committed by the writers' readings group, over every partition."""
    async def go() -> int:
        c = AIOKafkaConsumer(bootstrap_servers=f"127.0.0.1:{stack.ports.kafka}",
                             group_id="lifeline-writer-readings",  # services/writer/readings.py
                             enable_auto_commit=False)
        await c.start()
        try:
            return sum([await c.committed(TopicPartition(topics.READINGS, p)) or 0
                        for p in range(stack.partitions)])
        finally:
            await c.stop()

    return asyncio.run(go())


def value(i: int) -> float:
    return round(1.0 + (i % 7) * 0.1 + i * 0.001, 4)


def produce(stack: Stack, hour: int, steps: range) -> None:
    def at(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    async def go() -> None:
        p = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{stack.ports.kafka}", acks="all")
        await p.start()
        try:
            for i in steps:  # one key: one partition, in this order
                t = hour + i * STEP_MS
                b = ReadingBatch(facility_id=FID, kind=FacilityKind.DRAINAGE, seq=i + 1,
                                 received_at=at(t + 50),
                                 readings=[Reading(sensor=SENSOR, metric=Metric.WATER_LEVEL,
                                                   value=value(i), unit="m", ts=at(t))])
                await p.send_and_wait(topics.READINGS, READING_BATCH.encode(b),
                                      key=FID.encode())
        finally:
            await p.stop()

    asyncio.run(go())


def stored(stack: Stack, measurement: str, hour: int) -> list[list[float]]:
    """max, mean, min of the test's series (or district) in ``hour``."""
    where = f"\"facility\" = '{FID}'" if measurement != "district_1h" else \
        "\"district\" = 'unknown'"
    series = influx_query(stack, f'SELECT "max", "mean", "min" FROM "long"."{measurement}" '
                                 f"WHERE {where} AND time >= {hour}ms AND "
                                 f"time < {hour + HOUR_MS}ms")
    return [v[1:] for s in series for v in s["values"]]


def expected(hour: int, steps: range) -> list[float]:
    """max, mean of the minute means, min of the readings ``steps`` of ``hour``."""
    minutes: dict[int, list[float]] = {}
    for i in steps:
        minutes.setdefault(i * STEP_MS // 60_000, []).append(value(i))
    means = [sum(v) / len(v) for v in minutes.values()]
    flat = [v for vs in minutes.values() for v in vs]
    return [max(flat), sum(means) / len(means), min(flat)]


def test_an_hour_that_changed_hands_is_recomputed_from_every_stored_minute(
        own_stack: Stack, registry_file: Path) -> None:
    stack = own_stack
    env = {**pipeline_env_of(stack, registry_file), "LIFELINE_WRITER_ROLLUP_LATENESS_S": "0",
           "LIFELINE_WRITER_ROLLUP_HOUR_REFRESH_MIN": "1"}
    hour = (now_ms() - 3 * HOUR_MS) // HOUR_MS * HOUR_MS
    per_hour = HOUR_MS // STEP_MS
    first = ServiceProcess("writer", env, stack.logs, free_port(), instance="-first")
    second = ServiceProcess("writer", env, stack.logs, free_port(), instance="-second")
    try:
        produce(stack, hour, range(0, 90))  # minutes 0-29 of the hour
        first.start()
        first.wait_ready(90, ready=writer_ready)
        # Caught up, the partition's minutes close by the wall clock: all 30, and the hour
        # with them, as far as this writer knows it (the rest comes later than the lateness).
        wait_for(lambda: len(stored(stack, "reading_1m", hour)) == 30, timeout=60,
                 what="the first writer's minutes")
        half = expected(hour, range(90))
        wait_for(lambda: [v == pytest.approx(half, rel=1e-12)
                          for v in stored(stack, "reading_1h", hour)] == [True],
                 timeout=30, what=f"the first writer's hour: {half}")
        # Committed (after the minutes and the hour were stored): the next owner goes on
        # from there, so it takes the partition over mid-hour.
        wait_for(lambda: committed(stack) == 90, timeout=30, what="the first writer's commit")
        first.stop()
        # The rest of the hour and the next hour's first minute (which closes the hour).
        produce(stack, hour, range(90, per_hour + 3))
        second.start()
        second.wait_ready(90, ready=writer_ready)
        wait_for(lambda: second.counters().get("rollup_hours_recomputed") == 1, timeout=90,
                 what="the hour recomputed by the writer that took it over")
        whole = expected(hour, range(per_hour))
        assert len(stored(stack, "reading_1m", hour)) == 60
        [got] = stored(stack, "reading_1h", hour)
        assert got == pytest.approx(whole, rel=1e-12)
        # Neither owner's half is what was written.
        for half in (range(90), range(90, per_hour)):
            assert expected(hour, half)[1] != pytest.approx(whole[1])
        # The district's point of that partition: the one series' hour.
        [district] = stored(stack, "district_1h", hour)
        assert district == pytest.approx(whole, rel=1e-12)
        assert second.counters().get("rollup_recompute_failed") == 0
        log = second.log.read_text(errors="replace")
        assert '"event": "writer.hour_recomputed"' in log
    finally:
        for w in (first, second):
            w.kill()
