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
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import faust
from faust.web import Request, Response, View
from mode.types.signals import BaseSignalT
from pydantic import ValidationError

from schemas.alarm import AlarmEvent
from schemas.oncall import AckAction, AckRequest, OnCallConfig, OnCallRecord, RecordType
from schemas.registry import Registry
from services.core import topics
from services.core.faust_app import (
    add_health_pages,
    make_app,
    partition_ticks,
    register_gauges,
    report_health,
)
from services.core.health import Counters, Health
from services.core.logging import get_logger
from services.notifier.channels import Senders
from services.notifier.config import NotifierConfig
from services.notifier.delivery import Deliverer, RetryPolicy
from services.notifier.escalation import Escalator, FacilityOnCall, OnCallStateError, Outcome
from services.notifier.links import AckLink, LinkError, Signer
from services.notifier.web import SECURITY_HEADERS, alarm_page, message_page, recent_readings

log = get_logger("lifeline.notifier")

OUTCOMES = (RecordType.DELIVERED, RecordType.FAILED)


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
    cache: dict[str, FacilityOnCall] = field(default_factory=dict)
    resumed: set[int] = field(default_factory=set)  # partitions whose pending work is requeued
    used_links: set[str] = field(default_factory=set)  # links used through this worker

    @property
    def deliverer(self) -> Deliverer:
        return self.deliverer_ref[0]


def build(cfg: NotifierConfig, oncall: OnCallConfig, registry: Registry) -> Notifier:
    s = cfg.notifier
    secret = s.link_secret.get_secret_value()
    signer = Signer(secret, s.link_ttl_s)
    app = make_app("notifier", cfg.kafka, web_port=s.health_port, web_host=s.health_host)
    counters = Counters("alarm_events", "acks", "notifications", "notifications_delivered",
                        "notifications_failed", "messages_sent", "rejected", "escalations")
    health = Health("notifier", counters)

    def raw(*names: str) -> Any:
        return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw")

    source = raw(topics.ALARMS, topics.ACKS, topics.ONCALL, topics.ONCALL_TICKS)
    audit, acks, ticks = raw(topics.ONCALL), raw(topics.ACKS), raw(topics.ONCALL_TICKS)
    table = app.Table("oncall_state", default=None, key_type=str, value_type=str)
    escalator = Escalator(oncall, {f.id: f.district for f in registry.facilities})
    for warning in oncall.warnings():  # valid but unsafe: said at start, not refused
        log.warning("oncall.config_warning", detail=warning)
    holder: list[Deliverer] = []
    n = Notifier(app, None, table, health, escalator, holder, signer)

    async def emit(rec: OnCallRecord) -> None:
        await audit.send(key=rec.facility_id.encode(), value=rec.model_dump_json().encode())

    def deliverer() -> Deliverer:
        if not holder:  # made on first use: its HTTP session needs the running loop
            holder.append(Deliverer(
                oncall, Senders(aiohttp.ClientSession()), signer, s.public_url, emit, counters,
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
            if rec.type is RecordType.UNROUTED:
                health.problem("routing", f"no route for an alarm of {fid}")
            log.info(f"oncall.{rec.type.value}", facility_id=fid, alarm_id=rec.alarm_id,
                     person=rec.person, team=rec.team, step=rec.step, repeat=rec.repeat,
                     detail=rec.detail[:200])
        for note in out.notifications:
            counters.inc("notifications")
            deliverer().submit(note)

    def resume(partition: int) -> None:
        """After (re)assignment: load this partition's facilities and requeue what is
        pending (the table holds it; the deliverer drops ids it already has)."""
        for fid, saved in list(table.items()):
            if fid in n.cache or not saved:
                continue
            fs = load(fid, saved)  # unreadable: afresh when the facility's next event comes
            if fs is not None and fs.partition == partition:
                n.cache[fid] = fs
        for fs in n.cache.values():
            if fs.partition == partition:
                for note in fs.pending():
                    deliverer().submit(note)
        n.resumed.add(partition)

    @app.agent(source)
    async def notify(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            value: bytes = event.value
            now_ms = int(time.time() * 1000)
            if msg.topic == topics.ONCALL_TICKS:
                if msg.partition not in n.resumed:
                    resume(msg.partition)
                for fid, fs in list(n.cache.items()):
                    if fs.partition == msg.partition and fs.episodes:
                        await apply(fid, fs, escalator.tick(fs, now_ms))
                continue
            src = f"kafka:{msg.topic}[{msg.partition}]@{msg.offset}"
            try:
                if msg.topic == topics.ALARMS:
                    ev = AlarmEvent.model_validate_json(value)
                    counters.inc("alarm_events")
                    fs = state(ev.facility_id, msg.partition)
                    await apply(ev.facility_id, fs, escalator.on_alarm(fs, ev, now_ms))
                elif msg.topic == topics.ACKS:
                    req = AckRequest.model_validate_json(value)
                    counters.inc("acks")
                    fs = state(req.facility_id, msg.partition)
                    await apply(req.facility_id, fs, escalator.on_ack(fs, req, now_ms))
                else:
                    rec = OnCallRecord.model_validate_json(value)
                    if rec.type in OUTCOMES:
                        fs = state(rec.facility_id, msg.partition)
                        await apply(rec.facility_id, fs, escalator.on_outcome(fs, rec, now_ms))
            except ValidationError as exc:
                counters.inc("rejected")
                log.warning("notifier.rejected", source=src,
                            error=str(exc.errors()[0]["msg"])[:300],
                            facility_id=msg.key.decode(errors="replace") if msg.key else None)

    n.agent = notify

    @app.on_partitions_revoked.connect
    async def _revoked(_app: Any, /, *args: Any, signal: BaseSignalT[Any], **_kw: Any) -> None:
        revoked: set[Any] = args[0] if args else set()
        gone = {tp.partition for tp in revoked if tp.topic == topics.ALARMS}
        for fid in [f for f, fs in n.cache.items() if fs.partition in gone]:
            del n.cache[fid]
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
        return ep.alarm, {"status": status, "open": not ep.resolved, "used": ep.used_tokens}

    @app.page("/ack/{token}")
    class AckPage(View):
        def refused(self, token: str) -> AckLink | Response:
            """The link, or the page that refuses it (forged: 403, expired: 410)."""
            try:
                return signer.verify(token)
            except LinkError as exc:
                counters.inc("links_refused")
                return self.html(message_page("链接无效 Link refused", str(exc), "refused"),
                                 status=exc.status, headers=dict(SECURITY_HEADERS))

        async def get(self, request: Request, token: str) -> Response:
            link = self.refused(token)
            if not isinstance(link, AckLink):
                return link
            alarm, st = local_episode(link.alarm_id, link.facility_id)
            if link.token_id in n.used_links or link.token_id in st.get("used", []):
                st = {**st, "open": False, "status": st.get("status") or "链接已使用 Link used"}
            readings = []
            if alarm is not None:
                readings = await recent_readings(cfg.influx, alarm["facility_id"], alarm["sensor"])
            return self.html(alarm_page(link, token, alarm, st, readings, oncall.zone),
                             headers=dict(SECURITY_HEADERS))

        async def post(self, request: Request, token: str) -> Response:
            link = self.refused(token)
            if not isinstance(link, AckLink):
                return link
            _, st = local_episode(link.alarm_id, link.facility_id)
            if link.token_id in n.used_links or link.token_id in st.get("used", []):
                counters.inc("links_replayed")
                return self.html(message_page("链接已使用 Link already used",
                                              "This link has already been used.", "refused"),
                                 status=409, headers=dict(SECURITY_HEADERS))
            form = await request.post()
            action = AckAction.RESOLVE if form.get("action") == "resolve" else AckAction.ACKNOWLEDGE
            comment = str(form.get("comment") or "")[:2000]
            req = AckRequest(alarm_id=link.alarm_id, facility_id=link.facility_id,
                             action=action, by=link.person, comment=comment, via="link",
                             token_id=link.token_id, ts=datetime.now(UTC))
            n.used_links.add(link.token_id)
            await acks.send(key=link.facility_id.encode(), value=req.model_dump_json().encode())
            log.info("oncall.ack_received", facility_id=link.facility_id,
                     alarm_id=link.alarm_id, person=link.person, action=action.value)
            # Wait briefly for the agent's verdict when this worker owns the facility.
            verdict = ""
            for _ in range(30):
                _, st = local_episode(link.alarm_id, link.facility_id)
                verdict = st.get("status", "")
                if verdict:
                    break
                await asyncio.sleep(0.1)
            title = ("已处理 Resolved" if action is AckAction.RESOLVE else "已确认 Acknowledged")
            text = verdict or "Sent; the escalation stops when the notifier has processed it."
            return self.html(message_page(title, f"{text} — 升级已停止 escalation stopped.",
                                          "done"), headers=dict(SECURITY_HEADERS))

    @app.on_before_shutdown.connect
    async def _drain(_app: Any, /, *_args: Any, signal: BaseSignalT[Any], **_kw: Any) -> None:
        if holder:
            await holder[0].drain(5.0)  # messages in flight finish and are recorded
            await holder[0].senders.session.close()

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


def main() -> None:
    from schemas.oncall import load_oncall
    from schemas.registry import load_registry
    from services.core.faust_app import run_worker

    cfg = NotifierConfig()
    if len(cfg.notifier.link_secret.get_secret_value()) < 16:
        raise SystemExit("LIFELINE_NOTIFIER_LINK_SECRET must be set (16 characters or more): it "
                         "signs the acknowledgement links")
    oncall = load_oncall(cfg.notifier.oncall)
    registry = load_registry(cfg.common.registry)
    app = build(cfg, oncall, registry).app
    run_worker(app, loglevel=cfg.common.log_level, service="notifier")
