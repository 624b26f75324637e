"""What the local influxd costs at a district's size, with and without the 1-minute tier.

    .venv/bin/python -m tests.bench.influx_series [--series 160000] [--rate 16000]
        [--seconds 150] [--cq none|5m|1m]

Writes ``--rate`` points/s in the writer's line protocol (2,000-point batches) round-robin
over ``--series`` sensors into a fresh local influxd, optionally with the writer's
``reading_1m`` continuous query (``RESAMPLE EVERY 1m FOR <cq>``), and prints influxd's CPU
(cores) and RSS every 10 s and the mean. The generator shares the machine, as in
``lifeline bench``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from services.stack.manager import Ports, Stack
from services.writer.storage import continuous_query


def _cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().split()
    return (int(f[13]) + int(f[14])) / 100


def _rss_mb(pid: int) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=160_000)
    ap.add_argument("--rate", type=int, default=16_000)
    ap.add_argument("--seconds", type=float, default=150.0)
    ap.add_argument("--cq", choices=["none", "5m", "1m"], default="5m")
    a = ap.parse_args()
    stack = Stack(Path(tempfile.mkdtemp(prefix="lifeline-influx-bench-")), Ports.free())
    stack.up()
    url = f"http://127.0.0.1:{stack.ports.influx}"

    def query(q: str) -> None:
        body = urllib.parse.urlencode({"q": q}).encode()
        urllib.request.urlopen(url + "/query", body).read()  # noqa: S310 — loopback

    try:
        query('CREATE RETENTION POLICY "raw" ON "lifeline" DURATION 30d REPLICATION 1 DEFAULT')
        query('CREATE RETENTION POLICY "long" ON "lifeline" DURATION INF REPLICATION 1')
        if a.cq != "none":
            query(continuous_query("lifeline", "1m", a.cq))
        pid = stack.running()["influxd"]
        t0 = time.time()
        c0 = last_c = _cpu_s(pid)
        last_t, i, means = t0, 0, []
        while time.time() - t0 < a.seconds:
            sec = time.time()
            ts = int(sec * 1000)
            lines = []
            for _ in range(a.rate):
                s = i % a.series
                i += 1
                fac = f"LOAD-{s // 10:06d}"
                lines.append(f"reading,district=D{s % 5},facility={fac},kind=drainage,"
                             f"metric=water_level,sensor={fac}-L{s % 10} "
                             f"seq={i}i,value={1.0 + (i % 7) / 10} {ts}")
            for j in range(0, len(lines), 2000):
                body = "\n".join(lines[j:j + 2000]).encode()
                req = urllib.request.Request(  # noqa: S310 — loopback
                    url + "/write?db=lifeline&precision=ms", body)
                urllib.request.urlopen(req).read()  # noqa: S310 — loopback
            now = time.time()
            if now - last_t >= 10:
                c = _cpu_s(pid)
                means.append((c - last_c) / (now - last_t))
                print(f"t={now - t0:5.0f}s influxd {means[-1]:.2f} cores, "
                      f"RSS {_rss_mb(pid)} MB", flush=True)
                last_t, last_c = now, c
            time.sleep(max(0.0, 1 - (time.time() - sec)))
        print(f"series {a.series}, {a.rate} points/s, cq {a.cq}: influxd mean "
              f"{(_cpu_s(pid) - c0) / (time.time() - t0):.2f} cores over {a.seconds:.0f}s")
    finally:
        stack.down()


if __name__ == "__main__":
    main()
