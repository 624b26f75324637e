"""Simulation scenarios with ground truth (``simulators/scenarios/*.yaml``).

A scenario composes, on a timeline of simulated time (seconds from its start):

- ``facilities``: which registry facilities take part (ids or ``kind:``/``district:``
  selectors; default all);
- ``weather``: design storms over districts (Chicago hyetograph: return period, duration,
  peak position) — rain drives the drainage and sewage models;
- ``incidents``: things that happen to facilities (bridge damage, a toxic gas build-up, an
  illegal discharge, a pump failure …), each stating the alarms it must produce: facility,
  optionally sensor (or the facility id, for a facility-wide alarm) and rule, the least
  level, and within how many seconds of the incident start;
- ``faults``: sensor and gateway faults (dropout, stuck, spike, drift, clock skew,
  duplicated and out-of-order reports, gateway offline, a drowned level gauge …), which must
  *not* be reported as facility alarms — unless something real explains the alarm (a storm
  or incident there: then the fault must not hide it);
- ``expect_silenced``: alarms a maintenance window must silence (recorded, paged to nobody).

Storms are incidents too: a storm's ``expect`` lists the alarms it must raise.

Incident kinds (``severity`` scales each; 1 is what the shipped expectations assume):

- ``bridge_damage``: stiffness loss over the incident — deflection per temperature grows,
  cracks widen, the bearing slides, the pier tilts;
- ``heavy_traffic``: a convoy of heavy vehicles (acceleration bursts);
- ``toxic_gas``: H2S and CH4 build up in a sewer manhole over the first 30 % of the
  incident, then hold (a blocked vent);
- ``gas_release``: sludge disturbed by dredging (清淤) releases H2S and CH4 fast: a linear
  rise to its plateau (H2S about 93 mg/m³, CH4 about 48 %LEL at severity 1) within
  ``GAS_RELEASE_RAMP_S`` (20 minutes) of the start, held to the end;
- ``illegal_discharge``: COD and NH3-N pulse up, pH falls;
- ``pump_failure``: the pumps stop (state 0, current 0); the wet well fills from its
  inflow, the RTU keeps reporting;
- ``power_failure``: a blackout at a pump station or pumping well: the pumps stop as in
  ``pump_failure`` and the gateway goes silent at the same moment for the incident's
  duration — unless ``ups: true`` (an RTU on a UPS keeps reporting). The wet well keeps
  filling from its inflow, which rain over the district drives;
- ``blockage``: a sewer blockage: the level upstream rises (at a drainage manhole to the
  cover over the first 30 % of the incident at severity 1; 3.6 m at a sewer manhole) to
  overflow; the pipe passes at most 20 % of its capacity, so what it feeds (the next
  manhole, a pump station) gets less;
- ``bridge_strike``, ``bearing_slip``, ``pier_tilt``: *steps* at the incident's start, held
  to its end — a strike takes ``0.3 × severity`` of the span's stiffness at once and opens
  its cracks by 0.15 mm; a bearing slips 40 mm; a pier tilts 0.3° (× severity);
- ``overload``: an overloaded truck (``2.5 × severity`` the design vehicle) crawling across
  the span for the incident's duration: deflection and strain of the live load;
- ``vortex_vibration``: vortex-induced vibration of the deck (wind lock-in): acceleration
  with an RMS of ``2 × severity`` m/s², its own hazard, without any traffic;
- ``misconnection``: a sewage connection into a storm manhole (雨污混接): a diurnal
  dry-weather flow peaking at ``60 × severity`` L/s where the pipe should be near-empty;
- ``cover_open``: a manhole cover lifted off on a road: the open hole is the hazard; the
  level gauge fixed under the cover reads the road (its range minimum).

Weather also has ``boundaries``: the water level at a district's outfalls (tide with its
12.42 h cycle and spring/neap range, a storm surge, a river flood wave, optionally a tide
gate), which backs water up the network.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from schemas.common import Contract, Identifier, load_yaml_model
from schemas.errors import LifelineError
from schemas.kinds import AlarmLevel

Seconds = Annotated[float, Field(ge=0, le=30 * 86400)]


class ScenarioError(LifelineError, ValueError):
    """The scenario file is missing, not YAML, or violates the schema."""


class Expect(Contract):
    """An alarm the incident must produce: a facility alarm (not a sensor fault), paged —
    neither suppressed nor silenced when it counts."""

    facility: Identifier
    sensor: Identifier | None = Field(
        default=None, description="Any sensor when omitted; the facility id for a "
                                  "facility-wide alarm (composite, facility-dark).")
    rule: Identifier | None = Field(
        default=None, description="The alarm's rule (e.g. facility-dark, "
                                  "wet-well-high-pump-off, value-upper); any when omitted.")
    level: AlarmLevel = Field(description="The least level that counts.")
    within_s: Seconds = Field(description="Latest acceptable delay after the start.")


class ExpectSilenced(Contract):
    """An alarm a maintenance window must silence: some alarm there comes out ``silenced``
    and none there is paged (every raise, escalation or update of it is silenced)."""

    facility: Identifier
    sensor: Identifier | None = Field(default=None, description="Any sensor when omitted; "
                                      "the facility id for a gateway alarm.")


class ExpectPaging(Contract):
    """What the scenario's alarms may cost the people on call (simulators.paging: the
    notifier's escalation and grouping over the events, with the shipped on-call file)."""

    ack_after_s: Annotated[float, Field(gt=0, le=86400)] | None = Field(
        default=300.0, description="Whoever is paged acknowledges this long after (null: "
                                   "nobody answers).")
    max_per_person_hour: Annotated[int, Field(ge=1)] = Field(
        description="The most messages any one person may get within an hour.")
    max_message_ratio: Annotated[float, Field(gt=0, le=1)] = Field(
        default=1.0, description="Messages over the notifications the escalator decided: "
                                 "below 1 when storms are grouped.")


class Storm(Contract):
    districts: Annotated[list[str], Field(min_length=1)]
    start_s: Seconds
    duration_s: Annotated[float, Field(gt=0, le=86400)] = 7200
    return_period_y: Annotated[float, Field(ge=0.5, le=1000)] = 5.0
    peak: Annotated[float, Field(gt=0, lt=1)] = Field(default=0.4, description="Peak position "
                                                      "as a fraction of the duration.")
    intensity_mm_h: Annotated[float, Field(gt=0, le=300)] | None = Field(
        default=None, description="A rain band (typhoon) instead of a design storm: a sin² "
        "burst peaking at this intensity at ``peak``; return_period_y is then unused.")
    expect: list[Expect] = Field(default_factory=list)
    name: str = "storm"


TIDE_PERIOD_S = 12.42 * 3600  # the principal lunar semidiurnal tide (M2)
SPRING_NEAP_S = 14.77 * 86400  # spring to spring (M2 beating S2)


class Boundary(Contract):
    """The water level at the outfalls of ``districts``, in metres above the outfall
    invert: ``mean_m`` plus a semidiurnal tide whose range swings between ``neap_range_m``
    and ``spring_range_m`` over the 14.77-day spring-neap cycle (spring at ``spring_s``,
    a high water at ``high_water_s``), a storm surge (a sin² bump of ``surge_m`` over
    ``surge_duration_s`` centred at ``surge_peak_s``) and a river flood wave (same shape).
    With ``tide_gate`` the outfalls have flap gates: while the outside level is above
    ``gate_sill_m`` they are shut — no backwater, and the network drains only through its
    pump station."""

    districts: Annotated[list[str], Field(min_length=1)]
    mean_m: float = Field(default=0.0, ge=-10, le=10)
    spring_range_m: float = Field(default=0.0, ge=0, le=12)
    neap_range_m: float = Field(default=0.0, ge=0, le=12)
    spring_s: float = Field(default=0.0, ge=-30 * 86400, le=30 * 86400)
    high_water_s: float = Field(default=0.0, ge=-30 * 86400, le=30 * 86400)
    surge_m: float = Field(default=0.0, ge=0, le=6)
    surge_peak_s: Seconds = 0.0
    surge_duration_s: Annotated[float, Field(gt=0, le=30 * 86400)] = 86400
    river_rise_m: float = Field(default=0.0, ge=0, le=10)
    river_peak_s: Seconds = 0.0
    river_duration_s: Annotated[float, Field(gt=0, le=30 * 86400)] = 86400
    tide_gate: bool = False
    gate_sill_m: float = Field(default=0.5, ge=-10, le=10)

    @model_validator(mode="after")
    def _check(self) -> Boundary:
        if self.neap_range_m > self.spring_range_m:
            raise ValueError("a neap range is smaller than the spring range")
        return self


class IncidentKind(StrEnum):
    BRIDGE_DAMAGE = "bridge_damage"  # stiffness loss: growing deflection, cracks, bearing, tilt
    HEAVY_TRAFFIC = "heavy_traffic"  # a convoy of heavy vehicles: acceleration bursts
    TOXIC_GAS = "toxic_gas"  # H2S and CH4 build-up in a sewer manhole
    ILLEGAL_DISCHARGE = "illegal_discharge"  # COD and NH3-N spike, pH falls
    PUMP_FAILURE = "pump_failure"  # the pumps stop: the wet well fills
    BLOCKAGE = "blockage"  # a sewer blockage: level rises upstream, overflow
    POWER_FAILURE = "power_failure"  # blackout: pumps stop, the gateway goes dark (no UPS)
    GAS_RELEASE = "gas_release"  # dredging stirs up sludge: H2S/CH4 to red within minutes
    BRIDGE_STRIKE = "bridge_strike"  # a vehicle or ship strike: a stiffness step, cracks open
    BEARING_SLIP = "bearing_slip"  # a bearing slips: a displacement step
    PIER_TILT = "pier_tilt"  # a pier rotates (scour, a strike): a tilt step
    OVERLOAD = "overload"  # an overloaded truck crawling across the span
    VORTEX_VIBRATION = "vortex_vibration"  # wind lock-in: deck vibration without traffic
    MISCONNECTION = "misconnection"  # sewage piped into a storm manhole: dry-weather flow
    COVER_OPEN = "cover_open"  # a manhole cover lifted off on a road


GAS_RELEASE_RAMP_S = 1200.0  # a gas release reaches its plateau this long after its start


class Incident(Contract):
    name: str
    kind: IncidentKind
    facility: Identifier
    start_s: Seconds
    duration_s: Annotated[float, Field(gt=0, le=30 * 86400)]
    severity: Annotated[float, Field(gt=0, le=3)] = Field(
        default=1.0, description="1 = the magnitude the shipped expectations were written for.")
    expect: list[Expect] = Field(default_factory=list)
    ups: bool = Field(default=False, description="power_failure only: the RTU is on a UPS and "
                                                 "keeps reporting while the pumps are down.")

    @model_validator(mode="after")
    def _check(self) -> Incident:
        if self.ups and self.kind is not IncidentKind.POWER_FAILURE:
            raise ValueError(f"ups is for a power_failure, not a {self.kind}")
        return self


class FaultKind(StrEnum):
    DROPOUT = "dropout"  # the sensor stops reporting
    STUCK = "stuck"  # the same value again and again
    SPIKE = "spike"  # single absurd values
    DRIFT = "drift"  # a slowly growing offset
    CLOCK_SKEW = "clock_skew"  # the gateway's clock is off by ``magnitude`` seconds
    DUPLICATE = "duplicate"  # every report sent twice
    OUT_OF_ORDER = "out_of_order"  # reports delayed and sent after newer ones
    GATEWAY_OFFLINE = "gateway_offline"  # the whole facility goes silent
    SUBMERGED = "submerged"  # a level gauge drowned at the cover: over range high, or nothing
    IN_RANGE_SPIKE = "in_range_spike"  # single false but plausible values, inside the range


GATEWAY_FAULTS = frozenset({FaultKind.CLOCK_SKEW, FaultKind.DUPLICATE, FaultKind.OUT_OF_ORDER,
                            FaultKind.GATEWAY_OFFLINE})


class Fault(Contract):
    """A sensor or gateway fault over ``[start_s, start_s + duration_s)``.

    - ``dropout``: the sensor stops reporting; ``stuck``: it repeats the value it read when
      the fault began; ``drift``: an offset growing linearly to ``magnitude`` spans;
    - ``spike``: one absurd value every 10 minutes, ``magnitude`` spans above range max;
    - ``in_range_spike``: one false but plausible value every 10 minutes (a fault of 600 s
      or less: exactly one, at its start) — the true value plus ``magnitude`` spans,
      clamped inside the instrument range (a splash, a floating object under the gauge);
    - ``submerged``: a level gauge under water — while the simulated water at the
      facility is at its cover (``at_cover``, the default; a gauge with no cover in the
      model, a pump station's wet well, is drowned for the whole fault) it reads
      ``magnitude`` spans above its range max (``reads: over_range``) or nothing
      (``reads: nothing``). ``at_cover: false`` drowns it for the whole fault whatever the
      water does (water in the housing): on a dry day, a plain sensor fault;
    - gateway faults: ``clock_skew`` (``magnitude`` seconds), ``duplicate``,
      ``out_of_order``, ``gateway_offline``.
    """

    kind: FaultKind
    facility: Identifier
    sensor: Identifier | None = Field(default=None, description="Sensor faults need one.")
    start_s: Seconds
    duration_s: Annotated[float, Field(gt=0, le=30 * 86400)]
    magnitude: float = Field(default=1.0, allow_inf_nan=False, description="Spike/drift size "
                             "(in instrument spans), clock skew (seconds), delay (reports).")
    reads: Literal["over_range", "nothing"] = Field(
        default="over_range", description="submerged only: what the drowned gauge reports.")
    at_cover: bool = Field(default=True, description="submerged only: drowned only while the "
                                                     "water is at the cover.")

    @model_validator(mode="after")
    def _check(self) -> Fault:
        if self.kind not in GATEWAY_FAULTS and self.sensor is None:
            raise ValueError(f"a {self.kind} fault needs a sensor")
        if self.kind in GATEWAY_FAULTS and self.sensor is not None:
            raise ValueError(f"a {self.kind} fault is the gateway's: no sensor")
        if self.kind is not FaultKind.SUBMERGED and (self.reads != "over_range"
                                                     or not self.at_cover):
            raise ValueError("reads and at_cover are for a submerged fault")
        if self.kind in (FaultKind.SPIKE, FaultKind.SUBMERGED) and self.magnitude < 0:
            raise ValueError(f"a {self.kind} fault's magnitude is a size above range max (>= 0)")
        return self


class Scenario(Contract):
    name: Identifier
    description: str
    duration_s: Annotated[float, Field(gt=0, le=30 * 86400)]
    start_local: str = Field(default="00:00", pattern=r"^\d\d:\d\d$",
                             description="Local time of day (registry time zone) at t=0.")
    seed: int = 1
    facilities: list[str] = Field(default_factory=list, description="Ids, 'kind:K' or "
                                  "'district:D' (empty: every facility).")
    storms: list[Storm] = Field(default_factory=list)
    boundaries: list[Boundary] = Field(default_factory=list, description="Water levels at "
                                       "the districts' outfalls (tide, surge, river).")
    incidents: list[Incident] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)
    expect_no_alarms: bool = Field(default=False, description="Nothing may raise a facility "
                                   "alarm (a dry day).")
    expect_silenced: list[ExpectSilenced] = Field(
        default_factory=list, description="Alarms a maintenance window must silence.")
    max_false_alarms_per_1000_sensor_hours: float = Field(default=0.0, ge=0)
    expect_no_flapping: bool = Field(
        default=False, description="No facility alarm may flap: no ``flapping`` event, and "
        "none raised again within 30 minutes of clearing (simulators.scoring.FLAP_GAP_S).")
    expect_paging: ExpectPaging | None = None

    @model_validator(mode="after")
    def _timeline(self) -> Scenario:
        starts = [(s.name, s.start_s) for s in self.storms] + [
            (i.name, i.start_s) for i in self.incidents] + [
            (f"{f.kind} fault", f.start_s) for f in self.faults]
        for name, start in starts:
            if start >= self.duration_s:
                raise ValueError(f"{name} starts after the scenario ends")
        return self


def load_scenario(path: str | Path) -> Scenario:
    return load_yaml_model(path, Scenario, ScenarioError, "scenario")


ExpectOutcome = Literal["detected", "late", "missed"]
