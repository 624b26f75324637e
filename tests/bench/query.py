"""Query benchmark: the overview's heaviest panel over 30 days for 10,000 sensors.

    .venv/bin/python -m tests.bench.query [--sensors 10000] [--days 30]

The panel is the overview's 30-day trend (highest water level per district, hourly). Data
is generated straight into the aggregate measurements the database itself maintains
(``long.reading_1h`` from the 1-minute aggregates, ``long.district_1h`` per district),
as 30 days of operation would leave them — 30 days of raw readings for 10,000 sensors
cannot be produced in a benchmark run. Each query runs ``--runs`` times; the median and
the worst are reported, beside the same panel computed from the per-sensor hourly data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from services.core.settings import InfluxSettings
from services.dashboards.generate import DISTRICT_TREND
from services.stack.manager import Ports, Stack
from services.writer.storage import ensure_layout
from tests.bench.run import machine

DISTRICTS = ["Airport New Area", "Binhai Park", "Longwan", "Oufei Reclamation",
             "Science and Technology City"]


async def load(url: str, sensors: int, days: int) -> dict[str, Any]:
    hours = days * 24
    end_h = int(time.time() // 3600)
    start_h = end_h - hours
    t0 = time.perf_counter()
    points = 0
    async with aiohttp.ClientSession() as s:
        async def post(lines: list[str]) -> None:
            async with s.post(f"{url}/write", params={"db": "lifeline", "rp": "long",
                                                       "precision": "h"},
                              data="\n".join(lines).encode()) as r:
                assert r.status == 204, await r.text()

        batch: list[str] = []
        for i in range(sensors):
            district = DISTRICTS[i % len(DISTRICTS)].replace(" ", "\\ ")
            head = (f"reading_1h,district={district},facility=F{i // 4:05d},kind=drainage,"
                    f"metric=water_level,sensor=S{i:05d} ")
            base = 0.5 + (i % 17) / 10
            for h in range(start_h, end_h):
                v = base + 0.3 * ((h * 7 + i) % 24) / 24
                batch.append(f"{head}mean={v:.3f},min={v - 0.1:.3f},max={v + 0.2:.3f} {h}")
                if len(batch) >= 10_000:
                    await post(batch)
                    points += len(batch)
                    batch = []
        if batch:
            await post(batch)
            points += len(batch)
        # The district rollup the database keeps (see services/writer/storage.py).
        q = ('SELECT max("max") AS "max", min("min") AS "min", mean("mean") AS "mean" '
             'INTO "lifeline"."long"."district_1h" FROM "lifeline"."long"."reading_1h" '
             f"WHERE time >= {start_h}h AND time < {end_h}h "
             'GROUP BY time(1h), "district", "kind", "metric"')
        async with s.post(f"{url}/query", data={"q": q, "db": "lifeline"}) as r:
            body = await r.json()
            assert r.status == 200 and "error" not in body["results"][0], body
    return {"points": points, "seconds": round(time.perf_counter() - t0, 1)}


def timed(url: str, q: str, runs: int) -> dict[str, Any]:
    times = []
    rows = 0
    for _ in range(runs):
        t = time.perf_counter()
        with urllib.request.urlopen(  # noqa: S310 — loopback
                f"{url}/query?" + urllib.parse.urlencode({"db": "lifeline", "q": q}),
                timeout=120) as r:
            body = json.loads(r.read())
        times.append(time.perf_counter() - t)
        series = body["results"][0].get("series", [])
        rows = sum(len(s["values"]) for s in series)
    return {"median_ms": round(statistics.median(times) * 1000, 1),
            "max_ms": round(max(times) * 1000, 1), "series_rows": rows}


def grafana(query: str, days: int) -> str:
    """The panel's query as Grafana sends it ($timeFilter, $__interval, $district: all)."""
    return (query.replace("$timeFilter", f"time > now() - {days}d")
            .replace("$__interval", "1h").replace("/^$district$/", "/.*/"))


def bench(sensors: int = 10_000, days: int = 30, runs: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp) / "state", Ports.free())
        stack.up()
        url = f"http://127.0.0.1:{stack.ports.influx}"
        try:
            asyncio.run(ensure_layout(InfluxSettings(url=url), raw_retention="30d",
                                      long_retention="INF"))
            loaded = asyncio.run(load(url, sensors, days))
            panel = timed(url, grafana(DISTRICT_TREND, days), runs)
            per_sensor = timed(url, grafana(DISTRICT_TREND.replace(
                '"long"."district_1h"', '"long"."reading_1h"'), days), runs)
        finally:
            stack.down()
    return {"benchmark": "overview 30-day trend panel (InfluxDB 1.x, InfluxQL)",
            "machine": machine(), "sensors": sensors, "days": days, "loaded": loaded,
            "panel_on_district_rollup": panel, "same_panel_on_per_sensor_hourly": per_sensor,
            "query": grafana(DISTRICT_TREND, days)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sensors", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    print(json.dumps(bench(a.sensors, a.days, a.runs), indent=2))


if __name__ == "__main__":
    main()
