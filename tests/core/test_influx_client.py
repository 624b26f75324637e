"""The one InfluxDB client (services/core/influx.py) and the one layout (schemas/storage.py).

The client runs against a small HTTP server in this process that records every request and
answers as InfluxDB 1.x documents its v1 API (``/write``: 204, or 400/413/5xx with a JSON
``error``; ``/query``: 200 with ``results``, an ``error`` per statement or for the request;
``/ping``: 204). The same requests meet a real influxd in the integration tier
(tests/writer/test_storage.py, test_writer_isolation_live.py, test_sink_v2.py).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from aiohttp import web
from pydantic import SecretStr

from schemas.alarm import AlarmEvent, AlarmEventType
from schemas.oncall import OnCallRecord, RecordType
from schemas.reading import Reading, ReadingBatch
from schemas.registry import Registry
from schemas.storage import LONG, RAW, RETENTION, TAGS, Measurement
from services.core.influx import (
    Endpoint,
    InfluxClient,
    InfluxRefused,
    InfluxTooLarge,
    InfluxUnavailable,
    QueryError,
    QueryRefused,
    ping_sync,
    query,
    query_sync,
)
from services.core.settings import InfluxSettings
from services.dashboards.generate import dashboards, queries
from services.stack.manager import free_port
from services.writer.points import PointBuilder
from services.writer.rollup import recompute_query
from services.writer.sinks import SinkRejected, SinkTooLarge, SinkUnavailable, make_sink
from services.writer.storage import (
    StorageSetupError,
    ensure_layout,
)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    body: str


@dataclass
class Influx:
    """A stand-in for InfluxDB's v1 HTTP API: ``answer`` decides each reply."""

    url: str
    seen: list[Seen] = field(default_factory=list)
    answer: Callable[[Seen], web.Response] = lambda s: web.Response(status=204)


PW = "writer-password-0123456789"
TOKEN = "token-0123456789abcdef"
SERIES = [{"name": "reading", "columns": ["time", "value"], "values": [[1000, 1.5]]}]


def _ok(s: Seen) -> web.Response:
    if s.path == "/query":
        return web.json_response({"results": [{"statement_id": 0, "series": SERIES}]})
    return web.Response(status=204)


@pytest.fixture
async def influx() -> AsyncIterator[Influx]:
    port = free_port()
    stand_in = Influx(f"http://127.0.0.1:{port}", answer=_ok)

    async def handle(request: web.Request) -> web.Response:
        body = await request.text()
        form = dict(await request.post()) if request.content_type.endswith("urlencoded") else {}
        s = Seen(request.method, request.path, dict(request.query),
                 {k: str(v) for k, v in form.items()},
                 {k: v for k, v in request.headers.items() if k == "Authorization"},
                 "" if form else body)
        stand_in.seen.append(s)
        return stand_in.answer(s)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield stand_in
    finally:
        await runner.cleanup()


def settings(url: str, **extra: object) -> InfluxSettings:
    return InfluxSettings.model_validate({"url": url, "database": "lifeline", **extra})


# ------------------------------------------------------------------ v1 /write
async def test_write_sends_line_protocol_with_precision_and_retention_policy(
        influx: Influx) -> None:
    sink = make_sink(settings(influx.url, username="writer", password=SecretStr(PW)))
    await sink.write(["reading,facility=f value=1 1", "reading,facility=f value=2 2"])
    await sink.write(["alarm_event,facility=f severity=1i 1"], long_term=True)
    await sink.write(["oncall,facility=f ok=true 1000001"], long_term=True, precision="ns")
    await sink.write([])  # nothing to store: no request
    await sink.close()
    assert [(s.method, s.path, s.query, s.body) for s in influx.seen] == [
        ("POST", "/write", {"db": "lifeline", "precision": "ms", "u": "writer", "p": PW},
         "reading,facility=f value=1 1\nreading,facility=f value=2 2"),
        ("POST", "/write", {"db": "lifeline", "precision": "ms", "u": "writer", "p": PW,
                            "rp": "long"}, "alarm_event,facility=f severity=1i 1"),
        ("POST", "/write", {"db": "lifeline", "precision": "ns", "u": "writer", "p": PW,
                            "rp": "long"}, "oncall,facility=f ok=true 1000001"),
    ]
    assert all(s.headers == {} for s in influx.seen)


async def test_a_token_is_sent_as_authorization_header_not_parameters(influx: Influx) -> None:
    s = settings(influx.url, token=SecretStr(TOKEN), username="ignored")
    async with InfluxClient(s) as client:
        await client.write(["m v=1 1"])
        assert await client.query("SHOW MEASUREMENTS") == SERIES
    for seen in influx.seen:
        assert seen.headers == {"Authorization": f"Token {TOKEN}"}
        assert "u" not in seen.query and "p" not in seen.query


@pytest.mark.parametrize(("status", "error"), [
    (400, InfluxRefused), (422, InfluxRefused), (413, InfluxTooLarge),
    (404, InfluxUnavailable), (401, InfluxUnavailable), (429, InfluxUnavailable),
    (500, InfluxUnavailable), (503, InfluxUnavailable)])
async def test_write_answers_map_to_retry_or_refusal(influx: Influx, status: int,
                                                     error: type[Exception]) -> None:
    influx.answer = lambda s: web.json_response(
        {"error": f"partial write: field type conflict ({status})"}, status=status)
    sink = make_sink(settings(influx.url))
    with pytest.raises(error) as info:
        await sink.write(["m v=1 1"])
    await sink.close()
    assert type(info.value) is error  # not a subclass: 413 is TooLarge, 400 only Refused
    # InfluxDB's own words, not its JSON
    assert str(info.value).startswith(f"influxdb-v1 answered HTTP {status}")
    assert str(info.value).endswith(f": partial write: field type conflict ({status})")
    # The writer's names for the same types (services/writer/batch.py catches these).
    assert issubclass(error, SinkRejected) or issubclass(error, SinkUnavailable)
    assert (error is SinkTooLarge) == (status == 413)


async def test_unreachable_database_is_unavailable_not_refused() -> None:
    sink = make_sink(settings(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(SinkUnavailable, match=r"influxdb-v1 at http://127\.0\.0\.1:"):
        await sink.write(["m v=1 1"])
    await sink.close()
    with pytest.raises(QueryError) as info:
        await query(settings(f"http://127.0.0.1:{free_port()}"), "SHOW DATABASES")
    assert not isinstance(info.value, QueryRefused)
    assert not ping_sync(f"http://127.0.0.1:{free_port()}")


# ------------------------------------------------------------------ v1 /query and /ping
async def test_query_is_a_get_with_db_q_and_epoch_ms(influx: Influx) -> None:
    assert await query(settings(influx.url), 'SELECT "value" FROM "reading"') == SERIES
    [s] = influx.seen
    assert (s.method, s.path, s.query) == ("GET", "/query", {
        "db": "lifeline", "q": 'SELECT "value" FROM "reading"', "epoch": "ms"})


async def test_statements_that_change_something_are_posted_as_a_form(influx: Influx) -> None:
    async with InfluxClient(settings(influx.url, username="u", password=SecretStr(PW))) as c:
        await c.query('CREATE DATABASE "lifeline"', post=True, db=False)
    [s] = influx.seen
    assert (s.method, s.query, s.form) == ("POST", {}, {
        "q": 'CREATE DATABASE "lifeline"', "epoch": "ms", "u": "u", "p": PW})


async def test_query_errors_say_the_databases_words(influx: Influx) -> None:
    answers = iter([
        web.json_response({"results": [{"statement_id": 0, "error": "measurement not found"}]}),
        web.json_response({"error": "error parsing query: found EOF"}, status=400),
        web.Response(status=502, text="<html>bad gateway</html>"),
    ])
    influx.answer = lambda s: next(answers)
    s = settings(influx.url)
    with pytest.raises(QueryRefused, match=r"^measurement not found$"):
        await query(s, "SELECT * FROM nothing")
    with pytest.raises(QueryRefused, match=r"^error parsing query: found EOF$"):
        await query(s, "SELECT")
    with pytest.raises(QueryError, match="HTTP 502: <html>bad gateway") as info:
        await query(s, "SELECT 1")
    assert not isinstance(info.value, QueryRefused)


async def test_sync_query_and_ping_send_the_same_requests(influx: Influx) -> None:
    ep = Endpoint(influx.url, "lifeline", "u", "p")
    assert await asyncio.to_thread(query_sync, ep, "SHOW DATABASES") == SERIES
    await asyncio.to_thread(query_sync, ep, 'CREATE DATABASE "x"', post=True, db=False)
    assert await asyncio.to_thread(ping_sync, influx.url + "/")
    async with InfluxClient(ep) as client:
        assert await client.query("SHOW DATABASES") == SERIES
        assert await client.ping()
    got = [(s.method, s.path, s.query, s.form) for s in influx.seen]
    assert got == [
        ("GET", "/query", {"db": "lifeline", "q": "SHOW DATABASES", "epoch": "ms", "u": "u",
                           "p": "p"}, {}),
        ("POST", "/query", {}, {"q": 'CREATE DATABASE "x"', "epoch": "ms", "u": "u", "p": "p"}),
        ("GET", "/ping", {}, {}),
        ("GET", "/query", {"db": "lifeline", "q": "SHOW DATABASES", "epoch": "ms", "u": "u",
                           "p": "p"}, {}),
        ("GET", "/ping", {}, {}),
    ]


# ------------------------------------------------------------------ the writer's set-up
async def test_layout_setup_statements_and_an_existing_policy_altered(influx: Influx) -> None:
    def answer(s: Seen) -> web.Response:
        if s.form["q"].startswith('CREATE RETENTION POLICY "raw"'):  # exists, other duration
            return web.json_response({"results": [{"error": "retention policy conflicts"}]})
        if s.form["q"].startswith("DROP CONTINUOUS QUERY"):  # not there yet
            return web.json_response({"results": [{"error": "continuous query not found"}]})
        return web.json_response({"results": [{"statement_id": 0}]})

    influx.answer = answer
    await ensure_layout(settings(influx.url), raw_retention="30d", long_retention="INF")
    assert [s.form["q"] for s in influx.seen] == [
        'CREATE DATABASE "lifeline"',
        'CREATE RETENTION POLICY "raw" ON "lifeline" DURATION 30d REPLICATION 1 DEFAULT',
        'ALTER RETENTION POLICY "raw" ON "lifeline" DURATION 30d DEFAULT',
        'CREATE RETENTION POLICY "long" ON "lifeline" DURATION INF REPLICATION 1',
        # Retired: every tier is the writer's now (services/writer/rollup.py).
        'DROP CONTINUOUS QUERY "reading_1m" ON "lifeline"',
        'DROP CONTINUOUS QUERY "reading_1h" ON "lifeline"',
        'DROP CONTINUOUS QUERY "district_1h" ON "lifeline"',
    ]
    assert not any(s.form["q"].startswith("CREATE CONTINUOUS") for s in influx.seen)


async def test_layout_setup_fails_clearly(influx: Influx) -> None:
    influx.answer = lambda s: web.json_response(
        {"results": [{"error": "retention policy duration must be greater than 1h0m0s"}]}
        if s.form["q"].startswith(("CREATE RETENTION", "ALTER RETENTION")) else {"results": [{}]})
    with pytest.raises(StorageSetupError, match=r"^retention policy raw: retention policy "
                                                r"duration must be greater than 1h0m0s$"):
        await ensure_layout(settings(influx.url), raw_retention="30d", long_retention="INF")
    with pytest.raises(StorageSetupError, match=r"InfluxDB at http://127\.0\.0\.1:"):
        await ensure_layout(settings(f"http://127.0.0.1:{free_port()}"), raw_retention="30d",
                            long_retention="INF")


# ------------------------------------------------------------------ one layout
TS = datetime(2026, 7, 1, 8, 0, 0, 123000, tzinfo=UTC)


def _tags(line: str) -> tuple[str, frozenset[str]]:
    head = re.split(r"(?<!\\) ", line, maxsplit=1)[0]
    measurement, *tags = re.split(r"(?<!\\),", head)
    return measurement, frozenset(t.split("=", 1)[0] for t in tags)


def test_every_point_the_writer_builds_has_the_layouts_tags(registry: Registry) -> None:
    b = PointBuilder(registry)
    ev = AlarmEvent(event_id="e", alarm_id="a-1", event=AlarmEventType.RAISED, level="orange",
                    previous_level=None, facility_id="DR-BH-001", kind="drainage",
                    sensor="DR-BH-001-L1", metric="water_level", rule="value-upper",
                    value=2.8, threshold=2.7, unit="m", ts=TS, message="m")
    rec = OnCallRecord(record_id="0123abcd-0000-0000-0000-000000000000",
                       type=RecordType.ACKNOWLEDGED, ts=TS, alarm_id="a-1",
                       facility_id="DR-BH-001", sensor="DR-BH-001-L1", rule="value-upper",
                       category="facility", facility_kind="drainage", person="ann",
                       channel="cli", level="orange", detail="on my way")
    batch = ReadingBatch(facility_id="DR-BH-001", kind="drainage", seq=1, received_at=TS,
                         readings=[Reading(sensor="DR-BH-001-L1", metric="water_level",
                                           value=1.5, unit="m", ts=TS)])
    health = json.dumps({"service": "ingest", "instance": "i-1", "status": "ok",
                         "ts": 1000, "counters": {"accepted_readings": 3}}).encode()
    ack = b.ack_state(rec)
    assert ack is not None
    lines = [*b.readings(batch), *b.readings_raw(batch.model_dump_json().encode()),
             b.alarm(ev), b.alarm_state(ev), b.oncall(rec), ack, b.pipeline(health),
             *b.facilities()[:1]]
    seen = {}
    for line in lines:
        measurement, tags = _tags(line)
        assert tags == TAGS[measurement], (measurement, tags ^ TAGS[measurement])
        seen[measurement] = tags
    written = {Measurement.READING, Measurement.ALARM_EVENT, Measurement.ALARM_STATE,
               Measurement.ONCALL, Measurement.PIPELINE, Measurement.FACILITY}
    assert set(seen) == written  # the rest the database computes (continuous queries)
    assert set(RETENTION) == set(TAGS)


_FROM = re.compile(r'\b(?:FROM|INTO)\s+((?:"[^"]+"\.)*"[^"]+"|[a-z_0-9]+)\s')
_KEY = re.compile(r'WITH KEY = "([^"]+)"')


def _targets(q: str) -> list[tuple[str | None, str]]:
    """(retention policy or None, measurement) of every FROM/INTO naming one (not a
    subquery), the database part dropped."""
    out = []
    for m in _FROM.finditer(q + " "):
        parts = [p.strip('"') for p in m.group(1).split(".")]
        out.append((parts[-2] if len(parts) > 1 else None, parts[-1]))
    return out


def test_every_reader_names_measurements_where_the_layout_keeps_them(registry: Registry
                                                                      ) -> None:
    reads = [q for board in dashboards(registry).values() for _, q in queries(board)]
    reads.append(recompute_query(0))  # the writer's own, after a partition changed hands
    checked = 0
    for q in reads:
        for rp, measurement in _targets(q):
            assert measurement in RETENTION, q
            # unqualified means the default policy, which is raw
            assert (rp or RAW) == RETENTION[measurement], q
            checked += 1
        key = _KEY.search(q)
        if key:
            [(_, measurement)] = _targets(q)
            assert key.group(1) in TAGS[measurement], q
    assert checked > 30
    assert {LONG, RAW} == set(RETENTION.values())
