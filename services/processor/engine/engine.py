"""Evaluation of one facility's readings against its rules; produces alarm events.

Life-safety semantics (docs/decisions/0014):

- maintenance windows silence only what they cover (category, metric, level); gas alarms
  inside a confined-space entry window carry ``entry`` instead of being silenced;
- a sensor fault that begins while the sensor was serious (orange or worse, rising, or a
  surcharged pipe) is fail-dangerous: it holds the sensor's facility alarms at their level
  (``held_by_fault``) instead of suppressing them, and an over-range-high reading then
  counts as the top of the instrument's range; a fault from calm suppresses;
- when a fault, an outage or a window ends, alarms it quieted and still active are told
  again (``updated``) so they are paged;
- a critical facility whose gateway goes dark while its district is under rain or while it
  was in alarm raises a facility alarm (``facility-dark``); an outage never suppresses the
  facility's alarms, it flags them stale.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from schemas import texts
from schemas.alarm import (
    AlarmCategory,
    AlarmEvent,
    AlarmEventType,
    EntryInfo,
    alarm_id_for,
    event_id_for,
)
from schemas.common import to_epoch_ms
from schemas.deadletter import Problem, RejectReason
from schemas.kinds import LIFE_SAFETY_METRICS, METRICS, AlarmLevel, Metric
from schemas.reading import ReadingBatch
from schemas.registry import (
    WINDOW_MAX_S,
    WINDOWED,
    AlarmPolicy,
    CompositeRule,
    Condition,
    Criticality,
    Direction,
    Facility,
    Level,
    Registry,
    Rule,
    Sensor,
    Signal,
    share_spec,
    shared_signal,
)
from schemas.registry import Baseline as BaselineSpec
from schemas.texts import Bi
from services.processor.engine import tracker
from services.processor.engine.context import WET_MM, SharedContext, SignalKey
from services.processor.engine.history import Baseline, DailyCount, Steps
from services.processor.engine.maintenance import in_window
from services.processor.engine.signals import Window
from services.processor.engine.state import FacilityState, RuleState, SensorState
from services.processor.engine.tracker import IMMEDIATE, Timing, Transition

# Health rule keys (per sensor, or per facility for the gateway ones).
OUT_OF_RANGE = "sensor-out-of-range"
STUCK = "sensor-stuck"
SENSOR_OFFLINE = "sensor-offline"
GATEWAY_OFFLINE = "gateway-offline"
SEQ_GAP = "gateway-seq-gap"
DARK = "facility-dark"  # a critical facility silent during rain or alarm (a facility alarm)
FAULTS = (OUT_OF_RANGE, STUCK, SENSOR_OFFLINE)
_ORANGE = AlarmLevel.ORANGE.severity
RAIN_WINDOW_S = 3600.0  # the district rain context reads each gauge's past hour
LONG_WINDOW_BUCKETS = 90  # a long window's buckets: daily for 90 days, 8-hourly for 30
_OFFSETS_MAX = 4096  # cached UTC offsets of the registry zone (one per quarter hour)


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
    gated: bool  # reads the shared context: minus another sensor, or only when dry


@dataclass(frozen=True, slots=True)
class _SensorPlan:
    sensor: Sensor
    rules: tuple[tuple[str, _RuleSpec], ...]  # ("<sensor>|<rule key>", spec)
    keep_ms: int  # how far back samples are needed (longest window of any rule/condition)
    bucket_ms: int  # the window's bucket width (bounded state)
    lo: float
    hi: float
    oor_key: str
    metrics: frozenset[Metric]
    rain: bool  # a rain gauge: feeds the district rain context
    long_keep_ms: int  # the same for windows over 7 days (the long window)
    long_bucket_ms: int
    steps_keep: int  # newest readings step rules compare (0: none)
    counts: tuple[tuple[str, Rule], ...]  # count rules by state key
    baseline: BaselineSpec | None  # how the usual is learned (rules read it)
    # Signals other facilities' rules read: (context key, signal, window_s, rate_per_s)
    shares: tuple[tuple[SignalKey, Signal, float | None, float], ...] = ()

    @property
    def history(self) -> bool:
        return bool(self.steps_keep or self.counts or self.baseline is not None)


def _reach_s(r: Rule | Condition) -> float:
    """How far back a rule or condition reads the sensor's samples (s): a count of a
    windowed signal keeps two periods (the one just over is judged at the next reading)."""
    if r.window_s is None:
        return 0.0
    return 2 * r.window_s if r.signal is Signal.COUNT else r.window_s


_SPECS: dict[int, _RuleSpec] = {}


def _spec(r: Rule) -> _RuleSpec:
    spec = _SPECS.get(id(r))
    if spec is None or spec.rule is not r:
        spec = _SPECS[id(r)] = _RuleSpec(r, r.ordered_levels(), Timing(
            r.raise_after_s, r.raise_after_count, r.clear_after_s, r.clear_after_count),
            r.signal is not Signal.VALUE, r.minus is not None or r.when_dry_for_s is not None)
    return spec


@dataclass(frozen=True, slots=True)
class _FacilityPlan:
    facility: Facility
    sensors: dict[str, _SensorPlan]
    composites: tuple[CompositeRule, ...]
    by_sensor: dict[str, tuple[CompositeRule, ...]]  # composites that read a sensor
    comp_metrics: dict[str, frozenset[Metric]]  # composite id -> metrics it reads
    rule_keys: frozenset[str]  # every valid rule key of the facility
    # Checkpoint interval, spread over 50-100 % of the policy's by facility id, so facilities
    # loaded together do not all save in the same second.
    checkpoint_ms: int
    critical: bool
    place: str  # the facility in words, for messages (schemas.texts.facility_words)
    region: Bi  # its district in words
    # District rules (decision 0023): rule state key -> the district rules counting it, and
    # the one that pages in its place (``grouped_into``)
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)
    grouped: dict[str, str] = field(default_factory=dict)


def _sensor_words(s: Sensor) -> Bi:
    return texts.sensor_words(s.id, s.metric)


@dataclass
class Outcome:
    events: list[AlarmEvent] = field(default_factory=list)
    late: list[Problem] = field(default_factory=list)
    save: bool = False  # the durable state must be written now (an alarm transition)
    # A periodic checkpoint is due: the caller writes it when its write budget allows and
    # then calls ``FacilityState.mark_saved`` (until then it stays due).
    checkpoint: bool = False
    # District rain seen by this facility's gauges, for the other workers:
    # (district, event time ms, mm in the past hour, facility id, sensor id, raining)
    context: list[tuple[str, int, float, str, str, bool]] = field(default_factory=list)
    # Signals of this facility's sensors that other facilities' rules read:
    # (district, facility id, sensor id, spec, event time ms, value)
    shared: list[tuple[str, str, str, str, int, float]] = field(default_factory=list)
    # Transitions of alarms that district rules count: (event, the district rules)
    members: list[tuple[AlarmEvent, tuple[str, ...]]] = field(default_factory=list)
    coalesced: int = 0  # readings that filled windows without their own rule evaluation


_UP = (AlarmEventType.RAISED, AlarmEventType.ESCALATED)


class AlarmEngine:
    """Stateless over facilities: the caller keeps each facility's :class:`FacilityState`.

    ``context`` (district rain, shared signals) is shared by every engine of a worker and
    survives registry reloads: pass the previous engine's.
    """

    def __init__(self, registry: Registry, context: SharedContext | None = None) -> None:
        self.registry = registry
        self.policy: AlarmPolicy = registry.policy
        self.context = context if context is not None else SharedContext()
        shares = _shares(registry)
        self._plans = {f.id: self._plan(f, registry.policy, shares, registry)
                       for f in registry.facilities}
        self._offsets: dict[int, int] = {}

    @staticmethod
    def _plan(f: Facility, policy: AlarmPolicy,
              shares: dict[tuple[str, str], dict[str, tuple[Signal, float | None, float]]],
              registry: Registry) -> _FacilityPlan:
        reach: dict[str, list[float]] = {s.id: [_reach_s(r) for r in s.rules] for s in f.sensors}
        for (fid, sid), specs in shares.items():
            if fid == f.id and sid in reach:
                reach[sid].extend(w for _sig, w, _rate in specs.values() if w is not None)
        by_sensor: dict[str, list[CompositeRule]] = {}
        comp_metrics: dict[str, frozenset[Metric]] = {}
        metric_of = {s.id: s.metric for s in f.sensors}
        for c in f.composites:
            for cond in c.all_of:
                if cond.facility is not None:
                    continue  # another facility's: read from the shared context
                reach[cond.sensor].append(_reach_s(cond))
                by_sensor.setdefault(cond.sensor, []).append(c)
            comp_metrics[c.id] = frozenset(metric_of[cond.sensor] for cond in c.all_of
                                           if cond.facility is None)
        windows = {sid: max((x for x in xs if x <= WINDOW_MAX_S), default=0.0)
                   for sid, xs in reach.items()}
        longs = {sid: max((x for x in xs if x > WINDOW_MAX_S), default=0.0)
                 for sid, xs in reach.items()}
        sensors = {}
        keys = {f"{f.id}|{GATEWAY_OFFLINE}", f"{f.id}|{SEQ_GAP}", f"{f.id}|{DARK}"}
        keys |= {f"{f.id}|{c.id}" for c in f.composites}
        for s in f.sensors:
            rules = tuple((f"{s.id}|{r.key}", _spec(r)) for r in s.rules)
            rain = s.metric is Metric.RAINFALL
            if rain:
                windows[s.id] = max(windows[s.id], RAIN_WINDOW_S)
            keep_s = windows[s.id]
            bucket = (Window.bucket_ms_for(s.interval_s, keep_s, policy.max_window_buckets)
                      if keep_s else 0)
            long_s = longs[s.id]
            long_bucket = (Window.bucket_ms_for(
                s.interval_s, long_s, min(LONG_WINDOW_BUCKETS, policy.max_window_buckets))
                if long_s else 0)
            steps = 2 * max((r.step_k for r in s.rules if r.signal is Signal.STEP), default=0)
            counts = tuple((f"{s.id}|{r.key}", r) for r in s.rules if r.signal is Signal.COUNT)
            learn = (s.baseline or BaselineSpec()) if s.learns else None
            shared = tuple(((f.id, s.id, spec), sig, w, rate) for spec, (sig, w, rate)
                           in sorted(shares.get((f.id, s.id), {}).items()))
            sensors[s.id] = _SensorPlan(s, rules, int(keep_s * 1000), bucket, s.range[0],
                                        s.range[1], f"{s.id}|{OUT_OF_RANGE}",
                                        frozenset((s.metric,)), rain, int(long_s * 1000),
                                        long_bucket, steps, counts, learn, shared)
            keys |= {f"{s.id}|{r.key}" for r in s.rules} | {f"{s.id}|{k}" for k in FAULTS}
        members: dict[str, tuple[str, ...]] = {}
        grouped: dict[str, str] = {}
        if registry.district_rules:
            named: list[tuple[str, Sensor | None, str]] = [
                (f"{s.id}|{r.key}", s, r.key) for s in f.sensors for r in s.rules]
            named += [(f"{f.id}|{c.id}", None, c.id) for c in f.composites]
            for key, sensor, rule_key in named:
                counting = [d for d in registry.district_rules
                            if d.counts(f, sensor, rule_key)]
                if counting:
                    members[key] = tuple(d.id for d in counting)
                    grouping = next((d.id for d in counting if d.groups), None)
                    if grouping is not None:
                        grouped[key] = grouping
        spread = 0.5 + (zlib.crc32(f.id.encode()) % 1000) / 2000
        return _FacilityPlan(f, sensors, tuple(f.composites),
                             {k: tuple(v) for k, v in by_sensor.items()}, comp_metrics,
                             frozenset(keys), int(policy.checkpoint_interval_s * 1000 * spread),
                             f.criticality is Criticality.CRITICAL,
                             texts.facility_words(facility_id=f.id, name=f.name,
                                                  name_zh=f.name_zh, district=f.district,
                                                  district_zh=f.district_zh),
                             texts.region_words(f.district, f.district_zh), members, grouped)

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

        # Flood guard: a sensor with more readings in this report than the policy evaluates
        # one by one still fills its windows with all of them, but its rules are evaluated
        # only for the newest ones (bounded work per report, whatever a gateway sends).
        limit = p.max_evaluations_per_report
        counts: dict[str, int] | None = None
        newest: dict[str, int] = {}
        if len(readings) > limit:
            counts = {}
            for _, r in readings:
                counts[r.sensor] = counts.get(r.sensor, 0) + 1
                newest[r.sensor] = to_epoch_ms(r.ts)
            if max(counts.values()) <= limit:
                counts = None
        seen: dict[str, int] = {}

        touched: set[str] = set()
        for index, r in readings:
            sp = plan.sensors.get(r.sensor)
            if sp is None:
                continue
            sid = r.sensor
            ss = fs.sensor(sid)
            ts = to_epoch_ms(r.ts)
            if ss.watermark and ts < ss.watermark - lateness:
                out.late.append(Problem(
                    reason=RejectReason.LATE, reading_index=index, sensor=sid,
                    detail=f"reading at {r.ts.isoformat()} is {(ss.watermark - ts) / 1000:.0f}s "
                           f"older than the newest of {sid} (allowed lateness "
                           f"{p.allowed_lateness_s:g}s)"))
                continue
            ss.watermark = max(ss.watermark, ts)
            fs.latest_ts = max(fs.latest_ts, ts)
            in_order = ss.last_ts is None or ts >= ss.last_ts
            value = r.value
            bad = not sp.lo <= value <= sp.hi
            if in_order and (bad or sp.oor_key in fs.rules):
                lo, hi = sp.lo, sp.hi
                self._fault(plan, fs, sp, OUT_OF_RANGE, bad, ts, out, value=value,
                            threshold=hi if value > hi else lo,
                            text=texts.out_of_range(_sensor_words(sp.sensor), value, r.unit,
                                                    lo, hi) if bad else
                            texts.back_in_range(_sensor_words(sp.sensor)))
            if bad:
                if in_order and value > sp.hi and self._held_by(fs, sid) is not None:
                    # Fail-dangerous: a level gauge over range high at a surcharged manhole
                    # (submerged, blind zone) means the water is at least at the top of its
                    # range, not that nothing is known.
                    self._rules(plan, fs, sp, ss, ts, sp.hi, out, upper_values_only=True)
                continue  # a faulty value must not feed windows or facility rules
            w = ss.window_for(sp.bucket_ms) if sp.keep_ms else None
            if w is not None:
                w.add(ts, value)
            lw = ss.long_window_for(sp.long_bucket_ms) if sp.long_keep_ms else None
            if lw is not None:
                lw.add(ts, value)
            if not in_order:
                continue  # windows updated; levels are decided by the newest reading
            if sp.sensor.stuck_after_s is not None:
                self._stuck(plan, fs, sp, ss, ts, value, out)
            newer = ss.last_ts is None or ts > ss.last_ts
            ss.last_ts, ss.last_value = ts, value
            if w is not None:
                w.trim(ts - sp.keep_ms)
            elif ss.window is not None:
                ss.window = None  # value rules read last_value; nothing to keep
            if lw is not None:
                lw.trim(ts - sp.long_keep_ms)
            elif ss.long_window is not None:
                ss.long_window = None
            if sp.history:
                self._history(sp, ss, ts, value, newer)
            elif ss.steps is not None or ss.counts is not None or ss.baseline is not None:
                ss.steps = ss.counts = ss.baseline = None  # their rules were removed
            touched.add(sid)
            if f"{sid}|{SENSOR_OFFLINE}" in fs.rules:
                self._fault(plan, fs, sp, SENSOR_OFFLINE, False, ts, out, value=None,
                            threshold=None,
                            text=texts.sensor_reports_again(_sensor_words(sp.sensor)))
            if counts is not None and counts.get(sid, 0) > limit:
                n = seen[sid] = seen.get(sid, 0) + 1
                if n <= counts[sid] - limit and ts < newest[sid]:
                    out.coalesced += 1
                    continue
            if sp.rain and w is not None:
                self._rain(plan, sp, w, ts, out)
            if sp.shares:
                self._share(plan, sp, ss, ts, value, out)
            if self._held_by(fs, sid) is not None:
                continue  # levels frozen while a fail-dangerous fault holds them
            self._rules(plan, fs, sp, ss, ts, value, out)

        for comp in {c.id: c for s in touched for c in plan.by_sensor.get(s, ())}.values():
            self._composite(plan, fs, comp, fs.latest_ts, out)
        self._sensor_offline(plan, fs, fs.latest_ts, out)
        if plan.facility.maintenance:
            self._silences(plan, fs, fs.latest_ts, out)
        if out.events:
            out.save = True
            fs.mark_saved()
        elif fs.latest_ts - fs.checkpoint_ts >= plan.checkpoint_ms:
            out.checkpoint = True
        return out

    def _rules(self, plan: _FacilityPlan, fs: FacilityState, sp: _SensorPlan, ss: SensorState,
               ts: int, value: float, out: Outcome, upper_values_only: bool = False) -> None:
        p = self.policy
        rules = fs.rules
        for key, rp in sp.rules:
            rule = rp.rule
            sig: float | None = value
            if rp.derived:
                if upper_values_only:
                    continue
                sig = self._derived(sp, ss, key, rule, ts, value)
            elif upper_values_only and rule.direction is not Direction.UPPER:
                continue
            if rp.gated:
                sig = self._gate(plan, rule, ts, sig)
                if sig is None:
                    continue  # not known now: the rule holds its state
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
                # The threshold of the level told (debounce may tell a lesser level than
                # the reading hits), so the words and the numbers agree.
                told = next((lv for lv in rp.levels if lv.level.value == t.level), hit)
                threshold = self._threshold(rp.levels, told)
                self._emit(plan, fs, key, rs, t, ts, out, sensor=sp.sensor, value=sig,
                           threshold=threshold, category=AlarmCategory.FACILITY,
                           text=self._rule_text(sp.sensor, rule, sig, told, threshold))

    # ------------------------------------------------------------------ derived signals
    @staticmethod
    def _windowed(ss: SensorState, signal: Signal, window_s: float | None, rate_per_s: float,
                  ts: int) -> float | None:
        """A windowed signal, from the long window when it is over 7 days."""
        if window_s is None:
            return None
        w = ss.long_window if window_s > WINDOW_MAX_S else ss.window
        return None if w is None else w.signal(signal, window_s, rate_per_s, ts)

    def _derived(self, sp: _SensorPlan, ss: SensorState, key: str, rule: Rule, ts: int,
                 value: float) -> float | None:
        """A rule's signal other than the value at the reading at ``ts``; None: not known
        (yet) — an unknown signal raises nothing."""
        s = rule.signal
        if s in WINDOWED:
            return self._windowed(ss, s, rule.window_s, rule.rate_per_s, ts)
        if s is Signal.STEP:
            return None if ss.steps is None else ss.steps.step(rule.step_k)
        local = self._local(ts)
        if s is Signal.COUNT:
            c = None if ss.counts is None else ss.counts.get(key)
            return None if c is None else c.signal(ts, local)
        b, spec = ss.baseline, sp.baseline
        if b is None or spec is None:
            return None
        if s is Signal.NIGHT_MINIMUM:
            return b.night_minimum(local, spec, rule.deviation_as)
        x = value if rule.of is Signal.VALUE else self._windowed(ss, rule.of, rule.window_s,
                                                                   rule.rate_per_s, ts)
        return None if x is None else b.deviation(local, x, spec, rule.deviation_as == "spreads")

    def _history(self, sp: _SensorPlan, ss: SensorState, ts: int, value: float,
                 newer: bool) -> None:
        """Feed an in-order reading to the sensor's steps, daily counts and baseline (the
        state of rules no longer in the registry is dropped)."""
        if sp.steps_keep:
            if ss.steps is None:
                ss.steps = Steps()
            ss.steps.add(ts, value, sp.steps_keep)
        elif ss.steps is not None:
            ss.steps = None
        local = self._local(ts) if sp.counts or sp.baseline is not None else 0
        if sp.counts:
            counts = ss.counts
            if counts is None:
                counts = ss.counts = {}
            elif len(counts) > len(sp.counts):
                keys = {k for k, _ in sp.counts}
                for k in [k for k in counts if k not in keys]:
                    del counts[k]
            for key, rule in sp.counts:
                c = counts.get(key)
                if c is None:
                    c = counts[key] = DailyCount()
                above = rule.count_above
                assert above is not None  # the registry requires it of a count
                if rule.of is Signal.VALUE:
                    base = 0.0 if rule.minus is None else self._reference(rule, ts)
                    if base is not None:
                        c.reading(ts, local, value - base, above)
                elif rule.window_s is not None:
                    c.periods(ts, local, int(rule.window_s * 1000), above,
                              partial(self._period, ss, rule))
        elif ss.counts is not None:
            ss.counts = None
        if sp.baseline is not None:
            if ss.baseline is None:
                ss.baseline = Baseline()
            if newer:
                ss.baseline.add(local, value, sp.baseline)
        elif ss.baseline is not None:
            ss.baseline = None

    def _period(self, ss: SensorState, rule: Rule, end: int) -> float | None:
        """A count's input over the period ending at event time ``end`` (exclusive), minus
        its reference's when it has one (None: not known, the period does not count)."""
        v = self._windowed(ss, rule.of, rule.window_s, rule.rate_per_s, end - 1)
        if v is None or rule.minus is None:
            return v
        base = self._reference(rule, end - 1)
        return None if base is None else v - base

    def _local(self, ts: int) -> int:
        """Event time ``ts`` (ms) as local time in the registry's zone (ms)."""
        q = ts // 900_000  # zones change offset on a quarter hour at most this finely
        off = self._offsets.get(q)
        if off is None:
            if len(self._offsets) >= _OFFSETS_MAX:
                self._offsets.clear()
            delta = datetime.fromtimestamp(ts / 1000, self.registry.tz).utcoffset()
            off = self._offsets[q] = 0 if delta is None else int(delta.total_seconds() * 1000)
        return ts + off

    def _rain(self, plan: _FacilityPlan, sp: _SensorPlan, w: Window, ts: int,
              out: Outcome) -> None:
        mm = w.signal(Signal.SUM, RAIN_WINDOW_S, 60.0, ts)
        if mm is None:
            return
        d = plan.facility.district
        if mm >= self.policy.rain_context_mm_per_h:
            if self.context.observe(d, ts):
                out.context.append((d, ts, mm, plan.facility.id, sp.sensor.id, True))
        elif mm >= WET_MM:
            if self.context.observe_wet(d, ts, mm):
                out.context.append((d, ts, mm, plan.facility.id, sp.sensor.id, False))
        elif self.context.observe_dry(d, ts):
            out.context.append((d, ts, mm, plan.facility.id, sp.sensor.id, False))

    def _share(self, plan: _FacilityPlan, sp: _SensorPlan, ss: SensorState, ts: int,
               value: float, out: Outcome) -> None:
        """This sensor's signals that other facilities' rules read, into the shared context
        (and, at most once a minute each, to the other workers)."""
        for key, sig, window_s, rate in sp.shares:
            v = value if sig is Signal.VALUE else self._windowed(ss, sig, window_s, rate, ts)
            if v is not None and self.context.share(key, ts, v):
                out.shared.append((plan.facility.district, key[0], key[1], key[2], ts, v))

    def _gate(self, plan: _FacilityPlan, rule: Rule, ts: int, sig: float | None) -> float | None:
        """A rule's signal after what it reads of the shared context: minus the reference
        sensor's same signal; None while the reference or the dry weather it needs is not
        known (the rule then holds its state)."""
        if sig is None:
            return None
        if rule.when_dry_for_s is not None:
            dry = self.context.dry_for_ms(plan.facility.district, ts)
            if dry is None or dry < rule.when_dry_for_s * 1000:
                return None
        if rule.minus is not None and rule.signal is not Signal.COUNT:  # a count's: _history
            base = self._reference(rule, ts)
            if base is None:
                return None
            sig -= base
        return sig

    def _reference(self, rule: Rule, ts: int) -> float | None:
        """The ``minus`` reference's signal at event time ``ts`` (None: not known)."""
        ref = rule.minus
        assert ref is not None
        return self.context.as_of((ref.facility, ref.sensor, share_spec(*shared_signal(rule))),
                                  ts, int(ref.max_age_s * 1000))

    # ------------------------------------------------------------------ time passing
    def tick(self, facility_id: str, fs: FacilityState, now_ms: int) -> Outcome:
        """Wall-clock check (no data at all): the gateway-offline deadman, a critical
        facility gone dark, and maintenance windows that ended while it was silent."""
        out = Outcome()
        plan = self._plans.get(facility_id)
        if plan is None or not fs.last_received:
            return out
        limit = self.policy.gateway_offline_after_intervals * plan.facility.min_interval_s
        silent_s = (now_ms - fs.last_received) / 1000
        # Event time now, as far as this facility can tell (its newest reading plus the
        # silence since): what its alarms' and windows' times are compared with.
        event_now = fs.latest_ts + max(0, now_ms - fs.last_received)
        key = f"{facility_id}|{GATEWAY_OFFLINE}"
        if silent_s > limit and fs.active(key) is None:
            # Dated on the facility's clock, like facility-dark and the windows judged here:
            # a maintenance window covers the outage by the facility's time, and a scenario
            # replayed faster than real time keeps its outages inside its own hours.
            fs.offline_wall = now_ms
            self._apply(plan, fs, key, self.policy.gateway_offline_level.value, event_now,
                        IMMEDIATE,
                        out, sensor=None, value=silent_s, threshold=limit,
                        category=AlarmCategory.GATEWAY,
                        text=texts.gateway_silent(silent_s, plan.facility.min_interval_s))
            # The facility's own alarms stay active: their data is now stale.
            for k, rs in list(fs.active_alarms().items()):
                if self._describe(plan, k)[0] is AlarmCategory.FACILITY and rs.stale is None:
                    self._update(plan, fs, k, rs, event_now, out, "stale", texts.GATEWAY_STALE)
        if plan.critical and fs.active(key) is not None:
            self._dark(plan, fs, event_now, silent_s, limit, out)
        if plan.facility.maintenance:
            self._silences(plan, fs, event_now, out)
        if out.events:
            out.save = True
        return out

    def _dark(self, plan: _FacilityPlan, fs: FacilityState, event_now: int, silent_s: float,
              limit: float, out: Outcome) -> None:
        """A critical facility silent while its district is under rain or while it was in
        alarm: the silence is the facility alarm (a blackout takes the RTU with the pumps)."""
        f = plan.facility
        key = f"{f.id}|{DARK}"
        if fs.active(key) is not None:
            return
        p = self.policy
        worst = max((tracker.severity(rs.emitted) for k, rs in fs.rules.items()
                     if rs.emitted is not None and not k.endswith(f"|{DARK}")
                     and self._describe(plan, k)[0] is AlarmCategory.FACILITY), default=0)
        raining = self.context.raining(f.district, fs.latest_ts,
                                       int(p.rain_context_hold_s * 1000))
        if not raining and worst < p.dark_if_active_from.severity:
            return
        level = p.dark_level_if_serious if worst >= _ORANGE else p.dark_level
        self._apply(plan, fs, key, level.value, event_now, IMMEDIATE, out, sensor=None,
                    value=silent_s, threshold=limit, category=AlarmCategory.FACILITY,
                    text=texts.facility_dark(silent_s, district=plan.region if raining else None,
                                             was_level=tracker.level_of(worst)))

    # ------------------------------------------------------------------ parts
    def _gateway_report(self, plan: _FacilityPlan, fs: FacilityState, seq: int, received: int,
                        ts: int, out: Outcome) -> None:
        fid = plan.facility.id
        key = f"{fid}|{GATEWAY_OFFLINE}"
        offline = fs.active(key)
        # Only a report ingest received after the outage began proves the gateway is back
        # (wall clock against wall clock: the alarm itself is dated on the facility's).
        if offline is not None and received > (fs.offline_wall or offline.since):
            fs.offline_wall = 0
            fs.resumed_ts = ts
            self._apply(plan, fs, key, None, received, IMMEDIATE, out, sensor=None, value=None,
                        threshold=None, category=AlarmCategory.GATEWAY,
                        text=texts.GATEWAY_BACK)
            dark = f"{fid}|{DARK}"
            if dark in fs.rules:
                self._apply(plan, fs, dark, None, max(ts, fs.rules[dark].since), IMMEDIATE, out,
                            sensor=None, value=None, threshold=None,
                            category=AlarmCategory.FACILITY,
                            text=texts.DARK_BACK)
            for k, rs in list(fs.active_alarms().items()):
                if rs.stale is not None:
                    self._update(plan, fs, k, rs, max(ts, rs.stale), out, "fresh",
                                 texts.GATEWAY_FRESH)
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
                        text=texts.gateway_gap(missing, last, seq))
            return
        fs.gap_ok += 1
        if fs.gap_ok >= self.policy.gap_clear_reports and fs.active(gap_key) is not None:
            self._apply(plan, fs, gap_key, None, ts, IMMEDIATE, out, sensor=None, value=None,
                        threshold=None, category=AlarmCategory.GATEWAY,
                        text=texts.gateway_in_sequence(fs.gap_ok))

    def _stuck(self, plan: _FacilityPlan, fs: FacilityState, sp: _SensorPlan, ss: SensorState,
               ts: int, value: float, out: Outcome) -> None:
        s = sp.sensor
        assert s.stuck_after_s is not None
        same = ss.last_value is not None and abs(value - ss.last_value) <= s.stuck_epsilon
        if not same or ss.same_since is None:
            ss.same_since = ts
        stuck = same and ts - ss.same_since >= s.stuck_after_s * 1000
        if stuck or f"{s.id}|{STUCK}" in fs.rules:
            self._fault(plan, fs, sp, STUCK, stuck, ts, out, value=value,
                        threshold=s.stuck_after_s,
                        text=texts.sensor_stuck(_sensor_words(s), value, s.unit,
                                                (ts - ss.same_since) / 1000, s.stuck_after_s)
                        if stuck else texts.sensor_changes_again(_sensor_words(s), value, s.unit))

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
                self._fault(plan, fs, sp, SENSOR_OFFLINE, True, now, out,
                            value=(now - base) / 1000, threshold=limit_ms / 1000,
                            text=texts.sensor_offline(_sensor_words(sp.sensor),
                                                      (now - base) / 1000, sp.sensor.interval_s))

    # ------------------------------------------------------------------ sensor faults
    def _fault(self, plan: _FacilityPlan, fs: FacilityState, sp: _SensorPlan, fault: str,
               on: bool, ts: int, out: Outcome, *, value: float | None,
               threshold: float | None, text: Bi) -> None:
        """Raise or clear a sensor fault, and decide what it does to the sensor's facility
        alarms: a fault from calm suppresses them; a fault that begins while the sensor was
        serious holds them (fail-dangerous); when the last fault ends they are told again."""
        sid = sp.sensor.id
        key = f"{sid}|{fault}"
        before = fs.active(key) is not None
        danger = on and not before and self._serious(fs, sp)
        if danger:
            text = Bi(text.zh + texts.FAIL_DANGEROUS.zh, text.en + texts.FAIL_DANGEROUS.en)
        self._apply(plan, fs, key, self.policy.sensor_fault_level.value if on else None, ts,
                    IMMEDIATE, out, sensor=sp.sensor, value=value, threshold=threshold,
                    category=AlarmCategory.SENSOR, text=text)
        rs = fs.rules.get(key)
        after = rs is not None and rs.emitted is not None
        if after and not before:
            assert rs is not None
            rs.danger = danger
            if danger:
                for rkey, _ in sp.rules:
                    rr = fs.active(rkey)
                    if rr is not None and rr.held_by is None:
                        self._update(plan, fs, rkey, rr, ts, out, "held",
                                     texts.fault_held(_sensor_words(sp.sensor), fault))
        elif before and not after:
            if rs is not None:
                rs.danger = False
            if all(fs.active(f"{sid}|{f}") is None for f in FAULTS):
                for rkey, _ in sp.rules:
                    rr = fs.active(rkey)
                    if rr is not None and (rr.held_by is not None or rr.suppressed is not None):
                        self._update(plan, fs, rkey, rr, ts, out, "fault-over",
                                     texts.fault_over(_sensor_words(sp.sensor)))

    def _serious(self, fs: FacilityState, sp: _SensorPlan) -> bool:
        """The sensor's recent state makes a fault now fail-dangerous."""
        for key, _ in sp.rules:
            rs = fs.active(key)
            if rs is not None and (tracker.severity(rs.emitted) >= _ORANGE or rs.rising):
                return True
        d = sp.sensor.pipe_diameter_m
        ss = fs.sensors.get(sp.sensor.id)
        return d is not None and ss is not None and ss.last_value is not None \
            and ss.last_value > d  # the pipe runs surcharged

    def _held_by(self, fs: FacilityState, sid: str) -> str | None:
        for fault in FAULTS:
            fr = fs.active(f"{sid}|{fault}")
            if fr is not None and fr.danger:
                return fr.alarm_id
        return None

    def _condition(self, plan: _FacilityPlan, fs: FacilityState, c: Condition,
                   now: int) -> bool:
        if c.facility is not None:  # another facility's sensor: its newest shared signal
            v = self.context.as_of((c.facility, c.sensor, share_spec(c.signal, c.window_s,
                                                                     c.rate_per_s)),
                                   now, int(c.max_age_s * 1000))
            if v is None:
                return False  # not known: not true
            return v >= c.value if c.op == ">=" else v <= c.value
        ss = fs.sensors.get(c.sensor)
        sp = plan.sensors[c.sensor]
        if ss is None or ss.last_ts is None:
            return False
        if now - ss.last_ts > self.policy.sensor_offline_after_intervals * sp.sensor.interval_s * 1000:
            return False  # stale: unknown, not true
        if c.signal is Signal.VALUE:
            v = ss.last_value
        else:
            v = self._windowed(ss, c.signal, c.window_s, c.rate_per_s, ss.last_ts)
        if v is None:
            return False
        return v >= c.value if c.op == ">=" else v <= c.value

    def _composite(self, plan: _FacilityPlan, fs: FacilityState, comp: CompositeRule, now: int,
                   out: Outcome) -> None:
        on = all(self._condition(plan, fs, c, now) for c in comp.all_of)
        parts = [self._condition_words(plan, c) for c in comp.all_of]
        timing = Timing(comp.raise_after_s, 1, comp.clear_after_s, 1)
        self._apply(plan, fs, f"{plan.facility.id}|{comp.id}", comp.level.value if on else None,
                    now, timing, out, sensor=None, value=None, threshold=None,
                    text=texts.composite(comp.description, parts, on))

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
                           text=texts.RULE_REMOVED)
            del fs.rules[key]

    # ------------------------------------------------------------------ standing
    def _describe(self, plan: _FacilityPlan, key: str) -> tuple[AlarmCategory, Sensor | None]:
        """An alarm's category and sensor, from its state key."""
        owner, rule = key.split("|", 1)
        sp = plan.sensors.get(owner)
        if rule in FAULTS:
            return AlarmCategory.SENSOR, sp.sensor if sp is not None else None
        if rule in (GATEWAY_OFFLINE, SEQ_GAP) and owner == plan.facility.id:
            return AlarmCategory.GATEWAY, None
        return AlarmCategory.FACILITY, sp.sensor if sp is not None else None

    def _windows(self, plan: _FacilityPlan, category: AlarmCategory, sensor: Sensor | None,
                 rule: str, level: str | None, ts: int) -> tuple[bool, EntryInfo | None]:
        """(silenced, confined-space entry) for an alarm at event time ``ts``."""
        f = plan.facility
        active = [w for w in f.maintenance if in_window(w, ts, self.registry.tz)]
        if not active:
            return False, None
        if sensor is not None:
            metrics = frozenset((sensor.metric,))
        else:
            metrics = plan.comp_metrics.get(rule, f.metrics)
        if metrics & LIFE_SAFETY_METRICS:
            for w in active:
                if w.entry:
                    assert w.crew_leader is not None and w.crew_phone is not None
                    return False, EntryInfo(reason=w.reason, crew_leader=w.crew_leader,
                                            crew_phone=w.crew_phone)
        lv = AlarmLevel(level) if level else None
        return any(w.covers(category, metrics, lv) for w in active), None

    def _silences(self, plan: _FacilityPlan, fs: FacilityState, at_ms: int,
                  out: Outcome) -> None:
        """Alarms silenced by a window that has ended (or no longer covers them) are told
        again, so they are paged now."""
        for key, rs in list(fs.rules.items()):
            if rs.emitted is None or not rs.silenced:
                continue
            category, sensor = self._describe(plan, key)
            silenced, _ = self._windows(plan, category, sensor, key.split("|", 1)[1],
                                        rs.emitted, at_ms)
            if not silenced:
                self._update(plan, fs, key, rs, max(at_ms, rs.since), out, "unsilenced",
                             texts.UNSILENCED)

    def _update(self, plan: _FacilityPlan, fs: FacilityState, key: str, rs: RuleState, ts: int,
                out: Outcome, why: str, text: Bi) -> None:
        """Tell an active alarm's changed standing (same level): an ``updated`` event."""
        category, sensor = self._describe(plan, key)
        self._emit(plan, fs, key, rs, Transition(AlarmEventType.UPDATED, rs.emitted, rs.emitted,
                                                 False), ts, out, sensor=sensor, value=None,
                   threshold=None, category=category, text=text, why=why)

    # ------------------------------------------------------------------ emitting
    def _apply(self, plan: _FacilityPlan, fs: FacilityState, key: str, candidate: str | None,
               ts: int, timing: Timing, out: Outcome, *, sensor: Sensor | None,
               value: float | None, threshold: float | None, text: Bi,
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
              text: Bi, why: str = "") -> None:
        f = plan.facility
        rule = key.split("|", 1)[1]
        sensor_id = sensor.id if sensor is not None else f.id
        if t.new_episode or rs.alarm_id is None:
            rs.alarm_id = alarm_id_for(f.id, sensor_id, rule, _dt(ts))
            rs.since = ts
        alarm_id = rs.alarm_id
        level = AlarmLevel(t.level) if t.level else None
        prev = AlarmLevel(t.previous) if t.previous else None
        message = texts.compose(plan.place, text, t.event.value, level)
        # Standing: what inhibits, holds or silences this alarm now.
        suppressed = held = None
        gw = fs.active(f"{f.id}|{GATEWAY_OFFLINE}")
        if category is AlarmCategory.SENSOR and gw is not None:
            suppressed = gw.alarm_id  # an outage explains its sensors' silence
        elif category is AlarmCategory.FACILITY and sensor is not None:
            for fault in FAULTS:
                fr = fs.active(f"{sensor.id}|{fault}")
                if fr is not None:
                    if fr.danger:
                        held = fr.alarm_id
                    else:
                        suppressed = fr.alarm_id
                    break
        stale = fs.latest_ts if (gw is not None and category is AlarmCategory.FACILITY
                                 and rule != DARK and level is not None) else None
        silenced, entry = (self._windows(plan, category, sensor, rule, t.level or t.previous, ts)
                           if f.maintenance else (False, None))
        if t.event in _UP:
            rs.rising = True
        elif t.event is not AlarmEventType.UPDATED:
            rs.rising = False
        rs.suppressed, rs.silenced, rs.held_by, rs.stale = suppressed, silenced, held, stale
        detail = (f"{why}|{suppressed}|{silenced}|{held}|{stale}"
                  if t.event is AlarmEventType.UPDATED else "")
        unit = self._unit(sensor, rule) if sensor is not None else ""
        grouped = plan.grouped.get(key) if category is AlarmCategory.FACILITY else None
        ev = AlarmEvent(
            event_id=event_id_for(alarm_id, t.event, level, _dt(ts), detail), alarm_id=alarm_id,
            event=t.event, level=level, previous_level=prev, category=category,
            facility_id=f.id, kind=f.kind, facility_name=f.name, facility_name_zh=f.name_zh,
            district=f.district, district_zh=f.district_zh, sensor=sensor_id,
            metric=sensor.metric if sensor is not None else None, rule=rule,
            value=value, threshold=threshold, unit=unit, ts=_dt(ts), message=message,
            silenced=silenced, suppressed_by=suppressed, flapping=rs.flapping,
            held_by_fault=held, stale_since=_dt(stale) if stale else None, entry=entry,
            grouped_into=grouped)
        out.events.append(ev)
        districts = plan.members.get(key) if category is AlarmCategory.FACILITY else None
        if districts:
            out.members.append((ev, districts))
        if t.level is None and not rs.flapping:
            rs.alarm_id = None  # episode over; a new raise starts a new one
            rs.suppressed, rs.silenced, rs.held_by, rs.stale = None, False, None, None

    @staticmethod
    def _unit(sensor: Sensor, rule_key: str) -> str:
        """The unit of an alarm's value: its rule's signal's, else the metric's."""
        rule = next((r for r in sensor.rules if r.key == rule_key), None)
        return METRICS[sensor.metric].unit if rule is None else _signal_unit(sensor, rule)

    @staticmethod
    def _threshold(levels: tuple[Level, ...], hit: Level | None) -> float:
        return hit.raise_at if hit is not None else levels[0].clear_value

    @staticmethod
    def _rule_text(s: Sensor, rule: Rule, value: float | None, hit: Level | None,
                   threshold: float) -> Bi:
        return texts.rule_message(s.metric, rule.signal.value, rule.window_s,
                                  rule.direction.value, value, _signal_unit(s, rule),
                                  hit.level if hit is not None else None, threshold)

    def _condition_words(self, plan: _FacilityPlan, c: Condition) -> Bi:
        if c.facility is not None:
            other = self.registry.sensor(c.facility, c.sensor)
            return texts.condition_words(other.metric if other else None,
                                         f"{c.facility}/{c.sensor}", c.signal.value,
                                         c.window_s, c.op, c.value, other.unit if other else "")
        s = plan.sensors[c.sensor].sensor
        unit = s.unit
        if c.signal is Signal.RATE:
            unit = f"{unit}/{_per(c.rate_per_s)}"
        return texts.condition_words(s.metric, s.id, c.signal.value, c.window_s, c.op, c.value,
                                     unit)


def _shares(registry: Registry) -> dict[tuple[str, str],
                                        dict[str, tuple[Signal, float | None, float]]]:
    """Per (facility, sensor): the signals other facilities' rules and conditions read of
    it, by their context spec."""
    out: dict[tuple[str, str], dict[str, tuple[Signal, float | None, float]]] = {}
    for f in registry.facilities:
        for s in f.sensors:
            for r in s.rules:
                if r.minus is not None:
                    sig, window_s, rate = shared_signal(r)
                    out.setdefault((r.minus.facility, r.minus.sensor), {})[share_spec(
                        sig, window_s, rate)] = (sig, window_s, rate)
        for c in f.composites:
            for cond in c.all_of:
                if cond.facility is not None:
                    out.setdefault((cond.facility, cond.sensor), {})[share_spec(
                        cond.signal, cond.window_s, cond.rate_per_s)] = (
                        cond.signal, cond.window_s, cond.rate_per_s)
    return out


def _signal_unit(s: Sensor, rule: Rule) -> str:
    """A rule's signal's unit: the sensor's; per ``rate_per_s`` for a rate; ``/d`` (per
    local day) for a count; ``σ`` for a deviation in spreads."""
    if rule.signal is Signal.RATE:
        return f"{s.unit}/{_per(rule.rate_per_s)}"
    if rule.signal is Signal.COUNT:
        return "/d"
    if rule.deviation_as == "spreads":
        return "σ"
    return s.unit


_PER = {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "d", 30 * 86400.0: "30d"}


def _per(rate_per_s: float) -> str:
    """What a rate is per, in words of a unit: ``min``, ``d``, ``30d`` (a month), ``90s``."""
    return _PER.get(rate_per_s, f"{rate_per_s:g}s")
