"""What one record does in the processor: a readings event, a tick, a context record.

:class:`Handlers` holds the worker's per-facility working state (loaded from the
``alarm_state`` table on first use, kept in memory while this worker owns the partition),
calls the alarm engine (``engine/``, pure) and produces what it decided: alarm events to
``lifeline.alarms``, district rain to ``lifeline.context``, refusals to
``lifeline.readings.dlq``, and the facility's state to the table — on every alarm
transition at once, periodically as the checkpoint pace allows (checkpoints.py). Every
value is encoded and decoded through ``schemas.codec``. Nothing here knows Faust: the
topics are anything with ``async send(key=, value=)``, the table anything with ``get`` and
item assignment (app.py passes Faust's), so the handlers run in tests without a broker.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from schemas.codec import ALARM_EVENT, CONTEXT_RECORD, DEAD_LETTER, READING_BATCH, TICK
from schemas.common import to_epoch_ms
from schemas.context import ContextRecord, DistrictRain, MemberAlarm, SharedSignal
from schemas.deadletter import DeadLetter, Problem, RejectReason, dead_letter
from services.core import crash
from services.core.health import Counters, Health
from services.core.latency import Budget, Stage
from services.core.logging import get_logger
from services.processor.checkpoints import CheckpointPacer, UnsavedProgress, bound_warning
from services.processor.engine import AlarmEngine, FacilityState, Outcome
from services.processor.engine.context import SharedContext
from services.processor.errors import StateVersionError

log = get_logger("lifeline.processor")

STATE_WARNING_TTL_S = 3600.0  # how long /health shows "saved state unreadable"
TICK_SKEW_S = 300.0
COUNTERS = ("processed_batches", "processed_readings", "processed_packs", "rejected",
            "late_readings",
            "state_saves", "checkpoints_deferred", "readings_coalesced", "context_sent",
            "context_applied", "context_rejected", "state_unreadable")


class Sink(Protocol):
    """A topic: Faust's, or a test's stand-in."""

    def send(self, *, key: bytes | None, value: bytes) -> Awaitable[Any]: ...


class StateTable(Protocol):
    """The ``alarm_state`` table: facility id → its state as compact JSON text."""

    def get(self, key: str) -> str | None: ...

    def __setitem__(self, key: str, value: str) -> None: ...


def parse_tick(value: bytes, now_s: float) -> int | None:
    """A tick's wall clock (epoch ms), or None when it is not a plain integer close to this
    worker's own clock."""
    tick = TICK.decode(value)  # 1-16 ASCII digits
    if tick is None:
        return None
    return tick if abs(tick / 1000 - now_s) <= TICK_SKEW_S else None


def apply_context(context: SharedContext, value: bytes, counters: Counters,
                  src: str) -> Exception | None:
    """One ``lifeline.context`` record applied (a district rule's member is the district
    desk's, not the worker's picture: nothing to apply); the error (counted and logged,
    nothing applied) when it is not a valid context record, None when applied."""
    try:
        rec = CONTEXT_RECORD.decode(value).root
        if isinstance(rec, DistrictRain):
            context.apply(rec.district, to_epoch_ms(rec.ts), rec.raining, rec.mm_per_h)
        elif isinstance(rec, SharedSignal):
            context.put((rec.facility_id, rec.sensor, rec.spec), to_epoch_ms(rec.ts), rec.value)
    except (ValidationError, ValueError, TypeError, OverflowError) as exc:
        counters.inc("context_rejected")
        log.warning("context.rejected", source=src, detail=str(exc)[:300])
        return exc
    counters.inc("context_applied")
    return None


def context_records(out: Outcome) -> list[tuple[str, DistrictRain | SharedSignal | MemberAlarm]]:
    """What other workers need of an outcome, as ``lifeline.context`` records with their key
    (the district): district rain, shared signals, district rules' members — a member
    suppressed by a sensor fault counts as cleared (the fault explains it)."""
    recs: list[tuple[str, DistrictRain | SharedSignal | MemberAlarm]] = []
    for district, ts, mm, cfid, sensor, raining in out.context:
        recs.append((district, DistrictRain(
            district=district, ts=datetime.fromtimestamp(ts / 1000, UTC),
            mm_per_h=round(mm, 3), facility_id=cfid, sensor=sensor, raining=raining)))
    for district, cfid, sensor, spec, ts, v in out.shared:
        recs.append((district, SharedSignal(
            district=district, facility_id=cfid, sensor=sensor, spec=spec,
            ts=datetime.fromtimestamp(ts / 1000, UTC), value=v)))
    for ev, rules in out.members:
        district = ev.district or ""
        recs.append((district, MemberAlarm(
            district=district, facility_id=ev.facility_id, kind=ev.kind, sensor=ev.sensor,
            metric=ev.metric, rule=ev.rule,
            level=None if ev.suppressed_by is not None else ev.level, ts=ev.ts,
            alarm_id=ev.alarm_id, district_rules=list(rules), value=ev.value, unit=ev.unit)))
    return recs


class Handlers:
    """The processor's per-record logic and the working state it needs.

    ``behind(partition)`` answers whether the readings partition still has more than
    ``max_lag_for_ticks`` unprocessed events (gateway-offline checks wait until caught up).
    """

    def __init__(self, engine: AlarmEngine, table: StateTable, health: Health, *,
                 alarms: Sink, dlq: Sink, context: Sink, pacer: CheckpointPacer,
                 behind: Callable[[int], bool]) -> None:
        self.engine = engine  # replaced by a registry reload (app.py)
        self.table = table
        self.health = health
        self.counters = health.counters
        self.alarms, self.dlq, self.context = alarms, dlq, context
        self.pacer = pacer
        self.unsaved = UnsavedProgress()
        self.behind = behind
        self.cache: dict[str, FacilityState] = {}
        self.owner: dict[str, int] = {}  # facility -> readings partition
        self.position: dict[int, int] = {}  # readings partition -> offset done
        # readings partition -> how far behind the wall clock its stream is being processed
        # (now - received_at of the last report processed), ms
        self.delay: dict[int, int] = {}
        self._bound_checked = 0.0
        # The latency budget (services/core/latency.py): ingest's receipt → evaluation
        # starts, the evaluation, and an alarm's produce → the broker's ack.
        self.budget = Budget(self.counters)
        self._wait = self.budget.stage("processor.wait")
        self._evaluate = self.budget.stage("processor.evaluate")
        self._produce = self.budget.stage("processor.alarm_produce")

    # ------------------------------------------------------------------ records
    async def reading(self, key: bytes | None, value: bytes, src: str, partition: int,
                      offset: int) -> None:
        """One ``lifeline.readings`` event — one batch, or a pack of them, one per line
        (services/ingest/pack.py) — each batch evaluated, its alarms and state produced; a
        batch that is not one is dead-lettered alone (named ``<source>#<line>``)."""
        self.position[partition] = offset
        pieces = READING_BATCH.unpack(value)
        if len(pieces) == 1:
            await self._batch(key, value, src, partition)
            return
        self.counters.inc("processed_packs")
        for i, piece in enumerate(pieces):
            await self._batch(key, piece, f"{src}#{i}", partition)

    async def _batch(self, key: bytes | None, value: bytes, src: str, partition: int) -> None:
        try:
            batch = READING_BATCH.decode(value)
        except ValidationError as exc:
            await self.reject(key, value, src, [Problem(
                reason=RejectReason.UNDECODABLE_EVENT,
                detail=f"not a ReadingBatch: {exc.errors()[0]['msg']}"[:300])])
            return
        key = batch.facility_id.encode()  # a pack's record key is its first facility's
        delay = self.delay[partition] = max(0, int(time.time() * 1000)
                                            - int(batch.received_at.timestamp() * 1000))
        self._wait.observe(delay / 1000)
        fid = batch.facility_id
        fs = self.facility_state(fid, partition)
        saved_ts = fs.checkpoint_ts
        t0 = time.perf_counter()
        out = self.engine.evaluate(batch, fs)
        spent = time.perf_counter() - t0
        self._evaluate.observe(spent)
        self.counters.inc("engine_us", int(spent * 1e6))
        await self.publish(fid, fs, out, saved_ts)
        if out.late:
            self.counters.inc("late_readings", len(out.late))
            await self.reject(key, value, src, out.late)
        self.counters.inc("processed_batches")
        self.counters.inc("processed_readings", len(batch.readings))

    async def tick(self, key: bytes | None, value: bytes, src: str, partition: int) -> None:
        """One ``lifeline.ticks`` record: the wall-clock checks (gateway offline) of every
        facility of the partition."""
        tick = parse_tick(value, time.time())
        if tick is None:
            # Anyone who can write the topic must not be able to declare every gateway
            # offline (a far-future tick) or kill the agent (not a number).
            await self.reject(key, value, src, [Problem(
                reason=RejectReason.UNDECODABLE_EVENT,
                detail=f"not a tick within {TICK_SKEW_S:g}s of this worker's clock: "
                       f"{value[:40]!r}")])
            return
        if self.behind(partition):
            # Catching up after downtime: the readings waiting in Kafka would show every
            # gateway as silent. Judge silence only once caught up.
            self.counters.inc("ticks_skipped_behind")
            return
        # Silence is judged on the partition's own clock: a gateway is offline when it is
        # silent compared with the reports being processed now, so a worker running behind
        # (overload, catching up) does not declare everyone offline.
        now_ms = tick - self.delay.get(partition, 0)
        engine = self.engine
        for fid, part in list(self.owner.items()):
            if part == partition:
                fs = self.cache[fid]
                saved_ts = fs.checkpoint_ts
                await self.publish(fid, fs, engine.tick(fid, fs, now_ms), saved_ts)

    def revoked(self, partitions: set[int]) -> None:
        """Readings partitions another worker now owns: their facilities are forgotten
        (reloaded from the table if they come back)."""
        for fid in [f for f, p in self.owner.items() if p in partitions]:
            self.owner.pop(fid, None)
            self.cache.pop(fid, None)

    # ------------------------------------------------------------------ parts
    def facility_state(self, fid: str, partition: int) -> FacilityState:
        fs = self.cache.get(fid)
        if fs is None:
            saved = self.table.get(fid)
            try:
                fs = FacilityState.loads(saved)
            except (StateVersionError, ValueError, KeyError, TypeError, IndexError) as exc:
                # A state this release cannot read (a newer format, damage): start the
                # facility afresh rather than stop the partition; say so loudly.
                self.counters.inc("state_unreadable")
                # An event to see, not a readiness failure: the facility runs afresh.
                self.health.warning(f"state:{fid}", f"saved state unreadable, started fresh: "
                                    f"{exc}"[:300], ttl_s=STATE_WARNING_TTL_S)
                log.error("processor.state_unreadable", facility_id=fid, error=str(exc)[:300])
                fs = FacilityState()
            self.cache[fid] = fs
            self.owner[fid] = partition
        return fs

    async def publish(self, fid: str, fs: FacilityState, out: Outcome, saved_ts: int) -> None:
        """Produce what the engine decided for ``fid``; ``saved_ts`` is the facility's
        ``checkpoint_ts`` before the engine ran (the last save)."""
        if out.context or out.shared or out.members:
            await self._share(out)
        if out.coalesced:
            self.counters.inc("readings_coalesced", out.coalesced)
        sent = []
        for ev in out.events:
            t_send = time.monotonic()
            fut = await self.alarms.send(key=fid.encode(), value=ALARM_EVENT.encode(ev))
            if isinstance(fut, asyncio.Future):
                fut.add_done_callback(functools.partial(_acked, self._produce, t_send))
            sent.append(fut)
            self.counters.inc(f"alarm_events.{ev.event}")
            log.info(f"alarm.{ev.event.value}", facility_id=fid, sensor=ev.sensor, rule=ev.rule,
                     level=ev.level, category=ev.category, alarm_id=ev.alarm_id,
                     silenced=ev.silenced, suppressed_by=ev.suppressed_by,
                     held_by_fault=ev.held_by_fault, entry=ev.entry is not None,
                     event_time=ev.ts.isoformat())
        if sent and crash.armed() is not None:
            # A test's crash point means "the alarms are on the broker": wait for the acks
            # (never in operation, where nothing is armed and sends stay asynchronous).
            for fut in sent:
                if isinstance(fut, asyncio.Future):
                    await fut
            crash.crash_point("processor.after_emit")
        now = time.monotonic()
        if out.save or (out.checkpoint and self.pacer.allow(
                now, len(self.cache), self.engine.policy.checkpoint_interval_s)):
            self.unsaved.observe(now, UnsavedProgress.of(fs, saved_ts))
            fs.mark_saved()
            self.table[fid] = fs.dumps()
            self.counters.inc("state_saves")
        elif out.checkpoint:
            self.unsaved.observe(now, UnsavedProgress.of(fs, saved_ts))
            self.counters.inc("checkpoints_deferred")
        if now - self._bound_checked >= 1.0:
            self._bound_checked = now
            self.check_bound(now)

    async def _share(self, out: Outcome) -> None:
        """What other workers need of this outcome, to ``lifeline.context`` (key = district)."""
        for district, rec in context_records(out):
            await self.context.send(key=district.encode(),
                                    value=CONTEXT_RECORD.encode(ContextRecord(rec)))
            self.counters.inc("context_sent")

    def bound_s(self, now: float | None = None) -> float:
        """The most event-time progress (s) a crash could have lost in the last minute."""
        ms = self.unsaved.bound_ms(time.monotonic() if now is None else now)
        return round(ms / 1000, 1)

    def check_bound(self, now: float | None = None) -> None:
        """Warn on /health while the measured bound exceeds twice the policy's interval."""
        text = bound_warning(self.bound_s(now), self.engine.policy.checkpoint_interval_s,
                             self.pacer.rate, self.pacer.ceiling)
        if text is None:
            self.health.ok("checkpoints")
        else:
            self.health.warning("checkpoints", text)

    async def reject(self, key: bytes | None, raw_value: bytes, src: str,
                     problems: list[Problem]) -> None:
        self.counters.inc("rejected")
        fid = key.decode(errors="replace") if key else None
        log.warning("processor.rejected", source=src, reason=str(problems[0].reason),
                    detail=problems[0].detail, facility_id=fid)
        dl: DeadLetter = dead_letter(problems=problems, service="processor", source=src,
                                     payload=raw_value, received_at=datetime.now(UTC),
                                     keep_bytes=65536, facility_id=fid)
        await self.dlq.send(key=key, value=DEAD_LETTER.encode(dl))


def source(topic: str, partition: int, offset: int) -> str:
    """Where a record came from, as dead letters name it."""
    return f"kafka:{topic}[{partition}]@{offset}"


def _acked(stage: Stage, sent_at: float, _fut: asyncio.Future[Any]) -> None:
    stage.observe(time.monotonic() - sent_at)
