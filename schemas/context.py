"""Context shared across facilities: the values of Kafka topic ``lifeline.context``
(key = district).

The processor partitions by facility; what one facility's rules need from others is
published here by the worker that evaluated the others and read by every worker
(docs/decisions/0014, 0023). Three records, told apart by ``type``:

- ``rain`` — a district's rain gauges: raining (at least the policy's hourly rainfall) or,
  at most once an hour, a dry heartbeat (so "dry for 3 days" is known, not assumed);
- ``signal`` — a sensor's signal that rules of other facilities read (a regional background
  station's hourly PM10 mean, a rain gauge's 3-day sum);
- ``member`` — a facility alarm that a district rule counts (raised, changed or cleared),
  read by the one worker that evaluates the district's rules.

Every record is idempotent: the newest ``ts`` wins, so at-least-once delivery and several
workers give the same picture.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, RootModel

from schemas.common import Contract, Identifier, Timestamp
from schemas.kinds import AlarmLevel, FacilityKind, Metric

District = Annotated[str, Field(min_length=1, max_length=200)]


class DistrictRain(Contract):
    """One of a district's rain gauges measured at least the policy's hourly rainfall
    (``raining``), some rain under it (``mm_per_h`` ≥ 0.1: at most once a minute), or none
    (a dry heartbeat, at most once an hour per district)."""

    type: Literal["rain"] = "rain"
    district: District
    ts: Timestamp = Field(description="Event time of the gauge's reading.")
    mm_per_h: float = Field(ge=0, allow_inf_nan=False, description="Rain of the past hour.")
    facility_id: Identifier
    sensor: Identifier
    raining: bool = Field(default=True, description="False: a dry heartbeat — the district's "
                          "gauges report, below the rain threshold.")


class SharedSignal(Contract):
    """A sensor's signal at ``ts``, for rules of other facilities that read it."""

    type: Literal["signal"] = "signal"
    district: District = Field(description="The sensor's facility's district (the key).")
    facility_id: Identifier
    sensor: Identifier
    spec: Annotated[str, Field(min_length=1, max_length=100)] = Field(
        description="The signal: 'value', or '<signal>-<window_s>s-<rate_per_s>' "
                    "(e.g. 'mean-3600s-60').")
    ts: Timestamp = Field(description="Event time of the reading the signal is at.")
    value: float = Field(allow_inf_nan=False)


class MemberAlarm(Contract):
    """A facility alarm that district rules count, as it stands after a transition."""

    type: Literal["member"] = "member"
    district: District
    facility_id: Identifier
    kind: FacilityKind
    sensor: Identifier
    metric: Metric | None = None
    rule: str = Field(max_length=200)
    level: AlarmLevel | None = Field(description="Null: the alarm cleared.")
    ts: Timestamp = Field(description="Event time of the transition.")
    alarm_id: str = Field(max_length=100)
    district_rules: Annotated[list[Identifier], Field(min_length=1, max_length=50)] = Field(
        description="The district rules that count this alarm.")
    value: float | None = Field(default=None, allow_inf_nan=False)
    unit: str = Field(default="", max_length=40)


ContextRecordValue = Annotated[DistrictRain | SharedSignal | MemberAlarm,
                               Field(discriminator="type")]


class ContextRecord(RootModel[ContextRecordValue]):
    """One value of ``lifeline.context`` (any of the three, by ``type``)."""

    model_config = {"frozen": True}
