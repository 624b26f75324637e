"""Writer benchmark: points/s from Kafka into InfluxDB 1.x beside a raw-HTTP baseline.

    .venv/bin/python -m tests.bench.writer [--events 30000] [--batch-events 2000]

- Baseline (same run, same influxd): pre-built line protocol posted in 5,000-point batches
  over HTTP with aiohttp — the ceiling of the database on this machine.
- Writer: ``--events`` reports of 10 readings pre-produced to ``lifeline.readings``; one
  ``lifeline writer`` worker stores them (parse, build points, batch, write).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from services.stack.manager import Ports, Stack, free_port
from services.stack.services import ServiceProcess
from tests.bench.processor import produce, report, scaled_registry
from tests.bench.run import cpu_seconds, machine


async def baseline(url: str, lines: list[str], batch: int = 5000) -> dict[str, Any]:
    bodies = ["\n".join(lines[i:i + batch]).encode() for i in range(0, len(lines), batch)]
    async with aiohttp.ClientSession() as s:
        t = time.perf_counter()
        for body in bodies:
            async with s.post(f"{url}/write", params={"db": "lifeline", "precision": "ms",
                                                      "rp": "raw"}, data=body) as r:
                assert r.status == 204, await r.text()
        dt = time.perf_counter() - t
    return {"points": len(lines), "seconds": round(dt, 2), "points_per_s": round(len(lines) / dt)}


def bench(events: int = 30000, facilities: int = 2000, batch_events: int = 2000
          ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        facs = scaled_registry(root / "registry.json", facilities)
        stack = Stack(root / "state", Ports.free())
        stack.up()
        url = f"http://127.0.0.1:{stack.ports.influx}"
        try:
            env = {**stack.env(), "LIFELINE_REGISTRY": str(root / "registry.json"),
                   "LIFELINE_LOG_LEVEL": "WARNING",
                   "LIFELINE_WRITER_BATCH_EVENTS": str(batch_events)}
            from services.core.settings import InfluxSettings
            from services.writer.storage import ensure_layout

            asyncio.run(ensure_layout(InfluxSettings(url=url), raw_retention="30d",
                                      long_retention="INF"))
            t_base = int(time.time() * 1000) - 3 * 3600_000
            base_lines = []
            for i in range(events):
                body = json.loads(report(facs[i % facilities], 1, t_base - 3600_000 + i))
                for r in body["readings"]:
                    base_lines.append(
                        f"reading,facility={body['facility_id']},sensor={r['sensor']},"
                        f"kind={body['kind']},metric={r['metric']} value={r['value']},"
                        f"seq=1i {t_base - 3600_000 + i}")
            base = asyncio.run(baseline(url, base_lines))
            # The backlog is in Kafka before the writer starts: the figure is the writer's
            # own rate from its first stored point to its last.
            items = [(facs[i % facilities]["id"].encode(),
                      report(facs[i % facilities], i // facilities + 1, t_base + i))
                     for i in range(events)]
            # The writer joins its group before the backlog is produced (joining while a
            # backlog waits hung now and then on Tansu; seen in CI).
            svc = ServiceProcess("writer", env, stack.logs, free_port())
            svc.start()
            svc.wait_ready(90, ready=lambda b: b and "storage" not in b["problems"]
                           and b["counters"].get("assigned_partitions", 0) > 0)
            time.sleep(1)  # the registry's facility points are stored right after set-up
            # Points the writer stores of its own (registry, pipeline health) do not count.
            before = int(svc.counters().get("stored_points", 0))
            asyncio.run(produce(f"127.0.0.1:{stack.ports.kafka}", items))
            total = events * 10
            deadline = time.monotonic() + 600
            t0 = cpu0 = 0.0
            stored = 0
            while time.monotonic() < deadline:
                stored = int(svc.counters().get("stored_points", 0)) - before
                if stored > 0 and not t0 and svc.proc is not None:
                    t0, cpu0 = time.perf_counter(), cpu_seconds(svc.proc.pid)
                if stored >= total:
                    break
                time.sleep(0.05)
            assert svc.proc is not None
            dt = time.perf_counter() - t0
            cpu = cpu_seconds(svc.proc.pid) - cpu0
            q = f"SELECT count(value) FROM reading WHERE time >= {t_base}ms"
            with urllib.request.urlopen(  # noqa: S310 — loopback
                    f"{url}/query?" + urllib.parse.urlencode({"db": "lifeline", "q": q}),
                    timeout=10) as resp:
                series = json.loads(resp.read())["results"][0].get("series", [])
            in_db = int(series[0]["values"][0][1]) if series else 0
            svc.stop()
        finally:
            stack.down()
    rate = stored / dt
    return {"benchmark": "writer: Kafka → InfluxDB 1.x, one worker", "machine": machine(),
            "events": events, "points": total, "stored": in_db, "batch_events": batch_events,
            "writer": {"seconds": round(dt, 2), "points_per_s": round(rate),
                       "cpu_share": round(cpu / dt, 2)},
            "baseline_raw_http_5000_point_batches": base,
            "ratio_to_baseline": round(rate / base["points_per_s"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=30000)
    ap.add_argument("--batch-events", type=int, default=2000)
    a = ap.parse_args()
    print(json.dumps(bench(a.events, batch_events=a.batch_events), indent=2))


if __name__ == "__main__":
    main()
