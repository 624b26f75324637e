"""The escalation engine: pure, deterministic, and clocked by its caller.

Given a facility's on-call state, it turns alarm events, acknowledgements, delivery
outcomes and wall-clock ticks into notifications to send and audit records to keep.
It never sends anything and never reads the clock: the Faust agent passes ``now_ms`` and
stores the state in a changelog-backed table, tests pass a clock of their own.

Exactly one page per episode, step and repeat: a notification's id is derived from
them (:func:`schemas.oncall.notification_id_for`); it is stored as *pending* before it is
handed to delivery and as *delivered* when the delivery outcome comes back through Kafka.
Redelivered alarm events are recognised by their event id, acknowledgements by the alarm's
state, so Kafka's at-least-once delivery never pages twice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.alarm import AlarmEvent, AlarmEventType
from schemas.kinds import AlarmLevel
from schemas.oncall import (
    AckAction,
    AckRequest,
    OnCallConfig,
    OnCallRecord,
    RecordType,
    Route,
    notification_id_for,
    record_id_for,
)
from services.notifier.rota import resolve_target

SEEN_EVENTS = 32  # event ids remembered per episode (redeliveries come in order)
CLOSED_KEEP_MS = 86_400_000  # a closed episode's id is remembered this long


@dataclass
class Chain:
    team: str
    step: int
    repeat: int
    next_at_ms: int | None  # wall clock of the next escalation; None: stopped


@dataclass
class Notification:
    """One message to one person, for one alarm (grouping happens at delivery)."""

    notification_id: str
    kind: str  # page | repeat | cleared | update
    alarm_id: str
    facility_id: str
    team: str
    step: int
    repeat: int
    person: str
    channels: list[str]
    created_ms: int
    alarm: dict[str, Any]  # what the message shows: level, sensor, rule, value, message …


@dataclass
class Episode:
    alarm_id: str
    alarm: dict[str, Any]
    started_ms: int
    last_event_ms: int
    chains: list[Chain] = field(default_factory=list)
    acked_by: str | None = None
    acked_ms: int | None = None
    resolved: bool = False
    cleared: bool = False
    seen: list[str] = field(default_factory=list)
    used_tokens: list[str] = field(default_factory=list)
    recipients: list[list[Any]] = field(default_factory=list)  # [person, channels] paged
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> Notification
    done: list[str] = field(default_factory=list)  # notification ids delivered or failed

    @property
    def level(self) -> AlarmLevel | None:
        lv = self.alarm.get("level")
        return AlarmLevel(lv) if lv else None


@dataclass
class FacilityOnCall:
    """Everything the notifier keeps for one facility (one table entry)."""

    partition: int = -1
    episodes: dict[str, Episode] = field(default_factory=dict)
    closed: dict[str, int] = field(default_factory=dict)  # alarm id -> closed at (ms)

    def to_json(self) -> dict[str, Any]:
        return {"partition": self.partition, "closed": self.closed,
                "episodes": {k: asdict(v) for k, v in self.episodes.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> FacilityOnCall:
        if not data:
            return cls()
        eps = {}
        for k, v in data.get("episodes", {}).items():
            chains = [Chain(**c) for c in v.pop("chains", [])]
            eps[k] = Episode(chains=chains, **v)
        return cls(partition=data.get("partition", -1), episodes=eps,
                   closed=dict(data.get("closed", {})))

    def pending(self) -> list[Notification]:
        return [Notification(**n) for ep in self.episodes.values() for n in ep.pending.values()]


@dataclass
class Outcome:
    notifications: list[Notification] = field(default_factory=list)
    records: list[OnCallRecord] = field(default_factory=list)
    save: bool = False


def _iso(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _summary(ev: AlarmEvent, district: str) -> dict[str, Any]:
    return {"facility_id": ev.facility_id, "kind": ev.kind.value, "district": district,
            "sensor": ev.sensor, "metric": ev.metric.value if ev.metric else None,
            "rule": ev.rule, "category": ev.category.value,
            "level": ev.level.value if ev.level else None, "value": ev.value,
            "threshold": ev.threshold, "unit": ev.unit, "message": ev.message,
            "event": ev.event.value, "ts": ev.ts.isoformat()}


def alarm_fields(alarm: dict[str, Any]) -> dict[str, Any]:
    """The alarm's identity as audit-record fields (the writer's tags)."""
    return {"sensor": alarm.get("sensor"), "rule": alarm.get("rule"),
            "category": alarm.get("category"), "facility_kind": alarm.get("kind")}


def _matches(route: Route, alarm: dict[str, Any]) -> bool:
    m = route.match
    if m.district is not None and alarm["district"] not in m.district:
        return False
    if m.kind is not None and alarm["kind"] not in m.kind:
        return False
    if m.facility is not None and alarm["facility_id"] not in m.facility:
        return False
    if m.category is not None and alarm["category"] not in m.category:
        return False
    if m.min_level is not None:
        level = alarm.get("level")
        if level is None or AlarmLevel(level).severity < m.min_level.severity:
            return False
    return True


def route(cfg: OnCallConfig, alarm: dict[str, Any]) -> list[str]:
    """Teams an alarm goes to: the first matching route, and the next ones while a
    matching route says ``continue``."""
    teams: list[str] = []
    for r in cfg.routes:
        if _matches(r, alarm):
            if r.team not in teams:
                teams.append(r.team)
            if not r.continue_:
                break
    return teams


class Escalator:
    def __init__(self, cfg: OnCallConfig, districts: dict[str, str]) -> None:
        self.cfg = cfg
        self.districts = districts

    # ------------------------------------------------------------------ helpers

    def _record(self, type_: RecordType, ep_or_alarm: Episode | str, facility_id: str,
                now_ms: int, *parts: object, **fields: Any) -> OnCallRecord:
        alarm_id = ep_or_alarm.alarm_id if isinstance(ep_or_alarm, Episode) else ep_or_alarm
        rid = record_id_for(type_, alarm_id, *parts)
        if isinstance(ep_or_alarm, Episode):
            fields = {**alarm_fields(ep_or_alarm.alarm), **fields}
        return OnCallRecord(record_id=rid, type=type_, ts=_iso(now_ms), alarm_id=alarm_id,
                            facility_id=facility_id, **fields)

    def _page(self, ep: Episode, chain: Chain, kind: str, now_ms: int, out: Outcome) -> None:
        team = self.cfg.team(chain.team)
        step = team.escalation[chain.step]
        person = resolve_target(self.cfg, team, step.notify, _iso(now_ms))
        fid = ep.alarm["facility_id"]
        level = ep.level
        tag = f"{kind}-{level.value}" if level else kind
        nid = notification_id_for(ep.alarm_id, f"{chain.team}|{tag}", chain.step, chain.repeat)
        chain.next_at_ms = now_ms + int(step.wait_s * 1000)
        if nid in ep.pending or nid in ep.done:
            return  # already decided (a redelivered event or tick): never page twice
        if person is None:
            # A gap in the rota: say so and move on to the next step at once.
            out.records.append(self._record(
                RecordType.FAILED, ep, fid, now_ms, nid, "nobody", notification_id=nid,
                kind=kind, team=chain.team, step=chain.step, repeat=chain.repeat, level=level,
                ok=False, detail=f"nobody on duty for {step.notify}"))
            ep.done.append(nid)
            if chain.step < len(team.escalation) - 1:
                chain.repeat = step.repeat  # no point repeating to nobody: next step at once
                chain.next_at_ms = now_ms
            return
        n = Notification(nid, kind, ep.alarm_id, fid, chain.team, chain.step, chain.repeat,
                         person, list(step.channels), now_ms, dict(ep.alarm))
        ep.pending[nid] = asdict(n)
        if [person, list(step.channels)] not in ep.recipients:
            ep.recipients.append([person, list(step.channels)])
        out.notifications.append(n)
        out.records.append(self._record(
            RecordType.NOTIFICATION, ep, fid, now_ms, nid, notification_id=nid, kind=kind,
            team=chain.team, step=chain.step, repeat=chain.repeat, person=person, level=level,
            detail=f"{step.notify} via {', '.join(step.channels)}"))
        out.save = True

    def _stop(self, ep: Episode, why: str, now_ms: int, out: Outcome) -> None:
        for chain in ep.chains:
            if chain.next_at_ms is not None:
                chain.next_at_ms = None
                out.records.append(self._record(
                    RecordType.STOPPED, ep, ep.alarm["facility_id"], now_ms, chain.team, why,
                    team=chain.team, step=chain.step, repeat=chain.repeat, level=ep.level,
                    detail=why))
        out.save = True

    def _maybe_close(self, fs: FacilityOnCall, ep: Episode, now_ms: int) -> None:
        if ep.cleared and not ep.pending:
            fs.episodes.pop(ep.alarm_id, None)
            fs.closed[ep.alarm_id] = now_ms

    # ------------------------------------------------------------------ inputs

    def on_alarm(self, fs: FacilityOnCall, ev: AlarmEvent, now_ms: int) -> Outcome:
        out = Outcome()
        if ev.alarm_id in fs.closed:
            return out
        ep = fs.episodes.get(ev.alarm_id)
        if ep is not None and ev.event_id in ep.seen:
            return out  # redelivered
        ending = ev.event is AlarmEventType.CLEARED or (
            ev.event is AlarmEventType.SETTLED and ev.level is None)
        quiet = ev.silenced or ev.suppressed_by is not None
        if ep is None:
            if ending or quiet or ev.level is None or ev.category.value not in self.cfg.page_categories:
                return out  # nothing to page: recorded by the writer, not the on-call's business
            alarm = _summary(ev, self.districts.get(ev.facility_id, "unknown"))
            ep = fs.episodes[ev.alarm_id] = Episode(ev.alarm_id, alarm, now_ms,
                                                    int(ev.ts.timestamp() * 1000))
            ep.seen.append(ev.event_id)
            teams = route(self.cfg, alarm)
            if not teams:
                out.records.append(self._record(RecordType.UNROUTED, ep, ev.facility_id, now_ms,
                                                level=ev.level, detail="no route matches"))
                ep.cleared = True  # nothing to follow up
                self._maybe_close(fs, ep, now_ms)
                out.save = True
                return out
            for tid in teams:
                chain = Chain(tid, self.cfg.team(tid).first_step(ev.level), 0, None)
                ep.chains.append(chain)
                self._page(ep, chain, "page", now_ms, out)
            out.save = True
            return out

        ep.seen = [*ep.seen, ev.event_id][-SEEN_EVENTS:]
        ep.last_event_ms = max(ep.last_event_ms, int(ev.ts.timestamp() * 1000))
        old = ep.level
        ep.alarm = {**ep.alarm, **_summary(ev, ep.alarm["district"])}
        out.save = True
        if ending:
            ep.cleared = True
            self._stop(ep, "cleared", now_ms, out)
            for i, (person, channels) in enumerate(ep.recipients):
                nid = notification_id_for(ep.alarm_id, f"cleared|{person}", 0, i)
                if nid in ep.pending or nid in ep.done:
                    continue
                n = Notification(nid, "cleared", ep.alarm_id, ev.facility_id, "", 0, 0, person,
                                 list(channels), now_ms, dict(ep.alarm))
                ep.pending[nid] = asdict(n)
                out.notifications.append(n)
                out.records.append(self._record(
                    RecordType.NOTIFICATION, ep, ev.facility_id, now_ms, nid, notification_id=nid,
                    kind="cleared", person=person, detail="alarm cleared"))
            self._maybe_close(fs, ep, now_ms)
            return out
        worse = (ev.level is not None and old is not None and ev.level.severity > old.severity)
        if worse and not quiet and not ep.resolved:
            # A worse level is news: it re-opens an acknowledged alarm and restarts every
            # chain at least at the step the new level starts at.
            if ep.acked_by is not None:
                ep.acked_by, ep.acked_ms = None, None
            for chain in ep.chains:
                chain.step = max(chain.step, self.cfg.team(chain.team).first_step(ev.level))
                chain.repeat = 0
                self._page(ep, chain, "page", now_ms, out)
        return out

    def on_ack(self, fs: FacilityOnCall, req: AckRequest, now_ms: int) -> Outcome:
        out = Outcome()
        ep = fs.episodes.get(req.alarm_id)

        def ignored(why: str) -> Outcome:
            out.records.append(self._record(
                RecordType.IGNORED, req.alarm_id, req.facility_id, now_ms, req.by, req.token_id,
                req.action, int(req.ts.timestamp() * 1000), person=req.by, detail=why))
            return out

        if ep is None:
            return ignored("unknown or closed alarm")
        if req.token_id and req.token_id in ep.used_tokens:
            return ignored("link already used")
        if req.token_id:
            ep.used_tokens.append(req.token_id)
            out.save = True
        if ep.resolved or (ep.acked_by is not None and req.action is AckAction.ACKNOWLEDGE):
            return ignored(f"already {'resolved' if ep.resolved else 'acknowledged'} by "
                           f"{ep.acked_by}")
        ep.acked_by, ep.acked_ms = req.by, now_ms
        resolved = req.action is AckAction.RESOLVE
        ep.resolved = resolved
        # Written beside the alarm's state in InfluxDB: after its latest event, so last()
        # shows it even when event time runs ahead of the wall clock (replays, simulators).
        state_ts = max(now_ms, ep.last_event_ms + 1)
        out.records.append(self._record(
            RecordType.RESOLVED if resolved else RecordType.ACKNOWLEDGED, ep, req.facility_id,
            now_ms, req.by, req.action, person=req.by, level=ep.level,
            detail=req.comment, state_ts=_iso(state_ts)))
        self._stop(ep, f"{req.action.value}d by {req.by}", now_ms, out)
        return out

    def on_outcome(self, fs: FacilityOnCall, rec: OnCallRecord, now_ms: int) -> Outcome:
        """A delivery outcome came back through Kafka: the notification is done."""
        out = Outcome()
        ep = fs.episodes.get(rec.alarm_id)
        nid = rec.notification_id
        if ep is None or nid is None or nid not in ep.pending:
            return out
        n = ep.pending.pop(nid)
        ep.done.append(nid)
        out.save = True
        if rec.type is RecordType.FAILED and n["kind"] in ("page", "repeat"):
            for chain in ep.chains:
                if (chain.team == n["team"] and chain.step == n["step"]
                        and chain.repeat == n["repeat"] and chain.next_at_ms is not None):
                    chain.next_at_ms = now_ms  # nobody could be reached: escalate at once
        self._maybe_close(fs, ep, now_ms)
        return out

    def tick(self, fs: FacilityOnCall, now_ms: int) -> Outcome:
        out = Outcome()
        for ep in list(fs.episodes.values()):
            if ep.cleared or ep.acked_by is not None:
                continue
            for chain in ep.chains:
                if chain.next_at_ms is None or chain.next_at_ms > now_ms:
                    continue
                team = self.cfg.team(chain.team)
                step = team.escalation[chain.step]
                if chain.repeat < step.repeat or chain.step == len(team.escalation) - 1:
                    chain.repeat += 1
                    kind = "repeat"
                else:
                    chain.step += 1
                    chain.repeat = 0
                    kind = "page"
                out.records.append(self._record(
                    RecordType.ESCALATED, ep, ep.alarm["facility_id"], now_ms, chain.team,
                    chain.step, chain.repeat, team=chain.team, step=chain.step,
                    repeat=chain.repeat, level=ep.level,
                    detail=f"not acknowledged: {'repeat' if kind == 'repeat' else 'next step'}"))
                self._page(ep, chain, kind, now_ms, out)
                out.save = True
        for aid, at in list(fs.closed.items()):
            if now_ms - at > CLOSED_KEEP_MS:
                del fs.closed[aid]
                out.save = True
        return out
