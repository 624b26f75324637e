"""Kafka topic names (one place; every service imports them from here)."""

READINGS = "lifeline.readings"
READINGS_DLQ = "lifeline.readings.dlq"
ALARMS = "lifeline.alarms"
ACKS = "lifeline.acks"
TICKS = "lifeline.ticks"  # processor-internal: wall-clock ticks per partition
HEALTH = "lifeline.health"  # every service's counters, every few seconds (pipeline health)
ONCALL = "lifeline.oncall"  # on-call audit trail: notifications, attempts, acks, escalations
ONCALL_TICKS = "lifeline.oncall.ticks"  # notifier-internal: wall-clock ticks per partition
# processor-internal: context that crosses facilities (district rain), key = district, read
# by every worker in full
CONTEXT = "lifeline.context"

ALL = (READINGS, READINGS_DLQ, ALARMS, ACKS, TICKS, HEALTH, ONCALL, ONCALL_TICKS, CONTEXT)
