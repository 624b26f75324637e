"""Evaluation of one facility's readings against its rules; produces alarm events."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from schemas.alarm import AlarmCategory, AlarmEvent, AlarmEventType, alarm_id_for, event_id_for
from schemas.common import to_epoch_ms
from schemas.deadletter import Problem, RejectReason
from schemas.kinds import METRICS, AlarmLevel
from schemas.reading import ReadingBatch
from schemas.registry import (
    AlarmPolicy,
    CompositeRule,
    Condition,
    Direction,
    Facility,
    Level,
    Registry,
    Rule,
    Sensor,
    Signal,
)
from services.processor.engine import signals, tracker
from services.processor.engine.maintenance import silenced
from services.processor.engine.state import FacilityState, RuleState, SensorState
from services.processor.engine.tracker import IMMEDIATE, Timing, Transition

# Health rule keys (per sensor, or per facility for the gateway ones).
OUT_OF_RANGE = "sensor-out-of-range"
STUCK = "sensor-stuck"
SENSOR_OFFLINE = "sensor-offline"
GATEWAY_OFFLINE = "gateway-offline"
SEQ_GAP = "gateway-seq-gap"
RULE_REMOVED = "rule removed from the registry"
FAULTS = (OUT_OF_RANGE, STUCK, SENSOR_OFFLINE)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def level_for(levels: tuple[Level, ...], direction: Direction, value: float,
              current: str | None) -> Level | None:
    """The most severe level whose condition holds; a level at or below the current one is
    held until the value passes its clear point (hysteresis)."""
    held = tracker.severity(current)
    found: Level | None = None
    upper = direction is Direction.UPPER
    for lv in levels:
        keep = held >= lv.level.severity
        if upper:
            on = value >= lv.raise_at or (keep and value >= lv.clear_value)
        else:
            on = value <= lv.raise_at or (keep and value <= lv.clear_value)
        if on:
            found = lv
    return found


@dataclass(frozen=True, slots=True)
class _RuleSpec:
    """What the engine needs of a rule; shared by every sensor that carries the rule."""

    rule: Rule
    levels: tuple[Level, ...]  # least to most severe
    timing: Timing
    derived: bool  # not the plain value


@dataclass(frozen=True, slots=True)
class _SensorPlan:
    sensor: Sensor
    rules: tuple[tuple[str, _RuleSpec], ...]  # ("<sensor>|<rule key>", spec)
    keep_ms: int  # how far back samples are needed (longest window of any rule/condition)
    lo: float
    hi: float
    oor_key: str


_SPECS: dict[int, _RuleSpec] = {}


def _spec(r: Rule) -> _RuleSpec:
    spec = _SPECS.get(id(r))
    if spec is None or spec.rule is not r:
        spec = _SPECS[id(r)] = _RuleSpec(r, r.ordered_levels(), Timing(
            r.raise_after_s, r.raise_after_count, r.clear_after_s, r.clear_after_count),
            r.signal is not Signal.VALUE)
    return spec


@dataclass(frozen=True, slots=True)
class _FacilityPlan:
    facility: Facility
    sensors: dict[str, _SensorPlan]
    composites: tuple[CompositeRule, ...]
    by_sensor: dict[str, tuple[CompositeRule, ...]]  # composites that read a sensor
    rule_keys: frozenset[str]  # every valid rule key of the facility
    # Checkpoint interval, spread over 50-100 % of the policy's by facility id, so facilities
    # loaded together do not all save in the same second.
    checkpoint_ms: int


@dataclass
class Outcome:
    events: list[AlarmEvent] = field(default_factory=list)
    late: list[Problem] = field(default_factory=list)
    save: bool = False  # the durable state must be written now (an alarm transition)
    # A periodic checkpoint is due: the caller writes it when its write budget allows and
    # then calls ``FacilityState.mark_saved`` (until then it stays due).
    checkpoint: bool = False


class AlarmEngine:
    """Stateless over facilities: the caller keeps each facility's :class:`FacilityState`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.policy: AlarmPolicy = registry.policy
        self._plans = {f.id: self._plan(f, registry.policy) for f in registry.facilities}

    @staticmethod
    def _plan(f: Facility, policy: AlarmPolicy) -> _FacilityPlan:
        windows: dict[str, float] = {s.id: s.max_window_s for s in f.sensors}
        by_sensor: dict[str, list[CompositeRule]] = {}
        for c in f.composites:
            for cond in c.all_of:
                windows[cond.sensor] = max(windows[cond.sensor], cond.window_s or 0.0)
                by_sensor.setdefault(cond.sensor, []).append(c)
        sensors = {}
        keys = {f"{f.id}|{GATEWAY_OFFLINE}", f"{f.id}|{SEQ_GAP}"}
        keys |= {f"{f.id}|{c.id}" for c in f.composites}
        for s in f.sensors:
            rules = tuple((f"{s.id}|{r.key}", _spec(r)) for r in s.rules)
            keep = int(windows[s.id] * 1000) if windows[s.id] else 0
            sensors[s.id] = _SensorPlan(s, rules, keep, s.range[0], s.range[1],
                                        f"{s.id}|{OUT_OF_RANGE}")
            keys |= {f"{s.id}|{r.key}" for r in s.rules} | {f"{s.id}|{k}" for k in FAULTS}
        spread = 0.5 + (zlib.crc32(f.id.encode()) % 1000) / 2000
        return _FacilityPlan(f, sensors, tuple(f.composites),
                             {k: tuple(v) for k, v in by_sensor.items()}, frozenset(keys),
                             int(policy.checkpoint_interval_s * 1000 * spread))

    # ------------------------------------------------------------------ readings
    def evaluate(self, batch: ReadingBatch, fs: FacilityState) -> Outcome:
        plan = self._plans.get(batch.facility_id)
        out = Outcome()
        if plan is None:
            return out  # unknown after a registry reload: ingest will dead-letter new ones
        p = self.policy
        lateness = int(p.allowed_lateness_s * 1000)
        received = to_epoch_ms(batch.received_at)
        readings = sorted(enumerate(batch.readings), key=lambda ir: ir[1].ts)
        first_ts = to_epoch_ms(readings[0][1].ts)
        if fs.first_ts is None:
            fs.first_ts = first_ts
        self._gateway_report(plan, fs, batch.seq, received, first_ts, out)
        fs.last_received = max(fs.last_received, received)
        self._forget_removed(plan, fs, first_ts, out)

        touched: set[str] = set()
        for index, r in readings:
            sp = plan.sensors.get(r.sensor)
            if sp is None:
                continue
            ss = fs.sensor(r.sensor)
            ts = to_epoch_ms(r.ts)
            if ss.watermark and ts < ss.watermark - lateness:
                out.late.append(Problem(
                    reason=RejectReason.LATE, reading_index=index, sensor=r.sensor,
                    detail=f"reading at {r.ts.isoformat()} is {(ss.watermark - ts) / 1000:.0f}s "
                           f"older than the newest of {r.sensor} (allowed lateness "
                           f"{p.allowed_lateness_s:g}s)"))
                continue
            ss.watermark = max(ss.watermark, ts)
            fs.latest_ts = max(fs.latest_ts, ts)
            in_order = ss.last_ts is None or ts >= ss.last_ts
            value = r.value
            bad = not sp.lo <= value <= sp.hi
            if in_order and (bad or sp.oor_key in fs.rules):
                hi, lo = sp.hi, sp.lo
                self._apply(plan, fs, sp.oor_key, p.sensor_fault_level.value if bad else None, ts,
                            IMMEDIATE, out, sensor=sp.sensor, value=value,
                            threshold=hi if value > hi else lo, category=AlarmCategory.SENSOR,
                            text=f"{r.sensor} reads {value:g} {r.unit}, outside its instrument "
                                 f"range [{lo:g}, {hi:g}]" if bad else
                                 f"{r.sensor} back inside its instrument range")
            if bad:
                continue  # a faulty value must not feed windows or facility rules
            if sp.keep_ms:
                signals.insert(ss.samples, ts, value)
            if not in_order:
                continue  # windows updated; levels are decided by the newest reading
            if sp.sensor.stuck_after_s is not None:
                self._stuck(plan, fs, sp, ss, ts, value, out)
            ss.last_ts, ss.last_value = ts, value
            if sp.keep_ms:
                signals.trim(ss.samples, ts - sp.keep_ms)
            elif ss.samples:
                ss.samples = []  # value rules read last_value; nothing to keep
            touched.add(r.sensor)
            rules = fs.rules
            if f"{r.sensor}|{SENSOR_OFFLINE}" in rules:
                self._apply(plan, fs, f"{r.sensor}|{SENSOR_OFFLINE}", None, ts, IMMEDIATE, out,
                            sensor=sp.sensor, value=None, threshold=None,
                            category=AlarmCategory.SENSOR, text=f"{r.sensor} reports again")
            for key, rp in sp.rules:
                rule = rp.rule
                sig: float | None = value
                if rp.derived:
                    sig = signals.compute(ss.samples, rule.signal, rule.window_s,
                                          rule.rate_per_s, ts)
                rs = rules.get(key)
                hit = None if sig is None else level_for(rp.levels, rule.direction, sig,
                                                         rs.level if rs is not None else None)
                if rs is None:
                    if hit is None:
                        continue  # the hot path: calm and nothing remembered
                    rs = fs.rule(key)
                t = tracker.update(rs, hit.level.value if hit else None, ts, rp.timing,
                                   int(p.flap_window_s * 1000), p.flap_max_transitions)
                if t is not None:
                    self._emit(plan, fs, key, rs, t, ts, out, sensor=sp.sensor, value=sig,
                               threshold=self._threshold(rp.levels, hit),
                               category=AlarmCategory.FACILITY,
                               text=self._rule_text(sp.sensor, rule, sig, hit))

        for comp in {c.id: c for s in touched for c in plan.by_sensor.get(s, ())}.values():
            self._composite(plan, fs, comp, fs.latest_ts, out)
        self._sensor_offline(plan, fs, fs.latest_ts, out)
        if out.events:
            out.save = True
            fs.mark_saved()
        elif fs.latest_ts - fs.checkpoint_ts >= plan.checkpoint_ms:
            out.checkpoint = True
        return out

    # ------------------------------------------------------------------ time passing
    def tick(self, facility_id: str, fs: FacilityState, now_ms: int) -> Outcome:
        """Wall-clock check (no data at all): the gateway-offline deadman."""
        out = Outcome()
        plan = self._plans.get(facility_id)
        if plan is None or not fs.last_received:
            return out
        limit = self.policy.gateway_offline_after_intervals * plan.facility.min_interval_s
        silent_s = (now_ms - fs.last_received) / 1000
        key = f"{facility_id}|{GATEWAY_OFFLINE}"
        if silent_s > limit and fs.active(key) is None:
            self._apply(plan, fs, key, self.policy.gateway_offline_level.value, now_ms, IMMEDIATE,
                        out, sensor=None, value=silent_s, threshold=limit,
                        category=AlarmCategory.GATEWAY,
                        text=f"gateway of {facility_id} silent for {silent_s:.0f}s "
                             f"(expected a report every {plan.facility.min_interval_s:g}s)")
        if out.events:
            out.save = True
        return out

    # ------------------------------------------------------------------ parts
    def _gateway_report(self, plan: _FacilityPlan, fs: FacilityState, seq: int, received: int,
                        ts: int, out: Outcome) -> None:
        fid = plan.facility.id
        key = f"{fid}|{GATEWAY_OFFLINE}"
        offline = fs.active(key)
        # Only a report ingest received after the outage began proves the gateway is back.
        if offline is not None and received > offline.since:
            fs.resumed_ts = ts
            self._apply(plan, fs, key, None, received, IMMEDIATE, out, sensor=None, value=None,
                        threshold=None, category=AlarmCategory.GATEWAY,
                        text=f"gateway of {fid} reports again")
        last = fs.last_seq
        gap_key = f"{fid}|{SEQ_GAP}"
        if last is None or seq <= last:
            # First report, a duplicate, or a counter reset after a gateway restart.
            if last is None or last - seq > 1000 or seq <= 1:
                fs.last_seq = seq
            return
        fs.last_seq = seq
        missing = seq - last - 1
        if missing > 0:
            fs.gap_ok = 0
            self._apply(plan, fs, gap_key, self.policy.gap_level.value, ts, IMMEDIATE, out,
                        sensor=None, value=float(missing), threshold=0.0,
                        category=AlarmCategory.GATEWAY,
                        text=f"gateway of {fid} lost {missing} report(s) (seq {last} → {seq})")
            return
        fs.gap_ok += 1
        if fs.gap_ok >= self.policy.gap_clear_reports and fs.active(gap_key) is not None:
            self._apply(plan, fs, gap_key, None, ts, IMMEDIATE, out, sensor=None, value=None,
                        threshold=None, category=AlarmCategory.GATEWAY,
                        text=f"gateway of {fid}: {fs.gap_ok} reports in sequence again")

    def _stuck(self, plan: _FacilityPlan, fs: FacilityState, sp: _SensorPlan, ss: SensorState,
               ts: int, value: float, out: Outcome) -> None:
        s = sp.sensor
        assert s.stuck_after_s is not None
        same = ss.last_value is not None and abs(value - ss.last_value) <= s.stuck_epsilon
        if not same or ss.same_since is None:
            ss.same_since = ts
        stuck = same and ts - ss.same_since >= s.stuck_after_s * 1000
        key = f"{s.id}|{STUCK}"
        if stuck or key in fs.rules:
            self._apply(plan, fs, key, self.policy.sensor_fault_level.value if stuck else None, ts,
                        IMMEDIATE, out, sensor=s, value=value, threshold=s.stuck_after_s,
                        category=AlarmCategory.SENSOR,
                        text=f"{s.id} has read {value:g} for {(ts - ss.same_since) / 1000:.0f}s "
                             f"(stuck after {s.stuck_after_s:g}s)" if stuck else
                             f"{s.id} changes again ({value:g})")

    def _sensor_offline(self, plan: _FacilityPlan, fs: FacilityState, now: int,
                        out: Outcome) -> None:
        """Event-time deadman: the gateway reports, but this sensor has been missing."""
        if now < fs.offline_check_ts:
            return
        fs.offline_check_ts = now + int(plan.facility.min_interval_s * 1000)
        factor = self.policy.sensor_offline_after_intervals
        for sid, sp in plan.sensors.items():
            ss = fs.sensors.get(sid)
            base = ss.last_ts if ss is not None and ss.last_ts is not None else fs.first_ts
            if base is None:
                continue
            base = max(base, fs.resumed_ts)  # silence explained by a gateway outage
            limit_ms = factor * sp.sensor.interval_s * 1000
            key = f"{sid}|{SENSOR_OFFLINE}"
            if now - base > limit_ms and fs.active(key) is None:
                self._apply(plan, fs, key, self.policy.sensor_fault_level.value, now, IMMEDIATE,
                            out, sensor=sp.sensor, value=(now - base) / 1000,
                            threshold=limit_ms / 1000, category=AlarmCategory.SENSOR,
                            text=f"{sid} silent for {(now - base) / 1000:.0f}s while its gateway "
                                 f"reports (expected every {sp.sensor.interval_s:g}s)")

    def _condition(self, plan: _FacilityPlan, fs: FacilityState, c: Condition,
                   now: int) -> bool:
        ss = fs.sensors.get(c.sensor)
        sp = plan.sensors[c.sensor]
        if ss is None or ss.last_ts is None:
            return False
        if now - ss.last_ts > self.policy.sensor_offline_after_intervals * sp.sensor.interval_s * 1000:
            return False  # stale: unknown, not true
        v = ss.last_value if c.signal is Signal.VALUE else signals.compute(
            ss.samples, c.signal, c.window_s, c.rate_per_s, ss.last_ts)
        if v is None:
            return False
        return v >= c.value if c.op == ">=" else v <= c.value

    def _composite(self, plan: _FacilityPlan, fs: FacilityState, comp: CompositeRule, now: int,
                   out: Outcome) -> None:
        on = all(self._condition(plan, fs, c, now) for c in comp.all_of)
        parts = " AND ".join(f"{c.sensor} {c.signal.value}"
                             f"{f'({c.window_s:g}s)' if c.window_s else ''} {c.op} {c.value:g}"
                             for c in comp.all_of)
        timing = Timing(comp.raise_after_s, 1, comp.clear_after_s, 1)
        self._apply(plan, fs, f"{plan.facility.id}|{comp.id}", comp.level.value if on else None,
                    now, timing, out, sensor=None, value=None, threshold=None,
                    text=f"{comp.id}: {parts}" + ("" if on else " no longer holds"))

    def _forget_removed(self, plan: _FacilityPlan, fs: FacilityState, ts: int,
                        out: Outcome) -> None:
        """After a registry reload: clear alarms whose rule no longer exists."""
        for key in [k for k in fs.rules if k not in plan.rule_keys]:
            rs = fs.rules[key]
            if rs.emitted is not None:
                sid = key.split("|", 1)[0]
                rs.level = None
                rs.flapping = False
                self._emit(plan, fs, key, rs, Transition(AlarmEventType.CLEARED, None, rs.emitted,
                                                         False), ts, out,
                           sensor=plan.sensors[sid].sensor if sid in plan.sensors else None,
                           value=None, threshold=None, category=AlarmCategory.FACILITY,
                           text=f"{key}: {RULE_REMOVED}")
            del fs.rules[key]

    # ------------------------------------------------------------------ emitting
    def _apply(self, plan: _FacilityPlan, fs: FacilityState, key: str, candidate: str | None,
               ts: int, timing: Timing, out: Outcome, *, sensor: Sensor | None,
               value: float | None, threshold: float | None, text: str,
               category: AlarmCategory = AlarmCategory.FACILITY) -> None:
        rs = fs.rules.get(key)
        if rs is None:
            if candidate is None:
                return  # nothing going on and nothing to remember: the hot path
            rs = fs.rule(key)
        t = tracker.update(rs, candidate, ts, timing, int(self.policy.flap_window_s * 1000),
                           self.policy.flap_max_transitions)
        if t is not None:
            self._emit(plan, fs, key, rs, t, ts, out, sensor=sensor, value=value,
                       threshold=threshold, category=category, text=text)

    def _emit(self, plan: _FacilityPlan, fs: FacilityState, key: str, rs: RuleState,
              t: Transition, ts: int, out: Outcome, *, sensor: Sensor | None,
              value: float | None, threshold: float | None, category: AlarmCategory,
              text: str) -> None:
        f = plan.facility
        rule = key.split("|", 1)[1]
        sensor_id = sensor.id if sensor is not None else f.id
        if t.new_episode or rs.alarm_id is None:
            rs.alarm_id = alarm_id_for(f.id, sensor_id, rule, _dt(ts))
            rs.since = ts
        alarm_id = rs.alarm_id
        level = AlarmLevel(t.level) if t.level else None
        prev = AlarmLevel(t.previous) if t.previous else None
        if level is not None and t.event is not AlarmEventType.SETTLED:
            text = f"{text} — {level.value} ({level.grade}) {t.event.value}"
        elif t.event is AlarmEventType.SETTLED and level is not None:
            text = f"{text} — settled at {level.value} ({level.grade})"
        suppressed = None
        if category is not AlarmCategory.GATEWAY:
            gw = fs.active(f"{f.id}|{GATEWAY_OFFLINE}")
            if gw is not None:
                suppressed = gw.alarm_id
            elif category is AlarmCategory.FACILITY and sensor is not None:
                for fault in FAULTS:
                    fr = fs.active(f"{sensor.id}|{fault}")
                    if fr is not None:
                        suppressed = fr.alarm_id
                        break
        unit = METRICS[sensor.metric].unit if sensor is not None else ""
        if sensor is not None and rule.startswith("rate-"):
            unit = f"{unit}/{self._rate_unit(sensor, rule)}"
        out.events.append(AlarmEvent(
            event_id=event_id_for(alarm_id, t.event, level, _dt(ts)), alarm_id=alarm_id,
            event=t.event, level=level, previous_level=prev, category=category,
            facility_id=f.id, kind=f.kind, sensor=sensor_id,
            metric=sensor.metric if sensor is not None else None, rule=rule,
            value=value, threshold=threshold, unit=unit, ts=_dt(ts), message=text,
            silenced=silenced(f.maintenance, ts, self.registry.tz) if f.maintenance else False,
            suppressed_by=suppressed, flapping=rs.flapping,
        ))
        if t.level is None and not rs.flapping:
            rs.alarm_id = None  # episode over; a new raise starts a new one

    @staticmethod
    def _rate_unit(sensor: Sensor, rule_key: str) -> str:
        rule = next((r for r in sensor.rules if r.key == rule_key), None)
        per = rule.rate_per_s if rule is not None else 60.0
        return {1.0: "s", 60.0: "min", 3600.0: "h"}.get(per, f"{per:g}s")

    @staticmethod
    def _threshold(levels: tuple[Level, ...], hit: Level | None) -> float:
        return hit.raise_at if hit is not None else levels[0].clear_value

    @staticmethod
    def _rule_text(s: Sensor, rule: Rule, value: float | None, hit: Level | None) -> str:
        what = s.metric.value if rule.signal is Signal.VALUE else (
            f"{s.metric.value} {rule.signal.value} over {rule.window_s:g}s")
        shown = "unknown" if value is None else f"{value:.4g}"
        if hit is None:
            return f"{s.id} {what} {shown}: back within limits"
        sign = ">=" if rule.direction is Direction.UPPER else "<="
        return f"{s.id} {what} {shown} {sign} {hit.raise_at:g}"
