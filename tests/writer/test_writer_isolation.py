"""The writer isolates the points the database refuses (issue 14): one bad point no longer
dead-letters its whole batch of up to 2,000 events.

Against a stand-in for InfluxDB's HTTP write API (aiohttp, in this process) that keeps
InfluxDB 1.x's semantics: a field's type is fixed per shard (day) and measurement by its
first write; a batch with refused points answers ``400 partial write: …`` after storing
its other points; an unparsable line is refused with ``unable to parse``. The same
scenarios run against a real influxd in tests/writer/test_writer_isolation_live.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiokafka import TopicPartition
from pydantic import SecretStr

from schemas.deadletter import Problem, RejectReason
from schemas.registry import Registry
from services.core.health import Counters, Health
from services.core.settings import InfluxSettings, KafkaSettings
from services.stack.manager import free_port
from services.writer import readings as readings_mod
from services.writer.batch import Batch, BatchWriter, isolate, merge, refused_events
from services.writer.points import PointBuilder
from services.writer.sinks import SinkRejected, make_sink

FAC = "DR-BH-001"  # L1 water level in a 1.0 m pipe (fill field), Q1 flow
T0 = 1_782_892_800_000  # 2026-07-01T08:00:00Z
DAY = 86_400_000


# ------------------------------------------------------------------ InfluxDB stand-in
def _split(text: str, sep: str, *, quotes: bool) -> list[str]:
    """Split at unescaped ``sep`` (outside double quotes when ``quotes``)."""
    out, cur, i, inq = [], [], 0, False
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if quotes and c == '"':
            inq = not inq
        if c == sep and not inq:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def _field_type(v: str) -> str:
    if len(v) >= 2 and v[0] == v[-1] == '"':
        return "string"
    if v in ("t", "f", "true", "false", "T", "F", "True", "False", "TRUE", "FALSE"):
        return "boolean"
    if v.endswith("i") and v[:-1].lstrip("-").isdigit():
        return "integer"
    float(v)  # ValueError: invalid number
    return "float"


def parse_line(line: str) -> tuple[str, str, dict[str, tuple[str, str]], int]:
    """(measurement, series key, {field: (type, text)}, time) of one line, or ValueError."""
    key_end = next((i for i, _ in enumerate(line) if line[i] == " "
                    and (i == 0 or line[i - 1] != "\\")), -1)
    if key_end <= 0:
        raise ValueError("missing fields")
    key, rest = line[:key_end], line[key_end + 1:]
    parts = _split(rest, " ", quotes=True)
    if len(parts) != 2 or not parts[0]:
        raise ValueError("missing fields" if len(parts) < 2 else "invalid field format")
    fields: dict[str, tuple[str, str]] = {}
    for kv in _split(parts[0], ",", quotes=True):
        k, eq, v = kv.partition("=")
        if not k or not eq:
            raise ValueError("invalid field format")
        if not v:
            raise ValueError("missing field value")
        fields[k] = (_field_type(v), v)
    try:
        ts = int(parts[1])
    except ValueError:
        raise ValueError("bad timestamp") from None
    return _split(key, ",", quotes=False)[0], key, fields, ts


@dataclass
class FakeInflux:
    """InfluxDB 1.x's ``/write`` (precision ms, daily shards) and 2.x's ``/api/v2/write``
    (which refuses a batch with an unparsable line whole, and answers 422 for type
    conflicts), in memory."""

    url: str = ""
    types: dict[tuple[int, str, str], str] = field(default_factory=dict)
    points: dict[tuple[str, int], dict[str, str]] = field(default_factory=dict)
    bodies: list[int] = field(default_factory=list)  # lines per request, every request
    unavailable: list[int] = field(default_factory=list)  # statuses to answer next, first
    unavailable_at: dict[int, int] = field(default_factory=dict)  # request number → status
    max_lines: int | None = None  # 413 beyond

    def seed(self, line: str) -> None:
        """Write a point directly (e.g. an older schema's type for a field)."""
        m, key, fields, ts = parse_line(line)
        for f, (t, _) in fields.items():
            self.types.setdefault((ts // DAY, m, f), t)
        self.points.setdefault((key, ts), {}).update({f: v for f, (_, v) in fields.items()})

    def write(self, body: str, *, v2: bool) -> tuple[int, str]:
        n = len(self.bodies) + 1
        lines = [ln for ln in body.split("\n") if ln.strip()]
        self.bodies.append(len(lines))
        if self.unavailable:
            return self.unavailable.pop(0), '{"error":"timeout"}'
        if n in self.unavailable_at:
            return self.unavailable_at.pop(n), '{"error":"engine: cache maximum memory size '\
                                               'exceeded"}'
        if self.max_lines is not None and len(lines) > self.max_lines:
            return 413, '{"error":"Request Entity Too Large"}'
        parsed, unparsable = [], []
        for ln in lines:
            try:
                parsed.append(parse_line(ln))
            except ValueError as exc:
                unparsable.append(f"unable to parse '{ln}': {exc}")
        if unparsable and (v2 or not parsed):
            return 400, json.dumps({"code": "invalid", "message": "\n".join(unparsable)}
                                   if v2 else {"error": "\n".join(unparsable)})
        dropped, reason = 0, ""
        for m, key, fields, ts in parsed:
            conflict = next(((f, t, self.types[(ts // DAY, m, f)]) for f, (t, _) in fields.items()
                             if self.types.get((ts // DAY, m, f), t) != t), None)
            if conflict is not None:
                dropped += 1
                reason = reason or (f'field type conflict: input field "{conflict[0]}" on '
                                    f'measurement "{m}" is type {conflict[1]}, already exists '
                                    f"as type {conflict[2]}")
                continue
            for f, (t, _) in fields.items():
                self.types.setdefault((ts // DAY, m, f), t)
            self.points.setdefault((key, ts), {}).update(
                {f: v for f, (_, v) in fields.items()})
        if dropped:
            text = f"partial write: {reason} dropped={dropped}"
            return (422, json.dumps({"code": "unprocessable entity", "message": text})) if v2 \
                else (400, json.dumps({"error": text}))
        if unparsable:
            return 400, json.dumps({"error": "partial write: " + "\n".join(unparsable)
                                    + " dropped=0"})
        return 204, ""

    def stored(self, line: str) -> bool:
        _, key, fields, ts = parse_line(line)
        got = self.points.get((key, ts), {})
        return all(got.get(f) == v for f, (_, v) in fields.items())


async def start_fake(fake: FakeInflux, port: int | None = None) -> web.AppRunner:
    async def v1(request: web.Request) -> web.Response:
        assert request.query["db"] == "lifeline"
        status, text = fake.write(await request.text(), v2=False)
        return web.Response(status=status, text=text, content_type="application/json")

    async def v2(request: web.Request) -> web.Response:
        status, text = fake.write(await request.text(), v2=True)
        return web.Response(status=status, text=text, content_type="application/json")

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/write", v1)
    app.router.add_post("/api/v2/write", v2)
    runner = web.AppRunner(app)
    await runner.setup()
    port = port or free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.url = f"http://127.0.0.1:{port}"
    return runner


@pytest.fixture
async def influx() -> AsyncIterator[FakeInflux]:
    fake = FakeInflux()
    runner = await start_fake(fake)
    yield fake
    await runner.cleanup()


# ------------------------------------------------------------------ the writer's parts
@dataclass
class DeadLetters:
    letters: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, raw: bytes, source: str, reason: RejectReason, detail: str,
                       problems: list[Problem] | None = None,
                       facility_id: str | None = None) -> None:
        self.letters.append({"raw": raw, "source": source, "reason": reason, "detail": detail,
                             "problems": problems or [], "facility_id": facility_id})


_OPEN: list[BatchWriter] = []


@pytest.fixture(autouse=True)
async def _close_sinks() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().sink.close()


def make_writer(url: str, dead: DeadLetters, *, api: str = "v1",
                max_requests: int = 200) -> tuple[BatchWriter, Counters]:
    settings = (InfluxSettings(url=url, database="lifeline") if api == "v1" else
                InfluxSettings(api="v2", url=url, org="district", bucket="lifeline",
                               token=SecretStr("stand-in-token-not-checked")))
    counters = Counters("stored_points", "sink_retries", "refused_batches")
    writer = BatchWriter(make_sink(settings, timeout_s=5), counters,
                         Health("writer", counters), retry_max_s=0.02, dead_letter_cb=dead,
                         isolate_max_requests=max_requests)
    _OPEN.append(writer)
    return writer, counters


def event(seq: int, ts_ms: int, level: float = 1.2, flow: float = 80.0) -> bytes:
    """A ``lifeline.readings`` value exactly as ingest writes it (two readings)."""
    ts = f"{ts_ms}"
    return json.dumps({
        "facility_id": FAC, "kind": "drainage", "seq": seq, "received_at": T0,
        "readings": [
            {"sensor": f"{FAC}-L1", "metric": "water_level", "value": level, "unit": "m",
             "ts": int(ts)},
            {"sensor": f"{FAC}-Q1", "metric": "flow", "value": flow, "unit": "L/s",
             "ts": int(ts)}]}).encode()


@dataclass
class Rec:
    value: bytes
    offset: int
    timestamp: int = field(default_factory=lambda: int(time.time() * 1000))  # broker's, ms


def fake_consumer(batches: list[dict[TopicPartition, list[Rec]]],
                  commits: list[dict[TopicPartition, int]],
                  stop: Callable[[], None]) -> type:
    class FakeConsumer:
        def __init__(self, *_topics: str, **_kw: Any) -> None:
            pass

        def subscribe(self, topics: list[str], listener: Any = None) -> None:
            pass

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

        async def getmany(self, timeout_ms: int, max_records: int
                          ) -> dict[TopicPartition, list[Rec]]:
            if batches:
                return batches.pop(0)
            stop()
            await asyncio.sleep(0)
            return {}

        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            commits.append(dict(offsets))

        def assignment(self) -> set[TopicPartition]:
            return set()

        def highwater(self, tp: TopicPartition) -> int | None:
            return None

    return FakeConsumer


async def run_readings(monkeypatch: pytest.MonkeyPatch, writer: BatchWriter,
                       to_lines: Callable[[bytes], list[str]],
                       batches: list[dict[TopicPartition, list[Rec]]],
                       dead: DeadLetters) -> list[dict[TopicPartition, int]]:
    """The writer's readings path as app.build wires it, with Kafka replaced by
    ``batches``; returns the commits."""
    commits: list[dict[TopicPartition, int]] = []
    counters = writer.counters

    async def store(batch: Batch) -> None:
        await writer.store_or_dead_letter(batch, "kafka:lifeline.readings", readings=True)

    rc = readings_mod.ReadingsConsumer(KafkaSettings(bootstrap="127.0.0.1:9092"), to_lines,
                                       store, dead, counters, batch_events=2000,
                                       batch_seconds=0.01)
    monkeypatch.setattr(readings_mod, "AIOKafkaConsumer",
                        fake_consumer(batches, commits, rc.stopping.set))
    await asyncio.wait_for(rc.run(), timeout=120)
    return commits


def two_partitions(raws: list[bytes]) -> dict[TopicPartition, list[Rec]]:
    """Events 0..n/2-1 on partition 0 (offsets 100…), the rest on partition 1 (offsets 0…)."""
    half = len(raws) // 2
    return {TopicPartition("lifeline.readings", 0): [Rec(r, 100 + i)
                                                     for i, r in enumerate(raws[:half])],
            TopicPartition("lifeline.readings", 1): [Rec(r, i)
                                                     for i, r in enumerate(raws[half:])]}


def bound(bad_points: int, events: int, points_per_event: int) -> int:
    """The documented bound: the first write plus 2·b·(⌈log₂ E⌉ + ⌈log₂ L⌉)."""
    depth = math.ceil(math.log2(events)) + math.ceil(math.log2(points_per_event))
    return 1 + 2 * bad_points * depth


# ------------------------------------------------------------------ the tests
async def test_one_bad_event_among_2000_dead_letters_only_it(
        influx: FakeInflux, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    builder = PointBuilder(registry)
    raws = [event(i, T0 + i * 1000, level=1.0 + i / 10_000) for i in range(2000)]
    BAD = 1234  # on partition 1, offset 234

    def to_lines(raw: bytes) -> list[str]:
        lines = builder.readings_raw(raw)
        if raw is raws[BAD]:  # a line the database cannot parse (its first reading)
            lines[0] = lines[0].replace("value=", "value=1.0.0,x=")
        return lines

    dead = DeadLetters()
    writer, counters = make_writer(influx.url, dead)
    commits = await run_readings(monkeypatch, writer, to_lines, [two_partitions(raws)], dead)

    good = [i for i in range(2000) if i != BAD]
    assert all(influx.stored(ln) for i in good for ln in builder.readings_raw(raws[i]))
    assert len(influx.points) == 1999 * 2 + 1  # every good point once, the bad event's flow too
    assert influx.stored(builder.readings_raw(raws[BAD])[1])
    [dl] = dead.letters
    assert dl["source"] == "kafka:lifeline.readings[1]@234" and dl["raw"] == raws[BAD]
    assert dl["reason"] is RejectReason.SINK_REJECTED and dl["facility_id"] == FAC
    assert "unable to parse" in dl["detail"] and "value=1.0.0" in dl["detail"]
    assert [(p.reading_index, p.sensor) for p in dl["problems"]] == [(0, f"{FAC}-L1")]
    assert commits == [{TopicPartition("lifeline.readings", 0): 1100,
                        TopicPartition("lifeline.readings", 1): 1000}]
    assert len(influx.bodies) <= bound(1, 2000, 2)
    assert counters.get("refused_batches") == 1 and counters.get("stored_points") == 3999
    assert counters.get("processed_events") == 2000 and counters.get("sink_retries") == 0


async def test_field_type_conflict_dead_letters_only_the_conflicting_event(
        influx: FakeInflux, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """1.x stores the rest of a partial write; isolating writes those points again, which
    overwrites each with itself: nothing lost, nothing doubled."""
    builder = PointBuilder(registry)
    raws = [event(i, T0 + i * 1000) for i in range(2000)]
    BAD = 777
    # Three days earlier, in a shard where `fill` was once written as a string.
    raws[BAD] = event(BAD, T0 - 3 * DAY)
    influx.seed(f'reading,facility=OLD fill="full" {T0 - 3 * DAY - 5000}')
    seeded = len(influx.points)

    dead = DeadLetters()
    writer, _ = make_writer(influx.url, dead)
    commits = await run_readings(monkeypatch, writer, builder.readings_raw,
                                 [two_partitions(raws)], dead)

    level, flow = builder.readings_raw(raws[BAD])
    assert not influx.stored(level) and influx.stored(flow)  # only the conflicting point
    assert all(influx.stored(ln) for i in range(2000) if i != BAD
               for ln in builder.readings_raw(raws[i]))
    assert len(influx.points) == seeded + 1999 * 2 + 1
    # The first answer was a partial write that already stored the other points.
    assert influx.bodies[0] == 4000
    [dl] = dead.letters
    assert dl["source"] == "kafka:lifeline.readings[0]@877" and dl["raw"] == raws[BAD]
    assert 'partial write: field type conflict: input field "fill"' in dl["detail"]
    assert [(p.reading_index, p.sensor) for p in dl["problems"]] == [(0, f"{FAC}-L1")]
    assert len(commits) == 1 and len(influx.bodies) <= bound(1, 2000, 2)


async def test_database_down_is_retried_and_nothing_dead_lettered(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    builder = PointBuilder(registry)
    raws = [event(i, T0 + i * 1000) for i in range(500)]
    port = free_port()  # nothing listens yet: connection refused
    fake = FakeInflux()
    dead = DeadLetters()
    writer, counters = make_writer(f"http://127.0.0.1:{port}", dead)
    run = asyncio.ensure_future(run_readings(monkeypatch, writer, builder.readings_raw,
                                             [two_partitions(raws)], dead))

    async def retried() -> None:
        while counters.get("sink_retries") < 3:  # noqa: ASYNC110 — a counter, no event
            await asyncio.sleep(0.01)

    await asyncio.wait_for(retried(), timeout=60)
    assert not run.done() and not dead.letters and not fake.points
    assert writer.health.payload()[0] == 503  # the outage shows in the writer's health
    runner = await start_fake(fake, port)  # the database comes back
    try:
        commits = await asyncio.wait_for(run, timeout=60)
    finally:
        await runner.cleanup()
    assert not dead.letters and counters.get("refused_batches") == 0
    assert len(fake.points) == 1000 and fake.bodies == [1000]
    assert len(commits) == 1 and writer.health.payload()[0] == 200


@pytest.mark.parametrize("statuses", [[503, 503], [429, 500, 404]])
async def test_overload_answers_are_retried_not_dead_lettered(
        influx: FakeInflux, registry: Registry, statuses: list[int]) -> None:
    builder = PointBuilder(registry)
    batch = Batch()
    for i in range(50):
        raw = event(i, T0 + i * 1000)
        batch.add(raw, f"kafka:lifeline.readings[0]@{i}", builder.readings_raw(raw))
    influx.unavailable = list(statuses)
    dead = DeadLetters()
    writer, counters = make_writer(influx.url, dead)
    await writer.store_or_dead_letter(batch, "kafka:lifeline.readings", readings=True)
    assert not dead.letters and len(influx.points) == 100
    assert counters.get("sink_retries") == len(statuses)


async def test_an_outage_during_isolation_is_retried(influx: FakeInflux,
                                                     registry: Registry) -> None:
    builder = PointBuilder(registry)
    batch = Batch()
    for i in range(64):
        raw = event(i, T0 + i * 1000)
        lines = builder.readings_raw(raw)
        if i == 40:
            lines = [*lines, "broken line"]
        batch.add(raw, f"kafka:lifeline.readings[0]@{i}", lines)
    influx.unavailable_at = {3: 500, 4: 503}  # the second and third isolating writes
    dead = DeadLetters()
    writer, counters = make_writer(influx.url, dead)
    await writer.store_or_dead_letter(batch, "kafka:lifeline.readings", readings=True)
    assert [d["source"] for d in dead.letters] == ["kafka:lifeline.readings[0]@40"]
    assert dead.letters[0]["problems"][0].reading_index == 2
    assert len(influx.points) == 128 and counters.get("sink_retries") == 2


async def test_v2_stores_the_good_points_of_a_batch_it_refused_whole(
        influx: FakeInflux, registry: Registry) -> None:
    """InfluxDB 2.x stores nothing of a batch with an unparsable line (400) and answers a
    type conflict with 422: isolation is what stores the rest."""
    builder = PointBuilder(registry)
    batch = Batch()
    raws = [event(i, T0 + i * 1000) for i in range(300)]
    raws[10] = event(10, T0 - 2 * DAY)
    influx.seed(f"reading,facility=OLD value=1i {T0 - 2 * DAY}")  # `value` an integer there
    for i, raw in enumerate(raws):
        lines = builder.readings_raw(raw)
        if i == 200:
            lines[1] = lines[1].rsplit(" ", 1)[0] + " not-a-time"
        batch.add(raw, f"kafka:lifeline.readings[3]@{i}", lines)
    dead = DeadLetters()
    writer, _ = make_writer(influx.url, dead, api="v2")
    await writer.store_or_dead_letter(batch, "kafka:lifeline.readings", readings=True)
    assert influx.bodies[0] == 600  # refused whole
    assert [(d["source"], [p.reading_index for p in d["problems"]]) for d in dead.letters] == [
        ("kafka:lifeline.readings[3]@10", [0, 1]), ("kafka:lifeline.readings[3]@200", [1])]
    assert "HTTP 422" in dead.letters[0]["detail"] and "HTTP 400" in dead.letters[1]["detail"]
    assert "field type conflict" in dead.letters[0]["detail"]
    assert len(influx.points) == 1 + 298 * 2 + 1


async def test_a_batch_too_large_is_split_not_dead_lettered(influx: FakeInflux,
                                                            registry: Registry) -> None:
    builder = PointBuilder(registry)
    batch = Batch()
    for i in range(100):
        raw = event(i, T0 + i * 1000)
        batch.add(raw, f"kafka:lifeline.readings[0]@{i}", builder.readings_raw(raw))
    influx.max_lines = 60
    dead = DeadLetters()
    writer, _ = make_writer(influx.url, dead)
    await writer.store_or_dead_letter(batch, "kafka:lifeline.readings", readings=True)
    assert not dead.letters and len(influx.points) == 200


async def test_budget_used_up_dead_letters_what_is_still_refused_whole(
        influx: FakeInflux, registry: Registry) -> None:
    """A shard whose `seq` is a string refuses every reading of that day: the bounded
    isolation gives up splitting and says so; nothing is lost unseen."""
    builder = PointBuilder(registry)
    influx.seed(f'reading,facility=OLD seq="x" {T0 - 1}')
    batch = Batch()
    for i in range(400):
        raw = event(i, T0 + i * 10)
        batch.add(raw, f"kafka:lifeline.readings[0]@{i}", builder.readings_raw(raw))
    dead = DeadLetters()
    writer, counters = make_writer(influx.url, dead, max_requests=20)
    await writer.store_or_dead_letter(batch, "kafka:lifeline.readings", readings=True)
    assert len(influx.bodies) <= 1 + 20 and counters.get("isolation_writes") <= 20
    assert sorted(int(d["source"].rsplit("@", 1)[1]) for d in dead.letters) == list(range(400))
    assert any("LIFELINE_WRITER_ISOLATE_MAX_REQUESTS" in d["detail"] for d in dead.letters)
    assert len(influx.points) == 1


async def test_no_isolation_budget_dead_letters_the_batch_whole(influx: FakeInflux,
                                                                registry: Registry) -> None:
    builder = PointBuilder(registry)
    batch = Batch()
    for i in range(10):
        raw = event(i, T0 + i * 1000)
        lines = builder.readings_raw(raw) + (["bad"] if i == 3 else [])
        batch.add(raw, f"kafka:lifeline.readings[0]@{i}", lines)
    dead = DeadLetters()
    writer, _ = make_writer(influx.url, dead, max_requests=0)
    await writer.store_or_dead_letter(batch, "kafka:lifeline.readings", readings=True)
    assert len(dead.letters) == 10 and influx.bodies == [21]
    assert len(influx.points) == 20  # 1.x stored the good points of the partial write


# ------------------------------------------------------------------ the algorithm alone
def _refusing(bad: set[str], sent: list[list[str]]) -> Callable[[list[str]], Awaitable[None]]:
    async def write(lines: list[str]) -> None:
        sent.append(lines)
        hit = [ln for ln in lines if ln in bad]
        if hit:
            raise SinkRejected(f"refused {hit[0]}")
    return write


def test_isolation_stores_every_good_point_and_refuses_exactly_the_bad_events() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.integers(0, 6), min_size=1, max_size=120), st.data(),
           st.integers(0, 400))
    def check(sizes: list[int], data: st.DataObject, budget: int) -> None:
        batch = Batch()
        for e, k in enumerate(sizes):
            batch.add(b"e%d" % e, f"s{e}", [f"e{e}p{j}" for j in range(k)])
        if not batch.lines:
            return
        bad = set(data.draw(st.lists(st.sampled_from(batch.lines), min_size=1, max_size=6)))
        sent: list[list[str]] = []
        iso = asyncio.run(isolate(_refusing(bad, sent), batch, "refused", budget))
        stored = {ln for req in sent if not bad.intersection(req) for ln in req}
        refused = {r.event for r in iso.refused}
        owners = {batch.event_of(batch.lines.index(ln)) for ln in bad}
        assert len(sent) == iso.requests <= budget
        assert owners <= refused  # every event with a refused point is dead-lettered
        for i, ln in enumerate(batch.lines):  # ... and every other point is stored
            assert ln in stored or batch.event_of(i) in refused
        assert iso.stored_points == sum(len(req) for req in sent if not bad.intersection(req))
        b = len(bad)
        depth = math.ceil(math.log2(len(sizes))) + math.ceil(math.log2(max(sizes)))
        if budget >= 2 * b * depth:  # enough for the bound: exact isolation
            assert refused == owners and stored == set(batch.lines) - bad
            assert all(i is not None for r in iso.refused for i, _ in r.problems)
            assert len(sent) <= 2 * b * depth

    check()


async def test_one_bad_point_among_2000_events_of_ten_needs_at_most_30_writes() -> None:
    rnd = random.Random(14)
    for _ in range(20):
        batch = Batch()
        for e in range(2000):
            batch.add(b"", f"s{e}", [f"e{e}p{j}" for j in range(10)])
        bad = {rnd.choice(batch.lines)}
        sent: list[list[str]] = []
        iso = await isolate(_refusing(bad, sent), batch, "refused", 200)
        assert len(iso.refused) == 1 and iso.stored_points == 19_999
        assert iso.requests <= 30


def test_refused_events_name_their_readings_and_merge_per_event(registry: Registry) -> None:
    builder = PointBuilder(registry)
    batch = Batch()
    raw = event(1, T0)
    batch.add(raw, "kafka:lifeline.readings[2]@9", builder.readings_raw(raw))
    iso = asyncio.run(isolate(_refusing({batch.lines[1]}, []), batch, "x", 10))
    [r] = refused_events(batch, iso, readings=True)
    assert (r.source, r.facility_id) == ("kafka:lifeline.readings[2]@9", FAC)
    assert [(p.reading_index, p.sensor) for p in r.problems] == [(1, f"{FAC}-Q1")]
    [m] = merge([r, r])
    assert len(m.problems) == 2 and len(r.problems) == 1 and m.raw == raw
