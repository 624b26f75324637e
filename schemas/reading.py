"""Validated readings: the value of Kafka topic ``lifeline.readings`` (key = facility id).

One batch is one gateway report. A Kafka record carries one batch, or — with
``LIFELINE_INGEST_PACK_MS`` — a pack of the batches of one partition and window, one per
line (``READING_BATCH.pack``/``unpack``, services/ingest/pack.py): Faust's and the broker's
per-record cost dominates, so many readings per record is what makes high rates possible.

Encoded and decoded only by ``schemas.codec.READING_BATCH`` (with the hot path's fast
encoder and decoder, held equal to these models by tests/schemas/test_codec.py).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from schemas.common import Contract, Identifier, Timestamp
from schemas.kinds import FacilityKind, Metric


class Reading(Contract):
    """One validated reading, value in the metric's canonical unit, at its event time."""

    sensor: Identifier
    metric: Metric
    value: float
    unit: str
    ts: Timestamp


class ReadingBatch(Contract):
    """The accepted part of one gateway report."""

    facility_id: Identifier
    kind: FacilityKind
    seq: Annotated[int, Field(ge=0)]
    received_at: Timestamp = Field(description="When ingest received the MQTT message.")
    readings: Annotated[list[Reading], Field(min_length=1)]
