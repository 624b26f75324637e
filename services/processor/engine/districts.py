"""District rules (docs/decisions/0023): alarms of a district as a whole, from its
facilities' alarms — one rainstorm alarm per district instead of one per rain gauge,
"at least 3 storm manholes of the district at orange".

Pure: :class:`DistrictBook` folds the members' transitions (``MemberAlarm`` records of
``lifeline.context``, key = district) into the district alarms they imply. One processor
worker evaluates a district (the owner of its context partition, services/processor/
district_desk.py); its state is a function of the partition's records in order, so after a
restart or a move to another worker the records replayed up to the committed offset give
the same state, the same alarm ids and the same event ids (consumers drop duplicates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from schemas import texts
from schemas.alarm import (
    AlarmCategory,
    AlarmEvent,
    AlarmEventType,
    alarm_id_for,
    district_facility_id,
    event_id_for,
)
from schemas.common import to_epoch_ms
from schemas.context import MemberAlarm
from schemas.kinds import AlarmLevel, FacilityKind
from schemas.registry import DistrictRule, Registry

MemberKey = tuple[str, str, str]  # (facility id, sensor, rule)


@dataclass(slots=True)
class _Member:
    level: AlarmLevel | None
    ts: int
    rules: tuple[str, ...]


@dataclass(slots=True)
class _Active:
    level: AlarmLevel
    since: int
    alarm_id: str
    kind: FacilityKind


@dataclass
class _District:
    members: dict[MemberKey, _Member] = field(default_factory=dict)
    active: dict[str, _Active] = field(default_factory=dict)  # district rule id -> alarm


class DistrictBook:
    """The district alarms of the districts one worker evaluates."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.districts: dict[str, _District] = {}
        self._zh = {f.district: f.district_zh for f in registry.facilities}

    def use(self, registry: Registry) -> None:
        """A reloaded registry: its rules apply from the next record (alarms of a removed
        rule clear then)."""
        self.registry = registry
        self._zh = {f.district: f.district_zh for f in registry.facilities}

    def forget(self, districts: set[str] | None = None) -> None:
        """Districts another worker now evaluates (None: all)."""
        if districts is None:
            self.districts.clear()
        else:
            for d in districts:
                self.districts.pop(d, None)

    def apply(self, rec: MemberAlarm) -> list[AlarmEvent]:
        """One member's transition; the district alarm events it causes."""
        d = self.districts.setdefault(rec.district, _District())
        key = (rec.facility_id, rec.sensor, rec.rule)
        ts = to_epoch_ms(rec.ts)
        old = d.members.get(key)
        if old is not None and ts < old.ts:
            return []  # older than what is known (redelivered out of order): no news
        # A cleared member stays (level None) so that a late copy of an older transition
        # is recognised as older; members are bounded by the registry's rules.
        d.members[key] = _Member(rec.level, ts, tuple(rec.district_rules))
        return self.evaluate(rec.district, ts)

    def evaluate(self, district: str, ts: int) -> list[AlarmEvent]:
        d = self.districts.setdefault(district, _District())
        rules = {r.id: r for r in self.registry.district_rules if r.applies(district)}
        out: list[AlarmEvent] = []
        for rid in sorted(set(rules) | set(d.active)):
            rule = rules.get(rid)
            level, count = self._level(d, rule) if rule is not None else (None, 0)
            ev = self._transition(district, d, rid, rule, level, count, ts)
            if ev is not None:
                out.append(ev)
        return out

    @staticmethod
    def _level(d: _District, rule: DistrictRule) -> tuple[AlarmLevel | None, int]:
        """The district's level under ``rule`` and how many facilities count for it."""
        worst: dict[str, int] = {}
        floor = rule.at_least.severity
        for (fid, _sensor, _rule), m in d.members.items():
            if m.level is None or rule.id not in m.rules or m.level.severity < floor:
                continue
            worst[fid] = max(worst.get(fid, 0), m.level.severity)
        ranked = sorted(worst.values(), reverse=True)
        n = rule.min_facilities
        if len(ranked) < n:
            return None, len(ranked)
        if rule.level is not None:
            return rule.level, len(ranked)
        return next(lv for lv in AlarmLevel if lv.severity == ranked[n - 1]), len(ranked)

    def _transition(self, district: str, d: _District, rid: str, rule: DistrictRule | None,
                    level: AlarmLevel | None, count: int, ts: int) -> AlarmEvent | None:
        act = d.active.get(rid)
        was = act.level if act is not None else None
        if level == was:
            return None
        fid = district_facility_id(district)
        if act is None:
            if level is None or rule is None:
                return None
            act = d.active[rid] = _Active(level, ts, alarm_id_for(fid, rid, rid, _dt(ts)),
                                          rule.kind)
            event = AlarmEventType.RAISED
        elif level is None:
            del d.active[rid]
            event = AlarmEventType.CLEARED
        else:
            event = (AlarmEventType.ESCALATED if level.severity > act.level.severity
                     else AlarmEventType.DEESCALATED)
            act.level = level
        region = texts.region_words(district, self._zh.get(district))
        body = (texts.district_rule_words(region, rule.name_zh, rule.name, count,
                                          rule.min_facilities)
                if rule is not None else texts.RULE_REMOVED)
        place = ""
        return AlarmEvent(
            event_id=event_id_for(act.alarm_id, event, level, _dt(ts)), alarm_id=act.alarm_id,
            event=event, level=level, previous_level=was, category=AlarmCategory.DISTRICT,
            facility_id=fid, kind=act.kind,
            facility_name=f"{district} district", facility_name_zh=region.zh,
            district=district, district_zh=self._zh.get(district), sensor=fid, metric=None,
            rule=rid, value=float(count), threshold=float(rule.min_facilities if rule else 1),
            unit="facilities", ts=_dt(ts), message=texts.compose(place, body, event.value,
                                                                 level))


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
