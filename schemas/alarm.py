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


class AlarmEvent(Contract):
    event_id: str = Field(description="Deterministic id of this transition (dedup key).")
    alarm_id: str = Field(description="Deterministic id of the alarm episode.")
    event: AlarmEventType
    level: AlarmLevel | None = Field(description="Level after the transition; null when cleared.")
    previous_level: AlarmLevel | None
    facility_id: Identifier
    kind: FacilityKind
    sensor: Identifier
    metric: Metric
    rule: str = Field(description="Rule that produced the alarm, e.g. 'threshold-upper'.")
    value: float = Field(description="The reading that caused the transition (canonical unit).")
    threshold: float | None = Field(description="The threshold crossed, canonical unit.")
    unit: str
    ts: Timestamp = Field(description="Event time: the reading's time, not processing time.")
    message: str


def alarm_id_for(facility_id: str, sensor: str, rule: str, started: datetime) -> str:
    """The id of the episode that ``rule`` started on ``sensor`` at event time ``started``."""
    name = f"{facility_id}|{sensor}|{rule}|{to_epoch_ms(started)}"
    return str(uuid.uuid5(_NAMESPACE, name))


def event_id_for(alarm_id: str, event: AlarmEventType, level: AlarmLevel | None,
                 ts: datetime) -> str:
    """The id of one transition of an episode."""
    return str(uuid.uuid5(_NAMESPACE, f"{alarm_id}|{event}|{level}|{to_epoch_ms(ts)}"))
