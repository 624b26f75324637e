"""Issue 14 against the real InfluxDB 1.x: a refused point no longer dead-letters its
whole batch. The writer isolates the refused points, stores every other one and
dead-letters only their events.

The first tests run the writer's storing code against a bare influxd started here (the
storage layout of services/writer/storage.py, no broker); the last one goes through the
whole pipeline (MQTT → ingest → Kafka → writer → InfluxDB) with a field type conflict
made on purpose.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from aiokafka import TopicPartition

from schemas.reading import Reading, ReadingBatch
from schemas.registry import Registry
from services.core import topics
from services.core.settings import InfluxSettings
from services.stack.manager import Ports, Stack
from services.writer.batch import Batch
from services.writer.points import PointBuilder
from services.writer.storage import ensure_layout
from simulators.publisher import Publisher
from tests.support.pipeline import Pipeline
from tests.support.stack_helpers import (
    influx_count,
    now_ms,
    report,
    topic_records,
    wait_for,
)
from tests.writer.test_writer_isolation import (
    FAC,
    DeadLetters,
    Rec,
    bound,
    event,
    make_writer,
    run_readings,
)

# An influxd of the module's own for most tests.
pytestmark = pytest.mark.integration

DAY = 86_400_000
_UNESCAPED_SPACE = re.compile(r"(?<!\\) ")


# ------------------------------------------------------------------ a bare influxd
@pytest.fixture(scope="module")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("influxd"), Ports.free())
    s.start("influxd")
    settings = InfluxSettings(url=url(s), database="lifeline")
    asyncio.run(ensure_layout(settings, raw_retention="30d", long_retention="INF"))
    yield s
    s.stop("influxd")


def url(s: Stack) -> str:
    return f"http://127.0.0.1:{s.ports.influx}"


def query(s: Stack, q: str) -> list[dict[str, object]]:
    u = f"{url(s)}/query?" + urllib.parse.urlencode({"db": "lifeline", "q": q, "epoch": "ms"})
    with urllib.request.urlopen(u, timeout=10) as resp:  # noqa: S310
        result = json.loads(resp.read())["results"][0]
    assert "error" not in result, result
    series: list[dict[str, object]] = result.get("series", [])
    return series


def points_at(s: Stack, where: str) -> set[tuple[int, str]]:
    """(time, sensor) of the readings stored where ``where``."""
    out: set[tuple[int, str]] = set()
    for series in query(s, f"SELECT value, sensor FROM reading WHERE {where}"):
        out.update((int(t), str(sensor)) for t, _v, sensor in series["values"])  # type: ignore[attr-defined]
    return out


def post(base: str, body: str, **params: str) -> None:
    """A direct write (line protocol, ms) — how a conflicting type gets into a shard."""
    q = urllib.parse.urlencode({"db": "lifeline", "precision": "ms", **params})
    req = urllib.request.Request(f"{base}/write?{q}", data=body.encode(),  # noqa: S310
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        assert resp.status == 204


def partitions(raws: list[bytes]) -> dict[TopicPartition, list[Rec]]:
    return {TopicPartition("lifeline.readings", 5): [Rec(r, 1000 + i)
                                                     for i, r in enumerate(raws)]}


async def test_one_unparsable_point_among_2000_events_on_influxd(
        influxd: Stack, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    builder = PointBuilder(registry)
    t0 = now_ms() - 6 * 3600_000
    raws = [event(i, t0 + i * 1000) for i in range(2000)]
    BAD = 1500

    def to_lines(raw: bytes) -> list[str]:
        lines = builder.readings_raw(raw)
        if raw is raws[BAD]:
            lines[1] = lines[1].replace("value=", "value=1.0.0,x=")
        return lines

    dead = DeadLetters()
    writer, counters = make_writer(url(influxd), dead)
    try:
        commits = await run_readings(monkeypatch, writer, to_lines, [partitions(raws)], dead)
    finally:
        await writer.sink.close()
    stored = points_at(influxd, f"facility='{FAC}' AND time >= {t0}ms "
                                f"AND time < {t0 + 2000 * 1000}ms")
    expected = {(t0 + i * 1000, s) for i in range(2000) for s in (f"{FAC}-L1", f"{FAC}-Q1")}
    assert stored == expected - {(t0 + BAD * 1000, f"{FAC}-Q1")}
    [dl] = dead.letters
    assert dl["source"] == "kafka:lifeline.readings[5]@2500" and dl["raw"] == raws[BAD]
    assert "unable to parse" in dl["detail"]
    assert [p.reading_index for p in dl["problems"]] == [1]
    assert commits == [{TopicPartition("lifeline.readings", 5): 3000}]
    assert counters.get("isolation_writes") + 1 <= bound(1, 2000, 2)


async def test_field_type_conflict_on_influxd_dead_letters_only_that_event(
        influxd: Stack, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """InfluxDB 1.x answers 400 ``partial write: field type conflict`` and stores the other
    points; isolating rewrites them (same series, same time: overwritten, not doubled)."""
    builder = PointBuilder(registry)
    t0 = now_ms() - 9 * 3600_000
    t_old = now_ms() - 3 * DAY
    raws = [event(i, t0 + i * 1000) for i in range(2000)]
    BAD = 42
    raws[BAD] = event(BAD, t_old)
    # In the shard of three days ago `fill` was once written as a string.
    post(url(influxd), f'reading,facility=OTHER,sensor=OTHER-L1 fill="full" {t_old - 60_000}',
         rp="raw")
    dead = DeadLetters()
    writer, _ = make_writer(url(influxd), dead)
    try:
        await run_readings(monkeypatch, writer, builder.readings_raw, [partitions(raws)], dead)
    finally:
        await writer.sink.close()
    stored = points_at(influxd, f"facility='{FAC}' AND time >= {t0}ms "
                                f"AND time < {t0 + 2000 * 1000}ms")
    assert len(stored) == 1999 * 2
    # The conflicting event's level (it has `fill`) is refused; its flow is stored.
    assert points_at(influxd, f"facility='{FAC}' AND time = {t_old}ms") == {(t_old, f"{FAC}-Q1")}
    counts = query(influxd, f"SELECT count(value) FROM reading WHERE facility='{FAC}' "
                            f"AND time >= {t0}ms AND time < {t0 + 2000 * 1000}ms")
    assert counts[0]["values"][0][1] == 3998  # type: ignore[index]  # not doubled
    [dl] = dead.letters
    assert dl["source"] == "kafka:lifeline.readings[5]@1042"
    assert 'partial write: field type conflict: input field "fill"' in dl["detail"]
    assert [(p.reading_index, p.sensor) for p in dl["problems"]] == [(0, f"{FAC}-L1")]


async def test_influxd_down_is_retried_and_nothing_dead_lettered(
        influxd: Stack, registry: Registry) -> None:
    builder = PointBuilder(registry)
    t0 = now_ms() - 12 * 3600_000
    batch = Batch()
    for i in range(300):
        raw = event(i, t0 + i * 1000)
        batch.add(raw, f"kafka:lifeline.readings[0]@{i}", builder.readings_raw(raw))
    dead = DeadLetters()
    writer, counters = make_writer(url(influxd), dead)
    influxd.stop("influxd")
    try:
        task = asyncio.ensure_future(writer.store_or_dead_letter(batch, "readings",
                                                                 readings=True))

        async def retried() -> None:
            while counters.get("sink_retries") < 3:  # noqa: ASYNC110 — a counter, no event
                await asyncio.sleep(0.05)

        await asyncio.wait_for(retried(), timeout=60)
        assert not task.done()
        await asyncio.to_thread(influxd.start, "influxd")
        await asyncio.wait_for(task, timeout=60)
    finally:
        await writer.sink.close()
    assert not dead.letters and counters.get("refused_batches") == 0
    assert len(points_at(influxd, f"facility='{FAC}' AND time >= {t0}ms "
                                  f"AND time < {t0 + 300 * 1000}ms")) == 600


# ------------------------------------------------------------------ the real pipeline
PFAC = "DR-KG-002"  # L1 water level (1.2 m pipe), Q1 flow; no other test reports for it
TOPIC = f"lifeline/drainage/{PFAC}/telemetry"


def test_field_type_conflict_through_the_pipeline_keeps_the_neighbours(
        pipeline: Pipeline, publisher: Publisher, registry: Registry) -> None:
    stack = pipeline.stack
    writer = pipeline.services["writer"]
    before = writer.counters()
    t0 = now_ms() - 3 * 60_000
    t_bad = now_ms() - 5 * DAY  # inside ingest's 7 days, in a shard of its own
    # Make `seq` a string in the shard of five days ago: every reading of that day is then
    # refused by InfluxDB with "field type conflict" (in the batch of its neighbours).
    ts = datetime_of(t_bad - 60_000)
    head = _UNESCAPED_SPACE.split(PointBuilder(registry).readings(ReadingBatch(
        facility_id=PFAC, kind="drainage", seq=0, received_at=ts,
        readings=[Reading(sensor=f"{PFAC}-L1", metric="water_level", value=0.5, unit="m",
                          ts=ts)]))[0])[0]
    post(f"http://127.0.0.1:{stack.ports.influx}", f'{head} seq="conflict" {t_bad - 60_000}',
         rp="raw")

    readings = [(f"{PFAC}-L1", "water_level", 0.5, "m"), (f"{PFAC}-Q1", "flow", 100.0, "L/s")]
    BAD_SEQ = 11
    for seq in range(1, 22):  # twenty good reports around the bad one, in one burst
        publisher.publish(TOPIC, report(seq, t_bad if seq == BAD_SEQ else t0 + seq * 1000,
                                        readings))
    assert publisher.flush(20)

    good = f"facility='{PFAC}' AND time >= {t0}ms"
    wait_for(lambda: influx_count(stack, good) == 40, timeout=60,
             what="the 20 neighbouring reports' 40 readings stored")

    def writer_dead_letters() -> list[dict[str, object]]:
        return [d for d in topic_records(stack, topics.READINGS_DLQ)
                if d["service"] == "writer" and d.get("facility_id") == PFAC]

    [dl] = wait_for(writer_dead_letters, timeout=60, what="the writer's dead letter")
    assert dl["reason"] == "sink_rejected"
    # a record, or a line of a pack (the local stack packs: services/ingest/pack.py)
    assert re.fullmatch(r"kafka:lifeline\.readings\[\d+\]@\d+(#\d+)?", str(dl["source"]))
    assert 'field type conflict: input field "seq"' in str(dl["detail"])
    payload = json.loads(base64.b64decode(str(dl["payload_b64"])))
    assert payload["seq"] == BAD_SEQ and payload["facility_id"] == PFAC
    assert [p["reading_index"] for p in dl["problems"]] == [0, 1]  # type: ignore[attr-defined]
    assert influx_count(stack, f"facility='{PFAC}' AND time = {t_bad}ms") == 0
    assert writer.counters()["refused_batches"] > before.get("refused_batches", 0)


def datetime_of(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
