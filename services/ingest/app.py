"""The ingest bridge: paho-mqtt (its own network thread) → validation → aiokafka.

Delivery: an MQTT message is acknowledged (PUBACK) only after Kafka acknowledged every
record made from it — the readings batch and/or the dead letter — and acks go out in the
order messages arrived (MQTT 3.1.1 §4.6). A crash anywhere before the PUBACK makes the
broker redeliver from the persistent session; duplicates are harmless downstream because
points are keyed by event time and alarms by deterministic ids.

Backpressure: at most ``max_pending`` messages (and ``max_pending_bytes`` of payload) are
held between arrival and PUBACK. When Kafka is slow or down and that is reached, the
MQTT network thread waits in the hand-over instead of queueing more: ingest reads nothing
from the socket, the broker keeps the rest in the persistent session (and, if the wait
outlasts the keepalive, drops the connection; ingest reconnects and the broker
redelivers everything unacknowledged). Memory stays bounded and nothing acknowledged is
lost. Mosquitto's own window (``max_inflight_messages``) usually binds first.

MQTT hygiene: a retained message (``retain`` set: the broker replays it on every
subscription, which would look like a repeated old report) is dead-lettered as
``retained``; a QoS 0 message (no delivery guarantee, nothing to acknowledge) as
``qos0``. Both keep their bytes and can be replayed (``lifeline dlq replay``).

Client id: ingest connects with its MQTT username as client id (``client_id`` unset),
which is what a broker with ``use_username_as_clientid`` (the local stack) makes of any
client id anyway; the persistent session is keyed by it, so it survives restarts and
switching that option on, and no other account can take it over (kick ingest off).
"""

from __future__ import annotations

import asyncio
import contextlib
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

from schemas.deadletter import Problem, RejectReason, dead_letter
from schemas.registry import Registry, load_registry
from schemas.telemetry import TOPIC_FILTER
from services.core import topics
from services.core.health import Counters, Health, health_record, serve
from services.core.kafka import producer_kwargs
from services.core.logging import get_logger
from services.core.reload import WatchedFile, file_version
from services.ingest.config import IngestConfig
from services.ingest.ratelimit import BACKLOG, Decision, GatewayPolicy, gateway_of
from services.ingest.validate import Outcome, Validator

log = get_logger("lifeline.ingest")


@dataclass(slots=True)
class _Pending:
    mid: int
    qos: int
    generation: int
    at: float  # time.monotonic() on arrival
    size: int = 0  # payload bytes (the backpressure bound)
    done: bool = False


class IngestService:
    def __init__(self, config: IngestConfig, registry: Registry,
                 registry_version: str | None = None) -> None:
        self.cfg = config
        self.validator = self._validator(registry)
        self.counters = Counters("received", "accepted_reports", "accepted_readings",
                                 "rejected_messages", "partial_messages", "acked",
                                 "kafka_retries", "rate_limited", "backlog_admitted",
                                 "backpressure_pauses")
        self.health = Health("ingest", self.counters)
        # The registry is reloaded when its file changes (services/core/reload.py): a new
        # facility is accepted without a restart.
        self.registry_file = WatchedFile("registry", config.common.registry, load_registry,
                                         self.use_registry, self.health,
                                         version=registry_version)
        s = config.ingest
        self.policy = GatewayPolicy(rate=s.gateway_rate_per_s, burst=s.gateway_burst,
                                    hard_rate=s.gateway_hard_rate_per_s,
                                    hard_burst=s.gateway_hard_burst,
                                    backlog_min_age_s=s.backlog_min_age_s,
                                    backlog_min_spacing_s=s.backlog_min_spacing_s)
        # (reason, facility) -> [last log line at, rejections not logged since]
        self._reject_log: dict[tuple[str, str | None], list[float]] = {}
        # Backpressure: the MQTT thread waits on this while too much is unacknowledged.
        self._room = threading.Condition()
        self._pending_bytes = 0
        self._paused = False
        self._closing = False
        self._last_pause_log = -1e9
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
        self.counters.gauge("pending_bytes", lambda: self._pending_bytes)
        self.counters.gauge("mqtt_paused", lambda: int(self._paused))
        self.health.problem("mqtt", "not connected yet")
        self.health.problem("kafka", "producer not started yet")

    def _validator(self, registry: Registry) -> Validator:
        s = self.cfg.ingest
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

    # ------------------------------------------------------------------ MQTT side
    def _client(self) -> mqtt.Client:
        m = self.cfg.mqtt
        client_id = self.cfg.ingest.client_id or m.username
        if client_id != m.username:
            log.warning("mqtt.client_id_not_username", client_id=client_id, username=m.username,
                        note="a broker with use_username_as_clientid keys the persistent "
                             "session by the username, not by this id")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
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
        # The broker redelivers what was unacknowledged: older than the backlog lanes.
        self.policy.reset_backlogs()
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
        payload = bytes(msg.payload)
        if not self._wait_for_room(len(payload)):
            return  # stopping: left unacknowledged, the broker redelivers it
        received_at = datetime.now(UTC)
        now = time.monotonic()
        entry = _Pending(msg.mid, msg.qos, self._generation, now, len(payload))
        self._pending.append(entry)
        self.counters.inc("received")
        try:
            outcome = self._outcome(msg.topic, payload, bool(msg.retain), msg.qos,
                                    received_at, now)
        except Exception as exc:
            log.exception("ingest.validator_crashed", topic=msg.topic, error=str(exc))
            outcome = self._crash_outcome(msg, received_at, exc)
        # Hand over to the event loop: one wake-up per burst, not one per message.
        self._inbox.append((entry, outcome))
        if not self._wake_scheduled:
            self._wake_scheduled = True
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._wake.set)

    def _wait_for_room(self, size: int) -> bool:
        """Backpressure: block the MQTT network thread (it then reads nothing more) while
        ``max_pending`` messages or ``max_pending_bytes`` wait for Kafka; ``False`` when
        ingest stops meanwhile. One message always fits into an empty queue."""
        s = self.cfg.ingest
        with self._room:
            def room() -> bool:
                return not self._pending or (len(self._pending) < s.max_pending and
                                             self._pending_bytes + size <= s.max_pending_bytes)

            if not room():
                self._paused = True
                self.counters.inc("backpressure_pauses")
                since = time.monotonic()
                if since - self._last_pause_log >= 10.0:  # sustained: one line per 10 s
                    self._last_pause_log = since
                    log.warning("mqtt.paused", pending=len(self._pending),
                                pending_bytes=self._pending_bytes,
                                note="waiting for Kafka; not reading MQTT")
                while not room():
                    if self._closing:
                        self._paused = False
                        return False
                    self._room.wait(0.5)
                self._paused = False
                if time.monotonic() - since >= 1.0:
                    log.info("mqtt.resumed", paused_s=round(time.monotonic() - since, 1))
            self._pending_bytes += size
            return True

    def _outcome(self, topic: str, payload: bytes, retain: bool, qos: int,
                 received_at: datetime, now: float) -> Outcome:
        """MQTT hygiene, validation, then the gateway's rate limits (ratelimit.py)."""
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
            received_at=received_at, keep_bytes=self.cfg.ingest.max_payload_bytes,
            facility_id=outcome.facility_id))

    def _crash_outcome(self, msg: mqtt.MQTTMessage, received_at: datetime,
                       exc: Exception) -> Outcome:
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
            # One line per reason, facility and second (a flood must not become a flood
            # of log lines); the counters have every one.
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

    def _flush_acks(self) -> None:
        popped = freed = 0
        while self._pending and self._pending[0].done:
            e = self._pending.popleft()
            popped += 1
            freed += e.size
            if e.generation == self._generation and e.qos > 0:
                self._client_ref.ack(e.mid, e.qos)
                self.counters.inc("acked")
        if popped:
            with self._room:
                self._pending_bytes -= freed
                if self._paused:  # the MQTT thread waits for room
                    self._room.notify_all()

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
    async def _start_producer(self) -> AIOKafkaProducer | None:
        """The started producer, retried with backoff while Kafka cannot be reached; None
        when a stop was asked for first (SIGTERM/SIGINT while waiting: a clean stop)."""
        delay = 0.5
        while not self._stopping.is_set():
            producer = AIOKafkaProducer(**producer_kwargs(self.cfg.kafka, "lifeline-ingest"))
            starting = asyncio.ensure_future(producer.start())
            stopping = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not starting.done():  # asked to stop while connecting
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                await producer.stop()
                break
            exc = starting.exception()
            if exc is None:
                self.health.ok("kafka")
                return producer
            await producer.stop()
            if not isinstance(exc, KafkaError):
                raise exc
            self.health.problem("kafka", f"cannot reach {self.cfg.kafka.bootstrap}: {exc!r}")
            log.warning("kafka.unreachable", bootstrap=self.cfg.kafka.bootstrap,
                        error=repr(exc), retry_in_s=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            delay = min(delay * 2, 10.0)
        return None

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._stopping.set)
        s = self.cfg.ingest
        runner = await serve(self.health, s.health_host, s.health_port)
        producer = await self._start_producer()
        if producer is None:
            await runner.cleanup()
            log.info("ingest.stopped", reason="stopped before Kafka could be reached",
                     kafka=self.cfg.kafka.bootstrap)
            return
        self._producer = producer
        client = self._client_ref = self._client()
        client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, keepalive=self.cfg.mqtt.keepalive)
        client.loop_start()
        log.info("ingest.started", topic_filter=TOPIC_FILTER, health_port=s.health_port,
                 kafka=self.cfg.kafka.bootstrap, sensors=self.validator.registry.sensor_count)
        reporter = asyncio.create_task(self._report_health())
        pump = asyncio.create_task(self._pump())
        watch = asyncio.create_task(self._watch_acks())
        reload = asyncio.create_task(self.registry_file.watch(self.cfg.common.reload_check_s))
        await self._stopping.wait()
        reporter.cancel()
        reload.cancel()
        log.info("ingest.stopping", pending=len(self._pending))
        # Give in-flight messages a chance to be acked. No unsubscribe: the persistent
        # session must keep queueing while ingest is down.
        deadline = self._loop.time() + s.drain_timeout_s
        while self._pending and self._loop.time() < deadline:  # noqa: ASYNC110 — polls a thread-fed deque
            await asyncio.sleep(0.05)
        with self._room:  # a message waiting for room stays unacknowledged (redelivered)
            self._closing = True
            self._room.notify_all()
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
    version = file_version(cfg.common.registry)  # before loading: a later edit is reloaded
    registry = load_registry(cfg.common.registry)
    asyncio.run(IngestService(cfg, registry, version).run())
