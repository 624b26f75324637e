"""Alarm lifecycle events: the value of Kafka topic ``lifeline.alarms`` (key = facility id).

An alarm episode runs from ``raised`` to ``cleared`` and may move between levels on the
way (``escalated`` / ``deescalated``). Its ``alarm_id`` is derived from what started it,
and each event's ``event_id`` from the alarm id, the transition and its time, so
reprocessing the same readings yields the same ids and consumers can drop duplicates.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import Field

from schemas.common import Contract, Identifier, Timestamp, to_epoch_ms
from schemas.kinds import AlarmLevel, FacilityKind, Metric

_NAMESPACE = uuid.UUID("6f1c1f1e-3b0a-4c55-9a57-6c1f6e5e0a01")


class AlarmEventType(StrEnum):
    RAISED = "raised"
    ESCALATED = "escalated"
    DEESCALATED = "deescalated"
    CLEARED = "cleared"
    FLAPPING = "flapping"  # changing too often: held at its worst level, not paged per change
    SETTLED = "settled"  # stable again at ``level`` after flapping
    # Same level, changed standing: no longer suppressed or silenced (page it now if still
    # unpaged), held at its level by a sensor fault, or its data gone stale (gateway dark).
    UPDATED = "updated"


class AlarmCategory(StrEnum):
    FACILITY = "facility"  # the facility is at risk (thresholds, rates, windows, composites)
    SENSOR = "sensor"  # the instrument is faulty (range, stuck, offline): not a facility alarm
    GATEWAY = "gateway"  # the facility's gateway is offline or losing reports
    # The district as a whole (a district rule over its facilities' alarms, decision 0023):
    # ``facility_id`` is the district's own id (district_facility_id), ``sensor`` the rule.
    DISTRICT = "district"


class EntryInfo(Contract):
    """A confined-space entry (井下作业) in progress at the facility: who leads the crew."""

    reason: str
    crew_leader: str
    crew_phone: str


class AlarmEvent(Contract):
    event_id: str = Field(description="Deterministic id of this transition (dedup key).")
    alarm_id: str = Field(description="Deterministic id of the alarm episode.")
    event: AlarmEventType
    level: AlarmLevel | None = Field(description="Level after the transition; null when cleared.")
    previous_level: AlarmLevel | None
    category: AlarmCategory = AlarmCategory.FACILITY
    facility_id: Identifier
    kind: FacilityKind
    facility_name: str | None = Field(default=None, description="The facility's name (English), "
                                      "from the registry; null in records made before names.")
    facility_name_zh: str | None = Field(default=None, description="The facility's Chinese name.")
    district: str | None = Field(default=None, description="The facility's district (English).")
    district_zh: str | None = Field(default=None, description="The district's Chinese name.")
    sensor: Identifier = Field(description="The sensor; the facility id for facility-wide alarms "
                                           "(composite rules, gateway).")
    metric: Metric | None = Field(description="The sensor's metric; null for facility-wide alarms.")
    rule: str = Field(description="Rule that produced the alarm, e.g. 'value-upper', "
                                  "'sum-3600s-upper', 'sensor-stuck', or a composite rule's id.")
    value: float | None = Field(description="The signal value that caused the transition.")
    threshold: float | None = Field(description="The threshold crossed (signal's unit).")
    unit: str
    ts: Timestamp = Field(description="Event time: the reading's time, not processing time.")
    message: str = Field(description="For people: level, facility names and the facts, "
                                     "Chinese first then English (schemas.texts).")
    silenced: bool = Field(default=False, description="Inside a maintenance window: recorded, "
                                                      "not paged.")
    suppressed_by: str | None = Field(default=None, description="alarm_id of the sensor-fault or "
                                      "gateway alarm that inhibits this one (recorded, not paged).")
    flapping: bool = Field(default=False, description="The alarm is held because it flaps.")
    held_by_fault: str | None = Field(
        default=None, description="alarm_id of a sensor fault that began while this alarm was "
                                  "serious or rising (fail-dangerous): the alarm is held at its "
                                  "level and paged, not suppressed.")
    stale_since: Timestamp | None = Field(
        default=None, description="The facility's gateway is silent: the level is the last "
                                  "known one, from this time.")
    entry: EntryInfo | None = Field(
        default=None, description="A life-safety alarm during a confined-space entry: page the "
                                  "crew leader and the duty engineer at once.")
    grouped_into: str | None = Field(
        default=None, description="The district rule (its id) that pages for this alarm: "
                                  "recorded and shown, not paged on its own (one rainstorm "
                                  "alarm per district, not one per rain gauge).")


def alarm_id_for(facility_id: str, sensor: str, rule: str, started: datetime) -> str:
    """The id of the episode that ``rule`` started on ``sensor`` at event time ``started``."""
    name = f"{facility_id}|{sensor}|{rule}|{to_epoch_ms(started)}"
    return str(uuid.uuid5(_NAMESPACE, name))


def event_id_for(alarm_id: str, event: AlarmEventType, level: AlarmLevel | None,
                 ts: datetime, detail: str = "") -> str:
    """The id of one transition of an episode (``detail`` tells apart several ``updated``
    events of one episode at the same moment)."""
    suffix = f"|{detail}" if detail else ""
    return str(uuid.uuid5(_NAMESPACE, f"{alarm_id}|{event}|{level}|{to_epoch_ms(ts)}{suffix}"))


def district_facility_id(district: str) -> str:
    """The ``facility_id`` of a district's own alarms: ``district-`` and the district's name
    as an identifier (``Airport New Area`` → ``district-Airport-New-Area``)."""
    slug = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_.-") else "-"
                   for ch in district.strip())
    slug = "-".join(p for p in slug.split("-") if p) or "unnamed"
    return f"district-{slug}"[:64]
