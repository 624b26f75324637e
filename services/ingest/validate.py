"""Validation of one MQTT message against the contract and the registry.

Pure and synchronous: bytes and topic in, an accepted :class:`ReadingBatch` (possibly
without some readings) and a :class:`DeadLetter` listing every problem out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import Field, ValidationError

from schemas.common import Contract, Timestamp
from schemas.deadletter import DeadLetter, Problem, RejectReason, dead_letter
from schemas.kinds import METRICS, FacilityKind
from schemas.reading import Reading, ReadingBatch
from schemas.registry import Registry
from schemas.telemetry import MAX_READINGS_PER_MESSAGE, TelemetryReading
from schemas.units import UnitError, conversion

SERVICE = "ingest"
_KINDS = {k.value for k in FacilityKind}


class _Envelope(Contract):
    """The message without its readings, so one bad reading does not sink the rest."""

    ts: Timestamp
    seq: Annotated[int, Field(strict=True, ge=0, lt=2**63)]
    readings: Annotated[list[Any], Field(min_length=1, max_length=MAX_READINGS_PER_MESSAGE)]


@dataclass(frozen=True, slots=True)
class Outcome:
    facility_id: str | None
    batch: ReadingBatch | None
    dead_letter: DeadLetter | None


def _describe(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"])
        got = err.get("input")
        shown = repr(got)[:60] if not isinstance(got, dict | list) else type(got).__name__
        parts.append(f"{prefix}{loc or 'message'}: {err['msg']} (got {shown})")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; … {more} more" if more > 0 else "")


class Validator:
    def __init__(self, registry: Registry, *, max_payload_bytes: int, max_future_s: float,
                 max_past_s: float) -> None:
        self.registry = registry
        self.max_payload_bytes = max_payload_bytes
        self.max_future = timedelta(seconds=max_future_s)
        self.max_past = timedelta(seconds=max_past_s)

    def _reject(self, topic: str, payload: bytes, received_at: datetime,
                problems: list[Problem], facility_id: str | None) -> DeadLetter:
        return dead_letter(problems=problems, service=SERVICE, source=f"mqtt:{topic}",
                           payload=payload, received_at=received_at,
                           keep_bytes=self.max_payload_bytes, facility_id=facility_id)

    def validate(self, topic: str, payload: bytes, received_at: datetime) -> Outcome:
        def whole(reason: RejectReason, detail: str, fid: str | None = None) -> Outcome:
            problem = Problem(reason=reason, detail=detail)
            return Outcome(fid, None, self._reject(topic, payload, received_at, [problem], fid))

        if len(payload) > self.max_payload_bytes:
            return whole(RejectReason.OVERSIZE,
                         f"payload is {len(payload)} bytes; the limit is {self.max_payload_bytes}")
        parts = topic.split("/")
        if len(parts) != 4 or parts[0] != "lifeline" or parts[3] != "telemetry" \
                or parts[1] not in _KINDS:
            return whole(RejectReason.BAD_TOPIC,
                         f"topic {topic!r} is not lifeline/{{drainage|bridge|sewage}}/{{facility}}/telemetry")
        kind, fid = parts[1], parts[2]
        facility = self.registry.facility(fid)
        if facility is None:
            return whole(RejectReason.UNKNOWN_FACILITY, f"facility {fid!r} is not in the registry")
        if facility.kind != kind:
            return whole(RejectReason.KIND_MISMATCH,
                         f"topic says {kind} but facility {fid} is a {facility.kind} facility", fid)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            return whole(RejectReason.NOT_UTF8, f"payload is not UTF-8: {exc}", fid)
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            return whole(RejectReason.NOT_JSON, f"payload is not JSON: {exc}"[:300], fid)
        try:
            env = _Envelope.model_validate(raw)
        except ValidationError as exc:
            return whole(RejectReason.SCHEMA, _describe(exc), fid)

        accepted: list[Reading] = []
        problems: list[Problem] = []
        for i, item in enumerate(env.readings):
            reading, problem = self._reading(fid, i, item, env.ts, received_at)
            if problem is not None:
                problems.append(problem)
            elif reading is not None:
                accepted.append(reading)
        batch = None
        if accepted:
            batch = ReadingBatch(facility_id=fid, kind=facility.kind, seq=env.seq,
                                 received_at=received_at, readings=accepted)
        dl = self._reject(topic, payload, received_at, problems, fid) if problems else None
        return Outcome(fid, batch, dl)

    def _reading(self, fid: str, i: int, item: Any, msg_ts: datetime,
                 received_at: datetime) -> tuple[Reading | None, Problem | None]:
        sensor_hint = item.get("sensor") if isinstance(item, dict) else None
        sensor_hint = sensor_hint if isinstance(sensor_hint, str) else None

        def bad(reason: RejectReason, detail: str) -> tuple[None, Problem]:
            return None, Problem(reason=reason, detail=detail, reading_index=i,
                                 sensor=sensor_hint[:64] if sensor_hint else None)

        try:
            r = TelemetryReading.model_validate(item)
        except ValidationError as exc:
            return bad(RejectReason.SCHEMA, _describe(exc, prefix=f"readings.{i}."))
        sensor = self.registry.sensor(fid, r.sensor)
        if sensor is None:
            return bad(RejectReason.UNKNOWN_SENSOR,
                       f"readings.{i}: sensor {r.sensor!r} is not registered at facility {fid}")
        if sensor.metric != r.metric:
            return bad(RejectReason.METRIC_MISMATCH,
                       f"readings.{i}: sensor {r.sensor} measures {sensor.metric}, not {r.metric}")
        canonical = METRICS[r.metric].unit
        try:
            factor, offset = conversion(r.unit, canonical)
        except UnitError as exc:
            return bad(RejectReason.BAD_UNIT, f"readings.{i}: {exc} for {r.metric} "
                                              f"(canonical unit {canonical!r})")
        value = r.value * factor + offset
        if not math.isfinite(value):
            return bad(RejectReason.SCHEMA, f"readings.{i}: value overflows after unit conversion")
        ts = r.ts or msg_ts
        if ts - received_at > self.max_future:
            return bad(RejectReason.TIMESTAMP_FUTURE,
                       f"readings.{i}: time {ts.isoformat()} is {(ts - received_at).total_seconds():.0f}s "
                       f"ahead of ingest's clock (limit {self.max_future.total_seconds():.0f}s)")
        if received_at - ts > self.max_past:
            return bad(RejectReason.TIMESTAMP_PAST,
                       f"readings.{i}: time {ts.isoformat()} is older than "
                       f"{self.max_past.total_seconds():.0f}s")
        return Reading(sensor=r.sensor, metric=r.metric, value=value, unit=canonical, ts=ts), None
