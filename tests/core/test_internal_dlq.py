"""Internal topics: every consumer dead-letters what it cannot read (issue 15,
docs/decisions/0011 "Internal topics"). The notifier's and the writer's agents through
Faust's test_context (no broker), the context feed and the helper itself."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

import pytest
from faust.topics import Topic

from schemas.deadletter import DeadLetter, RejectReason
from schemas.oncall import AckRequest
from services.core import topics
from services.core.dlq import InternalDeadLetters, decode_reason, kafka_source
from services.core.health import Counters
from services.core.settings import KafkaSettings
from services.processor.context_feed import ContextFeed
from services.processor.engine.context import SharedContext
from tests.support.engine_helpers import lv, make_registry, sensor
from tests.support.oncall_helpers import alarm, build_notifier, put_on
from tests.writer.test_writer_isolation import FakeInflux, start_fake

GARBAGE = b"\xff\xfe\x00garbage"
WRONG_SHAPE = b'{"facility_id": "F-1", "hello": "world"}'


def letters(sent: list[tuple[str, bytes | None, bytes]]) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(v) for t, _k, v in sent if t == topics.READINGS_DLQ]


def capture(sent: list[tuple[str, bytes | None, bytes]]) -> Any:
    async def send(topic: Any, *, key: bytes | None = None, value: bytes, **_kw: Any) -> None:
        sent.append((topic.get_topic_name(), key, value))
    return send


# ------------------------------------------------------------------ the helper
def test_reasons_tell_garbage_from_the_wrong_shape_from_a_consumer_failure() -> None:
    from pydantic import ValidationError

    from schemas.alarm import AlarmEvent

    def err(raw: bytes) -> Exception:
        with pytest.raises(ValidationError) as info:
            AlarmEvent.model_validate_json(raw)
        return info.value

    assert decode_reason(err(GARBAGE)) is RejectReason.UNDECODABLE_EVENT
    assert decode_reason(err(b"")) is RejectReason.UNDECODABLE_EVENT
    assert decode_reason(err(WRONG_SHAPE)) is RejectReason.INVALID_CONTRACT
    assert decode_reason(err(b"[1, 2]")) is RejectReason.INVALID_CONTRACT
    assert decode_reason(json.JSONDecodeError("x", "", 0)) is RejectReason.UNDECODABLE_EVENT
    assert decode_reason(ValueError("not a pipeline record")) is RejectReason.INVALID_CONTRACT
    assert decode_reason(KeyError("district")) is RejectReason.UNPROCESSABLE
    assert kafka_source("lifeline.acks", 3, 17) == "kafka:lifeline.acks[3]@17"
    assert kafka_source("lifeline.acks") == "kafka:lifeline.acks"


async def test_a_dead_letter_keeps_the_bytes_reason_source_and_is_counted() -> None:
    sent: list[tuple[bytes | None, bytes]] = []

    async def send(key: bytes | None, value: bytes) -> None:
        sent.append((key, value))

    counters = Counters("dead_lettered")
    dead = InternalDeadLetters("writer", send, counters)
    dl = await dead.record(GARBAGE, RejectReason.UNDECODABLE_EVENT, "x" * 1000,
                           topic=topics.ALARMS, partition=2, offset=41, key=b"F-9")
    assert sent == [(b"F-9", dl.model_dump_json().encode())]
    assert base64.b64decode(dl.payload_b64) == GARBAGE and not dl.payload_truncated
    assert (dl.service, dl.source, dl.reason, dl.facility_id) == (
        "writer", "kafka:lifeline.alarms[2]@41", RejectReason.UNDECODABLE_EVENT, "F-9")
    assert len(dl.detail) == 300
    assert counters.get("dead_lettered") == 1
    assert counters.get(f"dead_lettered.{topics.ALARMS}") == 1


async def test_replay_skips_internal_dead_letters() -> None:
    """They share lifeline.readings.dlq with the reports ingest refused: replay (MQTT only)
    must not send an alarm record back through ingest's validator."""
    from services.core.dlq import Collector, Selection, replay_selected

    sent: list[bytes] = []

    async def send(_key: bytes | None, value: bytes) -> None:
        sent.append(value)

    dead = InternalDeadLetters("notifier", send, Counters())
    await dead.record(GARBAGE, RejectReason.UNDECODABLE_EVENT, "garbage", topic=topics.ACKS,
                      partition=0, offset=1)
    collect = Collector(Selection(RejectReason.UNDECODABLE_EVENT,
                                  since=datetime(2020, 1, 1, tzinfo=UTC)))
    for value in sent:
        collect(value)
    report = await replay_selected(collect, validator=None, producer=None)  # type: ignore[arg-type]
    assert (report.selected, report.skipped, report.replayed) == (1, 1, 0)
    assert dict(report.skipped_reasons) == {"not_from_mqtt": 1}


# ------------------------------------------------------------------ the notifier's agent
async def test_the_notifier_dead_letters_what_it_cannot_read_and_pages_the_next_alarm(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    n = build_notifier(monkeypatch, tmp_path)
    sent: list[tuple[str, bytes | None, bytes]] = []
    ev = alarm(started=datetime.now(UTC))
    forged = AckRequest(alarm_id=ev.alarm_id, facility_id="F-1", by="mallory", via="link",
                        ts=datetime.now(UTC)).model_dump_json().encode()  # unsigned
    with patch.object(Topic, "send", autospec=True, side_effect=capture(sent)):
        async with n.agent.test_context() as agent:
            await put_on(agent, topics.ALARMS, GARBAGE, b"F-1", 5)
            await put_on(agent, topics.ALARMS, WRONG_SHAPE, b"F-1", 6)
            await put_on(agent, topics.ACKS, b"{not json", b"F-1", 7, partition=1)
            await put_on(agent, topics.ACKS, forged, b"F-1", 8)
            await put_on(agent, topics.ONCALL, b'{"type": "nonsense"}', b"F-1", 9)
            await put_on(agent, topics.ALARMS, ev.model_dump_json().encode(), b"F-1", 10)
    dead = letters(sent)
    assert [(d.source, d.reason) for d in dead] == [
        ("kafka:lifeline.alarms[0]@5", RejectReason.UNDECODABLE_EVENT),
        ("kafka:lifeline.alarms[0]@6", RejectReason.INVALID_CONTRACT),
        ("kafka:lifeline.acks[1]@7", RejectReason.UNDECODABLE_EVENT),
        ("kafka:lifeline.acks[0]@8", RejectReason.FORGED),
        ("kafka:lifeline.oncall[0]@9", RejectReason.INVALID_CONTRACT)]
    assert [base64.b64decode(d.payload_b64) for d in dead] == [
        GARBAGE, WRONG_SHAPE, b"{not json", forged, b'{"type": "nonsense"}']
    assert all(d.service == "notifier" and d.facility_id == "F-1" for d in dead)
    assert "event_id: Field required" in dead[1].detail
    assert dead[3].detail.startswith("unsigned acknowledgement")
    counters = n.health.counters
    assert counters.get("dead_lettered") == 5 and counters.get("acks_forged") == 1
    assert counters.get("rejected") == 4
    # The valid alarm after them was handled: its episode is open and its page handed over.
    assert ev.alarm_id in n.cache["F-1"].episodes
    assert [note.alarm_id for note in n.deliverer.submitted] == [ev.alarm_id]


async def test_a_record_the_notifier_cannot_handle_is_dead_lettered_unprocessable(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    n = build_notifier(monkeypatch, tmp_path)
    sent: list[tuple[str, bytes | None, bytes]] = []
    ev = alarm(started=datetime.now(UTC))
    calls = 0
    real = n.escalator.on_alarm

    def broken_once(*a: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("district")
        return real(*a, **kw)

    with patch.object(Topic, "send", autospec=True, side_effect=capture(sent)), \
            patch.object(n.escalator, "on_alarm", side_effect=broken_once):
        async with n.agent.test_context() as agent:
            await put_on(agent, topics.ALARMS, ev.model_dump_json().encode(), b"F-1", 0)
            await put_on(agent, topics.ALARMS, ev.model_dump_json().encode(), b"F-1", 1)
    dead = letters(sent)
    assert [(d.source, d.reason, d.detail) for d in dead] == [
        ("kafka:lifeline.alarms[0]@0", RejectReason.UNPROCESSABLE, "KeyError: 'district'")]
    assert n.health.counters.get("record_errors") == 1
    assert [note.alarm_id for note in n.deliverer.submitted] == [ev.alarm_id]


# ------------------------------------------------------------------ the writer's agents
@pytest.fixture
async def influx() -> AsyncIterator[FakeInflux]:
    fake = FakeInflux()
    runner = await start_fake(fake)
    yield fake
    await runner.cleanup()


@pytest.fixture
def writer_app(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, influx: FakeInflux) -> Any:
    from services.writer.app import Writer
    from services.writer.config import WriterConfig

    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LIFELINE_INFLUX_URL", influx.url)
    monkeypatch.setenv("LIFELINE_WRITER_BATCH_SECONDS", "0.05")
    monkeypatch.setenv("LIFELINE_WRITER_RETRY_MAX_S", "0.05")
    registry = make_registry(sensor("lvl", "water_level", {"levels": [lv("red", 2.0, 1.9)]}))
    writer = Writer(WriterConfig(), registry)
    # The agents wait for the retention policies (set up by start(), not run by
    # test_context): the tests say the layout is there.
    writer.storage_ready.set()
    return writer.app, writer.health


def _agent(app: Any, name: str) -> Any:
    return next(a for a in app.agents.values() if a.name.endswith(name))


async def _until(cond: Any, what: str, timeout_s: float = 20.0) -> None:
    """Wait for ``cond()`` (a batch is stored asynchronously after its events arrive)."""
    async def loop() -> None:
        # A counter the writer bumps after the sink stored the batch: nothing to await.
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    try:
        await asyncio.wait_for(loop(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_the_writer_dead_letters_unreadable_alarms_and_stores_the_next_one(
        writer_app: Any, influx: FakeInflux) -> None:
    app, health = writer_app
    agent_ = _agent(app, "store_alarms")
    sent: list[tuple[str, bytes | None, bytes]] = []
    ev = alarm(started=datetime(2026, 7, 1, 8, 0, tzinfo=UTC))
    with patch.object(Topic, "send", autospec=True, side_effect=capture(sent)):
        async with agent_.test_context() as agent:
            await put_on_nowait(agent, topics.ALARMS, GARBAGE, b"F-1", 3)
            await put_on_nowait(agent, topics.ALARMS, WRONG_SHAPE, b"F-1", 4)
            await put_on_nowait(agent, topics.ALARMS, ev.model_dump_json().encode(), b"F-1", 5)
            await _until(lambda: health.counters.get("processed_alarm_events") >= 3,
                         "the alarm batch")
    dead = letters(sent)
    assert [(d.source, d.reason, d.service) for d in dead] == [
        ("kafka:lifeline.alarms[0]@3", RejectReason.UNDECODABLE_EVENT, "writer"),
        ("kafka:lifeline.alarms[0]@4", RejectReason.INVALID_CONTRACT, "writer")]
    assert [base64.b64decode(d.payload_b64) for d in dead] == [GARBAGE, WRONG_SHAPE]
    c = health.counters
    assert c.get("dead_lettered") == 2 and c.get("rejected") == 2
    stored = [f for f in influx.points.values() if f.get("alarm_id") == f'"{ev.alarm_id}"']
    assert len(stored) == 2  # the valid alarm: its event and its state point


async def test_the_writer_dead_letters_unreadable_oncall_and_health_records(
        writer_app: Any, influx: FakeInflux) -> None:
    from schemas.oncall import OnCallRecord, RecordType

    app, health = writer_app
    sent: list[tuple[str, bytes | None, bytes]] = []
    # (an id that is not hex used to raise in points.oncall, outside the try: the agent died)
    rec = OnCallRecord(record_id="5f0c2a9e-1b7d-4c3e-9a51-0d2f6b8e4c17",
                       type=RecordType.NOTIFICATION, ts=datetime.now(UTC), alarm_id="a-1",
                       facility_id="F-1", person="ann", detail="paged")
    pipeline = json.dumps({"service": "ingest", "instance": "i-1", "status": "ok",
                           "ts": 1_782_892_800_000, "counters": {"received": 5}}).encode()
    with patch.object(Topic, "send", autospec=True, side_effect=capture(sent)):
        oncall = _agent(app, "store_oncall")
        async with oncall.test_context() as agent:
            await put_on_nowait(agent, topics.ONCALL, GARBAGE, b"F-1", 1)
            await put_on_nowait(agent, topics.ONCALL, WRONG_SHAPE, b"F-1", 2)
            await put_on_nowait(agent, topics.ONCALL, rec.model_dump_json().encode(), b"F-1", 3)
            await _until(lambda: health.counters.get("processed_oncall_records") >= 3,
                         "the on-call batch")
        health_agent = _agent(app, "store_pipeline_health")
        async with health_agent.test_context() as agent:
            await put_on_nowait(agent, topics.HEALTH, b'{"service": 1}', b"", 7)
            await put_on_nowait(agent, topics.HEALTH, pipeline, b"", 8)
            await _until(lambda: health.counters.get("processed_health_records") >= 2,
                         "the health batch")
    dead = letters(sent)
    assert [(d.source, d.reason) for d in dead] == [
        ("kafka:lifeline.oncall[0]@1", RejectReason.UNDECODABLE_EVENT),
        ("kafka:lifeline.oncall[0]@2", RejectReason.INVALID_CONTRACT),
        ("kafka:lifeline.health[0]@7", RejectReason.INVALID_CONTRACT)]
    assert any(f.get("record_id") == f'"{rec.record_id}"' for f in influx.points.values())
    assert any(f.get("received") == "5" for f in influx.points.values())


async def put_on_nowait(agent: Any, topic: str, value: bytes, key: bytes, offset: int) -> None:
    """:func:`put_on` without waiting for the event to be processed (the writer's agents
    take events in batches)."""
    import time

    from faust.types import Message

    channel = agent.stream().channel
    message = Message(topic=topic, partition=0, offset=offset, timestamp=time.time(),
                      timestamp_type=0, headers=None, key=key, value=value, checksum=b"",
                      serialized_key_size=0, serialized_value_size=0,
                      generation_id=agent.app.consumer_generation_id)
    await channel.put(await channel.decode(message))


# ------------------------------------------------------------------ the context feed
async def test_the_context_feed_dead_letters_what_it_cannot_read() -> None:
    from schemas.context import DistrictRain

    sent: list[tuple[bytes | None, bytes]] = []

    async def send(key: bytes | None, value: bytes) -> None:
        sent.append((key, value))

    counters = Counters()
    context = SharedContext()
    feed = ContextFeed(KafkaSettings(bootstrap="127.0.0.1:9092"), context, counters,
                       InternalDeadLetters("processor", send, counters))
    good = DistrictRain(district="lucheng", ts=datetime.now(UTC), mm_per_h=12.0,
                        facility_id="F-1", sensor="R1").model_dump_json().encode()
    await feed.take(topics.CONTEXT, 0, 1, b"lucheng", GARBAGE)
    await feed.take(topics.CONTEXT, 0, 2, b"lucheng", WRONG_SHAPE)
    await feed.take(topics.CONTEXT, 0, 3, b"lucheng", good)
    await feed.take(topics.CONTEXT, 0, 1, b"lucheng", GARBAGE)  # re-read after a reconnect
    dead = [DeadLetter.model_validate_json(v) for _k, v in sent]
    assert [(d.source, d.reason, d.service) for d in dead] == [
        ("kafka:lifeline.context[0]@1", RejectReason.UNDECODABLE_EVENT, "processor"),
        ("kafka:lifeline.context[0]@2", RejectReason.INVALID_CONTRACT, "processor")]
    assert counters.get("context_rejected") == 3 and counters.get("context_applied") == 1


async def test_a_tick_that_fails_for_one_facility_keeps_the_agent_and_the_others(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wall-clock tick is no record to dead-letter, but no tick may stop the agent: the
    facility whose escalation fails is counted and said on /health; the agent lives on."""
    n = build_notifier(monkeypatch, tmp_path)
    sent: list[tuple[str, bytes | None, bytes]] = []
    ev = alarm(started=datetime.now(UTC))

    def broken(fs: Any, now_ms: int) -> Any:
        raise KeyError("a team the state names and the file no longer has")

    with patch.object(Topic, "send", autospec=True, side_effect=capture(sent)):
        async with n.agent.test_context() as agent:
            await put_on(agent, topics.ALARMS, ev.model_dump_json().encode(), b"F-1", 1)
            monkeypatch.setattr(n.escalator, "tick", broken)
            await n.handlers.tick(0, int(datetime.now(UTC).timestamp() * 1000) + 60_000)
            await put_on(agent, topics.ALARMS, WRONG_SHAPE, b"F-1", 2)  # still consuming
    assert n.health.counters.get("tick_errors") == 1
    code, body = n.health.payload()
    assert code == 200 and any("F-1" in w and "KeyError" in w
                               for w in map(str, body["warnings"].values()))
    assert [d.source for d in letters(sent)] == ["kafka:lifeline.alarms[0]@2"]
