"""The InfluxDB layout: database, retention policies, measurements, tag and field names.

The one definition the writer (services/writer/points.py, storage.py), the readers (the
dashboards, the notifier's history and ack page, ``lifeline score --from influx``) and the
local stack share; see docs/decisions/0007-storage-layout.md for why it is shaped so.

- retention policy :data:`RAW` (the default one): readings and pipeline health;
- retention policy :data:`LONG`: alarm events and states, the on-call trail, the registry's
  facility points and the aggregates (1-minute: the writer's; hourly, district hourly: the
  database's continuous queries).

On InfluxDB 2.x the two are buckets (``LIFELINE_INFLUX_BUCKET`` and its ``_long``), mapped
to the same names for InfluxQL by deploy/influxdb/setup.sh.
"""

from __future__ import annotations

from typing import Final

DATABASE: Final = "lifeline"

# Retention policies
RAW: Final = "raw"
LONG: Final = "long"


class Measurement:
    """Measurement names (which retention policy each lives in: :data:`RETENTION`)."""

    READING: Final = "reading"
    READING_1M: Final = "reading_1m"
    READING_1H: Final = "reading_1h"
    DISTRICT_1H: Final = "district_1h"
    ALARM_EVENT: Final = "alarm_event"
    ALARM_STATE: Final = "alarm_state"
    ONCALL: Final = "oncall"
    PIPELINE: Final = "pipeline"
    FACILITY: Final = "facility"


RETENTION: Final[dict[str, str]] = {
    Measurement.READING: RAW, Measurement.PIPELINE: RAW,
    Measurement.READING_1M: LONG, Measurement.READING_1H: LONG, Measurement.DISTRICT_1H: LONG,
    Measurement.ALARM_EVENT: LONG, Measurement.ALARM_STATE: LONG, Measurement.ONCALL: LONG,
    Measurement.FACILITY: LONG,
}


class Tag:
    """Tag names (ids and levels, bounded by the registry and the contracts)."""

    FACILITY: Final = "facility"
    SENSOR: Final = "sensor"
    KIND: Final = "kind"
    METRIC: Final = "metric"
    DISTRICT: Final = "district"
    RULE: Final = "rule"
    EVENT: Final = "event"
    LEVEL: Final = "level"
    CATEGORY: Final = "category"
    TYPE: Final = "type"
    TEAM: Final = "team"
    CHANNEL: Final = "channel"
    SERVICE: Final = "service"
    INSTANCE: Final = "instance"
    PARTITION: Final = "partition"  # of lifeline.readings, on district_1h (writer-computed)


_READING_TAGS = frozenset({Tag.FACILITY, Tag.SENSOR, Tag.KIND, Tag.METRIC, Tag.DISTRICT})
TAGS: Final[dict[str, frozenset[str]]] = {
    # Every point of a measurement carries exactly these tags (a test checks the writer's).
    Measurement.READING: _READING_TAGS,
    Measurement.READING_1M: _READING_TAGS,  # the raw series (writer's rollup; CQs GROUP BY *)
    Measurement.READING_1H: _READING_TAGS,
    # One point per partition of lifeline.readings: each writer worker aggregates its own
    # (InfluxDB 2.x's task, deploy/influxdb/setup.sh, writes one without the tag).
    Measurement.DISTRICT_1H: frozenset({Tag.DISTRICT, Tag.KIND, Tag.METRIC, Tag.PARTITION}),
    Measurement.ALARM_EVENT: _READING_TAGS | {Tag.RULE, Tag.EVENT, Tag.LEVEL, Tag.CATEGORY},
    Measurement.ALARM_STATE: frozenset({Tag.FACILITY, Tag.SENSOR, Tag.RULE, Tag.CATEGORY,
                                        Tag.KIND, Tag.DISTRICT}),
    Measurement.ONCALL: frozenset({Tag.FACILITY, Tag.SENSOR, Tag.KIND, Tag.TYPE, Tag.TEAM,
                                   Tag.CHANNEL, Tag.LEVEL}),
    Measurement.PIPELINE: frozenset({Tag.SERVICE, Tag.INSTANCE}),
    Measurement.FACILITY: frozenset({Tag.FACILITY, Tag.KIND, Tag.DISTRICT}),
}


class Field:
    """Field names shared by the writer and its readers."""

    VALUE: Final = "value"
    SEQ: Final = "seq"
    FILL: Final = "fill"
    BASELINE: Final = "baseline"
    MEAN: Final = "mean"
    MIN: Final = "min"
    MAX: Final = "max"
    ALARM_ID: Final = "alarm_id"
    EVENT_ID: Final = "event_id"
    RECORD_ID: Final = "record_id"
    SEVERITY: Final = "severity"
    MESSAGE: Final = "message"
    HEALTHY: Final = "healthy"


# A tag value standing for "not given" (a facility-wide alarm's metric, a record's team).
NONE: Final = "none"


def ident(name: str) -> str:
    """An InfluxQL identifier, double-quoted (names here contain no quotes)."""
    return f'"{name}"'


def qualified(measurement: str, db: str | None = None) -> str:
    """``"long"."alarm_event"`` (or ``"db"."long"."alarm_event"``): the measurement with
    its retention policy, as every query and continuous query names it."""
    path = f'"{RETENTION[measurement]}"."{measurement}"'
    return f'"{db}".{path}' if db else path
