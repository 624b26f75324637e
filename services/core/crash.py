"""Deterministic crash points for abort-and-replay tests.

``LIFELINE_CRASH_AT=<point>[:<n>]`` makes the process end abruptly — ``os._exit``, no
cleanup, no commit, exactly what ``kill -9`` leaves — the ``n``-th time (default 1) the code
passes ``crash_point("<point>")``. Unset (always, outside tests), a point costs one
comparison. The points are the moments where a crash decides what is replayed: after a
side effect, before the progress that records it. The names are fixed in :data:`POINTS`; an
unknown name is refused when the process starts, so a test cannot arm a point that does not
exist and pass for the wrong reason.
"""

from __future__ import annotations

import os
import sys

from services.core.errors import LifelineError

ENV = "LIFELINE_CRASH_AT"
CRASH_EXIT = 86  # what a test expects from a process that stopped at its crash point

POINTS: dict[str, str] = {
    "ingest.after_produce": "a report's batch is on the broker, the MQTT message not yet acknowledged",
    "processor.after_emit": "an event's alarms are produced, its offset not yet committed",
    "writer.after_write": "a batch of points is in InfluxDB, its offsets not yet committed",
    "notifier.after_page": "a page was delivered, the escalation state not yet saved",
}


class CrashPointError(LifelineError):
    """``LIFELINE_CRASH_AT`` names no known crash point."""


def parse(value: str | None) -> tuple[str, int] | None:
    """``"<point>[:<n>]"`` → (point, n); None or empty → None."""
    if not value:
        return None
    name, _, count = value.partition(":")
    if name not in POINTS:
        raise CrashPointError(f"{ENV}={value!r}: unknown crash point {name!r} "
                              f"(known: {', '.join(sorted(POINTS))})")
    try:
        n = int(count) if count else 1
    except ValueError:
        n = 0
    if n < 1:
        raise CrashPointError(f"{ENV}={value!r}: the count after ':' must be a whole number ≥ 1")
    return name, n


_armed = parse(os.environ.get(ENV))
_passes = 0


def crash_point(name: str) -> None:
    """End the process here when ``LIFELINE_CRASH_AT`` names this point and its count is
    reached; otherwise do nothing."""
    global _passes
    if _armed is None or _armed[0] != name:
        return
    _passes += 1
    if _passes < _armed[1]:
        return
    # One line a test can wait for, then gone as if killed: nothing flushed but this line.
    sys.stderr.write(f'{{"event": "crash_point.hit", "point": "{name}", "pass": {_passes}}}\n')
    sys.stderr.flush()
    os._exit(CRASH_EXIT)


def armed() -> tuple[str, int] | None:
    """The armed point and count (for the start-up log line), or None."""
    return _armed
