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
from typing import Any

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from schemas.storage import Field, Measurement, Tag, qualified
from services.writer.points import _tag

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
    started: bool = False  # a reading came since the partition was taken


class MinuteRollup:
    """1-minute aggregates of the reading lines of each partition (see the module)."""

    def __init__(self, lateness_s: float, metadata_kept: bool = True,
                 hours: HourRollup | None = None) -> None:
        self.lateness_ms = int(lateness_s * 1000)
        self.metadata_kept = metadata_kept  # False on Tansu: commits carry no metadata
        self.hours = hours  # the hourly tiers, from the minutes as they close
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
        if self.hours is not None:
            self.hours.revoke(part)

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
            if not p.started:
                p.started = True
                if self.hours is not None:
                    self.hours.started(part, p.closed_through)
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
        hours = self.hours
        if p is None or not (p.open or (hours is not None and part in hours.parts)):
            return []
        watermark = now_ms if caught_up else min(p.event_max, now_ms)
        limit = watermark - MINUTE_MS - self.lateness_ms
        out: list[str] = []
        closed = 0
        for minute in sorted(m for m in p.open if m <= limit):
            series = p.open.pop(minute)
            for tags, (s, n, lo, hi) in series.items():
                out.append(f"{_OUT}{tags} max={_float(hi)},mean={_float(s / n)},"
                           f"min={_float(lo)} {minute}")
            if hours is not None:
                hours.minute(part, minute, series)
            del p.first_offset[minute]
            p.closed_through = max(minute, p.closed_through or -1)
            closed += 1
        if hours is not None:
            label = str(part.partition) if isinstance(part, TopicPartition) else str(part)
            out += hours.close(part, limit, label, closed)
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


# ---------------------------------------------------------------------------- hourly tier
HOUR_MS = 3_600_000
_HOUR_OUT = Measurement.READING_1H
_DISTRICT_OUT = Measurement.DISTRICT_1H


@dataclass(frozen=True, slots=True)
class Recompute:
    """An hour of a partition the writer did not see whole (it took the partition over
    during the hour): its ``reading_1h`` and ``district_1h`` points are computed from the
    stored ``reading_1m`` once the hour is closed (services/writer/handlers.py)."""

    part: Hashable
    hour: int  # start (ms)


def district_key(tags: str) -> str:
    """``,district=…,kind=…,metric=…`` of a reading series' tag set (sorted, as written)."""
    district = tags[:tags.index(",facility=")]
    kind_at = tags.index(",kind=")
    return f"{district}{tags[kind_at:tags.index(',sensor=', kind_at)]}"


def series_lines(hour: int, series: dict[str, list[Any]]) -> list[str]:
    """``reading_1h`` lines of ``series`` (tags → [sum of minute means, minutes, min, max,
    district key])."""
    return [f"{_HOUR_OUT}{tags} max={_float(hi)},mean={_float(s / n)},min={_float(lo)} {hour}"
            for tags, (s, n, lo, hi, _) in series.items()]


def district_lines(hour: int, series: dict[str, list[Any]], partition: str) -> list[str]:
    """``district_1h`` lines of the same series, one per district, kind, metric (and this
    partition): the mean of the series' hourly means, their min and max."""
    districts: dict[str, list[float]] = {}
    for s, n, lo, hi, key in series.values():
        mean = s / n
        d = districts.get(key)
        if d is None:
            districts[key] = [mean, 1.0, lo, hi]
        else:
            d[0] += mean
            d[1] += 1.0
            if lo < d[2]:
                d[2] = lo
            if hi > d[3]:
                d[3] = hi
    return [f"{_DISTRICT_OUT}{key},partition={partition} max={_float(hi)},"
            f"mean={_float(s / n)},min={_float(lo)} {hour}"
            for key, (s, n, lo, hi) in districts.items()]


@dataclass(slots=True)
class _Hours:
    first_closed: int | None = None  # closed_through when the first record came; None: not yet
    # hour start → series tags → [sum of minute means, minutes, min, max, district key]
    open: dict[int, dict[str, list[Any]]] = field(default_factory=dict)
    partial: set[int] = field(default_factory=set)  # hours not seen whole (to recompute)
    refresh: int = 0  # minutes closed: which share of the series rewrites its hour now


class HourRollup:
    """The hourly tiers from the minute aggregates as they close, per partition:
    ``reading_1h`` per series (mean of the minute means, min, max) and ``district_1h``
    per district, kind, metric and partition (mean of the series' hourly means, min, max).

    The hour in progress is rewritten for every series every ``refresh_minutes`` minutes
    (a share of the series at each minute, so the writes are spread) and finally once
    all its minutes are closed. An hour this owner did not see from its start (it took the
    partition over during the hour, or its history was unknown) is not written from memory:
    once closed, it is a :class:`Recompute` (from the stored minutes)."""

    def __init__(self, refresh_minutes: int) -> None:
        self.refresh = max(1, refresh_minutes)
        self.parts: dict[Hashable, _Hours] = {}
        self.recompute: list[Recompute] = []

    def revoke(self, part: Hashable) -> None:
        self.parts.pop(part, None)

    def open_hours(self) -> int:
        return sum(len(h.open) for h in self.parts.values())

    def started(self, part: Hashable, closed_through: int | None) -> None:
        """The partition's first record since it was taken: minutes up to
        ``closed_through`` were closed (and stored) before this owner."""
        h = self.parts.get(part)
        if h is None:
            h = self.parts[part] = _Hours()
        if h.first_closed is None:
            h.first_closed = -1 if closed_through is None else closed_through

    def minute(self, part: Hashable, minute: int, series: dict[str, list[float]]) -> None:
        """A closed minute's aggregates (tags → [sum, count, min, max])."""
        h = self.parts.get(part)
        if h is None:
            h = self.parts[part] = _Hours(first_closed=-1)
        hour = minute - minute % HOUR_MS
        first = h.first_closed
        if first is not None and first >= hour:  # minutes of this hour closed before us
            h.partial.add(hour)
            return
        acc_of = h.open.get(hour)
        if acc_of is None:
            acc_of = h.open[hour] = {}
        for tags, (s, n, lo, hi) in series.items():
            acc = acc_of.get(tags)
            if acc is None:
                acc_of[tags] = [s / n, 1, lo, hi, district_key(tags)]
            else:
                acc[0] += s / n
                acc[1] += 1
                if lo < acc[2]:
                    acc[2] = lo
                if hi > acc[3]:
                    acc[3] = hi

    def close(self, part: Hashable, limit: int, partition: str, minutes: int) -> list[str]:
        """Lines for the hours of ``part`` whose every minute is closed (minutes up to
        ``limit``), and, when ``minutes`` were closed just now, their share of the hours
        still open."""
        h = self.parts.get(part)
        if h is None:
            return []
        out: list[str] = []
        for hour in sorted(x for x in h.open if x + HOUR_MS - MINUTE_MS <= limit):
            series = h.open.pop(hour)
            out += series_lines(hour, series) + district_lines(hour, series, partition)
        for hour in sorted(x for x in h.partial if x + HOUR_MS - MINUTE_MS <= limit):
            h.partial.discard(hour)
            self.recompute.append(Recompute(part, hour))
        for _ in range(min(minutes, self.refresh) if h.open else 0):
            h.refresh += 1
            share = h.refresh % self.refresh
            for hour, series in h.open.items():
                chosen = {tags: acc for i, (tags, acc) in enumerate(series.items())
                          if i % self.refresh == share}
                out += series_lines(hour, chosen)
                if share == 0:  # the districts' hour so far, once a round
                    out += district_lines(hour, series, partition)
        return out

    def take_recompute(self) -> list[Recompute]:
        out, self.recompute = self.recompute, []
        return out


def recompute_query(hour: int) -> str:
    """The stored minutes of ``hour`` per series, as the hourly tier aggregates them."""
    return (f'SELECT mean("{Field.MEAN}") AS "{Field.MEAN}", min("{Field.MIN}") AS '  # noqa: S608
            f'"{Field.MIN}", max("{Field.MAX}") AS "{Field.MAX}" FROM '
            f"{qualified(Measurement.READING_1M)} WHERE time >= {hour}ms AND "
            f"time < {hour + HOUR_MS}ms GROUP BY *")


def recompute_lines(series: Iterable[dict[str, Any]], r: Recompute, partitions: int
                    ) -> list[str]:
    """``reading_1h`` and ``district_1h`` lines of hour ``r`` from :func:`recompute_query`'s
    series — only those of ``r``'s partition (the facility's key hashed as the producer
    does; the other partitions' owners write theirs)."""
    part = r.part.partition if isinstance(r.part, TopicPartition) else int(str(r.part))
    everyone = list(range(partitions))
    mine: dict[str, list[Any]] = {}
    for s in series:
        tags: dict[str, str] = s.get("tags") or {}
        fid = tags.get(Tag.FACILITY)
        if not fid or not s.get("values"):
            continue
        if DefaultPartitioner()(fid.encode(), everyone, everyone) != part:
            continue
        columns = s["columns"]
        row = dict(zip(columns, s["values"][0], strict=True))
        if None in (row.get(Field.MEAN), row.get(Field.MIN), row.get(Field.MAX)):
            continue
        text = "".join(f",{k}={_tag(tags[k])}" for k in sorted(tags))
        mine[text] = [float(row[Field.MEAN]), 1, float(row[Field.MIN]), float(row[Field.MAX]),
                      district_key(text)]
    return series_lines(r.hour, mine) + district_lines(r.hour, mine, str(part))
