"""Dead letters: the value of Kafka topic ``lifeline.readings.dlq``.

Anything Lifeline refuses is kept here with the raw bytes and a reason a person can read,
so a rejected report can be inspected, fixed at the gateway and replayed. That includes
records of Lifeline's own topics (alarms, acknowledgements, the on-call trail, health,
context, ticks) a consumer cannot read: their ``source`` is ``kafka:<topic>[<p>]@<offset>``
and ``lifeline dlq replay`` skips them (it replays MQTT reports only).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from schemas.common import Contract, Timestamp


class RejectReason(StrEnum):
    NOT_JSON = "not_json"
    NOT_UTF8 = "not_utf8"
    SCHEMA = "schema"
    OVERSIZE = "oversize"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_FACILITY = "unknown_facility"
    KIND_MISMATCH = "kind_mismatch"
    UNKNOWN_SENSOR = "unknown_sensor"
    METRIC_MISMATCH = "metric_mismatch"
    BAD_UNIT = "bad_unit"
    OUT_OF_RANGE = "out_of_range"
    TIMESTAMP_FUTURE = "timestamp_future"
    TIMESTAMP_PAST = "timestamp_past"
    LATE = "late"
    # Records of Lifeline's own Kafka topics (docs/decisions/0011, "Internal topics"):
    # not UTF-8 or not JSON at all (the processor also uses it for readings and ticks that
    # are not the contract) ...
    UNDECODABLE_EVENT = "undecodable_event"
    # ... JSON, but not the topic's contract (a missing field, a wrong type) ...
    INVALID_CONTRACT = "invalid_contract"
    # ... an acknowledgement whose signature does not verify (recorded, never applied) ...
    FORGED = "forged"
    # ... valid by the contract, but the consumer failed handling it (a bug or a state it
    # cannot reconcile): kept so it can be inspected, the consumer goes on.
    UNPROCESSABLE = "unprocessable"
    SINK_REJECTED = "sink_rejected"
    RATE_LIMITED = "rate_limited"
    # MQTT hygiene (ingest): a retained message is replayed by the broker on every
    # (re)subscription; QoS 0 carries no delivery guarantee.
    RETAINED = "retained"
    QOS0 = "qos0"


class Problem(Contract):
    """One reason a message, or one reading in it, was refused."""

    reason: RejectReason
    detail: str
    reading_index: int | None = None
    sensor: str | None = None


class DeadLetter(Contract):
    reason: RejectReason = Field(description="The first problem's reason (see 'problems').")
    detail: str = Field(description="Human-readable explanation naming the offending field.")
    service: str = Field(description="The service that rejected it (ingest, processor, writer).")
    source: str = Field(description="Where it came from: MQTT topic or Kafka topic[partition]@offset.")
    facility_id: str | None = None
    problems: list[Problem] = Field(
        default_factory=list,
        description="Every problem found; reading_index is set when only that reading was refused.",
    )
    received_at: Timestamp
    payload_b64: str = Field(description="The raw bytes, base64 (truncated if oversize).")
    payload_size: Annotated[int, Field(ge=0)]
    payload_sha256: str
    payload_truncated: bool = False


def dead_letter(*, problems: list[Problem], service: str, source: str, payload: bytes,
                received_at: datetime, keep_bytes: int,
                facility_id: str | None = None) -> DeadLetter:
    """Build a dead letter, keeping at most ``keep_bytes`` of the raw payload."""
    if not problems:
        raise ValueError("a dead letter needs at least one problem")
    kept = payload[:keep_bytes]
    first = problems[0]
    detail = first.detail if len(problems) == 1 else (
        f"{first.detail} (and {len(problems) - 1} more problem(s))")
    return DeadLetter(
        reason=first.reason, detail=detail, service=service, source=source,
        facility_id=facility_id, problems=problems,
        received_at=received_at,
        payload_b64=base64.b64encode(kept).decode("ascii"),
        payload_size=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        payload_truncated=len(kept) < len(payload),
    )
