"""The latency budget per stage: how long each step of a record's way takes, on /counters.

Every service times its own stages (issue 16): ingest from an MQTT message's arrival to its
acknowledgement and its produce to the broker's ack; the processor the wait in Kafka (the
record's timestamp to its receipt), the evaluation and the alarm's produce; the writer the
wait in Kafka and the write; the notifier the wait in Kafka and alarm → page delivered. A
regression then names its stage.

Each stage is a histogram with log-spaced buckets (×1.25 from 0.1 ms to ~10 min) over a
sliding window of ``window_s`` (six slots): ``observe`` is O(1) with no allocation, and the
gauges ``latency.<stage>.n`` / ``.p50_ms`` / ``.p99_ms`` / ``.max_ms`` give the window's
figures (a percentile is the upper edge of its bucket: within 25 %).
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable

from services.core.health import Counters

_EDGES: list[float] = [1e-4 * 1.25 ** i for i in range(int(math.log(6000 / 1e-4, 1.25)) + 2)]
SLOTS = 6


class Stage:
    """One stage's durations over the last ``window_s`` seconds."""

    __slots__ = ("_clock", "_counts", "_lock", "_max", "_slot_of", "slot_s")

    def __init__(self, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slot_s = window_s / SLOTS
        self._clock = clock
        self._counts = [[0] * (len(_EDGES) + 1) for _ in range(SLOTS)]
        self._max = [0.0] * SLOTS
        self._slot_of = [-1] * SLOTS  # which time slot each ring entry holds
        self._lock = threading.Lock()

    def _ring(self, now: float) -> int:
        n = int(now / self.slot_s)
        i = n % SLOTS
        if self._slot_of[i] != n:  # a new slot: forget what this entry held
            self._slot_of[i] = n
            self._counts[i] = [0] * (len(_EDGES) + 1)
            self._max[i] = 0.0
        return i

    def observe(self, seconds: float) -> None:
        if not seconds >= 0.0:  # negative (clock skew between hosts) or NaN: not a duration
            seconds = 0.0
        with self._lock:
            i = self._ring(self._clock())
            self._counts[i][bisect.bisect_left(_EDGES, seconds)] += 1
            if seconds > self._max[i]:
                self._max[i] = seconds

    def figures(self) -> dict[str, float | int]:
        """``n``, ``p50_ms``, ``p99_ms``, ``max_ms`` over the window (zeros when empty)."""
        with self._lock:
            current = int(self._clock() / self.slot_s)
            live = [i for i in range(SLOTS) if current - SLOTS < self._slot_of[i] <= current]
            totals = [sum(self._counts[i][b] for i in live) for b in range(len(_EDGES) + 1)]
            peak = max((self._max[i] for i in live), default=0.0)
        n = sum(totals)
        if n == 0:
            return {"n": 0, "p50_ms": 0, "p99_ms": 0, "max_ms": 0}

        def pct(q: float) -> float:
            rank, seen = math.ceil(q * n), 0
            for b, c in enumerate(totals):
                seen += c
                if seen >= rank:
                    return min(_EDGES[b] if b < len(_EDGES) else peak, peak)
            return peak

        return {"n": n, "p50_ms": round(1000 * pct(0.5), 2), "p99_ms": round(1000 * pct(0.99), 2),
                "max_ms": round(1000 * peak, 2)}


def _figure(stage: Stage, key: str) -> Callable[[], float | int]:
    return lambda: stage.figures()[key]


class Budget:
    """A service's stages, published as gauges on its counters."""

    def __init__(self, counters: Counters, window_s: float = 60.0) -> None:
        self.counters = counters
        self.window_s = window_s
        self.stages: dict[str, Stage] = {}

    def stage(self, name: str) -> Stage:
        """The stage ``name`` (created, with its four gauges, on first use)."""
        s = self.stages.get(name)
        if s is None:
            s = self.stages[name] = Stage(self.window_s)
            for key in ("n", "p50_ms", "p99_ms", "max_ms"):
                self.counters.gauge(f"latency.{name}.{key}", _figure(s, key))
        return s

    def since_epoch_ms(self, name: str, epoch_ms: int | float) -> None:
        """Observe ``now − epoch_ms`` (a record's broker timestamp, for the wait in Kafka)."""
        self.stage(name).observe(time.time() - epoch_ms / 1000)
