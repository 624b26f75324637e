"""The topic table: every Kafka topic Lifeline uses, its contract, key and codec.

One place (docs/decisions/0016-one-shape.md): a consumer reads the codec of its topic from
here, and a record it cannot decode goes to ``dead_letters`` (services/core/dlq.py) with
its bytes and reason. ``services.core.topics`` re-exports the names for existing callers.

MQTT: gateways publish to ``lifeline/<kind>/<facility>/telemetry``;
:func:`telemetry_topic` is the one parser of that shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas import codec
from schemas.kinds import FacilityKind

READINGS = "lifeline.readings"
READINGS_DLQ = "lifeline.readings.dlq"
ALARMS = "lifeline.alarms"
ACKS = "lifeline.acks"
TICKS = "lifeline.ticks"  # processor-internal: wall-clock ticks per partition
HEALTH = "lifeline.health"  # every service's counters, every few seconds (pipeline health)
ONCALL = "lifeline.oncall"  # on-call audit trail: notifications, attempts, acks, escalations
ONCALL_TICKS = "lifeline.oncall.ticks"  # notifier-internal: wall-clock ticks per partition
# processor-internal: context that crosses facilities (district rain, shared signals, district
# rule members; schemas/context.py), key = district, read by every worker in full
CONTEXT = "lifeline.context"
# work-order events (schemas/workorder.py), key = order id: the source of truth of order state
ORDERS = "lifeline.orders"


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    contract: str  # what a value is (a schemas model's name, or the plain format)
    key: str  # what a record's key is
    codec: Any  # schemas.codec: encode(value) -> bytes, decode(bytes) -> value
    dead_letters: str | None = READINGS_DLQ  # where an unreadable record goes
    internal: bool = False  # written and read by one service only


TABLE: tuple[Topic, ...] = (
    Topic(READINGS, "ReadingBatch, or a pack of them one per line (READING_BATCH.unpack)",
          "facility id (a pack: its first report's)", codec.READING_BATCH),
    Topic(READINGS_DLQ, "DeadLetter", "facility id (none when unknown)", codec.DEAD_LETTER,
          dead_letters=None),
    Topic(ALARMS, "AlarmEvent", "facility id", codec.ALARM_EVENT),
    Topic(ACKS, "AckRequest", "facility id", codec.ACK_REQUEST),
    Topic(TICKS, "tick: epoch ms as ASCII digits", "none (one per partition)", codec.TICK,
          internal=True),
    Topic(HEALTH, "health record (JSON object)", "none", codec.HEALTH),
    Topic(ONCALL, "OnCallRecord", "facility id", codec.ONCALL_RECORD),
    Topic(ONCALL_TICKS, "tick: epoch ms as ASCII digits", "none (one per partition)",
          codec.TICK, dead_letters=None, internal=True),  # a tick's value is not read
    Topic(CONTEXT, "ContextRecord", "district", codec.CONTEXT_RECORD, internal=True),
    Topic(ORDERS, "OrderEvent", "order id", codec.ORDER_EVENT),
)
BY_NAME: dict[str, Topic] = {t.name: t for t in TABLE}
ALL = tuple(t.name for t in TABLE)

_KINDS = frozenset(k.value for k in FacilityKind)


def telemetry_topic(topic: str) -> tuple[str, str] | None:
    """``(kind, facility id)`` of ``lifeline/<kind>/<facility>/telemetry`` with a known
    kind; ``None`` for any other topic. The facility is not looked up."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "lifeline" or parts[3] != "telemetry" \
            or parts[1] not in _KINDS:
        return None
    return parts[1], parts[2]
