"""Watchdogs over a Faust worker: table recovery that stopped moving, and source
partitions with records waiting whose commits stopped moving. Backstops only — the causes
found are fixed in :mod:`services.core.faust.fetch` (decision 0013)."""

from __future__ import annotations

from typing import Any

import faust

from services.core.health import Health
from services.core.logging import get_logger

RECOVERY_STALL_S = 30.0
_log = get_logger("lifeline.recovery")


class RecoveryWatch:
    """Restart table recovery that stopped making progress.

    A backstop: after a second worker left, the remaining worker's recovery of the
    partitions it took over sometimes read nothing for minutes. That cause — a Faust fetch
    answered across the rebalance and dropped — is fixed in :mod:`services.core.faust.fetch` (decision
    0013); this guards against any other. Faust restarts recovery on its rebalance signal; this raises
    that signal when the changelog records still to read have not changed for
    ``stall_s``, and reports it on /health meanwhile. A recovery that is slow but moving
    is left alone."""

    def __init__(self, health: Health, stall_s: float = RECOVERY_STALL_S) -> None:
        self.health = health
        self.stall_s = stall_s
        self.remaining: int | None = None
        self.since = 0.0
        self.restarts = 0

    def check(self, recovery: Any, now: float) -> bool:
        """Look at Faust's ``Recovery`` once; True when it was told to restart."""
        remaining = int(recovery.active_remaining_total()) if recovery.in_recovery else 0
        if remaining == 0 or remaining != self.remaining:
            self.remaining, self.since = remaining, now
            if remaining == 0:
                self.health.ok("recovery")
            return False
        stalled = now - self.since
        if stalled < self.stall_s:
            return False
        self.health.problem("recovery", f"table recovery stalled for {stalled:.0f}s with "
                                        f"{remaining} changelog records to read; restarted")
        _log.warning("recovery.stalled_restarting", remaining=remaining,
                     stalled_s=round(stalled))
        self.since = now
        self.restarts += 1
        recovery.signal_recovery_start.set()
        return True


def recovery_watchdog(app: faust.App, health: Health, every_s: float = 5.0) -> RecoveryWatch:
    """Run a :class:`RecoveryWatch` every ``every_s`` (Faust timers run once the worker
    has started; the stall it guards against follows a later rebalance)."""
    import time

    watch = RecoveryWatch(health)

    @app.timer(every_s)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def _watch() -> None:
        tables: Any = app.tables  # the TableManager's recovery is not in Faust's types
        watch.check(tables.recovery, time.monotonic())

    return watch


STREAM_STALL_S = 15.0


class StallWatch:
    """Something that should move and has work waiting: ``check`` says when it has not
    moved for ``stall_s`` (then waits ``stall_s`` again before saying so once more)."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.mark: tuple[int, ...] | None = None
        self.since = 0.0
        self.stalls = 0

    def check(self, waiting: bool, position: tuple[int, ...], now: float) -> bool:
        if not waiting or position != self.mark:
            self.mark, self.since = position, now
            return False
        if now - self.since < self.stall_s:
            return False
        self.since = now
        self.stalls += 1
        return True


async def check_stream(app: Any, consumer: Any, watch: StallWatch, health: Health,
                       source_topics: tuple[str, ...], now: float) -> bool:
    """One look at the worker's source partitions; True when it found them stalled and
    resumed them.

    Stalled means records waiting and, for ``watch.stall_s``, neither a committed offset
    nor a read offset moved. Read offsets count: under overload a commit can take longer
    than the stall time (Faust's commit waits for the producer's buffer — the changelog's
    writes — to drain), and resuming then is harmful — the seek to the committed offsets
    sends the worker back over everything it read since, so an overloaded worker
    processed 40 % of its readings twice and fell further behind (found by ``lifeline
    bench`` at 20,000 readings/s, docs/benchmarks.md)."""
    import asyncio

    from aiokafka.errors import KafkaError

    tps = sorted((tp for tp in consumer.assignment() if tp.topic in source_topics),
                 key=lambda tp: (tp.topic, tp.partition))
    if not tps:
        return False
    committed = tuple(int(consumer._committed_offset.get(tp) or 0) for tp in tps)
    read = tuple(int(consumer._read_offset.get(tp) or 0) for tp in tps)
    # Ask the broker: a consumer that stopped fetching also stopped updating the
    # high-water marks it reports (on Tansu the end offset is the last batch's base
    # offset + 1: it still grows with every new batch).
    try:
        # Answered by Faust's consumer thread: if that thread is wedged, say so.
        ends = await asyncio.wait_for(consumer.highwaters(*tps), timeout=10.0)
    except TimeoutError:
        health.problem("stream", "the consumer thread did not answer within 10s")
        _log.warning("stream.consumer_unresponsive", partitions=len(tps),
                     flow_active=consumer.flow_active)
        return False
    except (KafkaError, OSError) as exc:  # a broker hiccup is no stall
        _log.info("stream.watch_skipped", error=repr(exc))
        return False
    lag = sum(max(0, int(ends.get(tp) or 0) - c) for tp, c in zip(tps, committed, strict=True))
    if not watch.check(lag > 0, committed + read, now):
        if lag == 0 or watch.stalls == 0:
            health.ok("stream")
        return False
    paused = sorted(f"{tp.topic}[{tp.partition}]" for tp in consumer._paused_partitions)
    health.problem("stream", f"{lag} record(s) waiting and nothing read or committed for "
                             f"{watch.stall_s:.0f}s; resumed")
    _log.warning("stream.stalled_resuming", lag=lag, flow_active=consumer.flow_active,
                 paused=paused, partitions=len(tps))
    await consumer.perform_seek()
    consumer.resume_partitions(tps)
    app.flow_control.resume()
    consumer.resume_flow()
    return True


def stream_watchdog(app: faust.App, health: Health, source_topics: tuple[str, ...],
                    every_s: float = 3.0) -> StallWatch:
    """Resume a worker whose source partitions have records waiting but whose read and
    committed offsets have not moved for ``STREAM_STALL_S`` outside recovery
    (:func:`check_stream`).

    A backstop like :class:`RecoveryWatch` (the stall seen after a second worker left the
    group was fixed at its cause, decision 0013). The remedy is
    the sequence Faust itself runs after a recovery — seek to the committed offsets,
    resume the partitions and the flow — logged with the consumer's state at the time."""
    import time

    watch = StallWatch(STREAM_STALL_S)

    @app.timer(every_s)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def _watch() -> None:
        consumer: Any = getattr(app, "_consumer", None)
        if consumer is None or app.in_recovery:
            return
        await check_stream(app, consumer, watch, health, source_topics, time.monotonic())

    return watch
