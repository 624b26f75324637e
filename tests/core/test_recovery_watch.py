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


class _TP:
    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition


class _Flow:
    def __init__(self) -> None:
        self.resumed = 0

    def resume(self) -> None:
        self.resumed += 1


class _App:
    def __init__(self) -> None:
        self.flow_control = _Flow()


class _Consumer:
    """Faust's consumer as the stream watchdog sees it: assignment, committed and read
    offsets, the broker's high-water marks, and the resume sequence it runs."""

    def __init__(self, tps: list[_TP], end: int) -> None:
        self.tps = tps
        self.end = end
        self._committed_offset = dict.fromkeys(tps, 10)
        self._read_offset = dict.fromkeys(tps, 10)
        self._paused_partitions: set[_TP] = set()
        self.flow_active = True
        self.seeks = 0

    def assignment(self) -> set[_TP]:
        return set(self.tps)

    async def highwaters(self, *tps: _TP) -> dict[_TP, int]:
        return dict.fromkeys(tps, self.end)

    async def perform_seek(self) -> None:
        self.seeks += 1

    def resume_partitions(self, tps: list[_TP]) -> None:
        pass

    def resume_flow(self) -> None:
        pass


def test_a_worker_reading_on_while_its_commit_waits_is_not_sent_back() -> None:
    """Under overload a commit waits for the producer's buffer for longer than the stall
    time: while the worker reads on, no seek to the committed offsets (which replayed 40 %
    of an overloaded worker's readings); once reading stops too, it is resumed."""
    from services.core.faust import StallWatch, check_stream

    tps = [_TP("lifeline.readings", p) for p in range(2)] + [_TP("lifeline.ticks", 0)]
    consumer, app = _Consumer(tps, end=500), _App()
    health = Health("processor", Counters())
    watch = StallWatch(stall_s=15)
    topics = ("lifeline.readings", "lifeline.ticks")

    async def run() -> list[bool]:
        fired = []
        for t in range(0, 60, 3):  # committed offsets never move; reads do
            for tp in tps:
                consumer._read_offset[tp] += 7
            fired.append(await check_stream(app, consumer, watch, health, topics, float(t)))
        for t in range(60, 100, 3):  # now nothing moves: a stall
            fired.append(await check_stream(app, consumer, watch, health, topics, float(t)))
        return fired

    fired = asyncio.run(run())
    assert not any(fired[:20]) and consumer.seeks >= 1
    first = fired.index(True)
    assert 60 + 3 * (first - 20) >= 57 + 15  # 15 s after the last read (t=57)
    assert app.flow_control.resumed == consumer.seeks
    code, body = health.payload()
    assert code == 503 and "stream" in body["problems"]
