"""What one record does in the notifier: an alarm event, an acknowledgement, an on-call
record (a delivery outcome) or a tick, turned by the escalation engine
(services.notifier.escalation) into saved state, audit records and notifications.

No Faust here: :class:`Handlers` is given the state table (a mapping), a function that
sends an audit record to ``lifeline.oncall``, the dead letters and a function that hands a
notification to delivery; services.notifier.app wires it to the agent.

Trust: acknowledgements are applied only when their signature verifies
(services.notifier.acks); any other is recorded as ``ignored``, counted (``acks_forged``),
logged with its source and dead-lettered (``forged``). No record on the input topics stops
the agent: what fails its contract is counted (``rejected``), what the engine cannot handle
is counted (``record_errors``), both logged with ``topic[partition]@offset`` and
dead-lettered to ``lifeline.readings.dlq`` with their bytes and reason
(``undecodable_event``, ``invalid_contract``, ``unprocessable``;
services.core.dlq.InternalDeadLetters, counted ``dead_lettered``). A tick's value is not
read (the notifier's own clock drives escalation), so ticks are never dead-lettered.

Saved state: each facility's :class:`~services.notifier.escalation.FacilityOnCall` is one
table entry (JSON with its format version, checked on reading); one that cannot be read is
logged (``oncall.state_unreadable``) and the facility starts afresh.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from schemas import codec
from schemas.deadletter import RejectReason
from schemas.oncall import AckRequest, OnCallRecord, RecordType, record_id_for
from services.core import topics
from services.core.dlq import InternalDeadLetters, error_detail, kafka_source
from services.core.health import Counters, Health
from services.core.logging import get_logger
from services.notifier.acks import AckSigner
from services.notifier.errors import OnCallStateError
from services.notifier.escalation import (
    Escalator,
    FacilityOnCall,
    Notification,
    Outcome,
    alarm_fields,
    unrouted,
)

log = get_logger("lifeline.notifier")

OUTCOMES = (RecordType.DELIVERED, RecordType.FAILED)
UNROUTED_LISTED = 10  # alarms named in the routing warning

Emit = Callable[[OnCallRecord], Awaitable[None]]
Submit = Callable[[Notification], None]


@dataclass(frozen=True)
class Where:
    """Where a record came from (a Faust message's topic, partition, offset and key)."""

    topic: str
    partition: int
    offset: int | None = None
    key: bytes | None = None

    @property
    def source(self) -> str:
        return kafka_source(self.topic, self.partition, self.offset)

    @property
    def facility_id(self) -> str | None:
        return self.key.decode(errors="replace") if self.key else None


def load_state(fid: str, saved: str | None, counters: Counters) -> FacilityOnCall | None:
    """A facility's saved on-call state; None when it cannot be read (a newer notifier's
    format, or damaged): logged as ``oncall.state_unreadable``, and the facility starts
    afresh rather than stopping the agent — and with it every other facility's paging."""
    try:
        return FacilityOnCall.from_json(json.loads(saved) if saved else None)
    except (OnCallStateError, ValueError) as exc:  # ValueError: not JSON at all
        counters.inc("state_unreadable")
        log.error("oncall.state_unreadable", facility_id=fid, error=str(exc)[:300],
                  action="starting this facility's on-call state afresh")
        return None


def dump_state(fs: FacilityOnCall) -> str:
    """A facility's state as the table keeps it."""
    return json.dumps(fs.to_json(), separators=(",", ":"))


def routing_text(alarms: list[tuple[str, str, str]]) -> str:
    """The routing warning: ``alarms`` are (facility, district, level) of active alarms
    nobody is routed to."""
    shown = ", ".join(f"{fid} (district {d}, {lv})" for fid, d, lv in alarms[:UNROUTED_LISTED])
    more = f" and {len(alarms) - UNROUTED_LISTED} more" if len(alarms) > UNROUTED_LISTED else ""
    return (f"{len(alarms)} active alarm(s) nobody is routed to: {shown}{more} — add a route "
            "to the on-call file (reloaded while running)")


class Handlers:
    """The notifier's per-record work on the facilities this worker owns.

    ``cache`` holds the states in use (loaded from ``table`` on a facility's first record,
    written back to it whenever the engine says so), ``unrouted`` each facility's active
    alarms nobody is routed to, ``resumed`` the partitions whose pending work is requeued.
    """

    def __init__(self, escalator: Escalator, table: MutableMapping[str, Any], health: Health,
                 ack_signer: AckSigner, dead: InternalDeadLetters, emit: Emit,
                 submit: Submit) -> None:
        self.escalator = escalator
        self.table = table
        self.health = health
        self.counters = health.counters
        self.ack_signer = ack_signer
        self.dead = dead
        self.emit = emit
        self.submit = submit
        self.cache: dict[str, FacilityOnCall] = {}
        self.unrouted: dict[str, list[tuple[str, str, str]]] = {}
        self.resumed: set[int] = set()

    # ------------------------------------------------------------------ state
    def load(self, fid: str, saved: str | None) -> FacilityOnCall | None:
        return load_state(fid, saved, self.counters)

    def state(self, fid: str, partition: int) -> FacilityOnCall:
        fs = self.cache.get(fid)
        if fs is None:
            fs = self.cache[fid] = self.load(fid, self.table.get(fid)) or FacilityOnCall()
        fs.partition = partition
        return fs

    async def apply(self, fid: str, fs: FacilityOnCall, out: Outcome) -> None:
        if out.save:
            # Saved before anything is sent: a notification is "pending" in the changelog
            # before a channel sees it, so a restart re-sends it rather than losing it.
            self.table[fid] = dump_state(fs)
        for rec in out.records:
            await self.emit(rec)
            if rec.type is RecordType.ESCALATED:
                self.counters.inc("escalations")
            log.info(f"oncall.{rec.type.value}", facility_id=fid, alarm_id=rec.alarm_id,
                     person=rec.person, team=rec.team, step=rec.step, repeat=rec.repeat,
                     detail=rec.detail[:200])
        for note in out.notifications:
            self.counters.inc("notifications")
            self.submit(note)
        self.routing(fid, fs)

    def routing(self, fid: str, fs: FacilityOnCall | None) -> None:
        """The ``routing`` warning (200, "degraded": the page stays in service) while an
        active alarm of a facility this worker owns is routed to nobody; gone when the alarm
        clears or a reloaded file routes it (the next tick reconciles and pages it)."""
        alarms = [(fid, str(ep.alarm.get("district")), str(ep.alarm.get("level")))
                  for ep in (unrouted(fs) if fs is not None else [])]
        if alarms:
            self.unrouted[fid] = alarms
        elif self.unrouted.pop(fid, None) is None:
            return
        every = [a for f in sorted(self.unrouted) for a in self.unrouted[f]]
        if every:
            self.health.warning("routing", routing_text(every))
        else:
            self.health.ok("routing")

    # ------------------------------------------------------------------ records
    async def alarm_event(self, value: bytes, where: Where, now_ms: int) -> None:
        ev = codec.ALARM_EVENT.decode(value)
        self.counters.inc("alarm_events")
        fs = self.state(ev.facility_id, where.partition)
        await self.apply(ev.facility_id, fs, self.escalator.on_alarm(fs, ev, now_ms))

    async def ack(self, value: bytes, where: Where, now_ms: int) -> None:
        req = codec.ACK_REQUEST.decode(value)
        why = self.ack_signer.problem(req)
        if why is not None:
            await self.forged(req, why, value, where, now_ms)
            return
        self.counters.inc("acks")
        fs = self.state(req.facility_id, where.partition)
        await self.apply(req.facility_id, fs, self.escalator.on_ack(fs, req, now_ms))

    async def oncall_record(self, value: bytes, where: Where, now_ms: int) -> None:
        """A record of the notifier's own audit trail: delivery outcomes update the state
        (the table learns "delivered" inside the stream); every other type is history."""
        rec = codec.ONCALL_RECORD.decode(value)
        if rec.type in OUTCOMES:
            fs = self.state(rec.facility_id, where.partition)
            await self.apply(rec.facility_id, fs, self.escalator.on_outcome(fs, rec, now_ms))

    async def forged(self, req: AckRequest, why: str, value: bytes, where: Where,
                     now_ms: int) -> None:
        """An acknowledgement whose signature does not verify: recorded, never applied.
        It touches no state (a flood of forged records creates no table entries)."""
        self.counters.inc("acks_forged")
        src = where.source
        fs = self.cache.get(req.facility_id)
        ep = fs.episodes.get(req.alarm_id) if fs is not None else None
        rec = OnCallRecord(
            record_id=record_id_for(RecordType.IGNORED, req.alarm_id, "forged", src),
            type=RecordType.IGNORED, ts=datetime.fromtimestamp(now_ms / 1000, UTC),
            alarm_id=req.alarm_id, facility_id=req.facility_id, channel=req.via,
            **(alarm_fields(ep.alarm) if ep is not None else {}),
            detail=f"{why}: not applied (claims {req.action.value} by {req.by!r} via "
                   f"{req.via}; {src})"[:500])
        await self.emit(rec)
        log.warning("oncall.ack_forged", source=src, reason=why, facility_id=req.facility_id,
                    alarm_id=req.alarm_id, claimed_by=req.by, via=req.via)
        await self.dead.record(value, RejectReason.FORGED, f"{why} (claims {req.action.value} "
                               f"by {req.by!r} via {req.via} for alarm {req.alarm_id})",
                               topic=where.topic, partition=where.partition,
                               offset=where.offset, key=where.key,
                               facility_id=req.facility_id)

    async def record(self, value: bytes, where: Where, now_ms: int) -> None:
        """One record of ``lifeline.alarms``, ``lifeline.acks`` or ``lifeline.oncall``;
        never raises for the record: what cannot be read or handled is dead-lettered."""
        try:
            if where.topic == topics.ALARMS:
                await self.alarm_event(value, where, now_ms)
            elif where.topic == topics.ACKS:
                await self.ack(value, where, now_ms)
            else:
                await self.oncall_record(value, where, now_ms)
        except ValidationError as exc:
            self.counters.inc("rejected")
            log.warning("notifier.rejected", source=where.source,
                        error=str(exc.errors()[0]["msg"])[:300], facility_id=where.facility_id)
            await self.dead.undecodable(value, exc, topic=where.topic,
                                        partition=where.partition, offset=where.offset,
                                        key=where.key)
        except (OnCallStateError, ValueError, TypeError, KeyError, AttributeError,
                IndexError) as exc:
            # A record the contracts accept but the engine cannot handle: one bad record
            # must not stop the agent, and with it every facility's paging.
            self.counters.inc("record_errors")
            log.error("notifier.record_failed", source=where.source,
                      error=f"{type(exc).__name__}: {exc}"[:300], facility_id=where.facility_id)
            await self.dead.record(value, RejectReason.UNPROCESSABLE, error_detail(exc),
                                   topic=where.topic, partition=where.partition,
                                   offset=where.offset, key=where.key)

    # ------------------------------------------------------------------ ticks, partitions
    async def tick(self, partition: int, now_ms: int) -> None:
        """A wall-clock tick of one owned partition: resume it on its first tick, then let
        every open escalation of its facilities move on."""
        if partition not in self.resumed:
            await self.resume(partition, now_ms)
        for fid, fs in list(self.cache.items()):
            if fs.partition == partition and fs.episodes:
                try:
                    await self.apply(fid, fs, self.escalator.tick(fs, now_ms))
                except (OnCallStateError, ValueError, TypeError, KeyError, AttributeError,
                        IndexError) as exc:
                    self.tick_failed(fid, exc)

    async def resume(self, partition: int, now_ms: int) -> None:
        """After (re)assignment: load this partition's facilities, reconcile them with the
        on-call file as it is now (an edit may have removed a team or a person), and
        requeue what is pending (the table holds it; the deliverer drops ids it already
        has)."""
        for fid, saved in list(self.table.items()):
            if fid in self.cache or not saved:
                continue
            fs = self.load(fid, saved)  # unreadable: afresh when the facility's next event comes
            if fs is not None and fs.partition == partition:
                self.cache[fid] = fs
        for fid, fs in list(self.cache.items()):
            if fs.partition == partition:
                try:
                    await self.apply(fid, fs, self.escalator.reconcile(fs, now_ms))
                except (OnCallStateError, ValueError, TypeError, KeyError, AttributeError,
                        IndexError) as exc:
                    self.tick_failed(fid, exc)
                    continue
                for note in fs.pending():
                    self.submit(note)
        self.resumed.add(partition)

    def tick_failed(self, fid: str, exc: Exception) -> None:
        """One facility's escalation could not move on its tick: the others do, the agent
        lives, the facility's next record or tick tries again; said on /health for an hour
        (a tick is not a record to dead-letter: its value is only the time)."""
        self.counters.inc("tick_errors")
        detail = f"{type(exc).__name__}: {exc}"[:300]
        log.error("notifier.tick_failed", facility_id=fid, error=detail)
        self.health.warning("escalation", f"facility {fid}: its escalation failed on a tick "
                                          f"({detail})", ttl_s=3600)

    def revoked(self, partitions: set[int]) -> None:
        """Partitions moved to another worker: forget their facilities (it owns them, and
        warns about their routing, now)."""
        for fid in [f for f, fs in self.cache.items() if fs.partition in partitions]:
            del self.cache[fid]
            self.routing(fid, None)
        self.resumed -= partitions

    # ------------------------------------------------------------------ the page's view
    def episode(self, alarm_id: str, fid: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """What the acknowledgement page shows of an alarm: the alarm and its status (from
        this worker's state, or the table when it does not own the facility)."""
        fs = self.cache.get(fid)
        if fs is None:
            saved = self.table.get(fid) if fid in self.table else None
            fs = self.load(fid, saved) if saved else None
        if fs is None:
            return None, {}
        ep = fs.episodes.get(alarm_id)
        if ep is None:
            closed = alarm_id in fs.closed
            return None, {"open": not closed,
                          "status": "告警已结束 This alarm is over." if closed else ""}
        status = ""
        if ep.resolved:
            status = f"已处理 Resolved by {ep.acked_by}"
        elif ep.acked_by:
            status = f"已确认 Acknowledged by {ep.acked_by}"
        return ep.alarm, {"status": status, "open": not ep.resolved, "used": ep.used_tokens,
                          "recipients": ep.recipients}

    def gauges(self) -> dict[str, Callable[[], float]]:
        return {
            "episodes_open": lambda: sum(len(fs.episodes) for fs in self.cache.values()),
            "pending": lambda: sum(len(ep.pending) for fs in self.cache.values()
                                   for ep in fs.episodes.values())}
