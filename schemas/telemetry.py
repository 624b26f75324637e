"""The MQTT telemetry contract: what a field gateway publishes.

Topic ``lifeline/{kind}/{facility_id}/telemetry``, QoS 1, UTF-8 JSON, one message per
gateway report carrying several channels::

    {"ts": "2026-07-01T08:00:00Z", "seq": 1234,
     "readings": [{"sensor": "DR-0001-L1", "metric": "water_level", "value": 1.23, "unit": "m"}]}
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from schemas.common import Contract, Identifier, Timestamp
from schemas.kinds import Metric

TOPIC_TEMPLATE = "lifeline/{kind}/{facility_id}/telemetry"
TOPIC_FILTER = "lifeline/+/+/telemetry"
MAX_READINGS_PER_MESSAGE = 256

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class TelemetryReading(Contract):
    """One channel of a gateway report."""

    sensor: Identifier = Field(description="Sensor id as listed in the facility registry.")
    metric: Metric = Field(description="What is measured; must match the sensor's metric.")
    value: FiniteFloat = Field(description="The measured value (a JSON number; NaN/Infinity rejected).")
    unit: Annotated[str, Field(min_length=1, max_length=16)] = Field(
        description="Unit of value; converted to the metric's canonical unit when known."
    )
    ts: Timestamp | None = Field(
        default=None, description="This reading's own time, if it differs from the report's."
    )


class TelemetryMessage(Contract):
    """One gateway report."""

    ts: Timestamp = Field(description="Report time: RFC 3339 with offset, or epoch milliseconds.")
    seq: Annotated[int, Field(strict=True, ge=0, lt=2**63)] = Field(
        description="The gateway's report counter (detects gaps and duplicates)."
    )
    readings: Annotated[
        list[TelemetryReading], Field(min_length=1, max_length=MAX_READINGS_PER_MESSAGE)
    ]


def telemetry_topic(kind: str, facility_id: str) -> str:
    """The MQTT topic a facility's gateway publishes to."""
    return TOPIC_TEMPLATE.format(kind=kind, facility_id=facility_id)
