"""Periodic state checkpoints: how many a second may be written, and the bound they keep.

An alarm transition is saved at once; between transitions a facility's working state
(windows, debounce) is saved when ``checkpoint_interval_s`` of event time has passed since
the last save (spread over 50-100 % of it by facility: engine/engine.py). Each save is a
changelog record, and on Tansu every record is its own produce request (decision 0006): a
wave of them (every facility loaded in the same minute) filled Faust's producer buffer and
stalled the agent for seconds, so periodic checkpoints are paced — a due checkpoint that
finds no budget waits for the facility's next report (``checkpoints_deferred``).

Pacing (:class:`CheckpointPacer`): a token bucket whose rate follows the need — enough to
save every facility in memory within the shortest spread interval (half of
``checkpoint_interval_s``) — between a floor (150/s on Tansu, the fixed pace before) and
a ceiling (``LIFELINE_PROCESSOR_CHECKPOINT_CEILING_PER_S``, default measured on Tansu:
docs/benchmarks.md); ``LIFELINE_PROCESSOR_MAX_CHECKPOINTS_PER_S`` fixes the pace. Above
both, the broker's own pace: while the producer's buffer of table writes holds
``MAX_BACKLOG`` or more, a due checkpoint waits (Faust stops the whole stream, alarms
included, once that buffer passes 100 — on Tansu each changelog record is one produce
round trip per partition, so under CPU pressure the broker takes fewer than the ceiling:
``lifeline bench`` at 14,000-20,000 readings/s saw the stream stopped for seconds and
commits taking 17 s). Alarm transitions are never deferred.

The bound (:class:`UnsavedProgress`): what a crash can really lose is the event-time
progress of a facility since its last save. It is measured, not assumed: for every
checkpoint written — and every one deferred — the progress it covers
(``latest_ts`` − the previous save's ``latest_ts``); ``/counters`` and ``/health`` report
the largest over the last minute (``checkpoint_bound_s``), and ``/health`` warns when it
exceeds twice ``checkpoint_interval_s``.
"""

from __future__ import annotations

from collections.abc import Callable

from services.processor.engine import FacilityState

WARN_FACTOR = 2.0  # /health warns when the bound exceeds this × checkpoint_interval_s
MAX_BACKLOG = 50  # table writes waiting in the producer's buffer (Faust stalls above 100)


class CheckpointPacer:
    """A token bucket for periodic checkpoints whose rate is ``need`` clamped to
    [floor, ceiling]; bursts up to one second of the current rate (at least one).
    ``backlog`` (the table writes still waiting to be produced) defers every checkpoint
    while it is ``max_backlog`` or more, without spending a token."""

    __slots__ = ("_at", "_tokens", "backlog", "ceiling", "floor", "max_backlog", "rate",
                 "waited")

    def __init__(self, floor: float, ceiling: float, *,
                 backlog: Callable[[], int] | None = None,
                 max_backlog: int = MAX_BACKLOG) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.rate = self.floor
        self.backlog = backlog
        self.max_backlog = max_backlog
        self.waited = 0  # checkpoints deferred for the broker's backlog
        self._tokens: float | None = None  # full at the first call
        self._at = 0.0

    @staticmethod
    def need(facilities: int, interval_s: float) -> float:
        """Checkpoints per second that save every one of ``facilities`` within the
        shortest spread interval (half of ``interval_s``)."""
        return facilities / (0.5 * interval_s)

    def allow(self, now: float, facilities: int, interval_s: float) -> bool:
        """Whether a due checkpoint may be written at ``now`` (monotonic seconds)."""
        if self.backlog is not None and self.backlog() >= self.max_backlog:
            self.waited += 1
            return False
        rate = self.rate = min(self.ceiling, max(self.floor, self.need(facilities, interval_s)))
        burst = max(1.0, rate)
        tokens = burst if self._tokens is None else min(
            burst, self._tokens + (now - self._at) * rate)
        self._at = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False


class UnsavedProgress:
    """The largest event-time progress (ms) a crash could have lost, seen at a checkpoint
    written or deferred, over a sliding window of ``window_s`` seconds (per-second slots)."""

    __slots__ = ("_slots", "window_s")

    def __init__(self, window_s: int = 60) -> None:
        self.window_s = window_s
        self._slots: list[list[int]] = [[-1, 0] for _ in range(window_s)]  # [second, max ms]

    @staticmethod
    def of(fs: FacilityState, saved_ts: int) -> int:
        """``fs``'s progress since the save that recorded ``saved_ts`` (its ``latest_ts``
        then; 0: never saved, progress counted from the facility's first report)."""
        since = saved_ts or fs.first_ts or fs.latest_ts
        return max(0, fs.latest_ts - since)

    def observe(self, now: float, progress_ms: int) -> None:
        second = int(now)
        slot = self._slots[second % self.window_s]
        if slot[0] != second:
            slot[0], slot[1] = second, progress_ms
        elif progress_ms > slot[1]:
            slot[1] = progress_ms

    def bound_ms(self, now: float) -> int:
        oldest = int(now) - self.window_s
        return max((ms for second, ms in self._slots if second > oldest), default=0)


def bound_warning(bound_s: float, interval_s: float, rate: float, ceiling: float) -> str | None:
    """The /health warning when the measured bound exceeds ``WARN_FACTOR`` × the policy's
    ``checkpoint_interval_s``; None otherwise."""
    if bound_s <= WARN_FACTOR * interval_s:
        return None
    return (f"state checkpoints lag: up to {bound_s:.0f} s of event time unsaved in the last "
            f"minute, more than {WARN_FACTOR:g} x checkpoint_interval_s ({interval_s:g} s); "
            f"a crash loses that much window and debounce progress (paced at {rate:.0f}/s, "
            f"at most {ceiling:g}/s: LIFELINE_PROCESSOR_CHECKPOINT_CEILING_PER_S, or more "
            f"workers)")
