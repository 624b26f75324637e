"""Packing (services/ingest/pack.py, issue 16): the reports of one partition and window in
one ``lifeline.readings`` record, with a stand-in producer (the live test is
tests/pipeline/test_packed.py): the partition the producer would choose, arrival order,
the window and the size limits, every report's future tied to its pack's, a failed pack
retried report by report, acknowledgements still in arrival order."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from schemas.codec import READING_BATCH
from schemas.registry import Registry
from services.core import topics
from services.core.health import Counters
from services.ingest.app import Ingest
from services.ingest.config import IngestConfig
from services.ingest.pack import Packer

pytestmark = pytest.mark.unit

PARTITIONS = [0, 1, 2, 3]


class _Producer:
    """Records sends with their partition; acknowledges after ``delay`` s; its first
    ``fail`` sends return a future that fails with ``error``."""

    def __init__(self, fail: int = 0, error: Exception | None = None,
                 delay: float = 0.01) -> None:
        self.fail, self.error, self.delay = fail, error, delay
        self.sent: list[tuple[str, bytes, bytes | None, int | None]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return set(PARTITIONS)

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.sent.append((topic, value, key, partition))
        if self.fail:
            self.fail -= 1
            assert self.error is not None
            loop.call_later(self.delay, fut.set_exception, self.error)
        else:
            loop.call_later(self.delay, fut.set_result, None)
        return fut


def _batch(fid: str, seq: int) -> bytes:
    return json.dumps({"facility_id": fid, "kind": "drainage", "seq": seq,
                       "received_at": "2026-11-26T00:00:00Z", "readings": [
                           {"sensor": f"{fid}-L1", "metric": "water_level", "value": 1.0,
                            "unit": "m", "ts": "2026-11-26T00:00:00Z"}]},
                      separators=(",", ":")).encode()


def _partition(fid: str) -> int:
    chosen: int = DefaultPartitioner()(fid.encode(), PARTITIONS, PARTITIONS)
    return chosen


def _same_partition(n: int) -> list[str]:
    """``n`` facility ids that the producer puts on one partition."""
    ids = [f"DR-T-{i:03d}" for i in range(200)]
    first = _partition(ids[0])
    return [f for f in ids if _partition(f) == first][:n]


async def test_one_record_per_partition_and_window_in_arrival_order() -> None:
    producer = _Producer()
    packer = Packer(producer, topics.READINGS, 0.05, 1 << 20, 100, Counters())
    runner = asyncio.create_task(packer.run())
    try:
        fids = [f"DR-T-{i:03d}" for i in range(12)]
        futures = [await packer.add(f.encode(), _batch(f, n))
                   for n in range(3) for f in fids]
        assert producer.sent == []  # held for the window
        await asyncio.wait_for(asyncio.gather(*futures), 2)
    finally:
        runner.cancel()
    by_partition: dict[int, list[bytes]] = {}
    for t, value, key, part in producer.sent:
        assert t == topics.READINGS and part is not None
        lines = READING_BATCH.unpack(value)
        by_partition.setdefault(part, []).extend(lines)
        assert key == json.loads(lines[0])["facility_id"].encode()  # its first report's
    assert len(producer.sent) == len({_partition(f) for f in fids})  # one per partition
    for part, lines in by_partition.items():
        got = [(d["facility_id"], d["seq"]) for d in map(json.loads, lines)]
        assert got == [(f, n) for n in range(3) for f in fids if _partition(f) == part]
    counts = packer.counters.snapshot()
    assert counts["packed_reports"] == 36 and counts["packs_sent"] == len(producer.sent)


async def test_a_full_pack_is_written_at_once() -> None:
    fids = _same_partition(5)
    producer = _Producer()
    packer = Packer(producer, topics.READINGS, 60.0, 1 << 20, 3, Counters())
    for n, f in enumerate(fids):
        await packer.add(f.encode(), _batch(f, n))
    assert [len(READING_BATCH.unpack(v)) for _, v, _, _ in producer.sent] == [3]  # 3 of 5
    assert len(packer) == 2
    size = len(_batch(fids[0], 0))
    by_size = Packer(producer, topics.READINGS, 60.0, 2 * size + 2, 100, Counters())
    for n, f in enumerate(fids):
        await by_size.add(f.encode(), _batch(f, n))
    # the limit holds two batches and their separators: written before the third
    assert [len(READING_BATCH.unpack(v)) for _, v, _, _ in producer.sent[1:]] == [2, 2]
    await by_size.flush_all()
    assert len(by_size) == 0 and len(READING_BATCH.unpack(producer.sent[-1][1])) == 1


async def test_a_failed_pack_fails_every_report_in_it() -> None:
    fids = _same_partition(3)
    producer = _Producer(fail=1, error=RuntimeError("broker said no"))
    packer = Packer(producer, topics.READINGS, 0.01, 1 << 20, 100, Counters())
    runner = asyncio.create_task(packer.run())
    try:
        futures = [await packer.add(f.encode(), _batch(f, 0)) for f in fids]
        done = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 2)
    finally:
        runner.cancel()
    assert [str(e) for e in done] == ["broker said no"] * 3


def _message(mid: int, fid: str) -> SimpleNamespace:
    payload = json.dumps({"ts": "2026-11-26T00:00:00Z", "seq": mid, "readings": [
        {"sensor": f"{fid}-L1", "metric": "water_level", "value": 1.0, "unit": "m"}]})
    return SimpleNamespace(mid=mid, qos=1, retain=False, topic=f"lifeline/drainage/{fid}/telemetry",
                           payload=payload.encode())


@pytest.mark.parametrize("fail", [0, 1])
async def test_ingest_acknowledges_packed_reports_in_arrival_order(
        registry: Registry, monkeypatch: pytest.MonkeyPatch, fail: int) -> None:
    """Through the pump: every message acknowledged once Kafka took its pack, in arrival
    order; a pack Kafka refused is retried report by report and nothing is lost."""
    monkeypatch.setenv("LIFELINE_INGEST_MAX_PAST_S", str(10 * 365 * 86400))
    svc = Ingest(IngestConfig(), registry)
    fids = ["DR-BH-001", "DR-BH-002", "DR-KG-001"]
    acks: list[int] = []
    producer = _Producer(fail=fail, error=RuntimeError("broker said no"))
    svc.attach(producer, SimpleNamespace(ack=lambda mid, qos: acks.append(mid)),
               Packer(producer, topics.READINGS, 0.05, 1 << 20, 100, svc.counters))
    pump = asyncio.create_task(svc.pump())
    try:
        for mid in range(1, 10):
            svc._on_message(None, None, _message(mid, fids[mid % 3]))  # type: ignore[arg-type]
        for _ in range(300):
            if len(acks) == 9:
                break
            await asyncio.sleep(0.01)
        assert acks == list(range(1, 10))
    finally:
        pump.cancel()
    stored = sorted(json.loads(line)["seq"] for _, v, _, _ in producer.sent[fail:]
                    for line in READING_BATCH.unpack(v))
    assert stored == list(range(1, 10))
    if not fail:  # all nine arrived within one window: one record per partition
        assert len(producer.sent) == len({_partition(f) for f in fids})
    assert svc.counters.snapshot()["accepted_reports"] == 9
