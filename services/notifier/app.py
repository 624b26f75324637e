"""The notifier's Faust wiring.

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
milliseconds between a channel accepting a message and its outcome reaching Kafka.

Trust boundaries: Faust's web server (the health port) serves ``/health`` and
``/counters`` only; the acknowledgement page has a site of its own on the public port
(services.notifier.ackpage). Acknowledgements on ``lifeline.acks`` are applied only when
their signature verifies (services.notifier.acks); any other is recorded as ``ignored``,
counted (``acks_forged``), logged with its source and dead-lettered (``forged``). No record
on the input topics stops the agent: what fails validation is counted (``rejected``), what
the engine cannot handle is counted (``record_errors``), both logged with
``topic[partition]@offset`` and dead-lettered to ``lifeline.readings.dlq`` with their bytes
and reason (``undecodable_event``, ``invalid_contract``, ``unprocessable``;
services.core.dlq.InternalDeadLetters, counted ``dead_lettered``). A tick's value is not
read (the notifier's own clock drives escalation), so ticks are never dead-lettered.

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
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import faust
from mode.types.signals import BaseSignalT
from pydantic import ValidationError

from schemas.alarm import AlarmEvent
from schemas.deadletter import RejectReason
from schemas.oncall import (
    AckRequest,
    ChannelType,
    OnCallConfig,
    OnCallError,
    OnCallRecord,
    Person,
    RecordType,
    load_oncall,
    record_id_for,
)
from schemas.registry import Registry, load_registry
from services.core import topics
from services.core.dlq import InternalDeadLetters, error_detail
from services.core.faust_app import (
    add_health_pages,
    make_app,
    partition_ticks,
    register_gauges,
    report_health,
)
from services.core.health import Counters, Health
from services.core.logging import get_logger
from services.core.reload import WatchedFile
from services.notifier.ackpage import AckPage, PublicSite
from services.notifier.acks import AckSigner
from services.notifier.channels import ChannelError, Senders
from services.notifier.config import NotifierConfig
from services.notifier.delivery import Deliverer, RetryPolicy
from services.notifier.escalation import (
    Escalator,
    FacilityOnCall,
    OnCall,
    OnCallStateError,
    Outcome,
    alarm_fields,
    unrouted,
)
from services.notifier.links import Signer
from services.notifier.otp import CodeStore
from services.notifier.web import recent_readings

log = get_logger("lifeline.notifier")

OUTCOMES = (RecordType.DELIVERED, RecordType.FAILED)
UNROUTED_LISTED = 10  # alarms named in the routing warning


def load_checked_oncall(path: Path) -> OnCallConfig:
    """The on-call file as the notifier takes it, at start and on every reload: valid, and
    no channel secret a placeholder or a published example (:func:`channel_secrets_checked`).
    Raises :class:`OnCallError`."""
    from services.core.settings import SettingsError

    cfg = load_oncall(path)
    try:
        channel_secrets_checked(cfg)
    except SettingsError as exc:  # a SystemExit at start; here, a reason to refuse the file
        raise OnCallError("; ".join(exc.lines)) from None
    return cfg


def districts_of(registry: Registry) -> dict[str, str]:
    return {f.id: f.district for f in registry.facilities}


def load_districts(path: Path) -> dict[str, str]:
    """A registry file, validated as every service loads it, reduced to what the notifier
    needs: each facility's district (routes match on it)."""
    return districts_of(load_registry(path))


def routing_text(alarms: list[tuple[str, str, str]]) -> str:
    """The routing warning: ``alarms`` are (facility, district, level) of active alarms
    nobody is routed to."""
    shown = ", ".join(f"{fid} (district {d}, {lv})" for fid, d, lv in alarms[:UNROUTED_LISTED])
    more = f" and {len(alarms) - UNROUTED_LISTED} more" if len(alarms) > UNROUTED_LISTED else ""
    return (f"{len(alarms)} active alarm(s) nobody is routed to: {shown}{more} — add a route "
            "to the on-call file (reloaded while running)")


def load_state(fid: str, saved: str | None, counters: Counters) -> FacilityOnCall | None:
    """A facility's saved on-call state; None when it cannot be read (a newer notifier's
    format, or damaged): logged as ``oncall.state_unreadable``, and the facility starts
    afresh rather than stopping the agent — and with it every other facility's paging."""
    try:
        return FacilityOnCall.from_json(json.loads(saved) if saved else None)
    except (OnCallStateError, ValueError) as exc:  # ValueError: not JSON at all
        counters.inc("state_unreadable")
        log.error("oncall.state_unreadable", facility_id=fid, error=str(exc)[:300],
                  action="starting this facility's on-call state afresh")
        return None


@dataclass
class Notifier:
    app: faust.App
    agent: Any
    table: Any
    health: Health
    escalator: Escalator
    deliverer_ref: list[Deliverer]
    signer: Signer
    ack_signer: AckSigner
    page: AckPage | None = None  # the public acknowledgement page (its own port)
    live: OnCall | None = None  # the on-call file and districts in use (reloads swap them)
    files: list[WatchedFile[Any]] = field(default_factory=list)  # oncall, registry
    # Per facility: (facility, district, level) of its active alarms nobody is routed to.
    unrouted: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    cache: dict[str, FacilityOnCall] = field(default_factory=dict)
    resumed: set[int] = field(default_factory=set)  # partitions whose pending work is requeued

    @property
    def deliverer(self) -> Deliverer:
        return self.deliverer_ref[0]


def build(cfg: NotifierConfig, oncall: OnCallConfig, registry: Registry, *,
          oncall_version: str | None = None, registry_version: str | None = None) -> Notifier:
    """The notifier on ``oncall`` and ``registry`` (loaded from ``cfg``'s files, whose
    versions — content digests — were read before loading them; None: read now). Both
    files are watched while it runs and reloaded when they change (validated first)."""
    s = cfg.notifier
    secret = s.link_secret.get_secret_value()
    signer = Signer(secret, s.link_ttl_s)
    ack_signer = AckSigner(secret)
    app = make_app("notifier", cfg.kafka, web_port=s.health_port, web_host=s.health_host)
    counters = Counters("alarm_events", "acks", "acks_forged", "notifications",
                        "notifications_delivered", "notifications_failed", "messages_sent",
                        "rejected", "record_errors", "escalations", "links_refused",
                        "links_replayed", "codes_sent", "codes_refused", "codes_failed",
                        "dead_lettered")
    health = Health("notifier", counters)

    def raw(*names: str) -> Any:
        return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw")

    source = raw(topics.ALARMS, topics.ACKS, topics.ONCALL, topics.ONCALL_TICKS)
    audit, acks, ticks = raw(topics.ONCALL), raw(topics.ACKS), raw(topics.ONCALL_TICKS)
    dlq = raw(topics.READINGS_DLQ)

    async def send_dead_letter(key: bytes | None, value: bytes) -> Any:
        return await dlq.send(key=key, value=value)

    dead = InternalDeadLetters("notifier", send_dead_letter, counters)
    table = app.Table("oncall_state", default=None, key_type=str, value_type=str)
    live = OnCall(oncall, districts_of(registry))
    escalator = Escalator(live)
    for warning in oncall.warnings():  # valid but unsafe: said at start, not refused
        log.warning("oncall.config_warning", detail=warning)
    holder: list[Deliverer] = []
    n = Notifier(app, None, table, health, escalator, holder, signer, ack_signer, live=live)

    async def emit(rec: OnCallRecord) -> None:
        await audit.send(key=rec.facility_id.encode(), value=rec.model_dump_json().encode())

    def deliverer() -> Deliverer:
        if not holder:  # made on first use: its HTTP session needs the running loop
            holder.append(Deliverer(
                live, Senders(aiohttp.ClientSession()), signer, s.public_url, emit, counters,
                RetryPolicy(s.retry_attempts, s.retry_backoff_min_s, s.retry_backoff_max_s)))
        return holder[0]

    def load(fid: str, saved: str | None) -> FacilityOnCall | None:
        return load_state(fid, saved, counters)

    def state(fid: str, partition: int) -> FacilityOnCall:
        fs = n.cache.get(fid)
        if fs is None:
            fs = n.cache[fid] = load(fid, table.get(fid)) or FacilityOnCall()
        fs.partition = partition
        return fs

    async def apply(fid: str, fs: FacilityOnCall, out: Outcome) -> None:
        if out.save:
            # Saved before anything is sent: a notification is "pending" in the changelog
            # before a channel sees it, so a restart re-sends it rather than losing it.
            table[fid] = json.dumps(fs.to_json(), separators=(",", ":"))
        for rec in out.records:
            await emit(rec)
            if rec.type is RecordType.ESCALATED:
                counters.inc("escalations")
            log.info(f"oncall.{rec.type.value}", facility_id=fid, alarm_id=rec.alarm_id,
                     person=rec.person, team=rec.team, step=rec.step, repeat=rec.repeat,
                     detail=rec.detail[:200])
        for note in out.notifications:
            counters.inc("notifications")
            deliverer().submit(note)
        routing(fid, fs)

    def routing(fid: str, fs: FacilityOnCall | None) -> None:
        """The ``routing`` warning (200, "degraded": the page stays in service) while an
        active alarm of a facility this worker owns is routed to nobody; gone when the alarm
        clears or a reloaded file routes it (the next tick reconciles and pages it)."""
        alarms = [(fid, str(ep.alarm.get("district")), str(ep.alarm.get("level")))
                  for ep in (unrouted(fs) if fs is not None else [])]
        if alarms:
            n.unrouted[fid] = alarms
        elif n.unrouted.pop(fid, None) is None:
            return
        every = [a for f in sorted(n.unrouted) for a in n.unrouted[f]]
        if every:
            health.warning("routing", routing_text(every))
        else:
            health.ok("routing")

    async def resume(partition: int) -> None:
        """After (re)assignment: load this partition's facilities, reconcile them with the
        on-call file as it is now (an edit may have removed a team or a person), and
        requeue what is pending (the table holds it; the deliverer drops ids it already
        has)."""
        for fid, saved in list(table.items()):
            if fid in n.cache or not saved:
                continue
            fs = load(fid, saved)  # unreadable: afresh when the facility's next event comes
            if fs is not None and fs.partition == partition:
                n.cache[fid] = fs
        now_ms = int(time.time() * 1000)
        for fid, fs in list(n.cache.items()):
            if fs.partition == partition:
                await apply(fid, fs, escalator.reconcile(fs, now_ms))
                for note in fs.pending():
                    deliverer().submit(note)
        n.resumed.add(partition)

    async def forged(req: AckRequest, why: str, src: str, now_ms: int, msg: Any,
                     value: bytes) -> None:
        """An acknowledgement whose signature does not verify: recorded, never applied.
        It touches no state (a flood of forged records creates no table entries)."""
        counters.inc("acks_forged")
        fs = n.cache.get(req.facility_id)
        ep = fs.episodes.get(req.alarm_id) if fs is not None else None
        rec = OnCallRecord(
            record_id=record_id_for(RecordType.IGNORED, req.alarm_id, "forged", src),
            type=RecordType.IGNORED, ts=datetime.fromtimestamp(now_ms / 1000, UTC),
            alarm_id=req.alarm_id, facility_id=req.facility_id, channel=req.via,
            **(alarm_fields(ep.alarm) if ep is not None else {}),
            detail=f"{why}: not applied (claims {req.action.value} by {req.by!r} via "
                   f"{req.via}; {src})"[:500])
        await emit(rec)
        log.warning("oncall.ack_forged", source=src, reason=why, facility_id=req.facility_id,
                    alarm_id=req.alarm_id, claimed_by=req.by, via=req.via)
        await dead.record(value, RejectReason.FORGED, f"{why} (claims {req.action.value} by "
                          f"{req.by!r} via {req.via} for alarm {req.alarm_id})", topic=msg.topic,
                          partition=msg.partition, offset=msg.offset, key=msg.key,
                          facility_id=req.facility_id)

    async def handle(msg: Any, value: bytes, now_ms: int, src: str) -> None:
        if msg.topic == topics.ALARMS:
            ev = AlarmEvent.model_validate_json(value)
            counters.inc("alarm_events")
            fs = state(ev.facility_id, msg.partition)
            await apply(ev.facility_id, fs, escalator.on_alarm(fs, ev, now_ms))
        elif msg.topic == topics.ACKS:
            req = AckRequest.model_validate_json(value)
            why = ack_signer.problem(req)
            if why is not None:
                await forged(req, why, src, now_ms, msg, value)
                return
            counters.inc("acks")
            fs = state(req.facility_id, msg.partition)
            await apply(req.facility_id, fs, escalator.on_ack(fs, req, now_ms))
        else:
            rec = OnCallRecord.model_validate_json(value)
            if rec.type in OUTCOMES:
                fs = state(rec.facility_id, msg.partition)
                await apply(rec.facility_id, fs, escalator.on_outcome(fs, rec, now_ms))

    @app.agent(source)
    async def notify(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            value: bytes = event.value
            now_ms = int(time.time() * 1000)
            if msg.topic == topics.ONCALL_TICKS:
                if msg.partition not in n.resumed:
                    await resume(msg.partition)
                for fid, fs in list(n.cache.items()):
                    if fs.partition == msg.partition and fs.episodes:
                        await apply(fid, fs, escalator.tick(fs, now_ms))
                continue
            src = f"kafka:{msg.topic}[{msg.partition}]@{msg.offset}"
            try:
                await handle(msg, value, now_ms, src)
            except ValidationError as exc:
                counters.inc("rejected")
                log.warning("notifier.rejected", source=src,
                            error=str(exc.errors()[0]["msg"])[:300],
                            facility_id=msg.key.decode(errors="replace") if msg.key else None)
                await dead.undecodable(value, exc, topic=msg.topic, partition=msg.partition,
                                       offset=msg.offset, key=msg.key)
            except (OnCallStateError, ValueError, TypeError, KeyError, AttributeError,
                    IndexError) as exc:
                # A record the contracts accept but the engine cannot handle: one bad
                # record must not stop the agent, and with it every facility's paging.
                counters.inc("record_errors")
                log.error("notifier.record_failed", source=src,
                          error=f"{type(exc).__name__}: {exc}"[:300],
                          facility_id=msg.key.decode(errors="replace") if msg.key else None)
                await dead.record(value, RejectReason.UNPROCESSABLE, error_detail(exc),
                                  topic=msg.topic, partition=msg.partition, offset=msg.offset,
                                  key=msg.key)

    n.agent = notify

    @app.on_partitions_revoked.connect
    async def _revoked(_app: Any, /, *args: Any, signal: BaseSignalT[Any], **_kw: Any) -> None:
        revoked: set[Any] = args[0] if args else set()
        gone = {tp.partition for tp in revoked if tp.topic == topics.ALARMS}
        for fid in [f for f, fs in n.cache.items() if fs.partition in gone]:
            del n.cache[fid]
            routing(fid, None)  # another worker owns it (and warns) now
        n.resumed -= gone
        if holder:
            holder[0].drop(lambda note: note.facility_id in n.cache)

    partition_ticks(app, ticks, topics.ALARMS, s.tick_interval_s)

    def local_episode(link_alarm: str, fid: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        fs = n.cache.get(fid)
        if fs is None:
            saved = table.get(fid) if fid in table else None
            fs = load(fid, saved) if saved else None
        if fs is None:
            return None, {}
        ep = fs.episodes.get(link_alarm)
        if ep is None:
            closed = link_alarm in fs.closed
            return None, {"open": not closed,
                          "status": "告警已结束 This alarm is over." if closed else ""}
        status = ""
        if ep.resolved:
            status = f"已处理 Resolved by {ep.acked_by}"
        elif ep.acked_by:
            status = f"已确认 Acknowledged by {ep.acked_by}"
        return ep.alarm, {"status": status, "open": not ep.resolved, "used": ep.used_tokens,
                          "recipients": ep.recipients}

    async def publish(req: AckRequest) -> None:
        await acks.send(key=req.facility_id.encode(), value=req.model_dump_json().encode())

    async def send_code(person: Person, text: str, message_id: str) -> None:
        channel = live.cfg.code_sms_channel()
        if channel is None or not person.phone:
            raise ChannelError("no sms channel or no phone number", retryable=False)
        await deliverer().senders.sms_text(channel, person.phone, text, message_id)

    async def readings(facility: str, sensor: str) -> list[tuple[str, float]]:
        return await recent_readings(cfg.influx, facility, sensor)

    page = n.page = AckPage(
        live, signer, ack_signer,
        CodeStore(s.code_ttl_s, s.code_attempts, s.code_resend_s, s.code_max_per_link),
        counters, publish, send_code, local_episode, readings)

    @app.service
    class _Public(PublicSite):
        """The acknowledgement page on its own port (started after table recovery)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(page.application, s.public_host, s.public_port, **kwargs)

    @app.on_before_shutdown.connect
    async def _drain(_app: Any, /, *_args: Any, signal: BaseSignalT[Any], **_kw: Any) -> None:
        if holder:
            await holder[0].drain(5.0)  # messages in flight finish and are recorded
            await holder[0].senders.session.close()

    def oncall_changed(new: OnCallConfig) -> None:
        # One swap: the escalator, delivery, the page and the codes read ``live``. Saved
        # state is reconciled with the new file at each facility's next tick (inside the
        # agent, where the table may be written): pages pending for people the file no
        # longer has are recorded as failed, alarms nobody was routed to are routed again.
        live.cfg = new
        for warning in new.warnings():
            log.warning("oncall.config_warning", detail=warning)

    def registry_changed(districts: dict[str, str]) -> None:
        live.districts = districts

    n.files = [
        WatchedFile("oncall", s.oncall, load_checked_oncall, oncall_changed, health,
                    version=oncall_version),
        WatchedFile("registry", cfg.common.registry, load_districts, registry_changed, health,
                    version=registry_version)]
    reload_s = cfg.common.reload_check_s

    @app.task  # type: ignore[untyped-decorator]  # faust's task is untyped
    async def _reload() -> None:
        """Watch both files while the worker runs (a refused file is a warning: the page
        stays in service on the version in use)."""
        await asyncio.gather(*(f.watch(reload_s) for f in n.files))

    register_gauges(app, health, (topics.ALARMS, topics.ACKS))
    report_health(app, health, cfg.common.health_report_s)
    counters.gauge("episodes_open", lambda: sum(len(fs.episodes) for fs in n.cache.values()))
    counters.gauge("pending", lambda: sum(len(ep.pending) for fs in n.cache.values()
                                          for ep in fs.episodes.values()))

    def latency() -> float:
        lat = sorted(holder[0].latencies) if holder else []
        return lat[int(len(lat) * 0.99)] if lat else 0.0

    counters.gauge("delivery_p99_s", latency)
    add_health_pages(app, health)
    return n


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
    from services.core.faust_app import run_worker
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
