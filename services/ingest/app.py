"""The ingest bridge: paho-mqtt (its own network thread) → validation → aiokafka.

:class:`Ingest` wires the pieces: the MQTT client and its callbacks, the hand-over from
the network thread to the event loop, the Kafka producer, health. What one message does
is in handlers.py; the acknowledgement order and backpressure in inflight.py.

Client id: ingest connects with its MQTT username as client id (``client_id`` unset),
which is what a broker with ``use_username_as_clientid`` (the local stack) makes of any
client id anyway; the persistent session (``clean_session=False``, manual acks) is keyed
by it, so it survives restarts and switching that option on, and no other account can
take it over (kick ingest off).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections import deque
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from paho.mqtt.enums import CallbackAPIVersion

from schemas.registry import Registry, load_registry
from schemas.telemetry import TOPIC_FILTER
from services.core import topics
from services.core.crash import crash_point
from services.core.health import Counters, Health, health_record, serve
from services.core.kafka import producer_kwargs
from services.core.latency import Budget
from services.core.logging import get_logger
from services.core.reload import WatchedFile, file_version
from services.ingest.config import IngestConfig
from services.ingest.errors import NotStarted
from services.ingest.handlers import Forwarder, MessageHandler, Producer
from services.ingest.inflight import Inflight, Pending
from services.ingest.pack import Packer
from services.ingest.validate import Outcome

log = get_logger("lifeline.ingest")


class Acker(Protocol):
    """What ingest uses of the MQTT client once started (tests stand in for it)."""

    def ack(self, mid: int, qos: int) -> Any: ...


class Ingest:
    """The ingest service: :meth:`build`, then :meth:`run` (or :meth:`start` / :meth:`stop`)."""

    app = None  # no Faust app: ingest is a plain asyncio service

    def __init__(self, config: IngestConfig, registry: Registry,
                 registry_version: str | None = None) -> None:
        self.cfg = config
        s = config.ingest
        self.counters = Counters("received", "accepted_reports", "accepted_readings",
                                 "rejected_messages", "partial_messages", "acked",
                                 "kafka_retries", "rate_limited", "backlog_admitted",
                                 "backpressure_pauses", "packs_sent", "packed_reports")
        self.health = Health("ingest", self.counters)
        self.handler = MessageHandler(s, registry, self.counters)
        self.inflight = Inflight(s.max_pending, s.max_pending_bytes, self.counters)
        self.forwarder = Forwarder(self.health, self.counters)
        # The latency budget (services/core/latency.py): arrival → PUBACK, produce → ack.
        self.budget = Budget(self.counters)
        self.inflight.acked_after = self.budget.stage("ingest.mqtt_to_ack")
        self._produce_stage = self.budget.stage("ingest.produce")
        # The registry is reloaded when its file changes (services/core/reload.py): a new
        # facility is accepted without a restart.
        self.registry_file = WatchedFile("registry", config.common.registry, load_registry,
                                         self.handler.use_registry, self.health,
                                         version=registry_version)
        # MQTT thread -> event loop, in arrival order; one wake-up per burst.
        self._inbox: deque[tuple[Pending, Outcome]] = deque()
        self._wake = asyncio.Event()
        self._wake_scheduled = False
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Acker | None = None
        self._mqtt: mqtt.Client | None = None
        self._producer: AIOKafkaProducer | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # retries (Forwarder.deliver)
        self._background: list[asyncio.Task[None]] = []
        self._packing: asyncio.Task[None] | None = None  # Packer.run while packing is on
        self.health.problem("mqtt", "not connected yet")
        self.health.problem("kafka", "producer not started yet")

    @classmethod
    def build(cls, config: IngestConfig | None = None) -> Ingest:
        """Ingest from the environment's settings and the registry file they name."""
        cfg = config or IngestConfig()
        version = file_version(cfg.common.registry)  # before loading: a later edit is reloaded
        return cls(cfg, load_registry(cfg.common.registry), version)

    def attach(self, producer: Producer, client: Acker, packer: Packer | None = None) -> None:
        """Give ingest the running event loop, its Kafka producer and its MQTT client
        (:meth:`start` does; tests attach stand-ins and run :meth:`pump`), and the packer
        when reports are packed (``LIFELINE_INGEST_PACK_MS``, pack.py)."""
        self._loop = asyncio.get_running_loop()
        self.forwarder.producer = producer
        self.forwarder.packer = packer
        if packer is not None:
            self._packing = self._loop.create_task(packer.run())
        self._client = client

    # ------------------------------------------------------------------ MQTT side
    def mqtt_client(self) -> mqtt.Client:
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
        self.inflight.reconnected()  # acks owed on the earlier connection are not sent
        # The broker redelivers what was unacknowledged: older than the backlog lanes.
        self.handler.policy.reset_backlogs()
        client.subscribe(TOPIC_FILTER, qos=1)
        self.health.ok("mqtt")
        log.info("mqtt.connected", session_present=bool(flags.session_present),
                 broker=f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}")

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.health.problem("mqtt", f"disconnected: {reason}")
        log.warning("mqtt.disconnected", reason=str(reason))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """On paho's network thread: wait for room, judge, hand over to the event loop."""
        payload = bytes(msg.payload)
        entry = self.inflight.arrive(msg.mid, msg.qos, len(payload))
        if entry is None:
            return  # stopping: left unacknowledged, the broker redelivers it
        self.counters.inc("received")
        outcome = self.handler.judge(msg.topic, payload, bool(msg.retain), msg.qos,
                                     datetime.now(UTC), entry.at)
        self._inbox.append((entry, outcome))
        if not self._wake_scheduled:
            self._wake_scheduled = True
            if self._loop is None:
                raise NotStarted("a message arrived before ingest was attached")
            self._loop.call_soon_threadsafe(self._wake.set)

    # ------------------------------------------------------------------ Kafka side
    async def pump(self) -> None:
        """Send what the MQTT thread judged, in arrival order. While Kafka works, a
        message costs one ``send`` and a callback (no task); while it fails, messages go
        through :meth:`_deliver` one at a time."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._wake_scheduled = False  # before draining: later arrivals wake us again
            while self._inbox:
                entry, outcome = self._inbox.popleft()
                if self.forwarder.down:
                    await self._deliver(entry, outcome)
                    continue
                try:
                    sent = await self.forwarder.send(outcome)
                except Exception as exc:  # the pump must outlive any failed send
                    if not isinstance(exc, KafkaError):
                        log.exception("kafka.send_crashed", facility_id=outcome.facility_id,
                                      error=repr(exc))
                    self._spawn(self._deliver(entry, outcome))
                    continue
                sent.add_done_callback(functools.partial(self._sent, entry, outcome,
                                                         time.monotonic()))

    def _sent(self, entry: Pending, outcome: Outcome, sent_at: float,
              fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._spawn(self._deliver(entry, outcome))  # retried there, in order of failure
            return
        self._produce_stage.observe(time.monotonic() - sent_at)
        self._done(entry, outcome)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, entry: Pending, outcome: Outcome) -> None:
        await self.forwarder.deliver(outcome, self.inflight)
        self._done(entry, outcome)

    def _done(self, entry: Pending, outcome: Outcome) -> None:
        """Kafka took every record of the message: count it, then PUBACK what is due."""
        if outcome.batch_json is not None:
            crash_point("ingest.after_produce")  # a batch on the broker, its PUBACK not sent
        self.health.ok("kafka")
        self.handler.counted(outcome)
        self.inflight.complete(entry, self._ack)

    def _ack(self, mid: int, qos: int) -> None:
        if self._client is None:
            raise NotStarted("an acknowledgement is due before ingest was attached")
        self._client.ack(mid, qos)
        self.counters.inc("acked")

    async def _report_health(self) -> None:
        """Publish this service's counters to lifeline.health (pipeline health)."""
        while True:
            await asyncio.sleep(self.cfg.common.health_report_s)
            if self._producer is None:
                continue
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

    async def start(self) -> bool:
        """Serve health, reach Kafka, connect to MQTT; ``False`` when a stop was asked for
        before Kafka could be reached."""
        s = self.cfg.ingest
        self._runner = await serve(self.health, s.health_host, s.health_port)
        self._producer = await self._start_producer()
        if self._producer is None:
            return False
        client = self._mqtt = self.mqtt_client()
        packer = None
        if s.pack_ms > 0:
            packer = Packer(self._producer, topics.READINGS, s.pack_ms / 1000,
                            s.pack_max_bytes, s.pack_max_reports, self.counters)
        self.attach(self._producer, client, packer)
        client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port,
                             keepalive=self.cfg.mqtt.keepalive)
        client.loop_start()
        log.info("ingest.started", topic_filter=TOPIC_FILTER, health_port=s.health_port,
                 kafka=self.cfg.kafka.bootstrap, pack_ms=s.pack_ms,
                 sensors=self.handler.validator.registry.sensor_count)
        self._background = [asyncio.create_task(c) for c in (
            self._report_health(), self.pump(),
            self.forwarder.watch(self.inflight, s.ack_stall_s),
            self.registry_file.watch(self.cfg.common.reload_check_s))]
        return True

    async def stop(self) -> None:
        """Give in-flight messages a chance to be acknowledged, then close. No unsubscribe:
        the persistent session must keep queueing while ingest is down."""
        if self._producer is None:
            if self._runner is not None:
                await self._runner.cleanup()
            log.info("ingest.stopped", reason="stopped before Kafka could be reached",
                     kafka=self.cfg.kafka.bootstrap)
            return
        reporter, pump, watch, reload = self._background
        reporter.cancel()
        reload.cancel()
        log.info("ingest.stopping", pending=len(self.inflight))
        if self.forwarder.packer is not None:
            await self.forwarder.packer.flush_all()  # held reports: written now, not later
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.ingest.drain_timeout_s
        while self.inflight and loop.time() < deadline:  # noqa: ASYNC110 — polls a thread-fed deque
            await asyncio.sleep(0.05)
        self.inflight.close()  # a message waiting for room stays unacknowledged (redelivered)
        if self._packing is not None:
            self._packing.cancel()
        if self._mqtt is not None:
            self._mqtt.disconnect()
            self._mqtt.loop_stop()
        pump.cancel()
        watch.cancel()
        await self._producer.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        log.info("ingest.stopped", counters=self.counters.snapshot())

    async def run(self) -> None:
        """Until SIGTERM or SIGINT."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        if await self.start():
            await self._stopping.wait()
        await self.stop()


def _health_sent(fut: asyncio.Future[Any]) -> None:
    """A health record Kafka refused is logged (not left as an unretrieved exception)."""
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("health.report_failed", error=repr(fut.exception()))


def main() -> None:
    asyncio.run(Ingest.build().run())
