"""The 1-minute tier (``long.reading_1m``: mean, min, max per reading series and minute),
computed by the writer from the readings it stores instead of by a continuous query in the
database (decision 0012, note of 2026-12-01).

The series of a minute aggregate is its raw points' series (the same five tags, as the
continuous query's ``GROUP BY *`` gave), its time the minute's start, its fields ``mean``,
``min`` and ``max`` (floats): the points the continuous query wrote, so every reader stays
as it was. State is kept per Kafka partition of ``lifeline.readings`` (a facility's
reports are on one partition, hence one writer worker).

When a minute is written (closed), by event time:

- a partition's *watermark* is the latest event time it has carried, but never later
  than the wall clock (a gateway whose clock runs ahead cannot close everyone's minute);
  when the partition is caught up (nothing more on the broker) it is the wall clock, so a
  quiet partition's last minute is written too;
- minute ``[m, m + 60 s)`` is closed once the watermark reaches ``m + 60 s + lateness``
  (``LIFELINE_WRITER_ROLLUP_LATENESS_S``): readings up to that late, in any order, are in
  it; a reading for a minute already closed is stored raw but not folded in (counted
  ``rollup_late_readings``). A backlog replayed hours late is aggregated in full: its
  watermark is its own event time, not the wall clock.

Exact across restarts and rebalances: the offset committed for a partition is held back
to the first record holding a reading of a minute still open, and carries the newest
closed minute as its metadata. A new owner (or the restarted writer) replays from there:
every reading of every open minute again, in the same order, so each minute is written
with the same value (an overwrite of the same series and time); readings of minutes
already closed are skipped. When a commit carries no such metadata (the first start
after the continuous query), the first minute seen on the partition is not written: its
earlier readings were committed before this writer counted them.

Tansu (the local stack's broker) keeps no commit metadata at all, and its log lives in
memory only — so every commit it holds was made by this writer, held back to the first
record of the oldest open minute. There (``metadata_kept=False``) the closed minutes are
those before the newest minute of the first record replayed: exact when a report's
readings share one minute (the usual case), and at worst a missing minute, never a wrong
one, when they do not.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from schemas.storage import Measurement

MINUTE_MS = 60_000
_PREFIX = len(Measurement.READING)
_OUT = Measurement.READING_1M


def _minute(line: str) -> int:
    """The minute (start, ms) of a ``reading`` line's timestamp."""
    t = int(line[line.rfind(" ") + 1:])
    return t - t % MINUTE_MS


def _float(value: float) -> str:
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


@dataclass(slots=True)
class _Partition:
    closed_through: int | None = -1  # start (ms) of the newest closed minute; None: unknown
    derive: bool = False  # closed_through follows from the first record replayed (Tansu)
    event_max: int = -1
    # minute start → series tag set (",district=…,sensor=…") → [sum, count, min, max]
    open: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    first_offset: dict[int, int] = field(default_factory=dict)  # minute → its first record


class MinuteRollup:
    """1-minute aggregates of the reading lines of each partition (see the module)."""

    def __init__(self, lateness_s: float, metadata_kept: bool = True) -> None:
        self.lateness_ms = int(lateness_s * 1000)
        self.metadata_kept = metadata_kept  # False on Tansu: commits carry no metadata
        self.parts: dict[Hashable, _Partition] = {}
        self.late = 0  # readings of a minute already closed (not folded in)

    # ------------------------------------------------------------ ownership
    def assign(self, part: Hashable, metadata: str | None, committed: bool) -> None:
        """A partition taken over: ``metadata`` of its last commit (the newest closed
        minute), ``committed`` whether it has a commit at all."""
        closed: int | None = -1
        derive = False
        if committed:
            try:
                closed = int(metadata or "")
            except ValueError:
                # Committed without our metadata: on Kafka, by an older writer (the first
                # minute may be partial); on Tansu, by this writer (see the module).
                closed, derive = None, not self.metadata_kept
        self.parts[part] = _Partition(closed_through=closed, derive=derive)

    def revoke(self, part: Hashable) -> None:
        """A partition given up: its open minutes are its next owner's to replay."""
        self.parts.pop(part, None)

    def open_minutes(self) -> int:
        return sum(len(p.open) for p in self.parts.values())

    # ------------------------------------------------------------ input
    def add(self, part: Hashable, offset: int, lines: Iterable[str]) -> None:
        """The ``reading`` lines of one record at ``offset`` of ``part``."""
        p = self.parts.get(part)
        if p is None:
            p = self.parts[part] = _Partition()
        opened, first = p.open, p.first_offset
        if p.derive:
            lines = list(lines)
            p.derive = False
            if lines:  # the oldest open minute at the commit is this record's newest
                newest = max(_minute(line) for line in lines)
                p.closed_through = newest - MINUTE_MS
        for line in lines:
            tags_end = line.find(" ")
            while line[tags_end - 1] == "\\":  # an escaped space in a tag value
                tags_end = line.find(" ", tags_end + 1)
            ts_at = line.rfind(" ")
            t = int(line[ts_at + 1:])
            minute = t - t % MINUTE_MS
            if p.closed_through is None:
                p.closed_through = minute  # unknown history: this minute may be partial
            if minute <= p.closed_through:
                self.late += 1
                continue
            v = float(line[line.rfind("value=", tags_end, ts_at) + 6:ts_at])
            if t > p.event_max:
                p.event_max = t
            series = opened.get(minute)
            if series is None:
                series = opened[minute] = {}
                first[minute] = offset
            tags = line[_PREFIX:tags_end]
            acc = series.get(tags)
            if acc is None:
                series[tags] = [v, 1.0, v, v]
            else:
                acc[0] += v
                acc[1] += 1.0
                if v < acc[2]:
                    acc[2] = v
                elif v > acc[3]:
                    acc[3] = v

    # ------------------------------------------------------------ output
    def close(self, part: Hashable, now_ms: int, caught_up: bool) -> list[str]:
        """The ``reading_1m`` lines of the minutes of ``part`` closed now (oldest first)."""
        p = self.parts.get(part)
        if p is None or not p.open:
            return []
        watermark = now_ms if caught_up else min(p.event_max, now_ms)
        limit = watermark - MINUTE_MS - self.lateness_ms
        out: list[str] = []
        for minute in sorted(m for m in p.open if m <= limit):
            for tags, (s, n, lo, hi) in p.open.pop(minute).items():
                out.append(f"{_OUT}{tags} max={_float(hi)},mean={_float(s / n)},"
                           f"min={_float(lo)} {minute}")
            del p.first_offset[minute]
            p.closed_through = max(minute, p.closed_through or -1)
        return out

    def commit(self, part: Hashable, next_offset: int) -> tuple[int, str]:
        """What to commit for ``part`` when everything before ``next_offset`` is stored:
        the first record of its oldest open minute (or ``next_offset``), and the newest
        closed minute as metadata."""
        p = self.parts.get(part)
        if p is None:
            return next_offset, ""
        held = min(p.first_offset.values(), default=next_offset)
        closed = "" if p.closed_through is None else str(p.closed_through)
        return min(held, next_offset), closed
