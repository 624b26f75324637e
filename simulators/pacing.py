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
