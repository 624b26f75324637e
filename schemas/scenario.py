"""Simulation scenarios with ground truth (``simulators/scenarios/*.yaml``).

A scenario composes, on a timeline of simulated time (seconds from its start):

- ``facilities``: which registry facilities take part (ids or ``kind:``/``district:``
  selectors; default all);
- ``weather``: design storms over districts (Chicago hyetograph: return period, duration,
  peak position) — rain drives the drainage and sewage models;
- ``incidents``: things that happen to facilities (bridge damage, a toxic gas build-up, an
  illegal discharge, a pump failure …), each stating the alarms it must produce: facility,
  optionally sensor, the least level, and within how many seconds of the incident start;
- ``faults``: sensor and gateway faults (dropout, stuck, spike, drift, clock skew,
  duplicated and out-of-order reports, gateway offline), which must *not* be reported as
  facility alarms.

Storms are incidents too: a storm's ``expect`` lists the alarms it must raise.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from schemas.common import Contract, Identifier, load_yaml_model
from schemas.kinds import AlarmLevel

Seconds = Annotated[float, Field(ge=0, le=30 * 86400)]


class ScenarioError(ValueError):
    """The scenario file is missing, not YAML, or violates the schema."""


class Expect(Contract):
    """An alarm the incident must produce: a facility alarm (not a sensor fault)."""

    facility: Identifier
    sensor: Identifier | None = Field(default=None, description="Any sensor when omitted.")
    level: AlarmLevel = Field(description="The least level that counts.")
    within_s: Seconds = Field(description="Latest acceptable delay after the start.")


class Storm(Contract):
    districts: Annotated[list[str], Field(min_length=1)]
    start_s: Seconds
    duration_s: Annotated[float, Field(gt=0, le=86400)] = 7200
    return_period_y: Annotated[float, Field(ge=0.5, le=1000)] = 5.0
    peak: Annotated[float, Field(gt=0, lt=1)] = Field(default=0.4, description="Peak position "
                                                      "as a fraction of the duration.")
    expect: list[Expect] = Field(default_factory=list)
    name: str = "storm"


class IncidentKind(StrEnum):
    BRIDGE_DAMAGE = "bridge_damage"  # stiffness loss: growing deflection, cracks, bearing, tilt
    HEAVY_TRAFFIC = "heavy_traffic"  # a convoy of heavy vehicles: acceleration bursts
    TOXIC_GAS = "toxic_gas"  # H2S and CH4 build-up in a sewer manhole
    ILLEGAL_DISCHARGE = "illegal_discharge"  # COD and NH3-N spike, pH falls
    PUMP_FAILURE = "pump_failure"  # the pumps stop: the wet well fills
    BLOCKAGE = "blockage"  # a sewer blockage: level rises upstream, overflow


class Incident(Contract):
    name: str
    kind: IncidentKind
    facility: Identifier
    start_s: Seconds
    duration_s: Annotated[float, Field(gt=0, le=30 * 86400)]
    severity: Annotated[float, Field(gt=0, le=3)] = Field(
        default=1.0, description="1 = the magnitude the shipped expectations were written for.")
    expect: list[Expect] = Field(default_factory=list)


class FaultKind(StrEnum):
    DROPOUT = "dropout"  # the sensor stops reporting
    STUCK = "stuck"  # the same value again and again
    SPIKE = "spike"  # single absurd values
    DRIFT = "drift"  # a slowly growing offset
    CLOCK_SKEW = "clock_skew"  # the gateway's clock is off by ``magnitude`` seconds
    DUPLICATE = "duplicate"  # every report sent twice
    OUT_OF_ORDER = "out_of_order"  # reports delayed and sent after newer ones
    GATEWAY_OFFLINE = "gateway_offline"  # the whole facility goes silent


class Fault(Contract):
    kind: FaultKind
    facility: Identifier
    sensor: Identifier | None = Field(default=None, description="Sensor faults need one.")
    start_s: Seconds
    duration_s: Annotated[float, Field(gt=0, le=30 * 86400)]
    magnitude: float = Field(default=1.0, allow_inf_nan=False, description="Spike/drift size "
                             "(in instrument spans), clock skew (seconds), delay (reports).")

    @model_validator(mode="after")
    def _check(self) -> Fault:
        gateway = {FaultKind.CLOCK_SKEW, FaultKind.DUPLICATE, FaultKind.OUT_OF_ORDER,
                   FaultKind.GATEWAY_OFFLINE}
        if self.kind not in gateway and self.sensor is None:
            raise ValueError(f"a {self.kind} fault needs a sensor")
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
    incidents: list[Incident] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)
    expect_no_alarms: bool = Field(default=False, description="Nothing may raise a facility "
                                   "alarm (a dry day).")
    max_false_alarms_per_1000_sensor_hours: float = Field(default=0.0, ge=0)

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
