"""Run a scenario: the facility models on a timeline, faults applied, gateway reports out.

``ScenarioRun.reports()`` yields ``(t, topic, payload)`` in simulated order; the caller
paces them (``lifeline simulate --scenario … --speed 600x``) or feeds them straight into
the alarm engine (``tests/support/scenario_replay.py``, for calibration and fast tests). Ground
truth — what each sensor really measured, what was reported (None: nothing), and every
incident and fault — is kept for the facilities the scenario watches, for scoring and
plots.

A power failure without a UPS silences the facility's gateway like a ``gateway_offline``
fault (the truth still records what the instruments would have measured). A scenario is
checked against the registry first (:func:`check_scenario`): its incidents, faults and
expectations must name facilities it runs and sensors they have, of the right kind.

The network within a district runs upstream → downstream by manhole number (``DR-XX-00n``):
each manhole receives the one before it ten minutes later, the district's pump station
a share of the last one's outflow (all of it while a tide gate is shut), and each manhole
sees the district's outfall level (``boundaries``) less its invert height above the outfall
(0.4 m at the last manhole, 0.5 m more per manhole upstream).

Ground truth of risk: at every step every facility's model says which hazards are present
(``Model.hazards``); ``risk`` keeps them as episodes ``(facility, kind, hazard, start,
end)`` for the scorer (simulators/scoring.py), in ``truth_document()["risk"]`` too.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from schemas.codec import TELEMETRY
from schemas.kinds import FacilityKind, Metric
from schemas.registry import Facility, Registry
from schemas.scenario import Fault, FaultKind, IncidentKind, Scenario, ScenarioError
from schemas.telemetry import telemetry_topic
from simulators.facilities import DrainageModel, Env, Hazard, Model, model_for
from simulators.weather import Outfalls, Weather

STEP_S = 10.0  # the shortest reporting interval of the registry's sensors
SCENARIOS = Path(__file__).parent / "scenarios"
STATION_SHARE = 0.3  # of the district's last manhole's outflow reaching its pump station
LAST_INVERT_M = 0.4  # the last manhole's invert above the outfall invert
INVERT_STEP_M = 0.5  # … and each manhole upstream of it higher again


@dataclass(frozen=True)
class Episode:
    """A stretch of simulated time over which a facility was really at risk."""

    facility: str
    kind: str
    hazard: str
    start_s: float
    end_s: float

    def as_row(self) -> list[Any]:
        return [self.facility, self.kind, self.hazard, self.start_s, self.end_s]


def risk_from_document(doc: dict[str, Any]) -> list[Episode]:
    """The risk episodes of a truth document (``ScenarioRun.truth_document``)."""
    return [Episode(f, k, h, float(a), float(b)) for f, k, h, a, b in doc.get("risk", [])]


def scenario_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    return p if p.suffix in (".yaml", ".yml") else SCENARIOS / f"{name_or_path}.yaml"


def select(registry: Registry, selectors: list[str]) -> list[Facility]:
    if not selectors:
        return list(registry.facilities)
    out = []
    for f in registry.facilities:
        for s in selectors:
            what, _, ref = s.partition(":")
            if (s == f.id or (what == "kind" and f.kind.value == ref)
                    or (what == "district" and f.district == ref)
                    or f.id.startswith(s + "-X")):  # a scaled copy of a selected facility
                out.append(f)
                break
    return out


_NEEDS: dict[IncidentKind, tuple[set[Metric], str]] = {
    IncidentKind.POWER_FAILURE: ({Metric.PUMP_STATE}, "a pump station or pumping well"),
    IncidentKind.PUMP_FAILURE: ({Metric.PUMP_STATE}, "a pump station or pumping well"),
    IncidentKind.GAS_RELEASE: ({Metric.H2S, Metric.CH4}, "gas detectors"),
    IncidentKind.TOXIC_GAS: ({Metric.H2S, Metric.CH4}, "gas detectors"),
    IncidentKind.BLOCKAGE: ({Metric.WATER_LEVEL}, "a level gauge"),
    IncidentKind.MISCONNECTION: ({Metric.WATER_LEVEL}, "a level gauge"),
    IncidentKind.COVER_OPEN: ({Metric.WATER_LEVEL, Metric.COVER_STATE},
                              "a level gauge or a cover sensor"),
    IncidentKind.BRIDGE_STRIKE: ({Metric.DEFLECTION}, "a deflection sensor"),
    IncidentKind.BEARING_SLIP: ({Metric.BEARING_DISPLACEMENT}, "a bearing sensor"),
    IncidentKind.PIER_TILT: ({Metric.TILT}, "a tilt sensor"),
    IncidentKind.OVERLOAD: ({Metric.DEFLECTION}, "a deflection sensor"),
    IncidentKind.VORTEX_VIBRATION: ({Metric.ACCELERATION}, "an accelerometer"),
}


def check_scenario(registry: Registry, scenario: Scenario) -> list[str]:
    """What in ``scenario`` does not fit ``registry``: facilities it does not run, sensors
    they lack, incidents on facilities of the wrong kind (empty: it fits)."""
    running = {f.id: f for f in select(registry, scenario.facilities)}
    problems = []

    def facility(fid: str, what: str) -> Facility | None:
        f = running.get(fid)
        if f is None:
            problems.append(f"{what}: facility {fid} is not in the scenario's facilities")
        return f

    def sensor(f: Facility, sid: str | None, what: str) -> None:
        if sid is not None and sid != f.id and all(s.id != sid for s in f.sensors):
            problems.append(f"{what}: {f.id} has no sensor {sid}")

    expects = [(st.name, e) for st in scenario.storms for e in st.expect]
    for inc in scenario.incidents:
        f = facility(inc.facility, inc.name)
        need = _NEEDS.get(inc.kind)
        if f is not None and need is not None and not need[0] & f.metrics:
            problems.append(f"{inc.name}: a {inc.kind} needs {need[1]}, {f.id} has none")
        expects += [(inc.name, e) for e in inc.expect]
    for name, e in expects:
        if (f := facility(e.facility, name)) is not None:
            sensor(f, e.sensor, name)
    for silent in scenario.expect_silenced:
        if (f := facility(silent.facility, "expect_silenced")) is not None:
            sensor(f, silent.sensor, "expect_silenced")
    for flt in scenario.faults:
        what = f"{flt.kind} fault"
        if (f := facility(flt.facility, what)) is None:
            continue
        sensor(f, flt.sensor, what)
        s = next((s for s in f.sensors if s.id == flt.sensor), None)
        if flt.kind is FaultKind.SUBMERGED and s is not None and s.metric is not Metric.WATER_LEVEL:
            problems.append(f"{what}: {s.id} is not a level gauge")
    return problems


def start_epoch(latest: float, start_local: str, zone: ZoneInfo) -> float:
    """The last instant not after ``latest`` whose local time of day is ``start_local``."""
    hh, mm = (int(x) for x in start_local.split(":"))
    local = datetime.fromtimestamp(latest, zone)
    t = local.replace(hour=hh, minute=mm, second=0, microsecond=0)
    if t > local:
        t -= timedelta(days=1)
    return t.timestamp()


OUTAGE_REAL_TIME_MARGIN_S = 30.0  # after the offline limit: ticks, processing, the alarm


def outage_windows(registry: Registry, scenario: Scenario) -> list[tuple[float, float]]:
    """The start of every gateway outage of ``scenario`` — a blackout without UPS, a
    ``gateway_offline`` fault — long enough for the gateway-offline check to see it on the
    wall clock (its limit and a margin), as scenario seconds: what
    ``lifeline simulate --outages-in-real-time`` publishes at real time."""
    out = []
    limit_of = registry.policy.gateway_offline_after_intervals
    silent = [(i.facility, i.start_s, i.duration_s) for i in scenario.incidents
              if i.kind is IncidentKind.POWER_FAILURE and not i.ups]
    silent += [(f.facility, f.start_s, f.duration_s) for f in scenario.faults
               if f.kind is FaultKind.GATEWAY_OFFLINE]
    for fid, start, duration in silent:
        f = registry.facility(fid)
        if f is None:
            continue
        hold = limit_of * f.min_interval_s + OUTAGE_REAL_TIME_MARGIN_S
        out.append((start, start + min(duration, hold)))
    return out


def next_start(earliest: float, start_local: str, zone: ZoneInfo) -> float:
    """The first instant not before ``earliest`` whose local time of day is ``start_local``."""
    t = start_epoch(earliest, start_local, zone)
    return t if t >= earliest else start_epoch(earliest + 86400, start_local, zone)


@dataclass
class _Gateway:
    facility: Facility
    model: Model
    seq: int = 0
    next_due: dict[str, float] = field(default_factory=dict)
    frozen: dict[str, float] = field(default_factory=dict)
    held: tuple[str, bytes] | None = None


class ScenarioRun:
    def __init__(self, registry: Registry, scenario: Scenario, *, t0: float,
                 keep_truth: bool = True) -> None:
        problems = check_scenario(registry, scenario)
        if problems:
            raise ScenarioError(f"scenario {scenario.name} does not fit registry "
                                f"{registry.name}: " + "; ".join(problems))
        self.registry = registry
        self.scenario = scenario
        self.t0 = t0
        self.zone = ZoneInfo(registry.timezone)
        rnd = random.Random(scenario.seed)
        self.rnd = rnd
        self.weather = Weather(scenario.storms)
        self.outfalls = Outfalls(scenario.boundaries)
        self.gateways = [_Gateway(f, model_for(f, random.Random(rnd.random())))
                         for f in sorted(select(registry, scenario.facilities),
                                         key=lambda f: f.id)]
        self.by_id = {g.facility.id: g for g in self.gateways}
        watched = {e.facility for s in scenario.storms for e in s.expect}
        watched |= {e.facility for i in scenario.incidents for e in i.expect}
        watched |= {i.facility for i in scenario.incidents} | {f.facility for f in
                                                               scenario.faults}
        watched |= {x.facility for x in scenario.expect_silenced}
        self.truth: dict[str, list[tuple[float, float, float | None]]] = {}
        self.keep = watched if keep_truth else set()
        self.faults: dict[str, list[Fault]] = {}
        for flt in scenario.faults:
            self.faults.setdefault(flt.facility, []).append(flt)
        self.reports_sent = 0
        self.readings_sent = 0
        self.risk: list[Episode] = []
        self._open: dict[tuple[str, Hazard], float] = {}  # (facility, hazard) -> start
        self._last_manhole: dict[str, int] = {}  # district code -> its last manhole number
        for g in self.gateways:
            if (n := _manhole_number(g.facility)) is not None:
                code = g.facility.id.split("-")[1]
                self._last_manhole[code] = max(n, self._last_manhole.get(code, 0))

    @property
    def sensor_count(self) -> int:
        return sum(len(g.facility.sensors) for g in self.gateways)

    def _upstream(self, g: _Gateway, t: float, gate_shut: bool) -> float:
        """What reaches this facility from the network now: the upstream manhole's outflow
        at a manhole, a share of the district's last manhole's at its pump station."""
        f = g.facility
        if f.kind is not FacilityKind.DRAINAGE or f.id.count("-") != 2:
            return 0.0
        _, code, num = f.id.split("-")
        n = _manhole_number(f)
        if n is not None:
            up = self.by_id.get(f"DR-{code}-{n - 1:03d}")
            share = 1.0
        elif isinstance(g.model, DrainageModel) and g.model.is_station and num.isdigit():
            up = self.by_id.get(f"DR-{code}-{self._last_manhole.get(code, 0):03d}")
            share = 1.0 if gate_shut else STATION_SHARE
        else:
            return 0.0
        if up is None or not isinstance(up.model, DrainageModel):
            return 0.0
        return share * up.model.delayed_outflow(t)

    def _upstream_misconnected(self, g: _Gateway) -> bool:
        """A misconnection at the upstream manhole or further up: its sewage runs through
        this storm pipe too (the ground truth of the manholes below it)."""
        f = g.facility
        n = _manhole_number(f)
        if n is None or f.kind is not FacilityKind.DRAINAGE:
            return False
        up = self.by_id.get(f"DR-{f.id.split('-')[1]}-{n - 1:03d}")
        return (up is not None and isinstance(up.model, DrainageModel)
                and up.model.misconnected)

    def _env(self, g: _Gateway, t: float) -> Env:
        f = g.facility
        incidents = [(i, (t - i.start_s) / i.duration_s) for i in self.scenario.incidents
                     if i.facility == f.id and i.start_s <= t < i.start_s + i.duration_s]
        epoch = self.t0 + t
        local = datetime.fromtimestamp(epoch, self.zone)
        hour = local.hour + local.minute / 60 + local.second / 3600
        outfall = self.outfalls.level(f.district, t)
        backwater, shut = None, False
        if outfall is not None:
            level, shut = outfall
            n = _manhole_number(f)
            if n is not None and not shut:
                code = f.id.split("-")[1]
                backwater = level - LAST_INVERT_M - INVERT_STEP_M * (
                    self._last_manhole.get(code, n) - n)
        return Env(t, hour, self.weather.rain(f.district, t), incidents,
                   self._upstream(g, t, shut), local.timetuple().tm_yday, backwater,
                   self._upstream_misconnected(g))

    def _record_risk(self, g: _Gateway, env: Env, t: float) -> None:
        fid = g.facility.id
        now = g.model.hazards(env)
        for hz in now:
            self._open.setdefault((fid, hz), t)
        for key in [k for k in self._open if k[0] == fid and k[1] not in now]:
            self._close(key, t)

    def _close(self, key: tuple[str, Hazard], t: float) -> None:
        start = self._open.pop(key)
        self.risk.append(Episode(key[0], self.by_id[key[0]].facility.kind.value, key[1].value,
                                 start, t))

    def _active(self, fid: str, t: float) -> list[Fault]:
        return [x for x in self.faults.get(fid, ()) if x.start_s <= t < x.start_s + x.duration_s]

    def reports(self) -> Iterator[tuple[float, str, bytes]]:
        """Every gateway report of the scenario in simulated time order."""
        t = 0.0
        end = self.scenario.duration_s
        while t < end:
            for g in self.gateways:
                env = self._env(g, t)
                g.model.advance(env, STEP_S)
                self._record_risk(g, env, t)
                yield from self._report(g, env, t)
            t += STEP_S
        for key in list(self._open):
            self._close(key, end)
        self.risk.sort(key=lambda e: (e.start_s, e.facility, e.hazard))

    def _report(self, g: _Gateway, env: Env, t: float) -> Iterator[tuple[float, str, bytes]]:
        due = [s for s in g.facility.sensors if g.next_due.get(s.id, 0.0) <= t]
        if not due:
            return
        faults = self._active(g.facility.id, t)
        kinds = {f.kind for f in faults}
        dark = FaultKind.GATEWAY_OFFLINE in kinds or env.gateway_dark
        keep = g.facility.id in self.keep
        readings = []
        for s in due:
            g.next_due[s.id] = t + s.interval_s
            true = float(g.model.value(s, env))
            lo, hi = s.range
            true = min(hi, max(lo, true))
            value: float | None = true
            for f in faults:
                if f.sensor != s.id:
                    continue
                if f.kind is FaultKind.DROPOUT:
                    value = None
                elif f.kind is FaultKind.STUCK:
                    value = g.frozen.setdefault(s.id, true)
                elif f.kind in (FaultKind.SPIKE, FaultKind.IN_RANGE_SPIKE):
                    # Now and then (every 10 minutes, the first at the fault's start) one
                    # false value: absurd, beyond the instrument's range, or plausible.
                    if int((t - f.start_s) // 600) != int((t - s.interval_s - f.start_s) // 600):
                        if f.kind is FaultKind.SPIKE:
                            value = hi + f.magnitude * (hi - lo)
                        else:
                            value = min(hi, max(lo, true + f.magnitude * (hi - lo)))
                elif f.kind is FaultKind.DRIFT:
                    value = true + f.magnitude * (hi - lo) * (t - f.start_s) / f.duration_s
                elif f.kind is FaultKind.SUBMERGED:
                    cover = g.model.cover_m(s)
                    if not f.at_cover or cover is None or true >= cover - 1e-9:
                        value = None if f.reads == "nothing" else hi + f.magnitude * (hi - lo)
            if dark:
                value = None  # nothing leaves the facility
            if keep:
                self.truth.setdefault(f"{g.facility.id}/{s.id}", []).append(
                    (t, round(true, 4), None if value is None else round(value, 4)))
            if value is not None:
                readings.append({"sensor": s.id, "metric": s.metric.value,
                                 "value": round(value, 4), "unit": s.unit})
        if dark or not readings:
            return
        g.seq += 1
        skew = sum(f.magnitude for f in faults if f.kind is FaultKind.CLOCK_SKEW)
        body = TELEMETRY.encode_plain(self.t0 + t + skew, g.seq, readings)
        topic = telemetry_topic(g.facility.kind.value, g.facility.id)
        self.reports_sent += 1
        self.readings_sent += len(readings)
        if FaultKind.OUT_OF_ORDER in kinds:
            if g.held is None:
                g.held = (topic, body)  # sent after the next report
                return
            yield t, topic, body
            yield t, g.held[0], g.held[1]
            g.held = None
            return
        yield t, topic, body
        if FaultKind.DUPLICATE in kinds:
            yield t, topic, body

    def truth_document(self) -> dict[str, Any]:
        return {"scenario": self.scenario.model_dump(mode="json"), "t0": self.t0,
                "sensors": self.sensor_count, "facilities": [g.facility.id for g in
                                                              self.gateways],
                "reports": self.reports_sent, "readings": self.readings_sent,
                "truth": self.truth, "risk": [e.as_row() for e in self.risk]}


def _manhole_number(f: Facility) -> int | None:
    """n of a drainage manhole ``DR-XX-00n`` (its place in the district's network)."""
    parts = f.id.split("-")
    if f.kind is FacilityKind.DRAINAGE and len(parts) == 3 and parts[0] == "DR" \
            and parts[2].isdigit():
        return int(parts[2])
    return None
