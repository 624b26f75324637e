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

Life-safety pages: an alarm event that carries ``entry`` (a confined-space entry, 井下作业,
is in progress at the facility) pages at once, on the on-call file's ``urgent_channels``,
the crew leader — an ad-hoc recipient ``crew:<phone>`` whose name and phone travel in the
notification — and the person on duty of every team the alarm routes to as if it were a
facility alarm, and of the teams its own category routes to; then the escalation chains run
as usual. Each recipient gets one entry page per episode and level: a repeat does not
page the crew leader again, a worse level does.

Acknowledge and resolve both stop the escalation; a worse level afterwards re-opens the
alarm and pages again (recorded as ``reopened``). The engine trusts the acknowledgements
it is given: the agent hands it only those whose signature verifies (services.notifier.acks).

The state of a facility is saved as JSON with a format version ``v``
(:data:`STATE_VERSION`); :meth:`FacilityOnCall.from_json` migrates older versions and
refuses newer ones with :class:`OnCallStateError`.

An alarm no route matches is recorded (``unrouted``) and kept open with no chain:
:func:`unrouted` lists such alarms (the notifier's ``routing`` warning), and
:meth:`Escalator.reconcile` routes them again with the files as they are now — after an
on-call or registry reload it pages the teams they now go to.
"""

from __future__ import annotations

import re
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
    Team,
    notification_id_for,
    record_id_for,
)
from services.notifier.errors import OnCallStateError
from services.notifier.rota import on_duty, resolve_target

SEEN_EVENTS = 32  # event ids remembered per episode (redeliveries come in order)
CLOSED_KEEP_MS = 86_400_000  # a closed episode's id is remembered this long
STATE_VERSION = 2  # the format of FacilityOnCall.to_json
CREW = "crew:"  # person ids of ad-hoc recipients: crew:<phone>
_PHONE = re.compile(r"^\+?[0-9]{5,15}$")


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
    # An ad-hoc recipient who is not in the on-call file (the crew leader of a
    # confined-space entry): {"name", "phone"}; ``person`` is then crew:<phone>.
    contact: dict[str, str] | None = None


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
    # v2: the worst severity the chains were paged at (a level reached while suppressed or
    # silenced is paged when it no longer is), entry pages per recipient (severity), and
    # the ad-hoc recipients' contacts (for their "cleared" message).
    paged_severity: int = 0
    entry_paged: dict[str, int] = field(default_factory=dict)
    contacts: dict[str, dict[str, str]] = field(default_factory=dict)

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
        return {"v": STATE_VERSION, "partition": self.partition, "closed": self.closed,
                "episodes": {k: asdict(v) for k, v in self.episodes.items()}}

    @classmethod
    def from_json(cls, data: Any) -> FacilityOnCall:
        """The state saved by :meth:`to_json` (any version up to :data:`STATE_VERSION`;
        v1 had no ``v``). Raises :class:`OnCallStateError` for a newer or damaged one."""
        if not data:
            return cls()
        if not isinstance(data, dict):
            raise OnCallStateError(f"saved on-call state is a {type(data).__name__}, "
                                   "not an object")
        version = data.get("v", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise OnCallStateError(f"saved on-call state has an invalid version {version!r}")
        if version > STATE_VERSION:
            raise OnCallStateError(f"saved on-call state is version {version}; this notifier "
                                   f"reads versions up to {STATE_VERSION}")
        try:
            eps = {}
            for k, v in data.get("episodes", {}).items():
                v = dict(v)
                chains = [Chain(**c) for c in v.pop("chains", [])]
                ep = Episode(chains=chains, **v)
                if version == 1:
                    _migrate_v1(ep)
                eps[k] = ep
            for n in (n for ep in eps.values() for n in ep.pending.values()):
                Notification(**n)  # refuse now, not when the pending work is requeued
            return cls(partition=int(data.get("partition", -1)), episodes=eps,
                       closed={str(k): int(t) for k, t in dict(data.get("closed", {})).items()})
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise OnCallStateError(f"saved on-call state (v{version}) is damaged: "
                                   f"{type(exc).__name__}: {exc}"[:300]) from exc

    def pending(self) -> list[Notification]:
        return [Notification(**n) for ep in self.episodes.values() for n in ep.pending.values()]


@dataclass
class Outcome:
    notifications: list[Notification] = field(default_factory=list)
    records: list[OnCallRecord] = field(default_factory=list)
    save: bool = False


def _migrate_v1(ep: Episode) -> None:
    """v1 kept no paged level: an open v1 episode was paged at its level (never page twice)."""
    ep.paged_severity = ep.level.severity if ep.level else 0


def _iso(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _summary(ev: AlarmEvent, district: str) -> dict[str, Any]:
    return {"facility_id": ev.facility_id, "kind": ev.kind.value,
            "district": district, "district_zh": ev.district_zh,
            "facility_name": ev.facility_name, "facility_name_zh": ev.facility_name_zh,
            "sensor": ev.sensor, "metric": ev.metric.value if ev.metric else None,
            "rule": ev.rule, "category": ev.category.value,
            "level": ev.level.value if ev.level else None, "value": ev.value,
            "threshold": ev.threshold, "unit": ev.unit, "message": ev.message,
            "event": ev.event.value, "ts": ev.ts.isoformat(),
            "silenced": ev.silenced, "suppressed_by": ev.suppressed_by,
            "flapping": ev.flapping, "held_by_fault": ev.held_by_fault,
            "stale_since": ev.stale_since.isoformat() if ev.stale_since else None,
            "entry": ev.entry.model_dump(mode="json") if ev.entry else None}


def crew_phone(raw: str) -> str | None:
    """The crew leader's phone as the SMS gateway takes it (spaces, dashes, dots and
    brackets dropped), or None when it is not a phone number."""
    phone = re.sub(r"[\s\-().]", "", raw)
    return phone if _PHONE.match(phone) else None


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


def entry_route(cfg: OnCallConfig, alarm: dict[str, Any]) -> list[str]:
    """Teams of an alarm during a confined-space entry: those a facility alarm of the
    facility goes to (the duty team, even for a gas sensor fault or a gateway outage),
    then those its own category goes to (instrument maintenance)."""
    teams = route(cfg, {**alarm, "category": "facility"})
    return teams + [t for t in route(cfg, alarm) if t not in teams]


@dataclass
class OnCall:
    """The on-call file and the facilities' districts the notifier runs on: the one object
    the escalator, delivery, the acknowledgement page and the one-time codes read. A reload
    (services.notifier.app) replaces ``cfg`` or ``districts`` here, and every reader sees the
    new version at its next use — nothing keeps a copy of its own."""

    cfg: OnCallConfig
    districts: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def of(cfg: OnCallConfig | OnCall, districts: dict[str, str] | None = None) -> OnCall:
        return cfg if isinstance(cfg, OnCall) else OnCall(cfg, dict(districts or {}))


def unrouted(fs: FacilityOnCall) -> list[Episode]:
    """The facility's active alarms nobody is routed to (no chain: no route matched when it
    was raised, or the teams it had were removed and no route matches now)."""
    return [ep for ep in fs.episodes.values() if not ep.chains and not ep.cleared]


class Escalator:
    def __init__(self, cfg: OnCallConfig | OnCall, districts: dict[str, str] | None = None
                 ) -> None:
        self.live = OnCall.of(cfg, districts)

    @property
    def cfg(self) -> OnCallConfig:
        return self.live.cfg

    @property
    def districts(self) -> dict[str, str]:
        return self.live.districts

    @property
    def _teams(self) -> dict[str, Team]:
        return {t.id: t for t in self.cfg.teams}

    # ------------------------------------------------------------------ helpers

    def reconcile(self, fs: FacilityOnCall, now_ms: int) -> Outcome:
        """Bring saved escalation state in line with the on-call file as it is now (after
        an edit renamed a team or shortened a chain): chains of teams that no longer exist
        are stopped, steps past a chain's end move to its last step, and an open episode
        left with no chain is routed again. Every change is an audit record."""
        out = Outcome()
        teams = self._teams
        people = {p.id for p in self.cfg.people}
        for ep in list(fs.episodes.values()):
            for nid, note in list(ep.pending.items()):
                person = str(note.get("person", ""))
                if person in people or person.startswith("crew:"):
                    continue
                # Decided for someone the edited file no longer has: nobody to send it to.
                del ep.pending[nid]
                ep.done.append(nid)
                out.records.append(self._record(
                    RecordType.FAILED, ep, ep.alarm["facility_id"], now_ms, nid, "removed",
                    notification_id=nid, kind=note.get("kind"), team=note.get("team") or None,
                    step=note.get("step"), repeat=note.get("repeat"), person=person,
                    level=ep.level, ok=False,
                    detail=f"{person} is no longer in the on-call file"))
                out.save = True
            kept = []
            for chain in ep.chains:
                team = teams.get(chain.team)
                if team is None:
                    out.records.append(self._record(
                        RecordType.STOPPED, ep, ep.alarm["facility_id"], now_ms, chain.team,
                        "team removed", team=chain.team, step=chain.step, repeat=chain.repeat,
                        level=ep.level, detail=f"team {chain.team} is no longer in the "
                                               f"on-call file"))
                    continue
                if chain.step >= len(team.escalation):
                    # Past every repeat number this episode used (notification ids are
                    # per step and repeat): the next page is a new one, not a duplicate.
                    chain.step = len(team.escalation) - 1
                    chain.repeat = len(ep.done) + len(ep.pending)
                    out.records.append(self._record(
                        RecordType.ESCALATED, ep, ep.alarm["facility_id"], now_ms, chain.team,
                        "chain shortened", chain.step, team=chain.team, step=chain.step,
                        repeat=chain.repeat, level=ep.level, detail="the team's chain was shortened: "
                                                         "moved to its last step"))
                kept.append(chain)
            if len(kept) != len(ep.chains):
                ep.chains = kept
                out.save = True
            elif kept and out.records:
                out.save = True
            if not ep.chains and not ep.cleared:
                self._route_again(ep, now_ms, out)
        return out

    def _route_again(self, ep: Episode, now_ms: int, out: Outcome) -> None:
        """An active alarm nobody is routed to (no route matched, or its teams were removed):
        route it with the files as they are now — an on-call edit may have added a route, a
        registry edit a facility's district — and page the teams it now goes to."""
        fid = ep.alarm["facility_id"]
        district = self.districts.get(fid)
        if district is not None and district != ep.alarm.get("district"):
            ep.alarm = {**ep.alarm, "district": district}
            out.save = True
        entry = bool(ep.alarm.get("entry"))
        teams = entry_route(self.cfg, ep.alarm) if entry else route(self.cfg, ep.alarm)
        if not teams:
            return
        out.save = True
        for tid in teams:
            out.records.append(self._record(
                RecordType.ESCALATED, ep, fid, now_ms, tid, "routed", now_ms, team=tid,
                level=ep.level, detail=f"routed to {tid} by the on-call file or registry as "
                                       "they are now (nobody was routed to it)"))
        if ep.acked_by is None:
            self._open_chains(ep, teams, now_ms, out)
            if entry:
                self._page_entry(ep, teams, now_ms, out)
        else:  # acknowledged meanwhile: the chains follow it, nobody is paged
            ep.chains += [Chain(tid, self._teams[tid].first_step(ep.level), 0, None)
                          for tid in teams]

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

    def _open_chains(self, ep: Episode, teams: list[str], now_ms: int, out: Outcome) -> None:
        """Start (and page) the chains of ``teams`` the episode does not have yet."""
        have = {c.team for c in ep.chains}
        for tid in teams:
            if tid in have:
                continue
            chain = Chain(tid, self.cfg.team(tid).first_step(ep.level), 0, None)
            ep.chains.append(chain)
            self._page(ep, chain, "page", now_ms, out)
        if ep.level is not None:
            ep.paged_severity = max(ep.paged_severity, ep.level.severity)

    def _entry_failed(self, ep: Episode, nid: str, now_ms: int, out: Outcome, person: str,
                      team: str, why: str) -> None:
        if nid in ep.done:
            return
        ep.done.append(nid)
        out.records.append(self._record(
            RecordType.FAILED, ep, ep.alarm["facility_id"], now_ms, nid, "entry",
            notification_id=nid, kind="entry", team=team or None, step=0, repeat=0,
            person=person, level=ep.level, ok=False, detail=why))
        out.save = True

    def _page_entry(self, ep: Episode, teams: list[str], now_ms: int, out: Outcome) -> None:
        """A confined-space entry is in progress: page the crew leader and the person on
        duty of every team at once, on the urgent channels — once per episode, recipient
        and level (a worse level pages them again, a repeat or a lower level does not)."""
        entry, level = ep.alarm.get("entry"), ep.level
        if not entry or level is None:
            return
        at = _iso(now_ms)
        urgent = list(self.cfg.urgent_channels)
        # (person, team, channels, contact, why-not): the crew leader first.
        who: list[tuple[str, str, list[str], dict[str, str] | None, str | None]] = []
        phone = crew_phone(str(entry.get("crew_phone", "")))
        leader = str(entry.get("crew_leader", ""))
        fallback = [c for tid in teams for c in self.cfg.team(tid).escalation[0].channels]
        sms = self.cfg.phone_channels(list(dict.fromkeys(urgent or fallback)))
        if phone is None:
            who.append((f"{CREW}{entry.get('crew_phone', '')}"[:40], "", [], None,
                        f"the crew leader {leader}'s phone {entry.get('crew_phone')!r} is "
                        "not a phone number"))
        else:
            who.append((f"{CREW}{phone}", "", sms, {"name": leader, "phone": phone},
                        None if sms else
                        f"no urgent channel reaches a phone: the crew leader {leader} "
                        f"({phone}) cannot be paged (urgent channels: "
                        f"{', '.join(urgent or fallback) or 'none'})"))
        for tid in teams:
            team = self.cfg.team(tid)
            person = on_duty(team, at, self.cfg.zone)
            if person is None:
                who.append((f"team:{tid}", tid, [], None,
                            f"nobody on duty in {tid} for the confined-space entry page"))
            elif all(w[0] != person for w in who):
                who.append((person, tid, urgent or list(team.escalation[0].channels), None,
                            None))
        fid = ep.alarm["facility_id"]
        for person, tid, channels, contact, why in who:
            if ep.entry_paged.get(person, 0) >= level.severity:
                continue  # paged at this level or a worse one already
            ep.entry_paged[person] = level.severity
            out.save = True
            nid = notification_id_for(ep.alarm_id, f"entry|{person}|{level.value}", 0, 0)
            if nid in ep.pending or nid in ep.done:
                continue
            if why is not None:
                self._entry_failed(ep, nid, now_ms, out, person, tid, why)
                continue
            n = Notification(nid, "entry", ep.alarm_id, fid, tid, 0, 0, person, channels,
                             now_ms, dict(ep.alarm), contact)
            ep.pending[nid] = asdict(n)
            if contact is not None:
                ep.contacts[person] = contact
            if all(r[0] != person for r in ep.recipients):
                ep.recipients.append([person, list(channels)])
            out.notifications.append(n)
            role = "crew leader" if contact is not None else f"on duty in {tid}"
            out.records.append(self._record(
                RecordType.NOTIFICATION, ep, fid, now_ms, nid, notification_id=nid,
                kind="entry", team=tid or None, step=0, repeat=0, person=person, level=level,
                detail=f"confined-space entry: {role} via {', '.join(channels)}"))

    # ------------------------------------------------------------------ inputs

    def on_alarm(self, fs: FacilityOnCall, ev: AlarmEvent, now_ms: int) -> Outcome:
        out = self.reconcile(fs, now_ms)  # an edited on-call file never crashes us
        if ev.alarm_id in fs.closed:
            return out
        ep = fs.episodes.get(ev.alarm_id)
        if ep is not None and ev.event_id in ep.seen:
            return out  # redelivered
        ending = ev.event is AlarmEventType.CLEARED or (
            ev.event is AlarmEventType.SETTLED and ev.level is None)
        # A maintenance window does not silence a life-safety alarm during an entry; an
        # alarm suppressed by a fault stays quiet (the fault's own alarm pages).
        # A member of a district alarm that pages in its place (one rainstorm alarm per
        # district, decision 0023) is recorded, not paged on its own.
        quiet = ((ev.silenced and ev.entry is None) or ev.suppressed_by is not None
                 or ev.grouped_into is not None)
        if ep is None:
            # ``raised``, or any event of an episode not paged yet — ``updated`` when a
            # suppression or maintenance window is over: page it now, like a raise.
            pages = ev.entry is not None or ev.category.value in self.cfg.page_categories
            if ending or quiet or ev.level is None or not pages:
                return out  # nothing to page: recorded by the writer, not the on-call's business
            alarm = _summary(ev, self.districts.get(ev.facility_id, ev.district or "unknown"))
            ep = fs.episodes[ev.alarm_id] = Episode(ev.alarm_id, alarm, now_ms,
                                                    int(ev.ts.timestamp() * 1000))
            ep.seen.append(ev.event_id)
            out.save = True
            teams = entry_route(self.cfg, alarm) if ev.entry else route(self.cfg, alarm)
            if not teams:
                # Kept open with no chain: a health warning while it is active, and routed
                # (paged) as soon as an edited on-call file or registry routes it.
                out.records.append(self._record(RecordType.UNROUTED, ep, ev.facility_id, now_ms,
                                                level=ev.level, detail="no route matches"))
            self._open_chains(ep, teams, now_ms, out)
            if ev.entry is not None:
                self._page_entry(ep, teams, now_ms, out)
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
                                 list(channels), now_ms, dict(ep.alarm), ep.contacts.get(person))
                ep.pending[nid] = asdict(n)
                out.notifications.append(n)
                out.records.append(self._record(
                    RecordType.NOTIFICATION, ep, ev.facility_id, now_ms, nid, notification_id=nid,
                    kind="cleared", person=person, detail="alarm cleared"))
            self._maybe_close(fs, ep, now_ms)
            return out
        if quiet or ev.level is None or ep.cleared:
            return out  # recorded in the summary; paged when it is no longer quiet
        # A worse level is news (so is a level reached while quiet and never paged): it
        # re-opens an acknowledged or resolved alarm and restarts every chain at least at
        # the step the new level starts at. Anything else — ``updated`` flags, a lower
        # level — only refreshes the summary the next messages show.
        worse = ((old is not None and ev.level.severity > old.severity)
                 or ev.level.severity > ep.paged_severity)
        if worse:
            if ep.acked_by is not None:
                was = "resolved" if ep.resolved else "acknowledged"
                out.records.append(self._record(
                    RecordType.REOPENED, ep, ev.facility_id, now_ms, ev.event_id,
                    person=ep.acked_by, level=ev.level,
                    detail=f"{ev.level.value} after being {was} by {ep.acked_by}"))
                ep.acked_by, ep.acked_ms, ep.resolved = None, None, False
            for chain in ep.chains:
                chain.step = max(chain.step, self.cfg.team(chain.team).first_step(ev.level))
                chain.repeat = 0
                self._page(ep, chain, "page", now_ms, out)
            ep.paged_severity = max(ep.paged_severity, ev.level.severity)
        if ev.entry is not None:
            # An entry in progress: the duty team follows it even when the alarm began as
            # an instrument fault, and the crew leader hears of every worse level.
            teams = entry_route(self.cfg, ep.alarm)
            if ep.acked_by is None:
                self._open_chains(ep, teams, now_ms, out)
            self._page_entry(ep, teams, now_ms, out)
        return out

    def on_ack(self, fs: FacilityOnCall, req: AckRequest, now_ms: int) -> Outcome:
        out = self.reconcile(fs, now_ms)  # an edited on-call file never crashes us
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
        # How it came (the channel tag of the audit trail): link, link+sms-code, cli.
        how = f"{req.via}+{req.second_factor}-code" if req.second_factor else req.via
        out.records.append(self._record(
            RecordType.RESOLVED if resolved else RecordType.ACKNOWLEDGED, ep, req.facility_id,
            now_ms, req.by, req.action, person=req.by, level=ep.level, channel=how,
            detail=req.comment, state_ts=_iso(state_ts)))
        self._stop(ep, f"{req.action.value}d by {req.by}", now_ms, out)
        return out

    def on_outcome(self, fs: FacilityOnCall, rec: OnCallRecord, now_ms: int) -> Outcome:
        """A delivery outcome came back through Kafka: the notification is done."""
        out = self.reconcile(fs, now_ms)
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
        out = self.reconcile(fs, now_ms)  # an edited on-call file never crashes us
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
