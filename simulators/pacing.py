"""Pacing: simulated time released no faster than a chosen speed of the wall clock.

Used by ``lifeline simulate`` (steady values and scenarios) and the demo behind
``make run``; the simulators themselves are pure functions of simulated time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def paced_steps(start: float, pace: float = 1.0, *, step: float = 1.0,
                end: float = math.inf) -> Iterator[float]:
    """Simulated times ``start``, ``start + step``, … (below ``end``), each yielded once the
    wall clock has caught up with it at ``pace`` simulated seconds per real second; a slow
    consumer is never made to wait (it catches up instead)."""
    wall0, t = time.monotonic(), start
    while t < end:
        yield t
        t += step
        lag = (t - start) / pace - (time.monotonic() - wall0)
        if lag > 0:
            time.sleep(lag)


def paced(items: Iterable[tuple[float, T]], pace: float = 1.0, *,
          slack_s: float = 0.05) -> Iterator[tuple[float, T]]:
    """``(t, item)`` pairs, ``t`` seconds after the start in simulated time, each released
    when ``t / pace`` real seconds have passed (early by at most ``slack_s``)."""
    wall0 = time.monotonic()
    for t, item in items:
        ahead = t / pace - (time.monotonic() - wall0)
        if ahead > slack_s:
            time.sleep(ahead)
        yield t, item


class Schedule:
    """Simulated time → real seconds after the start: ``pace`` simulated seconds per real
    second, except inside ``slow`` windows (simulated ``[start, end)``), which run at real
    time. A scenario's gateway outages need real time: the processor judges a gateway's
    silence on the wall clock, so at 1,000,000× a 90-minute outage would last 5 ms
    (``lifeline simulate --outages-in-real-time``)."""

    def __init__(self, pace: float, slow: list[tuple[float, float]] | None = None) -> None:
        self.pace = pace
        merged: list[tuple[float, float]] = []
        for a, b in sorted(slow or []):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            elif b > a:
                merged.append((a, b))
        self.slow = merged

    def wall(self, t: float) -> float:
        """Real seconds after the start at which simulated ``t`` is released."""
        inside = sum(max(0.0, min(t, b) - a) for a, b in self.slow)
        return (t - inside) / self.pace + inside

    def run(self, items: Iterable[tuple[float, T]], *, slack_s: float = 0.05
            ) -> Iterator[tuple[float, T]]:
        """``paced`` on this schedule."""
        wall0 = time.monotonic()
        for t, item in items:
            ahead = self.wall(t) - (time.monotonic() - wall0)
            if ahead > slack_s:
                time.sleep(ahead)
            yield t, item
