"""Ingest at its trust boundary, with a stand-in producer and MQTT client (as
test_ingest_pump.py): retained and QoS 0 messages refused with their reasons, the client
id, backpressure while Kafka does not answer, and a store-and-forward backlog stored
whole beside a flood that is limited into the DLQ with its bytes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from schemas.registry import Registry
from services.core import topics
from services.ingest.app import Ingest
from services.ingest.config import IngestConfig


def topic(fid: str) -> str:
    return f"lifeline/drainage/{fid}/telemetry"


def report(fid: str, seq: int, when: datetime, value: float = 1.0, pad: int = 0) -> bytes:
    body = json.dumps({"ts": when.isoformat(), "seq": seq, "readings": [
        {"sensor": f"{fid}-L1", "metric": "water_level", "value": value, "unit": "m"}]})
    return (body + " " * max(0, pad - len(body))).encode()


def message(mid: int, fid: str, payload: bytes, *, qos: int = 1,
            retain: bool = False) -> SimpleNamespace:
    return SimpleNamespace(mid=mid, qos=qos, retain=retain, topic=topic(fid), payload=payload)


class Producer:
    """Records every send; acknowledges at once, or holds the futures while ``hold``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.hold = False
        self._held: list[asyncio.Future[None]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, value, key))
        if self.hold:
            self._held.append(fut)
        else:
            fut.set_result(None)
        return fut

    def release(self) -> None:
        self.hold = False
        for fut in self._held:
            if not fut.done():
                fut.set_result(None)
        self._held.clear()

    def on(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(v) for t, v, _k in self.sent if t == name]


class Harness:
    def __init__(self, svc: Ingest, producer: Producer) -> None:
        self.svc, self.producer = svc, producer
        self.acks: list[int] = []

    def deliver(self, msg: SimpleNamespace) -> None:
        self.svc._on_message(None, None, msg)  # type: ignore[arg-type]


@asynccontextmanager
async def ingest(registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                 **settings: object) -> AsyncIterator[Harness]:
    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))  # no stack.env of a local stack
    for name, value in settings.items():
        monkeypatch.setenv(f"LIFELINE_INGEST_{name.upper()}", str(value))
    svc = Ingest(IngestConfig(), registry)
    h = Harness(svc, Producer())
    svc.attach(h.producer, SimpleNamespace(ack=lambda mid, qos: h.acks.append(mid)))
    pump = asyncio.create_task(svc.pump())
    try:
        yield h
    finally:
        pump.cancel()


async def until(cond: Callable[[], object], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------ MQTT hygiene
async def test_a_retained_message_is_dead_lettered_and_acknowledged(
        registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with ingest(registry, monkeypatch, tmp_path) as h:
        payload = report("DR-BH-001", 1, datetime.now(UTC))
        h.deliver(message(1, "DR-BH-001", payload, retain=True))
        await until(lambda: h.acks == [1])
        assert h.producer.on(topics.READINGS) == []
        [dl] = h.producer.on(topics.READINGS_DLQ)
        assert dl["reason"] == "retained" and dl["facility_id"] == "DR-BH-001"
        assert "retained" in dl["detail"] and dl["source"] == f"mqtt:{topic('DR-BH-001')}"
        assert base64.b64decode(dl["payload_b64"]) == payload  # replayable
        assert h.svc.counters.get("rejected.retained") == 1


async def test_qos0_messages_are_dead_lettered_and_acks_stay_in_order(
        registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with ingest(registry, monkeypatch, tmp_path) as h:
        now = datetime.now(UTC)
        h.deliver(message(1, "DR-BH-001", report("DR-BH-001", 1, now)))
        h.deliver(message(2, "DR-BH-001", report("DR-BH-001", 2, now), qos=0))
        h.deliver(message(3, "DR-BH-001", report("DR-BH-001", 3, now)))
        await until(lambda: h.acks == [1, 3] and not h.svc.inflight)  # QoS 0: no PUBACK
        assert [r["seq"] for r in h.producer.on(topics.READINGS)] == [1, 3]
        [dl] = h.producer.on(topics.READINGS_DLQ)
        assert dl["reason"] == "qos0" and "QoS 0" in dl["detail"]
        assert json.loads(base64.b64decode(dl["payload_b64"]))["seq"] == 2


async def test_hygiene_comes_before_validation(
        registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A retained or QoS 0 message is refused for that, whatever it carries."""
    async with ingest(registry, monkeypatch, tmp_path) as h:
        h.deliver(SimpleNamespace(mid=1, qos=1, retain=True, topic="lifeline/x/NOPE/telemetry",
                                  payload=b"\xff"))
        h.deliver(message(2, "DR-BH-001", b"{not json", qos=0))
        await until(lambda: len(h.producer.sent) == 2)
        assert [(d["reason"], d["facility_id"]) for d in h.producer.on(topics.READINGS_DLQ)
                ] == [("retained", None), ("qos0", "DR-BH-001")]


def test_the_client_id_is_the_username(registry: Registry, monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LIFELINE_MQTT_USERNAME", "lifeline-ingest-2")
    client = Ingest(IngestConfig(), registry).mqtt_client()
    assert client._client_id == b"lifeline-ingest-2"
    monkeypatch.setenv("LIFELINE_INGEST_CLIENT_ID", "explicit-id")  # still possible
    assert Ingest(IngestConfig(), registry).mqtt_client()._client_id == b"explicit-id"


def test_the_local_broker_ties_client_ids_to_usernames(tmp_path: Path) -> None:
    from services.stack.manager import Ports, Stack

    conf = Stack(tmp_path, Ports(mqtt=1, kafka=2, influx=3, influx_rpc=4))._mosquitto_conf()
    lines = conf.read_text().splitlines()
    # A listener option: it must follow the listener it applies to.
    assert lines.index("use_username_as_clientid true") > lines.index("listener 1 127.0.0.1")
    assert "clientid_prefixes" not in conf.read_text()  # not to be combined with it


# ------------------------------------------------------------------ backpressure
def _feed(h: Harness, messages: list[SimpleNamespace]) -> threading.Thread:
    """Deliver from another thread, as paho's network thread does."""
    t = threading.Thread(target=lambda: [h.deliver(m) for m in messages], daemon=True)
    t.start()
    return t


async def test_while_kafka_does_not_answer_ingest_stops_reading_and_loses_nothing(
        registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with ingest(registry, monkeypatch, tmp_path, max_pending=10) as h:
        h.producer.hold = True  # Kafka takes requests and answers none
        now = datetime.now(UTC)
        msgs = [message(i, "DR-BH-001", report("DR-BH-001", i, now)) for i in range(1, 31)]
        feeder = _feed(h, msgs)
        await until(lambda: h.svc.counters.snapshot()["mqtt_paused"] == 1)
        await asyncio.sleep(0.3)
        assert len(h.svc.inflight) == 10 and feeder.is_alive()  # bounded; MQTT not read
        assert h.svc.counters.get("received") == 10 and h.acks == []
        h.producer.release()  # Kafka is back
        await until(lambda: len(h.acks) == 30)
        feeder.join(5)
        assert h.acks == list(range(1, 31))  # every message, in order
        assert [r["seq"] for r in h.producer.on(topics.READINGS)] == list(range(1, 31))
        assert h.svc.counters.snapshot()["mqtt_paused"] == 0
        assert h.svc.counters.get("backpressure_pauses") >= 1
        assert h.svc.inflight.bytes == 0


async def test_the_queue_is_bounded_in_bytes_too(
        registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with ingest(registry, monkeypatch, tmp_path, max_pending_bytes=65536) as h:
        h.producer.hold = True
        now = datetime.now(UTC)
        msgs = [message(i, "DR-BH-001", report("DR-BH-001", i, now, pad=20_000))
                for i in range(1, 8)]
        feeder = _feed(h, msgs)
        await until(lambda: h.svc.counters.snapshot()["mqtt_paused"] == 1)
        assert len(h.svc.inflight) == 3 and h.svc.inflight.bytes == 60_000
        h.producer.release()
        await until(lambda: len(h.acks) == 7)
        feeder.join(5)
        assert h.acks == list(range(1, 8))


async def test_stopping_releases_a_waiting_network_thread_without_acking(
        registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with ingest(registry, monkeypatch, tmp_path, max_pending=2) as h:
        h.producer.hold = True
        now = datetime.now(UTC)
        feeder = _feed(h, [message(i, "DR-BH-001", report("DR-BH-001", i, now))
                           for i in range(1, 4)])
        await until(lambda: h.svc.counters.snapshot()["mqtt_paused"] == 1)
        h.svc.inflight.close()
        feeder.join(5)
        assert not feeder.is_alive()
        assert h.svc.counters.get("received") == 2  # the third stays with the broker
        h.producer.release()
        await until(lambda: h.acks == [1, 2])


# ------------------------------------------------------------------ backlog and flood
async def test_a_backlog_is_stored_whole_beside_a_limited_flood(
        registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """DR-BH-001 flushes a day of one report a minute; DR-BH-002 floods one event time;
    DR-BH-003 reports normally. Only the flood is limited — into the DLQ, with bytes."""
    async with ingest(registry, monkeypatch, tmp_path) as h:
        now = datetime.now(UTC)
        start = now - timedelta(hours=25)
        flood_at = now - timedelta(seconds=5)
        mid, flood, t0 = 0, {}, time.monotonic()
        for i in range(3000):
            mid += 1
            payload = report("DR-BH-002", 10_000 + i, flood_at, value=i / 1000)
            flood[hashlib.sha256(payload).hexdigest()] = payload
            h.deliver(message(mid, "DR-BH-002", payload))
            if i < 1440:
                mid += 1
                h.deliver(message(mid, "DR-BH-001",
                                  report("DR-BH-001", i, start + timedelta(minutes=i))))
            if i % 100 == 0:
                mid += 1
                h.deliver(message(mid, "DR-BH-003",
                                  report("DR-BH-003", i // 100, now - timedelta(seconds=1))))
        elapsed = time.monotonic() - t0
        await until(lambda: len(h.acks) == mid, within=30)
        assert h.acks == list(range(1, mid + 1))  # every message acknowledged, in order

        readings = h.producer.on(topics.READINGS)
        seqs = {f: [r["seq"] for r in readings if r["facility_id"] == f]
                for f in ("DR-BH-001", "DR-BH-002", "DR-BH-003")}
        assert seqs["DR-BH-001"] == list(range(1440))  # the whole backlog
        assert seqs["DR-BH-003"] == list(range(30))  # the normal gateway untouched
        dlq = h.producer.on(topics.READINGS_DLQ)
        assert {d["facility_id"] for d in dlq} == {"DR-BH-002"}
        assert all(d["reason"] == "rate_limited" for d in dlq)
        assert "over its rate" in dlq[0]["detail"]
        # The flood: its burst went through, the rest is kept with its raw bytes.
        accepted = len(seqs["DR-BH-002"])
        assert 1000 <= accepted <= 1001 + 20 * (elapsed + 1)
        assert accepted + len(dlq) == 3000
        for d in dlq:
            assert base64.b64decode(d["payload_b64"]) == flood[d["payload_sha256"]]
        c = h.svc.counters
        assert c.get("rate_limited") == len(dlq) and c.get("backlog_admitted") >= 1440


async def test_a_limited_partial_report_keeps_its_problems(
        registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with ingest(registry, monkeypatch, tmp_path, gateway_burst=1) as h:
        now = datetime.now(UTC)
        bad = json.dumps({"ts": now.isoformat(), "seq": 2, "readings": [
            {"sensor": "DR-BH-001-L1", "metric": "water_level", "value": 1, "unit": "m"},
            {"sensor": "DR-BH-001-ZZ", "metric": "water_level", "value": 1, "unit": "m"}]})
        h.deliver(message(1, "DR-BH-001", report("DR-BH-001", 1, now)))
        h.deliver(message(2, "DR-BH-001", bad.encode()))
        await until(lambda: h.acks == [1, 2])
        [dl] = h.producer.on(topics.READINGS_DLQ)
        assert [p["reason"] for p in dl["problems"]] == ["rate_limited", "unknown_sensor"]
