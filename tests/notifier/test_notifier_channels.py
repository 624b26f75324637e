"""Channels and delivery against real local receivers: an HTTP server speaking the webhook,
DingTalk, WeCom and SMS formats, and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from email import message_from_bytes
from typing import Any

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from schemas.oncall import OnCallConfig, OnCallRecord, RecordType
from services.core.health import Counters
from services.notifier.channels import Senders, dingtalk_sign, webhook_signature
from services.notifier.delivery import Deliverer, RetryPolicy
from services.notifier.escalation import Notification
from services.notifier.links import Signer
from services.stack.manager import free_port
from tests.support.oncall_helpers import alarm, config
from tests.support.receivers import Receiver, dingtalk_sign_reference

pytestmark = [pytest.mark.unit,
              pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")]

SECRETS = {"webhook": "whsec-0123456789abcdef", "dingtalk": "SEC0123456789abcdef",
           "sms": "sms-key-42"}
ENV = {"HOOK_SECRET": SECRETS["webhook"], "DT_TOKEN": "dt-token-secret-1",
       "DT_SECRET": SECRETS["dingtalk"], "WECOM_KEY": "wecom-key-secret-2",
       "SMS_KEY": SECRETS["sms"], "SMTP_PASSWORD": "smtp-pass-3"}


class SmtpSink:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"lifeline" and \
        data.password == ENV["SMTP_PASSWORD"].encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver(SECRETS).start()
    yield r
    await r.stop()


@pytest.fixture
def smtp() -> Any:
    sink = SmtpSink()
    ctl = Controller(sink, hostname="127.0.0.1", port=free_port(), authenticator=_auth,
                     auth_require_tls=False, auth_required=True)
    ctl.start()
    yield ctl, sink
    ctl.stop()


def channels(r: Receiver, smtp_port: int = 1) -> list[dict[str, Any]]:
    return [
        {"id": "hook", "type": "webhook", "url": r.url("/webhook"), "secret_env": "HOOK_SECRET"},
        {"id": "dt", "type": "dingtalk", "url": r.url("/robot/send"), "token_env": "DT_TOKEN",
         "secret_env": "DT_SECRET"},
        {"id": "wecom", "type": "wecom", "url": r.url("/cgi-bin/webhook/send"),
         "token_env": "WECOM_KEY"},
        {"id": "sms", "type": "sms", "url": r.url("/sms"), "token_env": "SMS_KEY"},
        {"id": "mail", "type": "email", "smtp_host": "127.0.0.1", "smtp_port": smtp_port,
         "smtp_security": "none", "smtp_username": "lifeline", "secret_env": "SMTP_PASSWORD",
         "sender": "Lifeline <lifeline@example.org>"},
    ]


def with_steps(cfg: OnCallConfig, chans: list[str], window_s: float = 0) -> OnCallConfig:
    data = cfg.model_dump(mode="json", by_alias=True)
    data["teams"][0]["escalation"][0]["channels"] = chans
    data["grouping"]["window_s"] = window_s
    return OnCallConfig.model_validate(data)


class Harness:
    def __init__(self, cfg: OnCallConfig, session: aiohttp.ClientSession,
                 retry: RetryPolicy | None = None) -> None:
        self.records: list[OnCallRecord] = []
        self.counters = Counters()

        async def emit(rec: OnCallRecord) -> None:
            self.records.append(rec)

        self.d = Deliverer(cfg, Senders(session, ENV), Signer("s" * 32, 3600),
                           "http://127.0.0.1:18084", emit, self.counters,
                           retry or RetryPolicy(3, 0.01, 0.05))

    def types(self) -> list[tuple[str, str | None, bool | None]]:
        return [(r.type.value, r.channel, r.ok) for r in self.records]


def note(i: int, chans: list[str], person: str = "ann", kind: str = "page") -> Notification:
    a = alarm(sensor=f"s{i}")
    return Notification(f"n-{i}", kind, a.alarm_id, a.facility_id, "duty", 0, 0, person,
                        chans, 0, {"facility_id": "F-1", "kind": "drainage", "district": "d",
                                   "sensor": f"s{i}", "metric": "water_level",
                                   "rule": "value-upper", "category": "facility",
                                   "level": "orange", "value": 2.5, "threshold": 2.0,
                                   "unit": "m", "message": "level high", "event": "raised",
                                   "ts": a.ts.isoformat()})


@pytest.mark.parametrize("chan", ["hook", "dt", "wecom", "sms"])
async def test_each_http_channel_speaks_its_documented_format(receiver: Receiver,
                                                             chan: str) -> None:
    cfg = with_steps(config(channels(receiver)), [chan])
    async with aiohttp.ClientSession() as s:
        h = Harness(cfg, s)
        h.d.submit(note(1, [chan]))
        await h.d.drain()
    assert len(receiver.received) == 1
    got = receiver.received[0]
    assert got.problems == [], got.problems
    assert h.types()[-2:] == [("attempt", chan, True), ("delivered", chan, True)]
    if chan == "hook":
        assert got.body["alarms"][0]["ack_url"].startswith("http://127.0.0.1:18084/ack/")
    if chan == "dt":
        assert got.body["at"]["atMobiles"] == ["13800000001"]
        assert "@13800000001" in got.body["markdown"]["text"]
    if chan == "wecom":
        assert "<@Ann>" in got.body["markdown"]["content"]
    if chan == "sms":
        assert got.body["to"] == "13800000001" and "F-1" in got.body["text"]


def test_signatures_match_independent_implementations() -> None:
    assert dingtalk_sign("SECabc", 1700000000000) == dingtalk_sign_reference("SECabc",
                                                                             1700000000000)
    # Stripe/GitHub style: HMAC over "<timestamp>.<body>"; a changed byte changes it.
    a = webhook_signature("k", "1700000000", b'{"a":1}')
    assert a != webhook_signature("k", "1700000000", b'{"a":2}')
    assert a != webhook_signature("k", "1700000001", b'{"a":1}')


async def test_forged_webhook_is_detected_by_the_receiver(receiver: Receiver) -> None:
    env = {**ENV, "HOOK_SECRET": "not-the-receivers-secret"}
    cfg = with_steps(config(channels(receiver)), ["hook"])
    async with aiohttp.ClientSession() as s:
        h = Harness(cfg, s)
        h.d.senders = Senders(s, env)
        h.d.submit(note(1, ["hook"]))
        await h.d.drain()
    assert receiver.received[0].problems == ["bad signature"]
    assert [t for t in h.types() if t[0] == "failed"]  # 401 is not retried, not delivered


async def test_email_over_smtp_with_authentication(receiver: Receiver, smtp: Any) -> None:
    ctl, sink = smtp
    cfg = with_steps(config(channels(receiver, ctl.port)), ["mail"])
    async with aiohttp.ClientSession() as s:
        h = Harness(cfg, s)
        h.d.submit(note(1, ["mail"]))
        await h.d.drain()
    assert h.types()[-1] == ("delivered", "mail", True)
    (rcpt, msg), = sink.messages
    assert rcpt == ["ann@example.org"]
    assert msg["X-Lifeline-Delivery"]
    assert "/ack/" in msg.get_payload(decode=True).decode()


async def test_email_with_wrong_password_fails_without_retrying(receiver: Receiver,
                                                                smtp: Any) -> None:
    ctl, sink = smtp
    cfg = with_steps(config(channels(receiver, ctl.port)), ["mail"])
    async with aiohttp.ClientSession() as s:
        h = Harness(cfg, s)
        h.d.senders = Senders(s, {**ENV, "SMTP_PASSWORD": "wrong"})
        h.d.submit(note(1, ["mail"]))
        await h.d.drain()
    assert sink.messages == []
    assert [t for t in h.types() if t[0] == "attempt"] == [("attempt", "mail", False)]
    assert h.types()[-1] == ("failed", None, False)


async def test_retries_with_backoff_then_delivers(receiver: Receiver) -> None:
    receiver.behaviour.fail_first["dingtalk"] = 2  # "send too fast" twice
    cfg = with_steps(config(channels(receiver)), ["dt"])
    async with aiohttp.ClientSession() as s:
        h = Harness(cfg, s)
        h.d.submit(note(1, ["dt"]))
        await h.d.drain()
    assert h.types() == [("attempt", "dt", False), ("attempt", "dt", False),
                         ("attempt", "dt", True), ("delivered", "dt", True)]


async def test_failing_channel_falls_back_to_the_next(receiver: Receiver,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    receiver.behaviour.down.add("dingtalk")
    cfg = with_steps(config(channels(receiver)), ["dt", "sms"])
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as s:
        h = Harness(cfg, s)
        h.d.submit(note(1, ["dt", "sms"]))
        await h.d.drain()
    assert h.types() == [("attempt", "dt", False)] * 3 + [("attempt", "sms", True),
                                                          ("delivered", "sms", True)]
    assert len(receiver.received) == 1 and receiver.received[0].channel == "sms"
    # Secrets never reach logs or the audit trail (robot URLs carry them in the query).
    text = caplog.text + "".join(r.model_dump_json() for r in h.records)
    for secret in ENV.values():
        assert secret not in text


async def test_every_channel_down_is_a_recorded_failure(receiver: Receiver) -> None:
    receiver.behaviour.down.update({"dingtalk", "sms"})
    cfg = with_steps(config(channels(receiver)), ["dt", "sms"])
    async with aiohttp.ClientSession() as s:
        h = Harness(cfg, s)
        h.d.submit(note(1, ["dt", "sms"]))
        await h.d.drain()
    failed = [r for r in h.records if r.type is RecordType.FAILED]
    assert len(failed) == 1 and "dt:" in failed[0].detail and "sms:" in failed[0].detail


async def test_storm_of_500_alarms_becomes_few_messages(receiver: Receiver) -> None:
    cfg = with_steps(config(channels(receiver)), ["hook"], window_s=0.5)
    async with aiohttp.ClientSession() as s:
        h = Harness(cfg, s)
        for i in range(500):
            h.d.submit(note(i, ["hook"]))
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.6)
        await h.d.drain()
    # ``burst`` (3) messages at once, then one when the window ends: every alarm listed.
    assert len(receiver.received) == 4
    assert [len(r.body["alarms"]) for r in receiver.received] == [1, 1, 1, 497]
    delivered = [r for r in h.records if r.type is RecordType.DELIVERED]
    assert sorted(r.notification_id or "" for r in delivered) == sorted(f"n-{i}"
                                                                        for i in range(500))
    assert "and 477 more" in receiver.received[3].body["text"]


async def test_at_shutdown_what_a_storm_held_goes_out_at_once(receiver: Receiver) -> None:
    """A held batch (a 30 s window) is not left to a timer that would fire after the worker
    has gone: shutting down sends it now, as one message, and records it delivered."""
    cfg = with_steps(config(channels(receiver)), ["hook"], window_s=30)
    async with aiohttp.ClientSession() as s:
        h = Harness(cfg, s)
        for i in range(10):
            h.d.submit(note(i, ["hook"]))
        await asyncio.sleep(0.2)
        assert len(receiver.received) == 3  # the burst; seven held for the window
        started = time.monotonic()
        assert await h.d.shut(2.0) == 0
        waited = time.monotonic() - started
    assert waited < 10  # not the window's 30 s
    assert [len(r.body["alarms"]) for r in receiver.received] == [1, 1, 1, 7]
    delivered = [r for r in h.records if r.type is RecordType.DELIVERED]
    assert sorted(r.notification_id or "" for r in delivered) == sorted(f"n-{i}"
                                                                        for i in range(10))


async def test_at_shutdown_a_send_still_in_flight_is_cut_and_stays_pending(
        receiver: Receiver) -> None:
    """A receiver slower than the shutdown's allowance: the send is cancelled, never
    recorded as failed (which would end the notification); nothing is recorded for it, so
    it stays pending in the table for the next worker, which sends it."""
    cfg = with_steps(config(channels(receiver)), ["hook"])
    receiver.behaviour.delay_s["webhook"] = 5.0
    async with aiohttp.ClientSession() as s:
        h = Harness(cfg, s)
        h.d.submit(note(1, ["hook"]))
        await asyncio.sleep(0.2)  # the request is at the receiver
        assert await h.d.shut(0.3) == 1
        assert h.records == [] and receiver.received == []
        assert h.counters.get("shutdown_sends_cut") == 1
        receiver.behaviour.delay_s.clear()
        again = Harness(cfg, s)  # the worker that resumes the partition requeues it
        again.d.submit(note(1, ["hook"]))
        await again.d.drain()
    assert [r.notification_id for r in again.records if r.type is RecordType.DELIVERED] == \
        ["n-1"]
    assert len(receiver.received) == 1


async def test_the_same_notification_is_sent_once(receiver: Receiver) -> None:
    cfg = with_steps(config(channels(receiver)), ["hook"])
    async with aiohttp.ClientSession() as s:
        h = Harness(cfg, s)
        h.d.submit(note(1, ["hook"]))
        h.d.submit(note(1, ["hook"]))  # requeued after a restart while in flight
        await h.d.drain()
    assert len(receiver.received) == 1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (openssl, installed by bootstrap.sh)."""
    import subprocess

    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_email_over_tls_with_a_verified_certificate(
        receiver: Receiver, certificate: tuple[str, str], security: str) -> None:
    import ssl

    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    sink = SmtpSink()
    port = free_port()
    if security == "starttls":
        ctl = Controller(sink, hostname="127.0.0.1", port=port, authenticator=_auth,
                         tls_context=server_ctx, require_starttls=True, auth_required=True)
    else:
        # aiosmtpd does not see implicit TLS as TLS for AUTH: the socket is TLS from the start.
        ctl = Controller(sink, hostname="127.0.0.1", port=port, authenticator=_auth,
                         ssl_context=server_ctx, auth_required=True, auth_require_tls=False)
    ctl.start()
    try:
        mail = {**channels(receiver, port)[-1], "smtp_security": security}
        for ca, delivered in ((cert, True), (None, False)):  # unknown CA: refused
            cfg = with_steps(config([*channels(receiver)[:-1], {**mail, "smtp_ca_file": ca}]),
                             ["mail"])
            async with aiohttp.ClientSession() as s:
                h = Harness(cfg, s, RetryPolicy(1, 0.01, 0.01))
                h.d.submit(note(1 if delivered else 2, ["mail"]))
                await h.d.drain()
            assert (h.types()[-1][0] == "delivered") is delivered, h.records[-1].detail
    finally:
        ctl.stop()
    assert len(sink.messages) == 1
