"""The raw sample list the engine used before its bucketed :class:`Window`: every sample
kept, every signal rescanned on every call. The reference that tests/processor/test_window.py
and tests/bench/window.py compare the window with."""

from __future__ import annotations

import math
from bisect import bisect_left

from schemas.registry import Signal
from services.processor.engine.signals import Sample


def insert(samples: list[Sample], ts: int, value: float) -> None:
    """Insert in time order; a second sample at the same time replaces the first, so a
    replayed or duplicated reading never counts twice."""
    if not samples or ts > samples[-1][0]:
        samples.append((ts, value))
        return
    i = bisect_left(samples, (ts, -math.inf))
    if i < len(samples) and samples[i][0] == ts:
        samples[i] = (ts, value)
    else:
        samples.insert(i, (ts, value))


def trim(samples: list[Sample], keep_after: int) -> None:
    """Drop samples at or before ``keep_after`` (ms)."""
    if samples and samples[0][0] <= keep_after:
        del samples[:bisect_left(samples, (keep_after + 1, -math.inf))]


def compute(samples: list[Sample], signal: Signal, window_s: float | None, rate_per_s: float,
            now: int) -> float | None:
    """The signal at event time ``now`` (ms) from samples up to ``now``; None if unknown.

    RATE here is endpoint-based; TWA is the arithmetic mean (what :class:`Window` gives for
    a regular series), known once half the window is covered."""
    if signal is Signal.VALUE or window_s is None:
        return samples[-1][1] if samples else None
    start = now - int(window_s * 1000)
    lo = bisect_left(samples, (start + 1, -math.inf))
    hi = bisect_left(samples, (now + 1, -math.inf))
    window = samples[lo:hi]
    if not window:
        return None
    if signal is Signal.RATE:
        (t0, v0), (t1, v1) = window[0], window[-1]
        if t1 - t0 < window_s * 500:  # less than half the window covered: not yet known
            return None
        return (v1 - v0) / ((t1 - t0) / 1000.0) * rate_per_s
    values = [v for _, v in window]
    if signal is Signal.TWA:
        if window[-1][0] - window[0][0] < window_s * 500:
            return None
        return math.fsum(values) / len(values)
    if signal is Signal.SUM:
        return math.fsum(values)
    if signal is Signal.MEAN:
        return math.fsum(values) / len(values)
    if signal is Signal.MIN:
        return min(values)
    if signal is Signal.MAX:
        return max(values)
    return math.sqrt(math.fsum(v * v for v in values) / len(values))  # RMS
