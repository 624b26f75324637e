"""Lifeline's message and data contracts.

Every message that crosses a process boundary (MQTT telemetry, Kafka readings, alarm
events, dead letters) and every data file (the facility registry) is described here as a
frozen pydantic v2 model with ``extra="forbid"``. Services import these; nothing else
defines a wire format.
"""

from schemas.alarm import AlarmEvent, AlarmEventType
from schemas.deadletter import DeadLetter, Problem, RejectReason
from schemas.kinds import METRICS, AlarmLevel, FacilityKind, Metric, MetricSpec
from schemas.reading import Reading, ReadingBatch
from schemas.registry import (
    AlarmPolicy,
    CompositeRule,
    Facility,
    Level,
    Registry,
    RegistryError,
    Rule,
    Sensor,
    Signal,
    load_registry,
)
from schemas.telemetry import TelemetryMessage, TelemetryReading

__all__ = [
    "METRICS",
    "AlarmEvent",
    "AlarmEventType",
    "AlarmLevel",
    "AlarmPolicy",
    "CompositeRule",
    "DeadLetter",
    "Facility",
    "FacilityKind",
    "Level",
    "Metric",
    "MetricSpec",
    "Problem",
    "Reading",
    "ReadingBatch",
    "Registry",
    "RegistryError",
    "RejectReason",
    "Rule",
    "Sensor",
    "Signal",
    "TelemetryMessage",
    "TelemetryReading",
    "load_registry",
]
