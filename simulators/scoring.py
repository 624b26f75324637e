"""How well the alarm engine saw what happened: the scenario's ground truth against the
alarm events Lifeline produced.

- per expectation of every storm and incident: detected (a *facility* alarm on that
  facility — and sensor and rule, if named — at the stated level or worse, reported
  between the start and ``within_s`` after it), and the detection delay. A facility-wide
  alarm (composite, ``facility-dark``) has the facility id as its sensor: it satisfies an
  expectation naming no sensor or naming the facility id;
- false alarms: facility alarms raised that no storm or incident explains (an alarm on a
  facility in a storm's district or an incident's facility, between its start and its end
  plus ``GRACE_S``, is explained), per 1,000 sensor-hours;
- sensor faults misreported: facility alarms on a sensor (or facility, for gateway faults)
  while a fault was injected there, that nothing real explains — the engine should have
  called them sensor or gateway faults.

What "explains" an alarm depends on the truth given. Without ``risk`` (the old rule, kept
for callers that have only the scenario): a storm over the facility's district or an
incident on it, from its start to ``GRACE_S`` after its end. With ``risk`` — the physics'
own ground truth, the episodes over which each facility really was at risk
(``ScenarioRun.risk``: surcharged, overflowing, wet well above its alarm level, bridge
response above its limit, gas above its limit …) — an alarm is explained only by a risk
episode *at that facility*, of a hazard that concerns the alarm's metric (any hazard for
an alarm without one: a composite, facility-dark), from ``RISK_LEAD_S`` before the
episode (a warning that came true: rate of rise, rain-and-rising) to ``RISK_GRACE_S``
after it. Every other facility alarm is false. Precision is explained alarms over all
facility alarms; recall is risk episodes (of at least ``MIN_EPISODE_S``; episodes of one
hazard at one facility less than ``MERGE_GAP_S`` apart are one) during which some
alarm of the facility concerning the hazard stood, over all episodes; the detection
delay of an episode is the first such alarm's raise (or release) less the episode's start
(negative: it warned ahead, at most ``RISK_LEAD_S``). Both per scenario, per facility kind
and per hazard, with delay percentiles (p50, p90, max). Without ``risk`` precision counts
the explained alarms the old way and recall is the expectations met.

Reported means paged: a facility alarm's ``raised``, ``escalated`` or ``flapping`` event,
or an ``updated`` one (same level, changed standing), that is neither ``suppressed_by`` a
sensor or gateway fault nor ``silenced`` by maintenance. So an alarm suppressed when it
was raised and released later (``updated`` with ``suppressed_by`` null, once the fault
clears) counts as reported — and detected — from the release; an ``updated`` with
``held_by_fault`` (a fault began while the alarm was serious: held, still paged) keeps it
reported. Suppressed (``inhibited``), silenced and held alarms are counted apart.

``expect_silenced``: some alarm at that facility (and sensor) came out silenced, and none
there was paged.

Times are event times: alarm ``ts`` against the scenario's ``t0`` + offsets.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from schemas.alarm import AlarmCategory, AlarmEvent, AlarmEventType
from schemas.kinds import AlarmLevel
from schemas.oncall import OnCallConfig
from schemas.registry import Registry
from schemas.scenario import Expect, Scenario
from simulators.facilities import HAZARD_METRICS, Hazard
from simulators.scenario import Episode

GRACE_S = 3600.0  # after a storm or incident ends, its alarms may take this long to clear
RISK_LEAD_S = 1800.0  # an alarm this long before a risk episode warned of it
RISK_GRACE_S = 900.0  # … and one this long after it ended is late, not false
MIN_EPISODE_S = 60.0  # shorter risk (a truck crossing) explains alarms but is no miss
MERGE_GAP_S = 1800.0  # episodes of one hazard at one facility closer than this are one
FLAP_GAP_S = 1800.0  # an alarm raised again sooner than this after it cleared flaps
RAISING = (AlarmEventType.RAISED, AlarmEventType.ESCALATED, AlarmEventType.FLAPPING)
# Events that page (unless suppressed or silenced): a raise, or a change of standing.
REPORTING = (*RAISING, AlarmEventType.UPDATED)


@dataclass
class ExpectScore:
    source: str
    facility: str
    sensor: str | None
    level: str
    within_s: float
    detected: bool
    delay_s: float | None
    alarm_rule: str | None = None
    rule: str | None = None  # the rule the expectation names


@dataclass
class SilencedScore:
    facility: str
    sensor: str | None
    silenced: int  # alarms there that came out silenced
    paged: int  # alarms there that were paged all the same

    @property
    def met(self) -> bool:
        return self.silenced > 0 and self.paged == 0


@dataclass
class Tally:
    """Precision and recall of one slice (a facility kind, a hazard, the scenario)."""

    alarms: int = 0  # facility alarms (episodes of the engine's, counted once)
    true_alarms: int = 0  # … that the truth explains
    episodes: int = 0  # risk episodes (recall's denominator)
    detected: int = 0  # … during which an alarm stood

    @property
    def precision(self) -> float | None:
        return self.true_alarms / self.alarms if self.alarms else None

    @property
    def recall(self) -> float | None:
        return self.detected / self.episodes if self.episodes else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "precision": _round(self.precision),
                "recall": _round(self.recall)}


@dataclass
class Score:
    scenario: str
    sensors: int
    hours: float
    expectations: list[ExpectScore] = field(default_factory=list)
    facility_alarms: int = 0
    false_alarms: list[dict[str, Any]] = field(default_factory=list)
    faults_as_facility_alarms: list[dict[str, Any]] = field(default_factory=list)
    sensor_or_gateway_alarms: int = 0
    inhibited: int = 0  # alarms suppressed by a sensor or gateway fault (at some time)
    released: int = 0  # facility alarms among them released later (updated, unsuppressed)
    silenced: int = 0  # alarms (any category) silenced by a maintenance window
    held_by_fault: int = 0  # facility alarms held by a fault that began while they were serious
    silenced_expectations: list[SilencedScore] = field(default_factory=list)
    truth: str = "incidents"  # what explained alarms: "incidents" (the old rule) or "physics"
    overall: Tally = field(default_factory=Tally)
    by_kind: dict[str, Tally] = field(default_factory=dict)
    by_hazard: dict[str, Tally] = field(default_factory=dict)  # physics only
    delays_s: list[float] = field(default_factory=list)  # per detected episode (expectation)
    missed_risk: list[dict[str, Any]] = field(default_factory=list)  # physics only
    # District alarms (decision 0023), one row per episode: district, rule, worst level,
    # raised at t_s — not facility alarms, so neither true nor false here.
    district_alarms: list[dict[str, Any]] = field(default_factory=list)
    # Facility alarms that flapped: a ``flapping`` event, or raised again less than
    # FLAP_GAP_S after clearing (one row per time).
    flapping: list[dict[str, Any]] = field(default_factory=list)
    # What the alarms cost the people on call (simulators.paging), when measured.
    paging: dict[str, Any] | None = None

    @property
    def precision(self) -> float | None:
        return self.overall.precision

    @property
    def recall(self) -> float | None:
        return self.overall.recall

    def delay_percentile(self, p: float) -> float | None:
        """The ``p``-th percentile (nearest rank) of the detection delays, seconds."""
        if not self.delays_s:
            return None
        ordered = sorted(self.delays_s)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    @property
    def detected(self) -> int:
        return sum(e.detected for e in self.expectations)

    @property
    def false_alarm_rate(self) -> float:
        """False facility alarms per 1,000 sensor-hours."""
        sensor_hours = self.sensors * self.hours
        return 1000 * len(self.false_alarms) / sensor_hours if sensor_hours else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for row, e in zip(d["silenced_expectations"], self.silenced_expectations, strict=True):
            row["met"] = e.met
        d.update(detected=self.detected, expected=len(self.expectations),
                 false_alarms_per_1000_sensor_hours=round(self.false_alarm_rate, 3),
                 precision=_round(self.precision), recall=_round(self.recall),
                 delay_p50_s=self.delay_percentile(50), delay_p90_s=self.delay_percentile(90),
                 delay_max_s=self.delay_percentile(100), overall=self.overall.as_dict(),
                 by_kind={k: v.as_dict() for k, v in self.by_kind.items()},
                 by_hazard={k: v.as_dict() for k, v in self.by_hazard.items()})
        return d

    def summary(self) -> list[str]:
        """Precision, recall and delays: the scenario's line and one per kind and hazard."""
        what = ("risk episodes" if self.truth == "physics" else "expectations")

        def row(name: str, x: Tally) -> str:
            return (f"  {name:<20} precision {_pct(x.precision):>6} ({x.true_alarms}/"
                    f"{x.alarms} alarms)  recall {_pct(x.recall):>6} ({x.detected}/"
                    f"{x.episodes} {what})")

        delays = "/".join("-" if v is None else f"{v:.0f}s" for v in
                          (self.delay_percentile(50), self.delay_percentile(90),
                           self.delay_percentile(100)))
        lines = [f"truth: {self.truth}; detection delay p50/p90/max {delays}",
                 row("all", self.overall)]
        lines += [row(f"kind {k}", v) for k, v in sorted(self.by_kind.items())]
        lines += [row(f"hazard {k}", v) for k, v in sorted(self.by_hazard.items())]
        return lines

    def passed(self, scenario: Scenario) -> bool:
        return (self.detected == len(self.expectations) and not self.faults_as_facility_alarms
                and (not scenario.expect_no_alarms or self.facility_alarms == 0)
                and all(e.met for e in self.silenced_expectations)
                and self.false_alarm_rate <= scenario.max_false_alarms_per_1000_sensor_hours
                and (not scenario.expect_no_flapping or not self.flapping)
                and self.paging_met(scenario) is not False)

    def paging_met(self, scenario: Scenario) -> bool | None:
        """The scenario's ``expect_paging`` held (None: it has none; False also when it
        was not measured)."""
        x = scenario.expect_paging
        if x is None:
            return None
        p = self.paging
        if p is None or p["ack_after_s"] != x.ack_after_s:
            return False
        ratio = p["messages"] / p["notifications"] if p["notifications"] else 0.0
        return p["max_per_person_hour"] <= x.max_per_person_hour and ratio <= x.max_message_ratio

    def table(self) -> str:
        lines = [f"scenario {self.scenario}: {self.sensors} sensors, {self.hours:.1f} h",
                 f"{'source':<28} {'facility':<14} {'sensor':<16} {'level':<7} "
                 f"{'within':>7} {'result':<9} {'delay':>7} rule"]
        for e in self.expectations:
            result = "detected" if e.detected else "MISSED"
            delay = f"{e.delay_s:.0f}s" if e.delay_s is not None else "-"
            lines.append(f"{e.source:<28} {e.facility:<14} {e.sensor or '*':<16} {e.level:<7} "
                         f"{e.within_s:>6.0f}s {result:<9} {delay:>7} "
                         f"{e.alarm_rule or e.rule or '-'}")
        for x in self.silenced_expectations:
            lines.append(f"{'expect silenced':<28} {x.facility:<14} {x.sensor or '*':<16} "
                         f"{'silenced' if x.met else 'NOT SILENCED'}: {x.silenced} silenced, "
                         f"{x.paged} paged")
        lines.append(f"incidents detected: {self.detected}/{len(self.expectations)}; facility "
                     f"alarms raised: {self.facility_alarms}; false alarms: "
                     f"{len(self.false_alarms)} ({self.false_alarm_rate:.3f} per 1,000 "
                     f"sensor-hours); sensor faults reported as facility alarms: "
                     f"{len(self.faults_as_facility_alarms)}; sensor/gateway alarms: "
                     f"{self.sensor_or_gateway_alarms}; suppressed: {self.inhibited} "
                     f"(released {self.released}); silenced: {self.silenced}; held by a "
                     f"fault: {self.held_by_fault}")
        if self.flapping:
            lines.append(f"flapping: {len(self.flapping)} — " + ", ".join(
                f"{r['facility']} {r['rule']} at {r['t_s'] / 3600:.1f} h ({r['why']})"
                for r in self.flapping[:8]))
        if self.paging is not None:
            p = self.paging
            lines.append(
                f"paging (answered after {p['ack_after_s']:.0f} s): {p['notifications']} "
                f"notifications in {p['messages']} messages ({p['grouped_messages']} grouped); "
                f"paged alarms {p['paged_episodes']}, {p['grouped_members']} members paged "
                f"through a district alarm; busiest hour {p['max_per_person_hour']} messages "
                f"({p['busiest']})")
        lines += self.summary()
        if self.district_alarms:
            lines.append(f"district alarms: {len(self.district_alarms)} — " + ", ".join(
                f"{r['rule']} {r['district']} {r['level']}" for r in self.district_alarms[:12]))
        for row in self.false_alarms[:20]:
            lines.append(f"  false alarm: {row}")
        for row in self.missed_risk[:20]:
            lines.append(f"  risk with no alarm: {row}")
        for row in self.faults_as_facility_alarms[:20]:
            lines.append(f"  fault reported as facility alarm: {row}")
        return "\n".join(lines)


def score(scenario: Scenario, t0: float, sensors: int, alarms: list[AlarmEvent],
          districts: dict[str, str], facilities: set[str] | None = None, *,
          risk: list[Episode] | None = None) -> Score:
    """Score ``alarms`` (any order, duplicates allowed) against the scenario's truth;
    ``districts`` maps facility ids to districts (the registry's), for storms; ``risk``
    (``ScenarioRun.risk``, or ``risk_from_document`` of its truth file) judges alarms
    against the physics instead of the storms' districts."""
    seen: set[str] = set()
    mine: list[tuple[float, AlarmEvent]] = []
    district_episodes: dict[str, dict[str, Any]] = {}
    for ev in scenario_events(scenario, t0, alarms):
        t = ev.ts.timestamp()
        if ev.event_id in seen:
            continue
        if ev.category is AlarmCategory.DISTRICT:
            seen.add(ev.event_id)
            row = district_episodes.setdefault(ev.alarm_id, {
                "district": ev.district, "rule": ev.rule, "level": None, "t_s": None})
            if ev.level is not None and (row["level"] is None or ev.level.severity
                                         > AlarmLevel(row["level"]).severity):
                row["level"] = ev.level.value
            if ev.event is AlarmEventType.RAISED:
                row["t_s"] = round(t - t0, 1)
            continue
        if facilities is not None and ev.facility_id not in facilities:
            continue
        seen.add(ev.event_id)
        mine.append((t - t0, ev))
    mine.sort(key=lambda x: x[0])
    s = Score(scenario.name, sensors, scenario.duration_s / 3600)
    s.district_alarms = sorted(district_episodes.values(),
                               key=lambda r: (r["t_s"] if r["t_s"] is not None else -1.0,
                                              r["district"] or "", r["rule"]))
    # Inhibited alarms (a sensor or gateway fault explains them; recorded, paged to
    # nobody) and silenced ones (maintenance) are not reported as facility alarms; an
    # inhibited one released later is reported from its release.
    # Alarms raised after the scenario's end are not its alarms: when a simulation stops,
    # every gateway falls silent at once (and critical facilities go "dark").
    facility_alarms = [(t, ev) for t, ev in mine if ev.category is AlarmCategory.FACILITY
                       and _paged(ev) and t <= scenario.duration_s]
    suppressed = {ev.alarm_id for _, ev in mine if ev.suppressed_by is not None}
    s.inhibited = len(suppressed)
    s.released = len(suppressed & {ev.alarm_id for _, ev in facility_alarms})
    s.silenced = len({ev.alarm_id for _, ev in mine if ev.silenced})
    s.held_by_fault = len({ev.alarm_id for _, ev in mine if ev.held_by_fault is not None})
    s.sensor_or_gateway_alarms = len({ev.alarm_id for _, ev in mine
                                      if ev.category is not AlarmCategory.FACILITY})
    s.facility_alarms = len({ev.alarm_id for _, ev in facility_alarms})

    def check(source: str, start: float, e: Expect) -> None:
        hit = next(((t, ev) for t, ev in facility_alarms
                    if ev.facility_id == e.facility
                    and (e.sensor is None or ev.sensor == e.sensor)
                    and (e.rule is None or ev.rule == e.rule)
                    and ev.level is not None and ev.level.severity >= e.level.severity
                    and start <= t <= start + e.within_s), None)
        s.expectations.append(ExpectScore(
            source, e.facility, e.sensor, e.level.value, e.within_s, hit is not None,
            None if hit is None else round(hit[0] - start, 1),
            None if hit is None else hit[1].rule, e.rule))

    explained: list[tuple[set[str] | None, str | None, float, float]] = []
    for st in scenario.storms:
        for e in st.expect:
            check(st.name, st.start_s, e)
        explained.append((None, "|".join(sorted(st.districts)), st.start_s,
                          st.start_s + st.duration_s + GRACE_S))
    for inc in scenario.incidents:
        for e in inc.expect:
            check(inc.name, inc.start_s, e)
        explained.append(({inc.facility}, None, inc.start_s,
                          inc.start_s + inc.duration_s + GRACE_S))

    def is_explained(t: float, ev: AlarmEvent, district: str | None) -> bool:
        for facs, storm_districts, a, b in explained:
            if not a <= t <= b:
                continue
            if facs is not None and ev.facility_id in facs:
                return True
            if (storm_districts is not None and district is not None
                    and district in storm_districts.split("|")):
                return True
        return False

    first: dict[str, tuple[float, AlarmEvent]] = {}
    for t, ev in facility_alarms:
        first.setdefault(ev.alarm_id, (t, ev))
    episodes = _merged(risk) if risk is not None else []
    if risk is not None:
        s.truth = "physics"
        _recall(s, episodes, first, mine, scenario.duration_s)
    by_facility: dict[str, list[Episode]] = {}
    for ep in episodes:
        by_facility.setdefault(ep.facility, []).append(ep)

    def at_risk(t: float, ev: AlarmEvent) -> bool:
        return any(x.start_s - RISK_LEAD_S <= t <= x.end_s + RISK_GRACE_S
                   and _concerns(x.hazard, ev) for x in by_facility.get(ev.facility_id, ()))

    for t, ev in first.values():
        district = districts.get(_base(ev.facility_id))
        kind = s.by_kind.setdefault(ev.kind.value, Tally())
        kind.alarms += 1
        s.overall.alarms += 1
        if at_risk(t, ev) if risk is not None else is_explained(t, ev, district):
            kind.true_alarms += 1
            s.overall.true_alarms += 1
            continue
        row = {"t_s": round(t, 1), "facility": ev.facility_id, "sensor": ev.sensor,
               "rule": ev.rule, "level": ev.level.value if ev.level else None}
        faulty = [f for f in scenario.faults if f.facility == _base(ev.facility_id)
                  and (f.sensor is None or f.sensor == ev.sensor or ev.sensor == ev.facility_id)
                  and f.start_s <= t <= f.start_s + f.duration_s + GRACE_S]
        if faulty:
            s.faults_as_facility_alarms.append({**row, "fault": faulty[0].kind.value})
        else:
            s.false_alarms.append(row)

    for x in scenario.expect_silenced:
        there = [ev for _, ev in mine if ev.facility_id == x.facility
                 and (x.sensor is None or ev.sensor == x.sensor)
                 and ev.event in REPORTING and ev.level is not None]
        paged = {ev.alarm_id for ev in there if _paged(ev)}
        s.silenced_expectations.append(SilencedScore(
            x.facility, x.sensor, len({ev.alarm_id for ev in there if ev.silenced} - paged),
            len(paged)))
    if risk is None:  # recall: the expectations met, delays theirs
        s.overall.episodes, s.overall.detected = len(s.expectations), s.detected
        s.delays_s = [e.delay_s for e in s.expectations if e.delay_s is not None]
    s.flapping = _flapping(mine, scenario.duration_s)
    return s


def scenario_events(scenario: Scenario, t0: float, alarms: list[AlarmEvent]
                    ) -> list[AlarmEvent]:
    """The alarm events that are the scenario's: from its start to ``GRACE_S`` after its
    end, of episodes that began in it. An alarm raised before the start (a scenario run
    after another on one pipeline: a gauge's alarm left standing while its gateway was
    silent, cleared or updated by the scenario's first readings) is the earlier one's."""
    end = t0 + scenario.duration_s + GRACE_S
    # Judged by the raise: a gateway's return is dated on the wall clock (the processor's
    # receipt, services.processor.engine), which a replay at high speed leaves behind.
    before = {ev.alarm_id for ev in alarms
              if ev.event is AlarmEventType.RAISED and ev.ts.timestamp() < t0}
    return [ev for ev in alarms
            if t0 <= ev.ts.timestamp() <= end and ev.alarm_id not in before]


def _flapping(mine: list[tuple[float, AlarmEvent]], duration_s: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cleared: dict[tuple[str, str, str], float] = {}
    for t, ev in mine:
        if ev.category is not AlarmCategory.FACILITY or t > duration_s:
            continue
        key = (ev.facility_id, ev.sensor, ev.rule)
        row = {"t_s": round(t, 1), "facility": ev.facility_id, "sensor": ev.sensor,
               "rule": ev.rule}
        if ev.event is AlarmEventType.FLAPPING:
            out.append({**row, "why": "flapping event"})
        elif ev.event is AlarmEventType.CLEARED or (
                ev.event is AlarmEventType.SETTLED and ev.level is None):
            cleared[key] = t
        elif ev.event is AlarmEventType.RAISED and key in cleared:
            gap = t - cleared.pop(key)
            if gap < FLAP_GAP_S:
                out.append({**row, "why": f"raised again {gap / 60:.0f} min after clearing"})
    return out


def add_paging(s: Score, scenario: Scenario, t0: float, events: list[AlarmEvent],
               registry: Registry, oncall: OnCallConfig) -> None:
    """Measure what the scenario's alarms (``scenario_events``) cost the people on call
    (simulators.paging), with the scenario's ``expect_paging`` answer time (5 minutes when
    it has none)."""
    from simulators.paging import simulate_paging  # the notifier's code: only when asked

    ack = scenario.expect_paging.ack_after_s if scenario.expect_paging else 300.0
    s.paging = simulate_paging(scenario_events(scenario, t0, events), registry, oncall,
                               ack_after_s=ack).as_dict()


def _concerns(hazard: str, ev: AlarmEvent) -> bool:
    """The hazard is what the alarm's sensor measures (any, for a facility-wide alarm)."""
    return ev.metric is None or ev.metric in HAZARD_METRICS[Hazard(hazard)]


def _merged(risk: list[Episode]) -> list[Episode]:
    """Episodes of one hazard at one facility less than ``MERGE_GAP_S`` apart, joined."""
    out: list[Episode] = []
    last: dict[tuple[str, str], int] = {}
    for e in sorted(risk, key=lambda e: e.start_s):
        i = last.get((e.facility, e.hazard))
        if i is not None and e.start_s - out[i].end_s < MERGE_GAP_S:
            prev = out[i]
            out[i] = Episode(prev.facility, prev.kind, prev.hazard, prev.start_s,
                             max(prev.end_s, e.end_s))
            continue
        last[(e.facility, e.hazard)] = len(out)
        out.append(e)
    return out


def _recall(s: Score, episodes: list[Episode], first: dict[str, tuple[float, AlarmEvent]],
            mine: list[tuple[float, AlarmEvent]], end_s: float) -> None:
    """Recall and delays against the risk episodes: an episode is detected when a paged
    facility alarm of its facility, concerning its hazard, stood during it (from its first
    paged event to its clearing), or was raised up to ``RISK_LEAD_S`` before it."""
    cleared = {ev.alarm_id: t for t, ev in mine if ev.event is AlarmEventType.CLEARED}
    standing: dict[str, list[tuple[float, float, AlarmEvent]]] = {}
    for aid, (t, ev) in first.items():
        stop = cleared.get(aid, end_s)
        standing.setdefault(ev.facility_id, []).append((t, stop if stop >= t else end_s, ev))
    for e in episodes:
        if e.end_s - e.start_s < MIN_EPISODE_S:
            continue
        hits = [t for t, stop, ev in standing.get(e.facility, ())
                if _concerns(e.hazard, ev) and t <= e.end_s and stop >= e.start_s - RISK_LEAD_S]
        for tally in (s.overall, s.by_kind.setdefault(e.kind, Tally()),
                      s.by_hazard.setdefault(e.hazard, Tally())):
            tally.episodes += 1
            tally.detected += bool(hits)
        if hits:
            s.delays_s.append(round(max(min(hits) - e.start_s, -RISK_LEAD_S), 1))
        else:
            s.missed_risk.append({"facility": e.facility, "hazard": e.hazard,
                                  "start_s": e.start_s, "end_s": e.end_s})


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _paged(ev: AlarmEvent) -> bool:
    """The event pages someone: a raise or a change of standing, at a level, neither
    suppressed by a fault nor silenced by maintenance."""
    return (ev.event in REPORTING and ev.level is not None and ev.suppressed_by is None
            and not ev.silenced)


def _base(facility: str) -> str:
    """A scaled copy's original facility id (``X-1-X003`` → ``X-1``)."""
    head, sep, tail = facility.rpartition("-X")
    return head if sep and tail.isdigit() else facility
