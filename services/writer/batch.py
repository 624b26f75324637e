"""Storing a batch of Kafka events in the time-series database, and what the writer does
when the database refuses some of it.

A batch (up to ``LIFELINE_WRITER_BATCH_EVENTS`` events) is written in one request. The
sink's answer is one of three (services/writer/sinks.py):

- stored: done;
- :class:`SinkUnavailable` (down, timeout, 429, 5xx, auth): the same request is retried
  with backoff until it is stored — backpressure, nothing is skipped or dead-lettered;
- :class:`SinkRejected` (HTTP 400/422: a bad line, a field type conflict, a point outside
  the retention policy; 413: too large): the data itself is refused. Only the events whose
  points the database refuses go to the dead-letter topic; the others are stored.

Isolation (:func:`isolate`) bisects the refused batch: each refused range is split in two
halves and both are written again, on event boundaries while a range holds more than one
event, then on point boundaries inside a single event. A range the database accepts is
stored; a refused single point marks its event refused with the database's own answer
for that point. With ``b`` refused points among ``E`` events of at most ``L`` points, at most
``2·b·(⌈log₂ E⌉ + ⌈log₂ L⌉)`` further requests are made (30 for one bad point among
2,000 ten-point events); ``LIFELINE_WRITER_ISOLATE_MAX_REQUESTS`` bounds them in every
case: when it is used up, each range still refused is dead-lettered as a whole, saying so.
Every range is either written or part of a refused answer — no event is dropped unseen.

InfluxDB 1.x answers a partial write (``400 partial write: field type conflict … dropped=1``)
after storing the batch's other points; writing them again while isolating is harmless:
a point is keyed by its series and event time and the lines are byte-identical, so the
rewrite overwrites each point with itself (no duplicate, no loss). InfluxDB 2.x refuses a
batch with an unparsable line whole (400): there the rewrite is what stores the good points.
Every isolation request is retried like the first one while the database is unavailable.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from schemas.deadletter import Problem, RejectReason
from services.core.health import Counters, Health
from services.core.logging import get_logger
from services.writer.errors import SinkRejected, SinkUnavailable
from services.writer.sinks import Sink

log = get_logger("lifeline.writer")


@dataclass(slots=True)
class Batch:
    """Events in Kafka order with their points: the lines of event ``i`` are
    ``lines[start(i):ends[i]]``; ``sources[i]`` is ``kafka:<topic>[<partition>]@<offset>``."""

    lines: list[str] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    raws: list[bytes] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def add(self, raw: bytes, source: str, lines: list[str]) -> None:
        self.lines.extend(lines)
        self.ends.append(len(self.lines))
        self.raws.append(raw)
        self.sources.append(source)

    def __len__(self) -> int:
        return len(self.raws)

    def start(self, event: int) -> int:
        return self.ends[event - 1] if event else 0

    def event_of(self, line: int) -> int:
        """The event a line belongs to (events without lines own none)."""
        return bisect.bisect_right(self.ends, line)


@dataclass(slots=True)
class Refusal:
    """An event the database refused (some or all of its points)."""

    event: int
    # (index of the refused point within the event, or None when the refused request held
    # more than that one point; the database's answer)
    problems: list[tuple[int | None, str]] = field(default_factory=list)


@dataclass(slots=True)
class Isolation:
    refused: list[Refusal]
    stored_points: int  # points in requests the database accepted
    requests: int  # requests after the refused one


def _split(batch: Batch, lo: int, hi: int) -> int:
    """Where to halve lines ``[lo, hi)``: at the middle event boundary while the range holds
    more than one event, else (inside one event) at the middle point."""
    first, last = batch.event_of(lo), batch.event_of(hi - 1)
    if first < last:
        return batch.start((first + last + 1) // 2)
    return (lo + hi) // 2


async def isolate(write: Callable[[list[str]], Awaitable[None]], batch: Batch, error: str,
                  max_requests: int) -> Isolation:
    """Store every point of a refused ``batch`` the database accepts and find the events it
    refuses, in at most ``max_requests`` further calls of ``write`` (which stores the lines,
    raises :class:`SinkRejected` when they are refused, and retries everything else itself).
    ``error`` is the database's answer to the whole batch."""
    lines = batch.lines
    refused: dict[int, Refusal] = {}
    stored = requests = untried = 0
    # Ranges of lines, depth first, left half first; ``None``: not written on its own yet.
    # ``requests + untried <= max_requests`` throughout: a range is only split when both
    # halves can still be written.
    todo: list[tuple[int, int, str | None]] = [(0, len(lines), error)]
    while todo:
        lo, hi, err = todo.pop()
        if err is None:
            untried -= 1
            requests += 1
            try:
                await write(lines[lo:hi])
            except SinkRejected as exc:
                err = str(exc)
            else:
                stored += hi - lo
                continue
        if hi - lo > 1 and requests + untried + 2 <= max_requests:
            mid = _split(batch, lo, hi)
            todo.append((mid, hi, None))
            todo.append((lo, mid, None))
            untried += 2
            continue
        first, last = batch.event_of(lo), batch.event_of(hi - 1)
        if hi - lo == 1:
            problem: tuple[int | None, str] = (lo - batch.start(first), err)
        elif first == last:
            problem = (None, f"{err} (one of {hi - lo} points of this event refused together; "
                             f"not isolated further: {requests} requests used, "
                             "LIFELINE_WRITER_ISOLATE_MAX_REQUESTS)")
        else:
            problem = (None, f"{err} (refused together with {last - first} other events; "
                             f"not isolated further: {requests} requests used, "
                             "LIFELINE_WRITER_ISOLATE_MAX_REQUESTS)")
        for ev in range(first, last + 1):
            if batch.start(ev) < batch.ends[ev]:  # events without points were not refused
                refused.setdefault(ev, Refusal(ev)).problems.append(problem)
    return Isolation(sorted(refused.values(), key=lambda r: r.event), stored, requests)


class DeadLetterFn(Protocol):
    async def __call__(self, raw: bytes, source: str, reason: RejectReason, detail: str,
                       problems: list[Problem] | None = None,
                       facility_id: str | None = None) -> None: ...


_SENSOR = re.compile(r",sensor=([^, ]+)")
_FACILITY = re.compile(r",facility=([^, ]+)")


@dataclass(slots=True)
class Refused:
    """A refused event, ready for the dead-letter topic."""

    raw: bytes
    source: str
    problems: list[Problem]
    facility_id: str | None


def refused_events(batch: Batch, isolation: Isolation, *, readings: bool) -> list[Refused]:
    """Dead-letter material of the refused events. ``readings``: each line is the reading of
    the same index in the event (``lifeline.readings``), so problems name it."""
    out = []
    for r in isolation.refused:
        first = batch.lines[batch.start(r.event)]
        fac = _FACILITY.search(first)
        problems = []
        for index, detail in r.problems:
            sensor = None
            if readings and index is not None:
                m = _SENSOR.search(batch.lines[batch.start(r.event) + index])
                sensor = m.group(1) if m else None
            problems.append(Problem(reason=RejectReason.SINK_REJECTED, detail=detail[:1000],
                                    reading_index=index if readings else None, sensor=sensor))
        out.append(Refused(batch.raws[r.event], batch.sources[r.event], problems,
                           fac.group(1) if fac else None))
    return out


def merge(refused: list[Refused]) -> list[Refused]:
    """One dead letter per event when two writes of the same events refused it."""
    by_source: dict[str, Refused] = {}
    for r in refused:
        if r.source in by_source:
            by_source[r.source].problems.extend(r.problems)
        else:
            by_source[r.source] = Refused(r.raw, r.source, list(r.problems), r.facility_id)
    return list(by_source.values())


class BatchWriter:
    """Writes lines to the sink, retrying until stored; isolates what the sink refuses."""

    def __init__(self, sink: Sink, counters: Counters, health: Health, retry_max_s: float,
                 dead_letter_cb: DeadLetterFn, isolate_max_requests: int = 200) -> None:
        self.sink = sink
        self.counters = counters
        self.health = health
        self.retry_max_s = retry_max_s
        self.dead_letter = dead_letter_cb
        self.isolate_max_requests = isolate_max_requests

    async def write(self, lines: list[str], what: str, long_term: bool = False,
                    precision: str = "ms") -> None:
        """One write, retried with backoff while the sink is unavailable (never skipped);
        raises :class:`SinkRejected` when the sink refuses the lines."""
        def _before_sleep(state: Any) -> None:
            self.counters.inc("sink_retries")
            exc = state.outcome.exception() if state.outcome else None
            self.health.problem("sink", f"{self.sink.name} unavailable: {exc}")
            log.warning("writer.sink_unavailable", sink=self.sink.name, batch=what,
                        points=len(lines), attempt=state.attempt_number, error=str(exc))

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(SinkUnavailable),
                wait=wait_exponential(multiplier=0.2, max=self.retry_max_s),
                before_sleep=_before_sleep, reraise=True,
            ):
                with attempt:
                    await self.sink.write(lines, long_term=long_term, precision=precision)
        except SinkRejected:
            self._reachable()  # it answered: up, just refusing these points
            raise
        self._reachable()

    def _reachable(self) -> None:
        if "sink" in self.health.payload()[1]["problems"]:
            log.info("writer.sink_recovered", sink=self.sink.name)
        self.health.ok("sink")

    async def store(self, lines: list[str], what: str, long_term: bool = False,
                    precision: str = "ms") -> None:
        """Store all of ``lines`` or raise :class:`SinkRejected` (nothing to dead-letter:
        the registry's facility points)."""
        await self.write(lines, what, long_term, precision)
        self.counters.inc("stored_points", len(lines))
        self.counters.inc("written_batches")

    async def store_events(self, batch: Batch, what: str, long_term: bool = False,
                           precision: str = "ms", *, readings: bool = False) -> list[Refused]:
        """Store the batch's points; return the events the database refused (after
        isolating them), for the dead-letter topic."""
        if not batch.lines:
            return []
        try:
            await self.store(batch.lines, what, long_term, precision)
            return []
        except SinkRejected as exc:
            error = str(exc)
        self.counters.inc("refused_batches")
        log.warning("writer.batch_refused", sink=self.sink.name, batch=what, events=len(batch),
                    points=len(batch.lines), error=error[:300])

        async def attempt(lines: list[str]) -> None:
            await self.write(lines, what, long_term, precision)

        iso = await isolate(attempt, batch, error, self.isolate_max_requests)
        self.counters.inc("isolation_writes", iso.requests)
        self.counters.inc("stored_points", iso.stored_points)
        self.counters.inc("refused_points", len(batch.lines) - iso.stored_points)
        self.counters.inc("written_batches")
        log.info("writer.batch_isolated", batch=what, events=len(batch),
                 refused_events=len(iso.refused), stored_points=iso.stored_points,
                 requests=iso.requests)
        return refused_events(batch, iso, readings=readings)

    async def send_refused(self, refused: list[Refused]) -> None:
        for r in refused:
            await self.dead_letter(r.raw, r.source, RejectReason.SINK_REJECTED,
                                   r.problems[0].detail, r.problems, r.facility_id)

    async def store_or_dead_letter(self, batch: Batch, what: str, long_term: bool = False,
                                   precision: str = "ms", *, readings: bool = False) -> None:
        await self.send_refused(await self.store_events(batch, what, long_term, precision,
                                                        readings=readings))
