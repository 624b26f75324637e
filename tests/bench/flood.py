"""Flood benchmark: one gateway floods distinct timestamps beside normal traffic; do the
other facilities' alarms on its partition still arrive in time? (issue 13, decision 0014)

    .venv/bin/python -m tests.bench.flood [--seconds 30] [--flood-rate 33]

One ``lifeline processor`` worker with the example registry on the local stack; every
report is produced straight to ``lifeline.readings`` partition 0 (ingest's per-gateway rate
limit is bypassed on purpose: this is the processor's own defence).

- Normal traffic: every facility of the example reports once a second (event time = now);
  every 0.5 s one of the facilities with an immediate value rule alternates between a
  breach and a normal value, so an alarm is raised about once a second. Latency: produce →
  ``raised`` event on ``lifeline.alarms`` for those breaches.
- Phase A (baseline, same run): normal traffic only. Phase B: the same plus a flooder —
  ``DR-BH-001`` sending reports of 256 rainfall readings with distinct timestamps at
  ``--flood-rate`` reports/s (1,000 reports in 30 s: the issue's 256k samples).
- Reported: p50/p99 of both phases and their ratio, the flooder's largest checkpoint (the
  ``alarm_state`` changelog record; checkpoints every 10 s of event time in this run),
  readings coalesced, the worker's CPU share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.core import topics
from services.stack.manager import Ports, Stack, free_port
from services.stack.services import ServiceProcess
from tests.bench.processor import breach_sensor, report
from tests.bench.run import cpu_seconds, machine
from tests.support.paths import EXAMPLE_REGISTRY

FLOODER = "DR-BH-001"
FLOOD_SENSOR = "DR-BH-001-R1"
CHANGELOG = "lifeline-processor-alarm_state-changelog"


def flood_report(seq: int, ts_ms: int, n: int = 256) -> bytes:
    received = datetime.now(UTC).isoformat(timespec="milliseconds")
    readings = [{"sensor": FLOOD_SENSOR, "metric": "rainfall", "value": 0.1, "unit": "mm",
                 "ts": datetime.fromtimestamp((ts_ms + i) / 1000, UTC)
                 .isoformat(timespec="milliseconds")} for i in range(n)]
    return json.dumps({"facility_id": FLOODER, "kind": "drainage", "seq": seq,
                       "received_at": received, "readings": readings}).encode()


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * q))], 1)


async def phase(bootstrap: str, facs: list[dict[str, Any]], seconds: float, flood_rate: float,
                seq: dict[str, int]) -> dict[str, Any]:
    breachable = [(f, b) for f in facs if f["id"] != FLOODER
                  and (b := breach_sensor(f)) is not None]
    sent_at: dict[tuple[str, int], float] = {}
    lat: list[float] = []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=20)
    await consumer.start()
    parts = consumer.partitions_for_topic(topics.ALARMS) or set()
    tps = [TopicPartition(topics.ALARMS, p) for p in parts]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    stop = asyncio.Event()

    async def collect() -> None:
        while not stop.is_set():
            got = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for recs in got.values():
                for r in recs:
                    ev = json.loads(r.value)
                    if ev["event"] != "raised":
                        continue
                    key = (ev["facility_id"],
                           int(datetime.fromisoformat(ev["ts"]).timestamp() * 1000))
                    if key in sent_at:
                        lat.append((now - sent_at.pop(key)) * 1000)

    task = asyncio.create_task(collect())
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, max_request_size=4 << 20)
    await p.start()
    t0 = time.perf_counter()
    next_normal = next_breach = next_flood = t0
    k = flooded = 0
    while (now := time.perf_counter()) - t0 < seconds:
        wall = int(time.time() * 1000)
        if now >= next_normal:
            for f in facs:
                if f["id"] == FLOODER and flood_rate:
                    continue
                seq[f["id"]] = seq.get(f["id"], 0) + 1
                await p.send(topics.READINGS, report(f, seq[f["id"]], wall),
                             key=f["id"].encode(), partition=0)
            next_normal += 1.0
        if now >= next_breach:
            f, b = breachable[(k // 2) % len(breachable)]
            seq[f["id"]] = seq.get(f["id"], 0) + 1
            ts = wall + 1
            if k % 2 == 0:
                sent_at[(f["id"], ts)] = time.perf_counter()
            await p.send(topics.READINGS, report(f, seq[f["id"]], ts, b if k % 2 == 0 else None),
                         key=f["id"].encode(), partition=0)
            k += 1
            next_breach += 0.5
        if flood_rate and now >= next_flood:
            seq[FLOODER] = seq.get(FLOODER, 0) + 1
            await p.send(topics.READINGS, flood_report(seq[FLOODER], wall),
                         key=FLOODER.encode(), partition=0)
            flooded += 1
            next_flood += 1.0 / flood_rate
        await asyncio.sleep(max(0.0, min(next_normal, next_breach,
                                         next_flood if flood_rate else next_normal)
                                - time.perf_counter()))
    await p.flush()
    await asyncio.sleep(5)
    stop.set()
    await task
    await p.stop()
    await consumer.stop()
    return {"seconds": seconds, "alarms_timed": len(lat), "breaches_unanswered": len(sent_at),
            "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "max_ms": pct(lat, 1.0),
            "flood_reports": flooded, "flood_readings": flooded * 256}


async def largest_checkpoint(bootstrap: str) -> dict[str, int]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                         auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20)
    await c.start()
    sizes: dict[str, int] = {}
    try:
        await c.topics()
        parts = c.partitions_for_topic(CHANGELOG) or set()
        tps = [TopicPartition(CHANGELOG, p) for p in parts]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        async def behind() -> bool:
            return any([await c.position(tp) < ends[tp] for tp in tps])

        while await behind():
            for recs in (await c.getmany(timeout_ms=500)).values():
                for r in recs:
                    key = r.key.decode().strip("\"") if r.key else "?"  # JSON-serialised keys
                    sizes[key] = max(sizes.get(key, 0), len(r.value or b""))
    finally:
        await c.stop()
    others = [v for k, v in sizes.items() if k != FLOODER]
    return {"flooder_max_bytes": sizes.get(FLOODER, 0),
            "others_max_bytes": max(others, default=0)}


def bench(seconds: float = 30, flood_rate: float = 33) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE_REGISTRY.read_text(encoding="utf-8"))
    # Checkpoints every 10 s of event time (not 60): the flooder's state is saved during
    # the phase, so its checkpoint's size is measured.
    doc["policy"]["checkpoint_interval_s"] = 10
    facs = doc["facilities"]
    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "registry.yaml"
        registry.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        stack = Stack(Path(tmp) / "state", Ports.free())
        stack.up()
        bootstrap = f"127.0.0.1:{stack.ports.kafka}"
        try:
            env = {**stack.env(), "LIFELINE_REGISTRY": str(registry),
                   "LIFELINE_LOG_LEVEL": "WARNING"}
            svc = ServiceProcess("processor", env, stack.logs, free_port())
            svc.start()
            svc.wait_ready(90, ready=lambda b: isinstance(b, dict) and b["counters"].get(
                "assigned_partitions", 0) > 0)
            assert svc.proc is not None
            pid = svc.proc.pid
            seq: dict[str, int] = {}
            asyncio.run(phase(bootstrap, facs, 5, 0, seq))  # warm up: every state loaded
            cpu0, w0 = cpu_seconds(pid), time.perf_counter()
            base = asyncio.run(phase(bootstrap, facs, seconds, 0, seq))
            base["worker_cpu_share"] = round((cpu_seconds(pid) - cpu0) / (time.perf_counter()
                                                                        - w0), 2)
            cpu0, w0 = cpu_seconds(pid), time.perf_counter()
            flood = asyncio.run(phase(bootstrap, facs, seconds, flood_rate, seq))
            flood["worker_cpu_share"] = round((cpu_seconds(pid) - cpu0) / (time.perf_counter()
                                                                         - w0), 2)
            counters = svc.counters()
            checkpoints = asyncio.run(largest_checkpoint(bootstrap))
            svc.stop()
        finally:
            stack.down()
    ratio = (round(flood["p99_ms"] / base["p99_ms"], 2)
             if flood["p99_ms"] and base["p99_ms"] else None)
    return {"benchmark": "flood: one gateway floods distinct timestamps beside normal traffic",
            "machine": machine(), "baseline_no_flood": base, "with_flood": flood,
            "p99_ratio_flood_to_baseline": ratio, "checkpoints": checkpoints,
            "readings_coalesced": counters.get("readings_coalesced", 0),
            "processed_readings": counters.get("processed_readings", 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--flood-rate", type=float, default=33, help="flood reports per second")
    a = ap.parse_args()
    print(json.dumps(bench(a.seconds, a.flood_rate), indent=2))


if __name__ == "__main__":
    main()
