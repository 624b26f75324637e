"""The acknowledgement page, served on the notifier's *public* port (a site of its own:
``LIFELINE_NOTIFIER_PUBLIC_HOST``/``_PORT``), which serves nothing else — health and
counters stay on the health port, Faust's own views are off.

``GET /ack/<token>`` shows the alarm and never acts (chat apps preview links).
``POST /ack/<token>`` acts:

- a link sent only on personal channels (the person's own phone by SMS): ``action`` =
  acknowledge | resolve, ``comment`` — acknowledges as the person it was sent to;
- a *shared* link (posted in a DingTalk/WeCom group, a webhook, e-mail): first
  ``action=send_code`` with ``person`` (who is acting, one of the alarm's team) sends a
  6-digit code to that person's phone on the on-call file's SMS channel; then
  ``action`` = acknowledge | resolve with ``challenge`` and ``code`` acknowledges as that
  person (``second_factor="sms"``). Without the right code nothing is sent.

Refusals: forged link 403, expired 410, used 409, wrong code 403 (attempts left),
too many wrong codes or codes 429, code expired 410. Every acknowledgement is signed
(services.notifier.acks) before it goes to ``lifeline.acks``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from mode import Service

from schemas.oncall import AckAction, AckRequest, OnCallConfig, Person
from schemas.texts import short_place
from services.core.health import Counters
from services.core.logging import get_logger
from services.notifier.acks import AckSigner
from services.notifier.errors import ChannelError, CodeRefused, LinkError
from services.notifier.escalation import OnCall
from services.notifier.links import AckLink, Signer
from services.notifier.otp import CodeStore, CodeVerdict
from services.notifier.web import (
    SECURITY_HEADERS,
    alarm_page,
    code_page,
    identify_form,
    message_page,
)

log = get_logger("lifeline.notifier.ackpage")

Episode = Callable[[str, str], tuple[dict[str, Any] | None, dict[str, Any]]]
Readings = Callable[[str, str], Awaitable[list[tuple[str, float]]]]
SendCode = Callable[[Person, str, str], Awaitable[None]]  # person, text, message id
Publish = Callable[[AckRequest], Awaitable[None]]
MAX_BODY = 64 * 1024


async def _no_readings(_facility: str, _sensor: str) -> list[tuple[str, float]]:
    return []


@dataclass
class AckPage:
    oncall: OnCallConfig | OnCall  # the notifier's one reference: reloads replace its cfg
    signer: Signer
    ack_signer: AckSigner
    codes: CodeStore
    counters: Counters
    publish: Publish
    send_code: SendCode
    episode: Episode
    readings: Readings = _no_readings
    # A facility's coordinates and name (the registry's, reloaded with it): the map link.
    places: Callable[[str], tuple[float, float, str] | None] = lambda _f: None
    used_links: set[str] = field(default_factory=set)  # links used through this worker
    clock: Callable[[], float] = time.time
    verdict_wait_s: float = 3.0

    # ------------------------------------------------------------------ helpers

    @property
    def cfg(self) -> OnCallConfig:
        """The on-call file in use now."""
        return self.oncall.cfg if isinstance(self.oncall, OnCall) else self.oncall

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/ack/{token}", self.get)
        app.router.add_post("/ack/{token}", self.post)
        app.on_response_prepare.append(self._headers)
        return app

    @staticmethod
    async def _headers(_request: web.Request, response: web.StreamResponse) -> None:
        # Every answer of this site, 404s included.
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)

    @staticmethod
    def _html(body: str, status: int = 200) -> web.Response:
        return web.Response(text=body, status=status, content_type="text/html",
                            charset="utf-8")

    def _message(self, title: str, text: str, status_id: str, status: int) -> web.Response:
        return self._html(message_page(title, text, status_id), status)

    def _link(self, request: web.Request) -> AckLink | web.Response:
        """The link, or the page that refuses it (forged: 403, expired: 410)."""
        try:
            return self.signer.verify(request.match_info["token"])
        except LinkError as exc:
            self.counters.inc("links_refused")
            return self._message("链接无效 Link refused", str(exc), "refused", exc.status)

    def _used(self, link: AckLink, st: dict[str, Any]) -> bool:
        return link.token_id in self.used_links or link.token_id in st.get("used", [])

    def people(self, link: AckLink, st: dict[str, Any]) -> list[Person]:
        """Who may act on a shared link: the addressee, the people of the team whose chain
        sent it, and whoever this episode paged (people of the on-call file only)."""
        ids = [link.person, *self.cfg.team_people(link.team)]
        ids += [str(r[0]) for r in st.get("recipients", [])]
        known = {p.id: p for p in self.cfg.people}
        return [known[i] for i in dict.fromkeys(ids) if i in known]

    async def _alarm(self, link: AckLink, token: str, st: dict[str, Any],
                     alarm: dict[str, Any] | None, status: int = 200,
                     message: str = "") -> web.Response:
        form = None
        if link.shared:
            form = identify_form(token, self.people(link, st), link.person,
                                 self.cfg.code_sms_channel() is not None, message)
        readings: list[tuple[str, float]] = []
        if alarm is not None and status == 200:
            readings = await self.readings(alarm["facility_id"], alarm["sensor"])
        return self._html(alarm_page(link, token, alarm, st, readings, self.cfg.zone, form,
                                     self.places(link.facility_id)),
                          status)

    # ------------------------------------------------------------------ handlers

    async def get(self, request: web.Request) -> web.Response:
        link = self._link(request)
        if not isinstance(link, AckLink):
            return link
        alarm, st = self.episode(link.alarm_id, link.facility_id)
        if self._used(link, st):
            st = {**st, "open": False, "status": st.get("status") or "链接已使用 Link used"}
        return await self._alarm(link, request.match_info["token"], st, alarm)

    async def post(self, request: web.Request) -> web.Response:
        link = self._link(request)
        if not isinstance(link, AckLink):
            return link
        token = request.match_info["token"]
        alarm, st = self.episode(link.alarm_id, link.facility_id)
        if self._used(link, st):
            self.counters.inc("links_replayed")
            return self._message("链接已使用 Link already used",
                                 "This link has already been used.", "refused", 409)
        form = await request.post()
        action = str(form.get("action") or "")
        comment = str(form.get("comment") or "")[:2000]
        if not link.shared:
            ack = AckAction.RESOLVE if action == "resolve" else AckAction.ACKNOWLEDGE
            return await self._submit(link, link.person, ack, comment, None)
        if action == "send_code":
            return await self._send_code(link, token, st, alarm, str(form.get("person") or ""))
        if action not in ("acknowledge", "resolve"):
            return await self._alarm(link, token, st, alarm, 400, "choose who you are and "
                                     "request a code")
        challenge, code = str(form.get("challenge") or ""), str(form.get("code") or "")
        if not challenge or not code:
            self.counters.inc("codes_refused")
            return await self._alarm(link, token, st, alarm, 403,
                                     "需要验证码 A one-time code is required: choose who you are "
                                     "and request a code.")
        result = self.codes.check(challenge, link.token_id, code, self.clock())
        who = result.person or ""
        if result.verdict is CodeVerdict.OK:
            ack = AckAction.RESOLVE if action == "resolve" else AckAction.ACKNOWLEDGE
            return await self._submit(link, who, ack, comment, "sms")
        self.counters.inc("codes_refused")
        log.warning("oncall.code_refused", facility_id=link.facility_id, alarm_id=link.alarm_id,
                    person=who or None, verdict=result.verdict.value,
                    attempts_left=result.attempts_left)
        if result.verdict is CodeVerdict.WRONG:
            person = self._person(who)
            if person is not None:
                return self._html(code_page(token, challenge, person, self.codes.ttl_s,
                                            f"验证码错误 Wrong code: {result.attempts_left} "
                                            "attempt(s) left."), 403)
        status, text = {
            CodeVerdict.EXHAUSTED: (429, "错误次数过多 Too many wrong codes: request a new code."),
            CodeVerdict.EXPIRED: (410, "验证码已过期 The code has expired: request a new one."),
        }.get(result.verdict, (403, "验证码无效 This code is not valid here (it may have been "
                                    "used, or sent by another notifier worker): request a new "
                                    "one."))
        return await self._alarm(link, token, st, alarm, status, text)

    def _person(self, pid: str) -> Person | None:
        return next((p for p in self.cfg.people if p.id == pid), None)

    async def _send_code(self, link: AckLink, token: str, st: dict[str, Any],
                         alarm: dict[str, Any] | None, pid: str) -> web.Response:
        people = {p.id: p for p in self.people(link, st)}
        person = people.get(pid)
        if person is None:
            return await self._alarm(link, token, st, alarm, 400,
                                     "请选择列表中的人员 Choose a person of the list.")
        if not person.phone:
            return await self._alarm(link, token, st, alarm, 400,
                                     f"{person.name} 无手机号 has no phone number: a one-time "
                                     "code cannot be sent; acknowledge with "
                                     "`lifeline oncall ack` or through the duty room.")
        if self.cfg.code_sms_channel() is None:
            return await self._alarm(link, token, st, alarm, 503,
                                     "No SMS channel for one-time codes is configured.")
        try:
            challenge, code = self.codes.issue(link.token_id, person.id, self.clock())
        except CodeRefused as exc:
            self.counters.inc("codes_refused")
            return await self._alarm(link, token, st, alarm, exc.status, str(exc))
        minutes = f"{self.codes.ttl_s / 60:g}"
        where = short_place(alarm) if alarm is not None else link.facility_id
        text = (f"Lifeline 验证码 code: {code} — 用于确认告警 to acknowledge the alarm at "
                f"{where}, {minutes} 分钟内有效 valid {minutes} min. "
                "如非本人操作请忽略 If you did not ask for it, ignore this message.")
        msg_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"lifeline:code:{challenge}"))
        try:
            await self.send_code(person, text, msg_id)
        except ChannelError as exc:
            self.codes.withdraw(challenge, link.token_id, person.id)
            self.counters.inc("codes_failed")
            log.warning("oncall.code_not_sent", facility_id=link.facility_id,
                        alarm_id=link.alarm_id, person=person.id,
                        error=str(exc).replace(code, "******")[:300])
            return await self._alarm(link, token, st, alarm, 502,
                                     "验证码发送失败 The code could not be sent: try again.")
        self.counters.inc("codes_sent")
        log.info("oncall.code_sent", facility_id=link.facility_id, alarm_id=link.alarm_id,
                 person=person.id, addressee=link.person, link=link.token_id)
        return self._html(code_page(token, challenge, person, self.codes.ttl_s))

    async def _submit(self, link: AckLink, by: str, action: AckAction, comment: str,
                      second_factor: str | None) -> web.Response:
        req = self.ack_signer.sign(AckRequest(
            alarm_id=link.alarm_id, facility_id=link.facility_id, action=action, by=by,
            comment=comment, via="link", token_id=link.token_id, addressee=link.person,
            second_factor="sms" if second_factor == "sms" else None, ts=datetime.now(UTC)))
        self.used_links.add(link.token_id)
        await self.publish(req)
        log.info("oncall.ack_received", facility_id=link.facility_id, alarm_id=link.alarm_id,
                 person=by, addressee=link.person, action=action.value,
                 second_factor=req.second_factor)
        # Wait briefly for the agent's verdict when this worker owns the facility.
        verdict = ""
        deadline = time.monotonic() + self.verdict_wait_s
        while True:
            _, st = self.episode(link.alarm_id, link.facility_id)
            verdict = str(st.get("status", ""))
            if verdict or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.1)
        title = "已处理 Resolved" if action is AckAction.RESOLVE else "已确认 Acknowledged"
        text = verdict or "Sent; the escalation stops when the notifier has processed it."
        return self._message(title, f"{text} — 升级已停止 escalation stopped.", "done", 200)



class PublicSite(Service):
    """A small aiohttp site of its own, run inside the Faust worker (``@app.service``):
    the acknowledgement page on the public host and port, apart from the health port."""

    def __init__(self, factory: Callable[[], web.Application], host: str, port: int,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._factory = factory
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        self._runner = web.AppRunner(self._factory(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("notifier.public_page", host=self.host, port=self.port)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
