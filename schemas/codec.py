"""One encoder and one decoder per message (docs/decisions/0016-one-shape.md).

Every Kafka value Lifeline writes or reads goes through the codec of its contract here;
schemas/topics.py says which codec belongs to which topic. The pydantic models stay the
definition of each contract: a :class:`Codec` is pydantic-core's JSON serializer and
validator for one model (``to_json`` writes the bytes directly, without
``model_dump_json``'s ``str`` round trip).

``lifeline.readings`` is the hot path (20k readings/s) and has two fast paths besides:

- :meth:`ReadingBatchCodec.encode_checked` — ingest's encoder for a report it has checked
  field by field: ``orjson.dumps`` of plain values (``json.dumps`` was 11 % of ingest's
  samples at 12,000 readings/s, issue 16), a fraction of the cost of building the
  models (services/ingest/validate.py; tests/ingest/test_validate_fast.py holds it
  equal to the pydantic path).
- :meth:`ReadingBatchCodec.decode_plain` — the writer's decoder: pydantic-core's own JSON
  parser (``from_json``, about twice as fast as ``json.loads`` here) and the
  contract's checks on plain values (ids in the contract's alphabet, known kind and
  metric, finite numbers, timestamps through :func:`schemas.common.epoch_ms`), no models.
  ``None`` for anything not exactly plain; the caller then takes :meth:`Codec.decode`,
  which accepts it or raises the precise ValidationError (tests/schemas/test_codec.py holds
  the two equal on valid and invalid inputs).

Measured (tests/bench/codec.py, 10,000 batches of 10 readings) against the code these
replaced: see docs/benchmarks.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Generic, NamedTuple, TypeVar

import orjson
from pydantic import BaseModel
from pydantic_core import from_json

from schemas.alarm import AlarmEvent
from schemas.common import ID_PATTERN, epoch_ms, format_timestamp, to_epoch_ms
from schemas.context import ContextRecord
from schemas.deadletter import DeadLetter
from schemas.kinds import FacilityKind, Metric
from schemas.oncall import AckRequest, OnCallRecord
from schemas.reading import ReadingBatch
from schemas.telemetry import TelemetryMessage
from schemas.workorder import OrderEvent

M = TypeVar("M", bound=BaseModel)


class Codec(Generic[M]):
    """The JSON codec of one contract: ``decode`` validates (pydantic's ValidationError,
    a ValueError, for anything the contract refuses, not-JSON included)."""

    __slots__ = ("_serializer", "model")

    def __init__(self, model: type[M]) -> None:
        self.model = model
        self._serializer = model.__pydantic_serializer__

    def encode(self, value: M) -> bytes:
        """The same bytes as ``value.model_dump_json().encode()``."""
        out: bytes = self._serializer.to_json(value)
        return out

    def decode(self, raw: bytes | bytearray | str) -> M:
        return self.model.model_validate_json(raw)

    def __repr__(self) -> str:
        return f"Codec({self.model.__name__})"


_is_id = re.compile(ID_PATTERN).fullmatch
_KINDS = frozenset(k.value for k in FacilityKind)
_METRICS = frozenset(m.value for m in Metric)


PlainReading = tuple[str, str, float | int, int]
"""(sensor, metric, value, epoch ms); a JSON integer value stays an int (finite)."""


class PlainBatch(NamedTuple):
    """A ``lifeline.readings`` value checked against the contract, without models."""

    facility_id: str
    kind: str
    seq: int
    readings: list[PlainReading]


class ReadingBatchCodec(Codec[ReadingBatch]):
    """:class:`Codec` of ``ReadingBatch`` with the hot path's encoder and decoder."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(ReadingBatch)

    @staticmethod
    def encode_checked(facility_id: str, kind: str, seq: int, received_at: datetime,
                       ts: datetime, readings: list[dict[str, Any]]) -> bytes:
        """A batch whose every reading shares ``ts``, from readings
        ``{"sensor", "metric", "value", "unit"}`` the caller has checked against the
        contract and the registry (ids, kind, metric, canonical unit, finite float
        ``value``, ``seq >= 0``); each gets its ``"ts"`` here (the dicts are completed in
        place: no copy on the hot path). The bytes decode to the same
        :class:`ReadingBatch` as :meth:`encode` of it; ``ValueError`` for a non-finite
        value."""
        when = format_timestamp(ts)
        for r in readings:
            r["ts"] = when
            if not math.isfinite(r["value"]):  # orjson would write null
                raise ValueError(f"Out of range float values are not JSON compliant: "
                                 f"{r['value']!r}")
        body = {"facility_id": facility_id, "kind": kind, "seq": seq,
                "received_at": format_timestamp(received_at), "readings": readings}
        out: bytes = orjson.dumps(body)
        return out

    @staticmethod
    def decode_plain(raw: bytes | bytearray | str) -> PlainBatch | None:
        """The batch when ``raw`` is exactly what ingest writes and the contract accepts;
        ``None`` for anything else (a missing or extra key, a wrong type, an id outside
        the alphabet, a non-finite value, a timestamp without offset, not JSON): then
        :meth:`decode` accepts it or raises the precise error."""
        try:
            d = from_json(raw)
            fid, kind, seq, items = d["facility_id"], d["kind"], d["seq"], d["readings"]
            if (type(fid) is not str or not _is_id(fid) or kind not in _KINDS
                    or type(seq) is not int or seq < 0 or type(items) is not list or not items
                    or len(d) != 5 or "received_at" not in d):
                return None
            epoch_ms(d["received_at"])  # the contract's Timestamp, though nothing uses it
            # Ingest writes one time for all readings of a report: each text parsed once
            # per batch (strings only: True == 1 must not share 1's entry).
            seen: dict[str, int] = {}
            out = []
            for r in items:
                sensor, metric, value, ts = r["sensor"], r["metric"], r["value"], r["ts"]
                if (type(sensor) is not str or not _is_id(sensor)
                        or metric not in _METRICS or type(value) not in (float, int)
                        or not math.isfinite(value) or len(r) != 5
                        or type(r["unit"]) is not str):
                    return None
                if type(ts) is str:
                    ms = seen.get(ts)
                    if ms is None:
                        ms = seen[ts] = epoch_ms(ts)
                else:
                    ms = epoch_ms(ts)
                out.append((sensor, metric, value, ms))
            return PlainBatch(fid, kind, seq, out)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError,
                RecursionError):
            return None

    @staticmethod
    def pack(values: Sequence[bytes]) -> bytes:
        """One ``lifeline.readings`` value holding several encoded batches: one per line
        (JSON Lines). Ingest packs the reports of one partition and window
        (services/ingest/pack.py, ``LIFELINE_INGEST_PACK_MS``) so that the broker, the
        processor's Faust loop and the writer pay their per-record cost once per pack.
        Every encoder here writes compact JSON (a newline inside a string is escaped), so
        a line is exactly one batch."""
        return b"\n".join(values)

    @staticmethod
    def unpack(raw: bytes) -> list[bytes]:
        """The encoded batches of one ``lifeline.readings`` value, in order: one for an
        unpacked value (what ingest writes with packing off, and every older record).
        Each is then decoded on its own, so one bad batch is dead-lettered with its own
        bytes and the others are kept. Blank lines are not batches; a value with nothing
        else is returned whole, for the caller's decode to refuse and dead-letter (never
        nothing: a record must not vanish unrecorded)."""
        if b"\n" not in raw:
            return [raw]
        return [line for line in raw.split(b"\n") if line.strip()] or [raw]

    @staticmethod
    def plain(batch: ReadingBatch) -> PlainBatch:
        """A validated batch in :meth:`decode_plain`'s shape (the same tuples)."""
        return PlainBatch(batch.facility_id, batch.kind.value, batch.seq,
                          [(r.sensor, r.metric.value, r.value, to_epoch_ms(r.ts))
                           for r in batch.readings])


class HealthCodec:
    """``lifeline.health``: one service's status and counters (services/core/health.py).
    Not a pydantic model: the counters are whatever the service counts."""

    __slots__ = ()
    REQUIRED = ("service", "instance", "ts", "status", "counters")

    @staticmethod
    def encode(record: dict[str, Any]) -> bytes:
        return json.dumps(record).encode()

    @classmethod
    def decode(cls, raw: bytes | bytearray | str) -> dict[str, Any]:
        """The record; json's own errors (JSONDecodeError, UnicodeDecodeError: the dead
        letter's ``undecodable_event``) when it is not JSON, a plain ValueError
        (``invalid_contract``) when it is not an object with the required keys (``ts``
        epoch ms, ``counters`` an object)."""
        rec = json.loads(raw)
        if type(rec) is not dict:
            raise ValueError("not a pipeline health record: not a JSON object")
        missing = [k for k in cls.REQUIRED if k not in rec]
        if missing:
            raise ValueError(f"not a pipeline health record: missing {', '.join(missing)}")
        if type(rec["counters"]) is not dict:
            raise ValueError("not a pipeline health record: counters is not an object")
        epoch_ms(rec["ts"])
        return rec


class TelemetryCodec(Codec[TelemetryMessage]):
    """An MQTT gateway report (schemas/telemetry.py). ``decode`` is the contract's
    validator (ingest has its own checked fast path in services/ingest/validate.py);
    ``encode_plain`` is what gateways' stand-ins — the simulators, the load bench — publish:
    plain values to JSON without building models, ``ts`` as RFC 3339 UTC with ``Z``."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(TelemetryMessage)

    @staticmethod
    def encode_plain(ts: datetime | float | str, seq: int,
                     readings: list[dict[str, Any]]) -> bytes:
        """``ts``: a datetime, epoch seconds (float) or an already formatted string;
        ``readings``: ``{"sensor", "metric", "value", "unit"[, "ts"]}`` dicts."""
        if isinstance(ts, (int, float)):
            ts = datetime.fromtimestamp(ts, tz=UTC)
        if isinstance(ts, datetime):
            ts = format_timestamp(ts)
        body = {"ts": ts, "seq": seq, "readings": readings}
        if all(type(r.get("value")) is not float or math.isfinite(r["value"])
               for r in readings):
            # orjson: json.dumps was 13 % of the load bench's generator, which shares the
            # machine with what it measures (issue 16). Same JSON, compact separators.
            out: bytes = orjson.dumps(body)
            return out
        # NaN/Infinity: orjson would write null; a stand-in gateway's bad value is sent as
        # Python's json writes it (``NaN``), for ingest to refuse.
        return json.dumps(body, ensure_ascii=False).encode()


class TickCodec:
    """``lifeline.ticks`` and ``lifeline.oncall.ticks``: a wall clock, epoch ms as ASCII
    digits (no JSON)."""

    __slots__ = ()

    @staticmethod
    def encode(now_ms: int) -> bytes:
        return str(int(now_ms)).encode()

    @staticmethod
    def decode(raw: bytes) -> int | None:
        """The tick's epoch ms; ``None`` unless 1–16 ASCII digits."""
        if not 0 < len(raw) <= 16 or not raw.isdigit():
            return None
        return int(raw)


READING_BATCH = ReadingBatchCodec()
ALARM_EVENT: Codec[AlarmEvent] = Codec(AlarmEvent)
ACK_REQUEST: Codec[AckRequest] = Codec(AckRequest)
ONCALL_RECORD: Codec[OnCallRecord] = Codec(OnCallRecord)
CONTEXT_RECORD: Codec[ContextRecord] = Codec(ContextRecord)
DEAD_LETTER: Codec[DeadLetter] = Codec(DeadLetter)
ORDER_EVENT: Codec[OrderEvent] = Codec(OrderEvent)
HEALTH = HealthCodec()
TICK = TickCodec()
TELEMETRY = TelemetryCodec()
