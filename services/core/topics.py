"""Kafka topic names, re-exported from schemas/topics.py (the topic → contract table)."""

from schemas.topics import (
    ACKS,
    ALARMS,
    ALL,
    CONTEXT,
    HEALTH,
    ONCALL,
    ONCALL_TICKS,
    ORDERS,
    READINGS,
    READINGS_DLQ,
    TICKS,
)

__all__ = ["ACKS", "ALARMS", "ALL", "CONTEXT", "HEALTH", "ONCALL", "ONCALL_TICKS", "ORDERS",
           "READINGS", "READINGS_DLQ", "TICKS"]
