"""What one MQTT message does in ingest.

1. **Judged** on paho's network thread (:meth:`MessageHandler.judge`): MQTT hygiene, then
   validation against the contract and the registry (validate.py), then the gateway's
   rate limits (ratelimit.py), into an :class:`~services.ingest.validate.Outcome`.
2. **Routed** (:func:`records`): the accepted readings to ``lifeline.readings``, the dead
   letter (``schemas.codec.DEAD_LETTER``) to ``lifeline.readings.dlq``, both keyed by
   the facility id (:func:`key`).
3. **Produced** (:class:`Forwarder`) until Kafka takes every record, then **counted**
   (:meth:`MessageHandler.counted`). app.py hands outcomes over in arrival order and
   acknowledges the MQTT message after step 3 (inflight.py).

MQTT hygiene: a retained message (``retain`` set: the broker replays it on every
subscription, which would look like a repeated old report) is dead-lettered as
``retained``; a QoS 0 message (no delivery guarantee, nothing to acknowledge) as
``qos0``. Both keep their bytes and can be replayed (``lifeline dlq replay``).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from schemas.codec import DEAD_LETTER
from schemas.deadletter import Problem, RejectReason, dead_letter
from schemas.registry import Registry
from services.core import topics
from services.core.health import Counters, Health
from services.core.logging import get_logger
from services.ingest.config import IngestSettings
from services.ingest.errors import NotStarted
from services.ingest.inflight import Inflight
from services.ingest.pack import Packer
from services.ingest.ratelimit import BACKLOG, Decision, GatewayPolicy, gateway_of
from services.ingest.validate import Outcome, Validator

log = get_logger("lifeline.ingest")


class MessageHandler:
    """Judges and counts messages. ``validator`` is swapped whole when the registry
    changes (:meth:`use_registry`); ``policy`` holds the gateways' rate-limit state."""

    def __init__(self, settings: IngestSettings, registry: Registry,
                 counters: Counters) -> None:
        self.settings = settings
        self.counters = counters
        self.validator = self._validator(registry)
        s = settings
        self.policy = GatewayPolicy(rate=s.gateway_rate_per_s, burst=s.gateway_burst,
                                    hard_rate=s.gateway_hard_rate_per_s,
                                    hard_burst=s.gateway_hard_burst,
                                    backlog_min_age_s=s.backlog_min_age_s,
                                    backlog_min_spacing_s=s.backlog_min_spacing_s)
        # (reason, facility) -> [last log line at, rejections not logged since]
        self._reject_log: dict[tuple[str, str | None], list[float]] = {}

    def _validator(self, registry: Registry) -> Validator:
        s = self.settings
        return Validator(registry, max_payload_bytes=s.max_payload_bytes,
                         max_future_s=s.max_future_s, max_past_s=s.max_past_s)

    def use_registry(self, registry: Registry) -> None:
        """Validate with ``registry`` from the next message on. The MQTT thread validates:
        it takes ``self.validator`` once per message (one reference swap, atomic), so a
        message is judged wholly by the old registry or wholly by the new one. The
        gateways' rate-limit state (keyed by facility id) is kept."""
        validator = self._validator(registry)
        validator.fast = self.validator.fast
        self.validator = validator
        log.info("ingest.registry_in_use", facilities=len(registry.facilities),
                 sensors=registry.sensor_count)

    # ------------------------------------------------------------------ judge
    def judge(self, topic: str, payload: bytes, retain: bool, qos: int,
              received_at: datetime, now: float) -> Outcome:
        """MQTT hygiene, validation, then the gateway's rate limits (``now``: monotonic
        seconds). Never raises: a validator that crashes makes a ``schema`` dead letter."""
        try:
            return self._judge(topic, payload, retain, qos, received_at, now)
        except Exception as exc:
            log.exception("ingest.validator_crashed", topic=topic, error=str(exc))
            problem = Problem(reason=RejectReason.SCHEMA,
                              detail=f"validator error: {exc!r}"[:300])
            return Outcome(None, None, dead_letter(
                problems=[problem], service="ingest", source=f"mqtt:{topic}",
                payload=payload, received_at=received_at,
                keep_bytes=self.settings.max_payload_bytes))

    def _judge(self, topic: str, payload: bytes, retain: bool, qos: int,
               received_at: datetime, now: float) -> Outcome:
        validator = self.validator  # one registry for the whole message (use_registry)
        if retain:
            return validator.refuse(
                topic, payload, received_at, RejectReason.RETAINED,
                "retained message: the broker replays it on every subscription, so it is "
                "not a new report (publish telemetry with retain=false)")
        if qos == 0:
            return validator.refuse(
                topic, payload, received_at, RejectReason.QOS0,
                "QoS 0 message: no delivery guarantee and nothing to acknowledge (publish "
                "telemetry with QoS 1)")
        outcome = validator.validate(topic, payload, received_at)
        if outcome.batch_json is None:
            return outcome  # refused whole: dead-lettered with its own reason
        decision = self.policy.admit(outcome.facility_id or gateway_of(topic),
                                     outcome.event_time, received_at, now)
        if decision.lane == BACKLOG:
            self.counters.inc("backlog_admitted")
        if decision.admitted:
            return outcome
        self.counters.inc("rate_limited")
        return self._rate_limited(topic, payload, outcome, decision, received_at)

    def _rate_limited(self, topic: str, payload: bytes, outcome: Outcome, decision: Decision,
                      received_at: datetime) -> Outcome:
        """A limited message: one dead letter with its raw bytes (replayable), reason
        ``rate_limited``, plus whatever validation found; acknowledged once in Kafka."""
        problems = [Problem(reason=RejectReason.RATE_LIMITED, detail=decision.detail)]
        if outcome.dead_letter is not None:
            problems.extend(outcome.dead_letter.problems)
        return Outcome(outcome.facility_id, None, dead_letter(
            problems=problems, service="ingest", source=f"mqtt:{topic}", payload=payload,
            received_at=received_at, keep_bytes=self.settings.max_payload_bytes,
            facility_id=outcome.facility_id))

    # ------------------------------------------------------------------ count
    def counted(self, outcome: Outcome) -> None:
        """Kafka took the outcome's records: count them, and log a refusal (one line per
        reason, facility and second — a flood must not become a flood of log lines; the
        counters have every one)."""
        if outcome.batch_json is not None:
            self.counters.inc("accepted_reports")
            self.counters.inc("accepted_readings", outcome.readings)
        dl = outcome.dead_letter
        if dl is None:
            return
        self.counters.inc("rejected_messages" if outcome.batch_json is None
                          else "partial_messages")
        self.counters.inc(f"rejected.{dl.reason}")
        now = time.monotonic()
        key = (str(dl.reason), dl.facility_id)
        seen = self._reject_log.get(key)
        if seen is not None and now - seen[0] < 1.0:
            seen[1] += 1
            return
        self._reject_log[key] = [now, 0]
        log.warning("ingest.rejected", reason=str(dl.reason), source=dl.source,
                    facility_id=dl.facility_id, detail=dl.detail[:300],
                    sensor=next((p.sensor for p in dl.problems if p.sensor), None),
                    **({"not_logged_before": int(seen[1])} if seen and seen[1] else {}))


# ---------------------------------------------------------------------- route
def records(outcome: Outcome) -> list[tuple[str, bytes]]:
    """(topic, value) of every Kafka record one message makes."""
    out: list[tuple[str, bytes]] = []
    if outcome.batch_json is not None:
        out.append((topics.READINGS, outcome.batch_json))
    if outcome.dead_letter is not None:
        out.append((topics.READINGS_DLQ, DEAD_LETTER.encode(outcome.dead_letter)))
    return out


def key(outcome: Outcome) -> bytes | None:
    return outcome.facility_id.encode() if outcome.facility_id else None


# ---------------------------------------------------------------------- produce
class Producer(Protocol):
    """What ingest uses of aiokafka's producer (tests stand in for it)."""

    async def send(self, topic: str, value: bytes, key: bytes | None = None
                   ) -> asyncio.Future[Any]: ...


class Forwarder:
    """Produces one message's records. While Kafka works, a message costs one ``send``
    per record (:meth:`send`); while it fails, messages go through :meth:`deliver` one
    at a time, retried with backoff until Kafka takes them."""

    def __init__(self, health: Health, counters: Counters) -> None:
        self.health = health
        self.counters = counters
        self.producer: Producer | None = None  # set by Ingest.attach
        self.packer: Packer | None = None  # set by Ingest.attach when packing is on
        self.down = False  # Kafka failed and has not taken a message since
        self._retry_lock = asyncio.Lock()
        self._last_retry_log = -1e9

    async def send(self, outcome: Outcome) -> asyncio.Future[Any]:
        """Hand the records to the producer; the future is done when Kafka took them all."""
        if self.producer is None:
            raise NotStarted("ingest has no Kafka producer yet")
        k = key(outcome)
        packer = None if self.down else self.packer  # retries go alone, at once
        futures: list[asyncio.Future[Any]] = []
        for t, v in records(outcome):
            if packer is not None and k is not None and t == topics.READINGS:
                futures.append(await packer.add(k, v))
            else:
                futures.append(await self.producer.send(t, v, key=k))
        if len(futures) == 1:
            return futures[0]
        return asyncio.gather(*futures)  # none (a refused flood message) is done at once

    async def deliver(self, outcome: Outcome, inflight: Inflight) -> None:
        """Produce the outcome's records until Kafka takes them (the path while it fails)."""
        delay = 0.2
        while True:
            try:
                if self.down:
                    # While Kafka fails, messages retry one at a time (in arrival order):
                    # thousands of parallel attempts would pile up in the producer's
                    # buffer (measured: 300 MB -> 3 GB during a broker stall).
                    async with self._retry_lock:
                        await (await self.send(outcome))
                else:
                    await (await self.send(outcome))
                if self.down:
                    self.down = False
                    log.info("kafka.produce_recovered", retries=self.counters.snapshot()
                             .get("kafka_retries", 0))
                return
            except KafkaError as exc:
                self.down = True
                self.counters.inc("kafka_retries")
                self.health.problem("kafka", f"produce failed, retrying: {exc!r}")
                now = time.monotonic()
                if now - self._last_retry_log >= 1.0:  # one line a second, not one per message
                    self._last_retry_log = now
                    log.warning("kafka.produce_retry", facility_id=outcome.facility_id,
                                error=repr(exc), retry_in_s=delay, pending=len(inflight))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def watch(self, inflight: Inflight, stall_s: float) -> None:
        """Kafka may hold a request without failing it (a stalled broker; the client keeps
        retrying the batch): judge Kafka by how long the oldest message has waited."""
        while True:
            await asyncio.sleep(1.0)
            waited = inflight.oldest_wait()
            if waited is None or waited < stall_s:
                continue
            self.health.problem("kafka", f"{len(inflight)} message(s) waiting for "
                                         f"Kafka, the oldest for {waited:.0f}s")
            if time.monotonic() - self._last_retry_log >= 10.0:
                self._last_retry_log = time.monotonic()
                log.warning("kafka.not_acknowledging", waiting=len(inflight),
                            oldest_s=round(waited, 1))
