"""Context shared across facilities: the value of Kafka topic ``lifeline.context``
(key = district).

The processor partitions by facility; what one facility's rules need from others — today,
whether the district is under rain — is published here by the worker that evaluated the
district's gauges and read by every worker. Idempotent: the newest ``ts`` wins.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from schemas.common import Contract, Identifier, Timestamp


class DistrictRain(Contract):
    """One of a district's rain gauges measured at least the policy's hourly rainfall."""

    type: Literal["rain"] = "rain"
    district: Annotated[str, Field(min_length=1, max_length=200)]
    ts: Timestamp = Field(description="Event time of the gauge's reading.")
    mm_per_h: float = Field(ge=0, allow_inf_nan=False, description="Rain of the past hour.")
    facility_id: Identifier
    sensor: Identifier
