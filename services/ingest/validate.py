"""Validation of one MQTT message against the contract and the registry.

Pure and synchronous: bytes and topic in, an accepted :class:`ReadingBatch` (possibly
without some readings) and a :class:`DeadLetter` listing every problem out.

Two paths give the same result. A well-formed report (the everyday case: known sensors,
plain JSON numbers, report-level time) is checked field by field and its Kafka value
written by ``schemas.codec.READING_BATCH.encode_checked`` — about a third of the cost of
building pydantic models. Both paths share the topic parser (schemas/topics.py) and the
unit conversion with its finiteness check (:func:`_canonical`).
Anything unusual (a missing key, an extra key, a string where a number belongs, a
reading's own time, an unknown sensor, …) takes the strict pydantic path, which also
writes every error message. tests/unit/test_validate_fast.py holds the two equal.

Hostile input is refused, never raised: an integer longer than Python's int-str
conversion limit (4,300 digits) becomes a stand-in that the contract refuses as
``schema`` naming its field (``seq``, ``readings.0.value``); a time whose offset carries
it outside years 1–9999 is a ``schema`` problem naming ``ts`` (schemas/common.py).
tests/fuzz_ingest.py generates both.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime, timedelta
from typing import Annotated, Any, cast

from pydantic import Field, ValidationError

from schemas.codec import READING_BATCH
from schemas.common import Contract, Timestamp, parse_timestamp
from schemas.deadletter import DeadLetter, Problem, RejectReason, dead_letter
from schemas.kinds import METRICS, Metric
from schemas.reading import Reading, ReadingBatch
from schemas.registry import Registry
from schemas.telemetry import MAX_READINGS_PER_MESSAGE, TelemetryReading
from schemas.topics import telemetry_topic
from schemas.units import UnitError, conversion_for

SERVICE = "ingest"


class _Envelope(Contract):
    """The message without its readings, so one bad reading does not sink the rest."""

    ts: Timestamp
    seq: Annotated[int, Field(strict=True, ge=0, lt=2**63)]
    readings: Annotated[list[Any], Field(min_length=1, max_length=MAX_READINGS_PER_MESSAGE)]


class _HugeInt:
    """A JSON integer too long for Python's int-str conversion limit (``int()`` raises
    ValueError beyond 4,300 digits): kept as this stand-in, which every contract field
    refuses, so the dead letter can name the field instead of the validator raising."""

    __slots__ = ("digits",)

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))

    def __repr__(self) -> str:
        return f"<integer of {self.digits} digits>"


def _parse_int(text: str) -> int | _HugeInt:
    try:
        return int(text)
    except ValueError:
        return _HugeInt(text)


def _canonical(metric: Metric, unit: str, value: float, canonical: str) -> float | None:
    """``value`` (in ``unit``) in ``canonical``, the metric's canonical unit; ``None`` when
    the result is not a finite float (an overflow); UnitError when ``unit`` does not
    convert."""
    factor, offset = conversion_for(metric, unit, canonical)
    try:
        v = float(value) * factor + offset
    except OverflowError:  # an integer beyond float range
        return None
    return v if math.isfinite(v) else None


def _loads(text: str) -> Any:
    """``json.loads``; integers beyond the conversion limit become :class:`_HugeInt`.

    The hook costs a Python call per integer, so it is used only when the plain parse
    failed on such an integer (a ValueError that is not a JSONDecodeError)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        return json.loads(text, parse_int=_parse_int)


class Outcome:
    """What became of one message: the accepted readings as the Kafka value (JSON of a
    :class:`ReadingBatch`) and/or a dead letter. ``event_time`` is the report's own time
    when it could be read (the rate limits tell a backlog from a flood by it)."""

    __slots__ = ("_batch", "batch_json", "dead_letter", "event_time", "facility_id",
                 "readings")

    def __init__(self, facility_id: str | None, batch: ReadingBatch | None,
                 dead_letter: DeadLetter | None, *, batch_json: bytes | None = None,
                 readings: int = 0, event_time: datetime | None = None) -> None:
        self.facility_id = facility_id
        self.dead_letter = dead_letter
        self.event_time = event_time
        self._batch = batch
        if batch is not None:
            batch_json, readings = READING_BATCH.encode(batch), len(batch.readings)
        self.batch_json = batch_json
        self.readings = readings

    @property
    def batch(self) -> ReadingBatch | None:
        if self._batch is None and self.batch_json is not None:
            self._batch = READING_BATCH.decode(self.batch_json)
        return self._batch


def _describe(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"])
        got = err.get("input")
        if isinstance(got, _HugeInt):
            parts.append(f"{prefix}{loc or 'message'}: an integer of {got.digits} digits is "
                         f"refused (more than {sys.get_int_max_str_digits() or 4300})")
            continue
        shown = repr(got)[:60] if not isinstance(got, dict | list) else type(got).__name__
        parts.append(f"{prefix}{loc or 'message'}: {err['msg'][:200]} (got {shown})")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; … {more} more" if more > 0 else "")


class Validator:
    def __init__(self, registry: Registry, *, max_payload_bytes: int, max_future_s: float,
                 max_past_s: float, fast: bool = True) -> None:
        self.registry = registry
        # The registry's indexes, kept: the registry is swapped whole (a new Validator) on
        # reload, and a lookup through the model costs ~1 µs (Registry.facilities_by_id).
        self._facility = registry.facilities_by_id.get
        self._sensors_of = registry.sensors_by_facility.get
        self.fast = fast
        self.max_payload_bytes = max_payload_bytes
        self.max_future = timedelta(seconds=max_future_s)
        self.max_past = timedelta(seconds=max_past_s)

    def _reject(self, topic: str, payload: bytes, received_at: datetime,
                problems: list[Problem], facility_id: str | None) -> DeadLetter:
        return dead_letter(problems=problems, service=SERVICE, source=f"mqtt:{topic}",
                           payload=payload, received_at=received_at,
                           keep_bytes=self.max_payload_bytes, facility_id=facility_id)

    def facility_of(self, topic: str) -> str | None:
        """The registered facility a well-formed telemetry topic names (else ``None``)."""
        parsed = telemetry_topic(topic)
        if parsed is None:
            return None
        facility = self._facility(parsed[1])
        return facility.id if facility is not None and facility.kind == parsed[0] else None

    def refuse(self, topic: str, payload: bytes, received_at: datetime,
               reason: RejectReason, detail: str) -> Outcome:
        """A whole message refused before validation (MQTT hygiene, rate limits)."""
        fid = self.facility_of(topic)
        problem = Problem(reason=reason, detail=detail)
        return Outcome(fid, None, self._reject(topic, payload, received_at, [problem], fid))

    def validate(self, topic: str, payload: bytes, received_at: datetime) -> Outcome:
        def whole(reason: RejectReason, detail: str, fid: str | None = None) -> Outcome:
            problem = Problem(reason=reason, detail=detail)
            return Outcome(fid, None, self._reject(topic, payload, received_at, [problem], fid))

        if len(payload) > self.max_payload_bytes:
            return whole(RejectReason.OVERSIZE,
                         f"payload is {len(payload)} bytes; the limit is {self.max_payload_bytes}")
        parsed = telemetry_topic(topic)
        if parsed is None:
            return whole(RejectReason.BAD_TOPIC,
                         f"topic {topic!r} is not lifeline/{{drainage|bridge|sewage}}/{{facility}}/telemetry")
        kind, fid = parsed
        facility = self._facility(fid)
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
            raw = _loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            return whole(RejectReason.NOT_JSON, f"payload is not JSON: {exc}"[:300], fid)
        fast = self._fast(fid, facility.kind, raw, received_at) if self.fast else None
        if fast is not None:
            return fast
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
        return Outcome(fid, batch, dl, event_time=env.ts)

    def _fast(self, fid: str, kind: str, raw: Any, received_at: datetime) -> Outcome | None:
        """The everyday report, accepted whole; ``None`` sends it to the strict path."""
        if type(raw) is not dict or len(raw) != 3:
            return None
        seq, items, ts_raw = raw.get("seq"), raw.get("readings"), raw.get("ts")
        if type(seq) is not int or not 0 <= seq < 2**63 or type(items) is not list \
                or not 0 < len(items) <= MAX_READINGS_PER_MESSAGE \
                or type(ts_raw) not in (str, int):
            return None
        try:
            ts = parse_timestamp(ts_raw)
        except (ValueError, OverflowError):
            return None
        if ts - received_at > self.max_future or received_at - ts > self.max_past:
            return None
        sensors = self._sensors_of(fid) or {}
        out = []
        for item in items:
            if type(item) is not dict or len(item) != 4:
                return None
            sid, metric, value, unit = (item.get("sensor"), item.get("metric"),
                                        item.get("value"), item.get("unit"))
            sensor = sensors.get(sid) if type(sid) is str else None
            if sensor is None or metric != sensor.metric or type(value) not in (float, int) \
                    or type(unit) is not str or not 0 < len(unit) <= 16:
                return None
            canonical = METRICS[sensor.metric].unit
            try:
                v = _canonical(sensor.metric, unit, cast(float, value), canonical)
            except UnitError:
                return None
            if v is None:
                return None
            out.append({"sensor": sid, "metric": metric, "value": v, "unit": canonical})
        batch_json = READING_BATCH.encode_checked(fid, kind, seq, received_at, ts, out)
        return Outcome(fid, None, None, batch_json=batch_json, readings=len(out),
                       event_time=ts)

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
            value = _canonical(r.metric, r.unit, r.value, canonical)
        except UnitError as exc:
            return bad(RejectReason.BAD_UNIT, f"readings.{i}: {exc} for {r.metric} "
                                              f"(canonical unit {canonical!r})")
        if value is None:
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
