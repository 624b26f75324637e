"""Micro-benchmark: derived signals per reading, raw sample list vs bucketed Window.

    .venv/bin/python -m tests.bench.window [--normal 10000] [--flood-messages 1000]
                                           [--raw-budget-s 6]

One sensor, fed the way the engine feeds it: per reading, add the sample, trim to the
longest window, then evaluate every derived rule at the reading's time.

- normal: a CO sensor every 60 s with RATE 10 min, MAX 15 min, MEAN 1 h and TWA 8 h
  (timed after the 8 h window has filled; best of 3 runs).
- flood: a gateway sending ``--flood-messages`` messages of 256 readings with distinct
  timestamps 1 ms apart, on a sensor with RATE 10 min, MEAN 12 h and MAX 12 h (60 s
  buckets). The raw list grows with every reading, so raw is timed only until
  ``--raw-budget-s`` has passed; both report the µs per reading of their last 1,000
  readings and the size of the sensor's checkpoint JSON.

Runs in well under 30 s with the defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable

from schemas.registry import Signal
from services.processor.engine import signals
from services.processor.engine.signals import Window
from tests.bench.run import machine as run_machine
from tests.support import raw_samples

BASE = 1_700_000_040_000
Rules = list[tuple[Signal, float]]
NORMAL_RULES: Rules = [(Signal.RATE, 600.0), (Signal.MAX, 900.0), (Signal.MEAN, 3600.0),
                       (Signal.TWA, 8 * 3600.0)]
FLOOD_RULES: Rules = [(Signal.RATE, 600.0), (Signal.MEAN, 12 * 3600.0),
                      (Signal.MAX, 12 * 3600.0)]


def machine() -> str:
    """The machine line, from the description every benchmark of the project prints."""
    m = run_machine()
    return f"{m['cpu']} | {m['cores']} cores | {m['memory_gib']} GiB | Python {m['python']}"


def feeders(rules: Rules, bucket_ms: int) -> tuple[Callable[[int, float], None],
                                                    Callable[[int, float], None],
                                                    list[signals.Sample], Window]:
    keep = int(max(w for _, w in rules) * 1000)
    raw: list[signals.Sample] = []
    win = Window(bucket_ms)

    def feed_raw(ts: int, v: float) -> None:
        raw_samples.insert(raw, ts, v)
        raw_samples.trim(raw, ts - keep)
        for sig, w in rules:
            raw_samples.compute(raw, sig, w, 60.0, ts)

    def feed_window(ts: int, v: float) -> None:
        win.add(ts, v)
        win.trim(ts - keep)
        for sig, w in rules:
            win.signal(sig, w, 60.0, ts)

    return feed_raw, feed_window, raw, win


def run(feed: Callable[[int, float], None], readings: list[tuple[int, float]], timed_from: int,
        budget_s: float | None = None) -> tuple[float, float, int]:
    """(µs/reading over the timed readings, µs/reading over the last 1,000 of them, readings
    fed); stops early once ``budget_s`` of timed feeding has passed."""
    for ts, v in readings[:timed_from]:
        feed(ts, v)
    n = timed_from
    start = mark = last_block = time.perf_counter()
    for ts, v in readings[timed_from:]:
        feed(ts, v)
        n += 1
        if (n - timed_from) % 1000 == 0:
            now = time.perf_counter()
            last_block, mark = now - mark, now
            if budget_s is not None and now - start > budget_s:
                break
    end = time.perf_counter()
    timed = n - timed_from
    tail = last_block / 1000 if timed >= 1000 else (end - start) / max(1, timed)
    return (end - start) / max(1, timed) * 1e6, tail * 1e6, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--normal", type=int, default=10_000, help="readings of the normal sensor")
    ap.add_argument("--flood-messages", type=int, default=1000)
    ap.add_argument("--raw-budget-s", type=float, default=6.0)
    args = ap.parse_args()
    print(f"machine: {machine()}")

    warm = int(8 * 3600 / 60)
    normal = [(BASE + i * 60_000 + (i * 7919) % 2000, 300.0 + (i * 37) % 11 / 10)
              for i in range(warm + args.normal)]
    r_all = w_all = math.inf
    for _ in range(3):  # best of 3: the machine may be shared
        feed_raw, feed_window, raw, win = feeders(NORMAL_RULES, Window.bucket_ms_for(
            60.0, 8 * 3600.0, 2000))
        r_all = min(r_all, run(feed_raw, normal, warm)[0])
        w_all = min(w_all, run(feed_window, normal, warm)[0])
    print(f"normal (60 s; rate 10 min, max 15 min, mean 1 h, twa 8 h): "
          f"raw {r_all:.1f} µs/reading, Window {w_all:.1f} µs/reading "
          f"({len(raw)} samples / {len(win)} buckets; checkpoint "
          f"{len(json.dumps([[t, v] for t, v in raw]))} / {len(json.dumps(win.to_json()))} B)")

    flood = [(BASE + i, 1.0 + (i % 17) / 100) for i in range(args.flood_messages * 256)]
    feed_raw, feed_window, raw, win = feeders(FLOOD_RULES, Window.bucket_ms_for(
        60.0, 12 * 3600.0, 2000))
    r_all, r_last, r_n = run(feed_raw, flood, 0, budget_s=args.raw_budget_s)
    w_all, w_last, w_n = run(feed_window, flood, 0)
    print(f"flood ({args.flood_messages} x 256 readings 1 ms apart; rate 10 min, mean 12 h, "
          f"max 12 h): raw {r_all:.1f} µs/reading over {r_n} readings (stopped at the "
          f"{args.raw_budget_s:g} s budget; last 1,000: {r_last:.1f} µs, growing with the "
          f"list), Window {w_all:.1f} µs/reading over {w_n} (last 1,000: {w_last:.1f} µs)")
    print(f"flood state: raw {len(raw)} samples, checkpoint "
          f"{len(json.dumps([[t, v] for t, v in raw]))} B after {r_n} readings; Window "
          f"{len(win)} buckets, checkpoint {len(json.dumps(win.to_json()))} B after {w_n}")


if __name__ == "__main__":
    main()
