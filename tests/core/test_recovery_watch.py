"""The table-recovery watchdog restarts a recovery that stopped moving, and only that."""

from __future__ import annotations

import asyncio

from services.core.faust import RecoveryWatch
from services.core.health import Counters, Health


class _Recovery:
    def __init__(self, remaining: int) -> None:
        self.in_recovery = True
        self.remaining = remaining
        self.signal_recovery_start = asyncio.Event()

    def active_remaining_total(self) -> int:
        return self.remaining


def _watch() -> tuple[RecoveryWatch, Health]:
    health = Health("processor", Counters())
    return RecoveryWatch(health, stall_s=30), health


def test_a_stalled_recovery_is_restarted_and_reported() -> None:
    watch, health = _watch()
    rec = _Recovery(remaining=160)
    assert not watch.check(rec, 0.0)
    assert not watch.check(rec, 25.0)  # not yet 30 s
    assert watch.check(rec, 31.0)
    assert rec.signal_recovery_start.is_set() and watch.restarts == 1
    code, body = health.payload()
    assert code == 503 and "recovery" in body["problems"]
    rec.signal_recovery_start.clear()
    assert not watch.check(rec, 40.0)  # the next restart waits another 30 s
    rec.remaining = 0
    rec.in_recovery = False
    assert not watch.check(rec, 45.0)
    assert health.payload()[0] == 200


def test_a_slow_but_moving_recovery_is_left_alone() -> None:
    watch, _ = _watch()
    rec = _Recovery(remaining=10_000)
    for t in range(0, 300, 5):
        rec.remaining -= 10
        assert not watch.check(rec, float(t))
    assert not rec.signal_recovery_start.is_set()


def test_no_recovery_no_action() -> None:
    watch, _ = _watch()
    rec = _Recovery(remaining=5)
    rec.in_recovery = False
    assert not any(watch.check(rec, float(t)) for t in range(0, 200, 5))


def test_stall_watch_fires_only_when_work_waits_and_nothing_moves() -> None:
    from services.core.faust import StallWatch

    w = StallWatch(stall_s=20)
    assert not w.check(True, (5, 7), 0.0)
    assert not w.check(True, (5, 7), 15.0)
    assert w.check(True, (5, 7), 21.0) and w.stalls == 1
    assert not w.check(True, (5, 7), 30.0)  # waits another 20 s before firing again
    assert w.check(True, (5, 7), 42.0) and w.stalls == 2
    assert not w.check(True, (6, 7), 50.0)  # moved
    assert not w.check(False, (6, 7), 80.0)  # nothing waiting: idle is not a stall
    assert not w.check(True, (6, 7), 85.0)  # the clock starts again when work appears
