"""The ingest bridge: paho-mqtt (its own network thread) → validation → aiokafka.

Delivery: an MQTT message is acknowledged (PUBACK) only after Kafka acknowledged every
record made from it — the readings batch and/or the dead letter — and acks go out in the
order messages arrived (MQTT 3.1.1 §4.6). A crash anywhere before the PUBACK makes the
broker redeliver from the persistent session; duplicates are harmless downstream because
points are keyed by event time and alarms by deterministic ids.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import threading
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from paho.mqtt.enums import CallbackAPIVersion

from schemas.registry import Registry, load_registry
from schemas.telemetry import TOPIC_FILTER
from services.core import topics
from services.core.health import Counters, Health, health_record, serve
from services.core.kafka import producer_kwargs
from services.core.logging import get_logger
from services.ingest.config import IngestConfig
from services.ingest.ratelimit import GatewayLimiter, gateway_of
from services.ingest.validate import Outcome, Validator

log = get_logger("lifeline.ingest")


@dataclass(slots=True)
class _Pending:
    mid: int
    qos: int
    generation: int
    at: float  # time.monotonic() on arrival
    done: bool = False


class IngestService:
    def __init__(self, config: IngestConfig, registry: Registry) -> None:
        self.cfg = config
        s = config.ingest
        self.validator = Validator(registry, max_payload_bytes=s.max_payload_bytes,
                                   max_future_s=s.max_future_s, max_past_s=s.max_past_s)
        self.counters = Counters("received", "accepted_reports", "accepted_readings",
                                 "rejected_messages", "partial_messages", "acked",
                                 "kafka_retries")
        self.health = Health("ingest", self.counters)
        self.limiter = GatewayLimiter(s.gateway_rate_per_s, s.gateway_burst)
        self._limited: dict[str, list[float]] = {}  # gateway -> [dropped since record, at]
        self._pending: deque[_Pending] = deque()
        self._inbox: deque[tuple[_Pending, Outcome]] = deque()  # MQTT thread -> event loop
        self._wake = asyncio.Event()
        self._wake_scheduled = False
        self._generation = 0
        self._connected = threading.Event()
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: AIOKafkaProducer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._kafka_down = False
        self._retry_lock = asyncio.Lock()
        self._last_retry_log = -1e9
        self.counters.gauge("pending_acks", lambda: len(self._pending))
        self.health.problem("mqtt", "not connected yet")
        self.health.problem("kafka", "producer not started yet")

    # ------------------------------------------------------------------ MQTT side
    def _client(self) -> mqtt.Client:
        m = self.cfg.mqtt
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.cfg.ingest.client_id,
                             clean_session=False, protocol=mqtt.MQTTv311, manual_ack=True)
        client.username_pw_set(m.username, m.password.get_secret_value())
        if m.tls:
            import ssl

            client.tls_set(ca_certs=str(m.ca_file) if m.ca_file else None,
                           certfile=str(m.cert_file) if m.cert_file else None,
                           keyfile=str(m.key_file) if m.key_file else None,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any,
                    _p: Any) -> None:
        if reason.is_failure:
            self.health.problem("mqtt", f"connect refused: {reason}")
            log.error("mqtt.connect_refused", reason=str(reason))
            return
        # Acks owed on an earlier connection must not be sent on this one: the broker
        # redelivers those messages and their packet ids may be reused.
        self._generation += 1
        client.subscribe(TOPIC_FILTER, qos=1)
        self._connected.set()
        self.health.ok("mqtt")
        log.info("mqtt.connected", session_present=bool(flags.session_present),
                 broker=f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}")

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connected.clear()
        self.health.problem("mqtt", f"disconnected: {reason}")
        log.warning("mqtt.disconnected", reason=str(reason))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        received_at = datetime.now(UTC)
        now = time.monotonic()
        entry = _Pending(msg.mid, msg.qos, self._generation, now)
        self._pending.append(entry)
        self.counters.inc("received")
        gateway = gateway_of(msg.topic)
        if not self.limiter.allow(gateway, now):
            outcome = self._rate_limited(msg, gateway, received_at, now)
        else:
            try:
                outcome = self.validator.validate(msg.topic, bytes(msg.payload), received_at)
            except Exception as exc:
                log.exception("ingest.validator_crashed", topic=msg.topic, error=str(exc))
                outcome = self._crash_outcome(msg, received_at, exc)
        # Hand over to the event loop: one wake-up per burst, not one per message.
        self._inbox.append((entry, outcome))
        if not self._wake_scheduled:
            self._wake_scheduled = True
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._wake.set)

    def _rate_limited(self, msg: mqtt.MQTTMessage, gateway: str, received_at: datetime,
                      now: float) -> Outcome:
        """Over its rate: one dead letter per gateway and second carries the count of the
        messages dropped since the previous one (a flood is recorded without becoming
        a flood of dead letters); the rest are counted and acknowledged."""
        from schemas.deadletter import Problem, RejectReason, dead_letter

        self.counters.inc("rate_limited")
        state = self._limited.setdefault(gateway, [0.0, -1e9])
        state[0] += 1
        if now - state[1] < 1.0:
            return Outcome(None, None, None)
        dropped, state[0], state[1] = int(state[0]), 0.0, now
        detail = (f"gateway {gateway} over its rate ({self.cfg.ingest.gateway_rate_per_s:g} "
                  f"msg/s, burst {self.cfg.ingest.gateway_burst:g}): {dropped} message(s) "
                  "refused since the last record")
        return Outcome(gateway, None, dead_letter(
            problems=[Problem(reason=RejectReason.RATE_LIMITED, detail=detail)],
            service="ingest", source=f"mqtt:{msg.topic}", payload=bytes(msg.payload),
            received_at=received_at, keep_bytes=self.cfg.ingest.max_payload_bytes,
            facility_id=gateway))

    def _crash_outcome(self, msg: mqtt.MQTTMessage, received_at: datetime,
                       exc: Exception) -> Outcome:
        from schemas.deadletter import Problem, RejectReason, dead_letter

        problem = Problem(reason=RejectReason.SCHEMA, detail=f"validator error: {exc!r}"[:300])
        return Outcome(None, None, dead_letter(
            problems=[problem], service="ingest", source=f"mqtt:{msg.topic}", payload=bytes(msg.payload),
            received_at=received_at, keep_bytes=self.cfg.ingest.max_payload_bytes))

    # ------------------------------------------------------------------ Kafka side
    async def _pump(self) -> None:
        """Send what the MQTT thread validated, in arrival order. While Kafka works, a
        message costs one ``send`` and a callback (no task); while it fails, messages go
        through :meth:`_deliver` one at a time."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._wake_scheduled = False  # before draining: later arrivals wake us again
            while self._inbox:
                entry, outcome = self._inbox.popleft()
                if self._kafka_down:
                    await self._deliver(entry, outcome)
                    continue
                try:
                    sent = await self._send(self._records(outcome), _key(outcome))
                except Exception as exc:  # the pump must outlive any failed send
                    if not isinstance(exc, KafkaError):
                        log.exception("kafka.send_crashed", facility_id=outcome.facility_id,
                                      error=repr(exc))
                    self._spawn(self._deliver(entry, outcome))
                    continue
                sent.add_done_callback(functools.partial(self._sent, entry, outcome))

    def _sent(self, entry: _Pending, outcome: Outcome, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._spawn(self._deliver(entry, outcome))  # retried there, in order of failure
            return
        self._done(entry, outcome)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _records(outcome: Outcome) -> list[tuple[str, bytes]]:
        records: list[tuple[str, bytes]] = []
        if outcome.batch_json is not None:
            records.append((topics.READINGS, outcome.batch_json))
        if outcome.dead_letter is not None:
            records.append((topics.READINGS_DLQ, outcome.dead_letter.model_dump_json().encode()))
        return records

    def _done(self, entry: _Pending, outcome: Outcome) -> None:
        self.health.ok("kafka")
        self._count(outcome)
        entry.done = True
        self._flush_acks()

    async def _deliver(self, entry: _Pending, outcome: Outcome) -> None:
        """Produce one message's records until Kafka takes them (the path while it fails)."""
        records, key = self._records(outcome), _key(outcome)
        delay = 0.2
        while True:
            try:
                if self._kafka_down:
                    # While Kafka fails, messages retry one at a time (in arrival order):
                    # thousands of parallel attempts would pile up in the producer's
                    # buffer (measured: 300 MB -> 3 GB during a broker stall).
                    async with self._retry_lock:
                        await self._produce(records, key)
                else:
                    await self._produce(records, key)
                if self._kafka_down:
                    self._kafka_down = False
                    log.info("kafka.produce_recovered", retries=self.counters.snapshot()
                             .get("kafka_retries", 0))
                break
            except KafkaError as exc:
                self._kafka_down = True
                self.counters.inc("kafka_retries")
                self.health.problem("kafka", f"produce failed, retrying: {exc!r}")
                now = time.monotonic()
                if now - self._last_retry_log >= 1.0:  # one line a second, not one per message
                    self._last_retry_log = now
                    log.warning("kafka.produce_retry", facility_id=outcome.facility_id,
                                error=repr(exc), retry_in_s=delay,
                                pending=len(self._pending))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._done(entry, outcome)

    async def _send(self, records: list[tuple[str, bytes]], key: bytes | None
                    ) -> asyncio.Future[Any]:
        assert self._producer is not None
        futures: list[asyncio.Future[Any]] = [
            await self._producer.send(t, v, key=key) for t, v in records]
        if len(futures) == 1:
            return futures[0]
        return asyncio.gather(*futures)  # none (a refused flood message) is done at once

    async def _produce(self, records: list[tuple[str, bytes]], key: bytes | None) -> None:
        await (await self._send(records, key))

    def _count(self, outcome: Outcome) -> None:
        if outcome.batch_json is not None:
            self.counters.inc("accepted_reports")
            self.counters.inc("accepted_readings", outcome.readings)
        dl = outcome.dead_letter
        if dl is not None:
            self.counters.inc("rejected_messages" if outcome.batch_json is None
                              else "partial_messages")
            self.counters.inc(f"rejected.{dl.reason}")
            log.warning("ingest.rejected", reason=str(dl.reason), source=dl.source,
                        facility_id=dl.facility_id, detail=dl.detail[:300],
                        sensor=next((p.sensor for p in dl.problems if p.sensor), None))

    def _flush_acks(self) -> None:
        while self._pending and self._pending[0].done:
            e = self._pending.popleft()
            if e.generation == self._generation and e.qos > 0:
                self._client_ref.ack(e.mid, e.qos)
                self.counters.inc("acked")

    async def _watch_acks(self) -> None:
        """Kafka may hold a request without failing it (a stalled broker; the client keeps
        retrying the batch): judge Kafka by how long the oldest message has waited."""
        while True:
            await asyncio.sleep(1.0)
            if not self._pending or self._pending[0].done:
                continue
            waited = time.monotonic() - self._pending[0].at
            if waited >= self.cfg.ingest.ack_stall_s:
                self.health.problem("kafka", f"{len(self._pending)} message(s) waiting for "
                                             f"Kafka, the oldest for {waited:.0f}s")
                if time.monotonic() - self._last_retry_log >= 10.0:
                    self._last_retry_log = time.monotonic()
                    log.warning("kafka.not_acknowledging", waiting=len(self._pending),
                                oldest_s=round(waited, 1))

    async def _report_health(self) -> None:
        """Publish this service's counters to lifeline.health (pipeline health)."""
        while True:
            await asyncio.sleep(self.cfg.common.health_report_s)
            assert self._producer is not None
            try:
                sent = await self._producer.send(topics.HEALTH, health_record(self.health))
            except KafkaError as exc:
                log.warning("health.report_failed", error=repr(exc))
            else:
                sent.add_done_callback(_health_sent)

    # ------------------------------------------------------------------ lifecycle
    async def _start_producer(self) -> AIOKafkaProducer:
        delay = 0.5
        while not self._stopping.is_set():
            producer = AIOKafkaProducer(**producer_kwargs(self.cfg.kafka, "lifeline-ingest"))
            try:
                await producer.start()
                self.health.ok("kafka")
                return producer
            except KafkaError as exc:
                await producer.stop()
                self.health.problem("kafka", f"cannot reach {self.cfg.kafka.bootstrap}: {exc!r}")
                log.warning("kafka.unreachable", bootstrap=self.cfg.kafka.bootstrap,
                            error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        raise asyncio.CancelledError

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._stopping.set)
        s = self.cfg.ingest
        runner = await serve(self.health, s.health_host, s.health_port)
        self._producer = await self._start_producer()
        client = self._client_ref = self._client()
        client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, keepalive=self.cfg.mqtt.keepalive)
        client.loop_start()
        log.info("ingest.started", topic_filter=TOPIC_FILTER, health_port=s.health_port,
                 kafka=self.cfg.kafka.bootstrap, sensors=self.validator.registry.sensor_count)
        reporter = asyncio.create_task(self._report_health())
        pump = asyncio.create_task(self._pump())
        watch = asyncio.create_task(self._watch_acks())
        await self._stopping.wait()
        reporter.cancel()
        log.info("ingest.stopping", pending=len(self._pending))
        # Give in-flight messages a chance to be acked. No unsubscribe: the persistent
        # session must keep queueing while ingest is down.
        deadline = self._loop.time() + s.drain_timeout_s
        while self._pending and self._loop.time() < deadline:  # noqa: ASYNC110 — polls a thread-fed deque
            await asyncio.sleep(0.05)
        client.disconnect()
        client.loop_stop()
        pump.cancel()
        watch.cancel()
        await self._producer.stop()
        await runner.cleanup()
        log.info("ingest.stopped", counters=self.counters.snapshot())

    _client_ref: mqtt.Client


def _health_sent(fut: asyncio.Future[Any]) -> None:
    """A health record Kafka refused is logged (not left as an unretrieved exception)."""
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("health.report_failed", error=repr(fut.exception()))


def _key(outcome: Outcome) -> bytes | None:
    return outcome.facility_id.encode() if outcome.facility_id else None


def main() -> None:
    cfg = IngestConfig()
    registry = load_registry(cfg.common.registry)
    asyncio.run(IngestService(cfg, registry).run())
