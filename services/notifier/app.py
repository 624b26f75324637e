"""The notifier service: its Faust app, wired (what one record does is in
services.notifier.handlers).

One agent consumes, keyed by facility and co-partitioned: ``lifeline.alarms`` (alarm
events), ``lifeline.acks`` (acknowledgements), ``lifeline.oncall`` (its own audit trail —
delivery outcomes come back this way, so the table learns "delivered" inside the
stream) and ``lifeline.oncall.ticks`` (a timer's wall-clock ticks, one per owned
partition, which drive escalation timeouts). Each facility's on-call state is one entry of
the changelog-backed table ``oncall_state``: after a crash or a move to another worker,
every escalation resumes exactly where it was and notifications not yet delivered are
sent again (with the same ids).

Sending is not done in the agent: the agent hands notifications to the
:class:`~services.notifier.delivery.Deliverer`, which sends in background tasks and
reports every attempt to ``lifeline.oncall``. What can still page twice: a crash in the
milliseconds between a channel accepting a message and its outcome reaching Kafka (the
crash point ``notifier.after_page``; the second message carries the same notification id).

Faust's web server (the health port) serves ``/health`` and ``/counters`` only; the
acknowledgement page has a site of its own on the public port (services.notifier.ackpage).

Reloads: the on-call file and the registry are watched while the worker runs
(services.core.reload, every ``LIFELINE_RELOAD_CHECK_S``). A new version is validated as at
start — the on-call file also by :func:`channel_secrets_checked` — and swapped into the one
:class:`~services.notifier.escalation.OnCall` the escalator, delivery, the acknowledgement
page and the one-time codes read; each facility's next tick reconciles its saved state with
it (pages pending for people the file no longer has are recorded as failed; alarms nobody
was routed to are routed, and paged, when the new file or registry routes them). A refused
file is logged (``oncall.reload_refused`` / ``registry.reload_refused``) and shown as a
warning; the version in use stays, and ``/health`` shows it under ``config``.
``lifeline oncall who`` resolves the same file with the same functions and prints its version.

Health: an active alarm nobody is routed to is the warning ``routing`` (200, "degraded":
a readiness probe keeps the acknowledgement page in service), naming each facility and
district, for as long as such an alarm is active and unrouted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import faust
from mode.types.signals import BaseSignalT

from schemas import codec
from schemas.oncall import AckRequest, ChannelType, OnCallConfig, OnCallRecord, Person, load_oncall
from schemas.registry import Registry, load_registry
from services.core import topics
from services.core.dlq import InternalDeadLetters
from services.core.faust import (
    add_health_pages,
    make_app,
    partition_ticks,
    register_gauges,
    report_health,
)
from services.core.health import Counters, Health
from services.core.latency import Budget
from services.core.logging import get_logger
from services.core.reload import WatchedFile
from services.notifier.ackpage import AckPage, PublicSite
from services.notifier.acks import AckSigner
from services.notifier.channels import Senders
from services.notifier.config import NotifierConfig
from services.notifier.delivery import Deliverer, RetryPolicy
from services.notifier.errors import ChannelError
from services.notifier.escalation import Escalator, FacilityOnCall, Notification, OnCall
from services.notifier.handlers import Handlers, Where
from services.notifier.links import Signer
from services.notifier.otp import CodeStore
from services.notifier.web import recent_readings

log = get_logger("lifeline.notifier")

# At shutdown, how long sends in flight may take before they are cut (and stay pending):
# inside the 4 s between SIGTERM and SIGKILL of services.stack.services.stop_all, with the
# second Faust needs to close what follows.
SHUTDOWN_SENDS_S = 2.5

COUNTERS = ("alarm_events", "acks", "acks_forged", "notifications", "notifications_delivered",
            "notifications_failed", "messages_sent", "rejected", "record_errors", "escalations",
            "links_refused", "links_replayed", "codes_sent", "codes_refused", "codes_failed",
            "dead_lettered", "shutdown_sends_cut")


def load_checked_oncall(path: Path) -> OnCallConfig:
    """The on-call file as the notifier takes it, at start and on every reload: valid, and
    no channel secret a placeholder or a published example (:func:`channel_secrets_checked`).
    Raises :class:`OnCallError`."""
    from schemas.oncall import OnCallError
    from services.core.settings import SettingsError

    cfg = load_oncall(path)
    try:
        channel_secrets_checked(cfg)
    except SettingsError as exc:  # a SystemExit at start; here, a reason to refuse the file
        raise OnCallError("; ".join(exc.lines)) from None
    return cfg


def districts_of(registry: Registry) -> dict[str, str]:
    return {f.id: f.district for f in registry.facilities}


def places_of(registry: Registry) -> dict[str, tuple[float, float, str]]:
    """Each facility's coordinates and name (the acknowledgement page's map link)."""
    return {f.id: (f.lat, f.lon, f.name_zh or f.name) for f in registry.facilities}


def load_districts(path: Path) -> tuple[dict[str, str], dict[str, tuple[float, float, str]]]:
    """A registry file, validated as every service loads it, reduced to what the notifier
    needs: each facility's district (routes match on it) and its place (the page's map)."""
    registry = load_registry(path)
    return districts_of(registry), places_of(registry)


class Notifier:
    """The notifier on ``oncall`` and ``registry`` (loaded from ``cfg``'s files, whose
    versions — content digests — were read before loading them; None: read now). Both
    files are watched while it runs and reloaded when they change (validated first).

    ``app`` is the Faust app (run by :func:`main`), ``health`` its health; ``handlers``
    does the per-record work; ``delivery`` is the deliverer, made on first use (its HTTP
    session needs the running loop)."""

    def __init__(self, cfg: NotifierConfig, oncall: OnCallConfig, registry: Registry, *,
                 oncall_version: str | None = None,
                 registry_version: str | None = None) -> None:
        self.cfg = cfg
        s = cfg.notifier
        secret = s.link_secret.get_secret_value()
        self.signer = Signer(secret, s.link_ttl_s)
        self.ack_signer = AckSigner(secret)
        self.app: faust.App = make_app("notifier", cfg.kafka, web_port=s.health_port,
                                       web_host=s.health_host)
        self.health = Health("notifier", Counters(*COUNTERS))
        # The latency budget (services/core/latency.py): an alarm's broker timestamp → the
        # notifier takes it, and a notification made → delivered.
        self.budget = Budget(self.health.counters)
        self._wait = self.budget.stage("notifier.wait")
        self.live = OnCall(oncall, districts_of(registry))  # reloads swap what it holds
        self.places = places_of(registry)
        self.escalator = Escalator(self.live)
        for warning in oncall.warnings():  # valid but unsafe: said at start, not refused
            log.warning("oncall.config_warning", detail=warning)
        self.table: Any = self.app.Table("oncall_state", default=None, key_type=str,
                                         value_type=str)
        self._audit, self._acks = self._raw(topics.ONCALL), self._raw(topics.ACKS)
        self._dlq = self._raw(topics.READINGS_DLQ)
        self.delivery: Deliverer | None = None
        dead = InternalDeadLetters("notifier", self._dead_letter, self.health.counters)
        self.handlers = Handlers(self.escalator, self.table, self.health, self.ack_signer,
                                 dead, self.emit, self.submit)
        self.page = AckPage(
            self.live, self.signer, self.ack_signer,
            CodeStore(s.code_ttl_s, s.code_attempts, s.code_resend_s, s.code_max_per_link),
            self.health.counters, self.publish, self.send_code, self.handlers.episode,
            self.readings, places=lambda fid: self.places.get(fid))
        self.files: list[WatchedFile[Any]] = [
            WatchedFile("oncall", s.oncall, load_checked_oncall, self.oncall_changed,
                        self.health, version=oncall_version),
            WatchedFile("registry", cfg.common.registry, load_districts,
                        self.registry_changed, self.health, version=registry_version)]
        self.agent: Any = self._register()

    @classmethod
    def build(cls, cfg: NotifierConfig, oncall: OnCallConfig, registry: Registry, *,
              oncall_version: str | None = None,
              registry_version: str | None = None) -> Notifier:
        return cls(cfg, oncall, registry, oncall_version=oncall_version,
                   registry_version=registry_version)

    # ------------------------------------------------------------------ the handlers' view
    @property
    def cache(self) -> dict[str, FacilityOnCall]:
        return self.handlers.cache

    @property
    def deliverer(self) -> Deliverer:
        if self.delivery is None:  # made on first use: its HTTP session needs the running loop
            s = self.cfg.notifier
            self.delivery = Deliverer(
                self.live, Senders(aiohttp.ClientSession()), self.signer, s.public_url,
                self.emit, self.health.counters,
                RetryPolicy(s.retry_attempts, s.retry_backoff_min_s, s.retry_backoff_max_s))
            self.delivery.page_stage = self.budget.stage("notifier.page")
        return self.delivery

    def submit(self, note: Notification) -> None:
        self.deliverer.submit(note)

    def _raw(self, *names: str) -> Any:
        return self.app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw")

    async def emit(self, rec: OnCallRecord) -> None:
        await self._audit.send(key=rec.facility_id.encode(),
                               value=codec.ONCALL_RECORD.encode(rec))

    async def _dead_letter(self, key: bytes | None, value: bytes) -> Any:
        return await self._dlq.send(key=key, value=value)

    # ------------------------------------------------------------------ the page's needs
    async def publish(self, req: AckRequest) -> None:
        await self._acks.send(key=req.facility_id.encode(), value=codec.ACK_REQUEST.encode(req))

    async def send_code(self, person: Person, text: str, message_id: str) -> None:
        channel = self.live.cfg.code_sms_channel()
        if channel is None or not person.phone:
            raise ChannelError("no sms channel or no phone number", retryable=False)
        await self.deliverer.senders.sms_text(channel, person.phone, text, message_id)

    async def readings(self, facility: str, sensor: str) -> list[tuple[str, float]]:
        return await recent_readings(self.cfg.influx, facility, sensor)

    # ------------------------------------------------------------------ reloads
    def oncall_changed(self, new: OnCallConfig) -> None:
        # One swap: the escalator, delivery, the page and the codes read ``live``. Saved
        # state is reconciled with the new file at each facility's next tick (inside the
        # agent, where the table may be written): pages pending for people the file no
        # longer has are recorded as failed, alarms nobody was routed to are routed again.
        self.live.cfg = new
        for warning in new.warnings():
            log.warning("oncall.config_warning", detail=warning)

    def registry_changed(self, reduced: tuple[dict[str, str],
                                              dict[str, tuple[float, float, str]]]) -> None:
        self.live.districts, self.places = reduced

    # ------------------------------------------------------------------ stream and lifecycle
    async def consume(self, stream: Any) -> None:
        """The agent: every record to :class:`Handlers` (ticks by partition)."""
        async for event in stream.events():
            msg = event.message
            now_ms = int(time.time() * 1000)
            if msg.topic == topics.ONCALL_TICKS:
                await self.handlers.tick(msg.partition, now_ms)
            else:
                if msg.topic == topics.ALARMS and msg.timestamp:
                    self._wait.observe(now_ms / 1000 - msg.timestamp)
                await self.handlers.record(event.value, Where(msg.topic, msg.partition,
                                                              msg.offset, msg.key), now_ms)

    async def revoked(self, tps: set[Any]) -> None:
        self.handlers.revoked({tp.partition for tp in tps if tp.topic == topics.ALARMS})
        if self.delivery is not None:
            self.delivery.drop(lambda note: note.facility_id in self.handlers.cache)

    async def drain(self) -> None:
        if self.delivery is not None:
            cut = await self.delivery.shut(SHUTDOWN_SENDS_S)
            if cut:
                log.warning("notifier.shutdown_sends_cut", sends=cut,
                            detail="still pending in the table: sent again when the "
                                   "partition is next resumed")
            await self.delivery.senders.session.close()

    async def watch_files(self) -> None:
        """Watch both files while the worker runs (a refused file is a warning: the page
        stays in service on the version in use)."""
        every = self.cfg.common.reload_check_s
        await asyncio.gather(*(f.watch(every) for f in self.files))

    def latency_p99(self) -> float:
        lat = sorted(self.delivery.latencies) if self.delivery is not None else []
        return lat[int(len(lat) * 0.99)] if lat else 0.0

    def _register(self) -> Any:
        """The agent, the ticks, the signals, the public site, the file watch and the
        gauges on ``app``; returns the agent."""
        app, s = self.app, self.cfg.notifier
        source = self._raw(topics.ALARMS, topics.ACKS, topics.ONCALL, topics.ONCALL_TICKS)
        agent = app.agent(source, name="services.notifier.app.notify")(self.consume)

        @app.on_partitions_revoked.connect
        async def _revoked(_app: Any, /, *args: Any, signal: BaseSignalT[Any],
                           **_kw: Any) -> None:
            await self.revoked(args[0] if args else set())

        @app.on_before_shutdown.connect
        async def _drain(_app: Any, /, *_args: Any, signal: BaseSignalT[Any],
                         **_kw: Any) -> None:
            await self.drain()

        partition_ticks(app, self._raw(topics.ONCALL_TICKS), topics.ALARMS, s.tick_interval_s)
        page = self.page

        @app.service
        class _Public(PublicSite):
            """The acknowledgement page on its own port (started after table recovery)."""

            def __init__(self, **kwargs: Any) -> None:
                super().__init__(page.application, s.public_host, s.public_port, **kwargs)

        app.task(self.watch_files)
        register_gauges(app, self.health, (topics.ALARMS, topics.ACKS))
        report_health(app, self.health, self.cfg.common.health_report_s)
        counters = self.health.counters
        for name, gauge in self.handlers.gauges().items():
            counters.gauge(name, gauge)
        counters.gauge("delivery_p99_s", self.latency_p99)
        add_health_pages(app, self.health)
        return agent


def build(cfg: NotifierConfig, oncall: OnCallConfig, registry: Registry, *,
          oncall_version: str | None = None, registry_version: str | None = None) -> Notifier:
    """:meth:`Notifier.build` (the name callers and tests use)."""
    return Notifier.build(cfg, oncall, registry, oncall_version=oncall_version,
                          registry_version=registry_version)


def channel_secrets_checked(oncall: OnCallConfig, env: Mapping[str, str] | None = None) -> None:
    """Refuse to start with a placeholder or published example as a channel's secret (the
    robots' tokens, the webhook's HMAC key, the SMS key; the SMTP password only against
    placeholders and examples — providers issue short ones). One line per variable, never
    the value."""
    import os

    from services.core.settings import SettingsError, secret_problem

    values = os.environ if env is None else env
    problems = []
    for ch in oncall.channels:
        for name in (ch.secret_env, ch.token_env):
            raw = values.get(name) if name else None
            if not raw or name is None:
                continue  # unset: the channel fails at send time, and says so
            why = secret_problem(raw)
            if why is not None and ch.type is ChannelType.EMAIL and why.startswith("shorter"):
                why = None
            if why is not None:
                problems.append(f"{name} (channel {ch.id}): {why}")
    if problems:
        raise SettingsError(problems)


def main() -> None:
    from services.core.faust import run_worker
    from services.core.reload import file_version

    cfg = NotifierConfig()
    if len(cfg.notifier.link_secret.get_secret_value()) < 16:
        raise SystemExit("LIFELINE_NOTIFIER_LINK_SECRET must be set (16 characters or more): it "
                         "signs the acknowledgement links and the acknowledgements")
    oncall_version = file_version(cfg.notifier.oncall)  # before loading: a change after it
    oncall = load_oncall(cfg.notifier.oncall)          # is a new version, reloaded
    channel_secrets_checked(oncall)
    registry_version = file_version(cfg.common.registry)
    registry = load_registry(cfg.common.registry)
    app = build(cfg, oncall, registry, oncall_version=oncall_version,
                registry_version=registry_version).app
    run_worker(app, loglevel=cfg.common.log_level, service="notifier")
