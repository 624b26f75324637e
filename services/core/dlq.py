"""Replaying dead letters: ``lifeline dlq replay``.

Reads ``lifeline.readings.dlq`` from the beginning, selects the dead letters of one
reason (any of their problems), refused in ``[since, until)`` (their ``received_at``),
optionally of one facility, and sends each one's raw payload back through ingest's own
:class:`~services.ingest.validate.Validator` (the registry and the ``LIFELINE_INGEST_*``
limits ingest uses), as if it had just arrived on its MQTT topic (``source``). What
validation accepts is produced to ``lifeline.readings`` exactly as ingest produces it
(key = facility id, value = the reading batch); what it refuses is reported with its
reason, not dead-lettered again. Nothing is rate limited here: the operator chose what
to replay.

Idempotent enough: a replayed report keeps its original event times, and every stored
point is keyed by event time, so replaying the same dead letters twice overwrites the
same points (alarm ids are deterministic too). Within one run, a payload seen twice from
the same topic (a repeated report, a flood of copies) is replayed once.

Not replayed (``skipped``): dead letters that did not come from MQTT (the processor's,
writer's and notifier's: their source is a Kafka record, not a report), and truncated
payloads (``oversize``: only the first bytes were kept).

Internal records (:class:`InternalDeadLetters`): every consumer of Lifeline's own topics
dead-letters a record it cannot read (or, the notifier, a forged acknowledgement) to the
same topic with its bytes, its reason (``undecodable_event``, ``invalid_contract``,
``forged``, ``unprocessable``) and ``kafka:<topic>[<partition>]@<offset>``, counts it
(``dead_lettered``) and goes on with the next record (docs/decisions/0011).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from schemas.codec import DEAD_LETTER
from schemas.deadletter import DeadLetter, Problem, RejectReason, dead_letter
from services.core import topics
from services.core.health import Counters
from services.core.logging import get_logger

if TYPE_CHECKING:  # ingest's validator only for replay: consumers import this module too
    from services.ingest.validate import Validator

log = get_logger("lifeline.dlq")

DETAIL_CHARS = 300  # of the validation error, in the dead letter and the log line
KEEP_BYTES = 65536  # of the raw record


def kafka_source(topic: str, partition: int | None = None, offset: int | None = None) -> str:
    """A Kafka record's ``source``: ``kafka:<topic>[<partition>]@<offset>`` (as much of it
    as is known)."""
    where = f"kafka:{topic}"
    if partition is not None:
        where += f"[{partition}]"
    if offset is not None:
        where += f"@{offset}"
    return where


def decode_reason(exc: Exception) -> RejectReason:
    """Why a record could not be read: ``undecodable_event`` when it is not UTF-8 JSON at
    all, ``invalid_contract`` when it is JSON but not the topic's contract (pydantic's
    errors, or a plain ``ValueError`` of a decoder saying so), ``unprocessable`` for any
    other exception (the contract held, the consumer could not handle it)."""
    if isinstance(exc, ValidationError):
        kinds = {str(e.get("type")) for e in exc.errors()}
        return (RejectReason.UNDECODABLE_EVENT if kinds & {"json_invalid", "json_type"}
                else RejectReason.INVALID_CONTRACT)
    if isinstance(exc, UnicodeDecodeError | json.JSONDecodeError):
        return RejectReason.UNDECODABLE_EVENT
    if type(exc) is ValueError:
        return RejectReason.INVALID_CONTRACT
    return RejectReason.UNPROCESSABLE


def error_detail(exc: Exception) -> str:
    """The validation error as a dead letter's ``detail`` (first 300 characters)."""
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e.get("loc", ())) or "(record)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        text = f"{exc.title}: {loc}: {e.get('msg')}{more}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:DETAIL_CHARS]


class InternalDeadLetters:
    """One service's dead letters for records of Lifeline's own topics.

    ``send(key, value)`` produces to ``lifeline.readings.dlq`` (a Faust topic's ``send`` or
    a producer's); each dead letter is counted (``dead_lettered`` and
    ``dead_lettered.<topic>``) and logged as ``<service>.dead_lettered`` with its source and
    reason. It never raises for the record: the caller goes on with the next one."""

    def __init__(self, service: str, send: Callable[[bytes | None, bytes], Awaitable[Any]],
                 counters: Counters) -> None:
        self.service = service
        self._send = send
        self.counters = counters

    async def record(self, payload: bytes | None, reason: RejectReason, detail: str, *,
                     topic: str, partition: int | None = None, offset: int | None = None,
                     key: bytes | None = None, source: str | None = None,
                     facility_id: str | None = None) -> DeadLetter:
        raw = payload or b""
        src = source or kafka_source(topic, partition, offset)
        if facility_id is None and key:
            facility_id = key.decode(errors="replace")[:100]
        dl = dead_letter(problems=[Problem(reason=reason, detail=detail[:DETAIL_CHARS])],
                         service=self.service, source=src, payload=raw,
                         received_at=datetime.now(UTC), keep_bytes=KEEP_BYTES,
                         facility_id=facility_id)
        self.counters.inc("dead_lettered")
        self.counters.inc(f"dead_lettered.{topic}")
        log.warning(f"{self.service}.dead_lettered", source=src, reason=str(reason),
                    detail=dl.detail, facility_id=facility_id, size=len(raw))
        await self._send(key, DEAD_LETTER.encode(dl))
        return dl

    async def undecodable(self, payload: bytes | None, exc: Exception, *, topic: str,
                          partition: int | None = None, offset: int | None = None,
                          key: bytes | None = None) -> DeadLetter:
        """A record that failed its contract: the reason from :func:`decode_reason`, the
        detail from :func:`error_detail`."""
        return await self.record(payload, decode_reason(exc), error_detail(exc), topic=topic,
                                 partition=partition, offset=offset, key=key)


class Sender(Protocol):
    """What replay needs of a producer (``AIOKafkaProducer`` or a stand-in)."""

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any: ...


@dataclass(frozen=True)
class Selection:
    reason: RejectReason
    since: datetime
    until: datetime | None = None
    facility: str | None = None

    def matches(self, dl: DeadLetter) -> bool:
        if dl.reason != self.reason and all(p.reason != self.reason for p in dl.problems):
            return False
        if dl.received_at < self.since or (self.until is not None
                                           and dl.received_at >= self.until):
            return False
        return self.facility is None or dl.facility_id == self.facility


@dataclass
class ReplayReport:
    read: int = 0  # records of the DLQ read
    selected: int = 0
    replayed: int = 0  # accepted by validation (produced, unless a dry run)
    partial: int = 0  # replayed with some readings refused again
    still_refused: int = 0  # refused whole again
    readings: int = 0
    skipped: int = 0
    dry_run: bool = False
    undecodable: int = 0  # DLQ records that are not dead letters
    refused_reasons: Counter[str] = field(default_factory=Counter)
    skipped_reasons: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        return {"selected": self.selected, "replayed": self.replayed,
                "still_refused": self.still_refused, "partial": self.partial,
                "readings": self.readings, "skipped": self.skipped,
                "refused_reasons": dict(self.refused_reasons),
                "skipped_reasons": dict(self.skipped_reasons), "read": self.read,
                "undecodable": self.undecodable, "dry_run": self.dry_run}


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant with an offset, in UTC (``ValueError`` otherwise)."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"{text!r} needs a UTC offset (e.g. 'Z' or '+08:00')")
    return when.astimezone(UTC)


class Collector:
    """``read_topic``'s callback: decodes each record and keeps only the selected dead
    letters (memory grows with the selection, not with the topic)."""

    def __init__(self, selection: Selection) -> None:
        self.selection = selection
        self.selected: list[DeadLetter] = []
        self.read = 0
        self.undecodable = 0

    def __call__(self, value: bytes) -> None:
        self.read += 1
        try:
            dl = DEAD_LETTER.decode(value)
        except ValidationError:
            self.undecodable += 1
            return
        if self.selection.matches(dl):
            self.selected.append(dl)


async def replay(values: Iterable[bytes], selection: Selection, validator: Validator,
                 producer: Sender | None, *, now: datetime | None = None,
                 on_refused: Callable[[dict[str, Any]], None] | None = None) -> ReplayReport:
    """Select, validate and (with a producer) produce; ``producer=None`` is a dry run.

    ``on_refused`` gets one dict per selected dead letter refused again (whole or in
    part): its sha256, source, reason and detail."""
    collect = Collector(selection)
    for value in values:
        collect(value)
    return await replay_selected(collect, validator, producer, now=now,
                                 on_refused=on_refused)


async def replay_selected(collect: Collector, validator: Validator, producer: Sender | None,
                          *, now: datetime | None = None,
                          on_refused: Callable[[dict[str, Any]], None] | None = None
                          ) -> ReplayReport:
    """:func:`replay` of what a :class:`Collector` selected."""
    report = ReplayReport(dry_run=producer is None, read=collect.read,
                          undecodable=collect.undecodable, selected=len(collect.selected))
    seen: set[tuple[str, str]] = set()
    sent: list[Any] = []
    received_at = now or datetime.now(UTC)
    for dl in collect.selected:
        why = _unreplayable(dl, seen)
        if why is not None:
            report.skipped += 1
            report.skipped_reasons[why] += 1
            continue
        payload = base64.b64decode(dl.payload_b64)  # checked in _unreplayable
        topic = dl.source.removeprefix("mqtt:")
        outcome = validator.validate(topic, payload, received_at)
        if outcome.batch_json is not None:
            report.replayed += 1
            report.readings += outcome.readings
            if producer is not None:
                key = outcome.facility_id.encode() if outcome.facility_id else None
                sent.append(await producer.send(topics.READINGS, outcome.batch_json, key=key))
        if outcome.dead_letter is not None:
            again = outcome.dead_letter
            if outcome.batch_json is None:
                report.still_refused += 1
            else:
                report.partial += 1
            for p in again.problems:
                report.refused_reasons[str(p.reason)] += 1
            if on_refused is not None:
                on_refused({"payload_sha256": dl.payload_sha256, "source": dl.source,
                            "facility_id": dl.facility_id, "was": str(dl.reason),
                            "reason": str(again.reason), "detail": again.detail[:300],
                            "partly_replayed": outcome.batch_json is not None})
    if sent:
        await asyncio.gather(*sent)  # every replayed report acknowledged by Kafka
    return report


def _unreplayable(dl: DeadLetter, seen: set[tuple[str, str]]) -> str | None:
    if not dl.source.startswith("mqtt:"):
        return "not_from_mqtt"
    if dl.payload_truncated:
        return "truncated"
    try:
        base64.b64decode(dl.payload_b64, validate=True)
    except (binascii.Error, ValueError):
        return "bad_payload"
    key = (dl.source, dl.payload_sha256)
    if key in seen:
        return "duplicate"
    seen.add(key)
    return None


async def run_replay(selection: Selection, *, dry_run: bool, idle_s: float,
                     on_refused: Callable[[dict[str, Any]], None] | None = None
                     ) -> ReplayReport:
    """``lifeline dlq replay``: the settings ingest uses (Kafka, registry, limits)."""
    from aiokafka import AIOKafkaProducer

    from schemas.registry import load_registry
    from services.core.kafka import producer_kwargs
    from services.core.kafka_tools import read_topic
    from services.core.settings import KafkaSettings, RegistrySettings, load
    from services.ingest.config import IngestSettings
    from services.ingest.validate import Validator

    kafka, limits = load(KafkaSettings), load(IngestSettings)
    validator = Validator(load_registry(load(RegistrySettings).registry),
                          max_payload_bytes=limits.max_payload_bytes,
                          max_future_s=limits.max_future_s, max_past_s=limits.max_past_s)
    collect = Collector(selection)
    await read_topic(kafka, topics.READINGS_DLQ, collect, idle_timeout=idle_s)
    if dry_run:
        return await replay_selected(collect, validator, None, on_refused=on_refused)
    producer = AIOKafkaProducer(**producer_kwargs(kafka, "lifeline-dlq-replay"))
    await producer.start()
    try:
        return await replay_selected(collect, validator, producer, on_refused=on_refused)
    finally:
        await producer.stop()
