"""The order page (工单页): the people in the loop act on a work order from a phone.

``GET /order/<token>`` shows the order — the facility's names in Chinese and English, where
it is (district, coordinates and a map link), the level in words and colour, the deadline
in local time with the zone named, the history and the photos — and the steps the link's
person may take now. ``POST /order/<token>`` (multipart: ``action``, ``note``, ``reason``,
``photos``) takes one step: photos are size- and type-checked (decoded by Pillow, JPEG, PNG
or WebP only) and stored in PostgreSQL before the event naming them is sent; the event goes
to ``lifeline.orders`` and the page waits until the store shows it applied
(services/orders/acting.py). ``GET /order/<token>/photo/<id>`` serves a photo of that order.

GET never changes anything (chat apps fetch links to preview them). A forged link is 403, an
expired one 410, an unknown order 404, a step the state or the person's role does not allow
409, an oversize photo 413, a file that is not an image 415 — each a page that says so, and
nothing is stored or sent. The link's person must still be the one the order is with
(a unit link of a re-dispatched order no longer acts). Security headers as the
acknowledgement page's: strict CSP, no referrer, no caching, no framing.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import BodyPartReader, web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from PIL import Image, UnidentifiedImageError

from schemas import texts
from schemas.errors import LifelineError
from schemas.oncall import OnCallConfig
from schemas.registry import Registry
from schemas.workorder import OrderAction, TransitionRefused, WorkOrder, allowed_actions
from services.core.health import Counters
from services.core.logging import get_logger
from services.notifier.web import SECURITY_HEADERS, map_links, shell
from services.orders.acting import act
from services.orders.config import OrdersSettings
from services.orders.errors import NotApplied, OrderNotFound, StoreRefused, StoreUnavailable
from services.orders.links import ROLE_ACTIONS, OrderLink, OrderLinkError, OrderSigner
from services.orders.store import Store

log = get_logger("lifeline.orders.page")

PHOTO_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MAX_PIXELS = 60_000_000  # a decompression bomb is refused, not decoded
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
STEP_WORDS = {OrderAction.ACCEPT: "接单 Accept", OrderAction.START: "开始处置 Start work",
              OrderAction.REPORT: "反馈处置结果 Report what was done",
              OrderAction.VERIFY: "复核通过 Verify", OrderAction.RETURN_: "退回 Return",
              OrderAction.CLOSE: "销号 Close", OrderAction.FALSE_ALARM: "判定误报 False alarm"}
NEEDS_NOTE = {OrderAction.REPORT}
ROLE_WORDS = {"unit": "责任单位 owner unit", "desk": "监管中心 bureau desk", "view": "仅查看 view only"}
NEEDS_REASON = {OrderAction.RETURN_, OrderAction.FALSE_ALARM}


class Refused(LifelineError):
    """A request the page refuses (nothing stored, nothing sent)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def check_photo(data: bytes, max_bytes: int) -> tuple[str, int, int]:
    """(content type, width, height) of an acceptable photo; else :class:`Refused`."""
    if len(data) > max_bytes:
        raise Refused(413, f"照片过大 photo too large: {len(data):,} bytes, at most {max_bytes:,}")
    if not data:
        raise Refused(415, "空文件 empty file: not an image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or ""
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise Refused(413, f"照片像素过多 photo too large: {width}×{height} pixels")
            im.verify()
    except Refused:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise Refused(415, f"不是图片 not an image (JPEG, PNG or WebP): {type(exc).__name__}"
                      ) from exc
    if fmt not in PHOTO_TYPES:
        raise Refused(415, f"不支持的图片格式 {fmt or 'unknown'}: JPEG, PNG or WebP only")
    return PHOTO_TYPES[fmt], width, height


class OrderPage:
    """The aiohttp application of the order page."""

    def __init__(self, settings: OrdersSettings, store: Store, signer: OrderSigner,
                 producer: Callable[[], AIOKafkaProducer], registry: Callable[[], Registry],
                 oncall: Callable[[], OnCallConfig | None], counters: Counters) -> None:
        self.settings = settings
        self.store = store
        self.signer = signer
        self.producer = producer
        self.registry = registry
        self.oncall = oncall
        self.counters = counters
        self._reconnect = asyncio.Lock()

    async def _s(self) -> Store:
        """The page's connection, reopened after PostgreSQL went away (StoreUnavailable
        while it stays away: a 503 page)."""
        conn = self.store.conn
        if conn is None or conn.closed:
            async with self._reconnect:
                conn = self.store.conn
                if conn is None or conn.closed:
                    await self.store.connect()
        return self.store

    def app(self) -> web.Application:
        s = self.settings
        app = web.Application(client_max_size=s.upload_max_bytes * s.upload_max_files + (1 << 20))
        app.router.add_get("/order/{token}", self.get)
        app.router.add_post("/order/{token}", self.post)
        app.router.add_get("/order/{token}/photo/{upload_id}", self.photo)
        return app

    # ------------------------------------------------------------ helpers
    def _html(self, body: str, status: int = 200) -> web.Response:
        return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                            headers={**SECURITY_HEADERS, "Content-Security-Policy": CSP})

    def _message(self, status: int, title: str, text: str) -> web.Response:
        return self._html(shell(title, f'<h1 id="status">{html.escape(title)}</h1>'
                                       f'<p id="detail">{html.escape(text)}</p>'), status)

    def _link(self, request: web.Request) -> OrderLink:
        try:
            return self.signer.verify(request.match_info["token"])
        except OrderLinkError as exc:
            self.counters.inc("page_refused")
            raise Refused(exc.status, str(exc)) from exc

    def _may(self, link: OrderLink, order: WorkOrder) -> set[OrderAction]:
        """What the link's person may do to ``order`` now (empty: look only). A person no
        longer in the on-call file acts no more, whatever links they kept."""
        allowed = set(allowed_actions(order.state)) & ROLE_ACTIONS[link.role]
        cfg = self.oncall()
        if cfg is None or all(p.id != link.person for p in cfg.people):
            return set()
        if link.role == "unit":
            unit = cfg.unit(order.owner_unit)
            mine = {order.assignee} | ({unit.contact, unit.manager} if unit else set())
            if link.person not in mine:
                return set()
        return allowed

    def _name(self, person: str) -> str:
        cfg = self.oncall()
        if cfg is not None:
            for p in cfg.people:
                if p.id == person:
                    return p.name
        return {"system": "系统 system", "verifier": "传感器复核 the sensor's data"}.get(person, person)

    async def _order(self, link: OrderLink) -> WorkOrder:
        try:
            return await (await self._s()).order(link.order_id)
        except OrderNotFound as exc:
            raise Refused(404, f"工单不存在 no such work order: {link.order_id}") from exc

    # ------------------------------------------------------------ GET
    async def get(self, request: web.Request) -> web.Response:
        try:
            link = self._link(request)
            order = await self._order(link)
            store = await self._s()
            history = await store.history(order.order_id)
            false_alarms = await store.false_alarms_of(order.sensor_id or order.facility_id)
        except Refused as exc:
            return self._message(exc.status, "无法打开 Cannot open", exc.text)
        except (StoreUnavailable, StoreRefused):
            return self._message(503, "暂时不可用 Unavailable", "请稍后再试 please try again shortly")
        self.counters.inc("page_views")
        done = request.query.get("done", "")
        return self._html(self.render(link, order, history, request.match_info["token"], done,
                                      false_alarms))

    VIEW_ONLY = ('<p class="note" id="view-only">此链接仅供查看（发送到群或邮件）：请用短信中的个人链接操作。'
                 " This link only shows the order (it went to a group or e-mail): act from "
                 "the personal link in your SMS.</p>")

    def render(self, link: OrderLink, order: WorkOrder, history: list[Any], token: str,
               done: str = "", false_alarms: int = 0) -> str:
        esc = html.escape
        cfg = self.oncall()
        zone = cfg.zone if cfg is not None else ZoneInfo("Asia/Shanghai")
        f = next((x for x in self.registry().facilities if x.id == order.facility_id), None)
        level = texts.level_words(str(order.level))
        colour = str(order.level)
        state = texts.order_state_words(str(order.state))
        now = datetime.now(UTC)
        late = (order.state.value not in ("closed", "false_alarm", "verified")
                and now > order.deadline)
        names = (f"{esc(f.name_zh or '')} {esc(f.name)}" if f else esc(order.facility_id))
        place = ""
        if f is not None:
            district = " ".join(dict.fromkeys(x for x in (f.district_zh, f.district) if x))
            kind = texts.kind_words(f.kind)
            place = (f"<tr><th>类型 Kind</th><td>{esc(str(kind))}</td></tr>"
                     f"<tr><th>区域 District</th><td>{esc(district)}</td></tr>"
                     f"<tr><th>位置 Location</th>"
                     f"<td>{map_links(f.lat, f.lon, f.name_zh or f.name)}</td></tr>")
        rows = [f"<tr><th>状态 State</th><td id='state'>{esc(str(state))}</td></tr>",
                place,
                f"<tr><th>责任单位 Unit</th><td>{esc(order.owner_unit)}</td></tr>",
                f"<tr><th>处置人 Assignee</th><td>{esc(self._name(order.assignee or '-'))}</td></tr>",
                f"<tr><th>生成 Opened</th><td>{esc(texts.local_time(order.opened_at, zone))}</td></tr>",
                f"<tr><th>截止 Deadline</th><td id='deadline'>"
                f"{esc(texts.local_time(order.deadline, zone))}"
                f"{' <b class=warn>已超期 overdue</b>' if late else ''}</td></tr>"]
        if order.escalation:
            rows.append(f"<tr><th>督办 Escalated</th><td>{order.escalation}</td></tr>")
        if false_alarms:
            rows.append(f"<tr><th>误报记录 False alarms</th><td id='false-alarms'>此传感器近30天误报 "
                        f"{false_alarms} 次 — this sensor had {false_alarms} false alarm(s) in "
                        f"30 days</td></tr>")
        hist = []
        for ev in history:
            text = esc(ev.note or ev.reason or (self._name(ev.assignee) if ev.assignee else ""))
            photos = "".join(
                f'<a href="/order/{token}/photo/{esc(u)}"><img class="ph" alt="photo" '
                f'src="/order/{token}/photo/{esc(u)}"></a>' for u in ev.evidence)
            hist.append(f"<tr><td>{esc(ev.at.astimezone(zone).strftime('%m-%d %H:%M'))}</td>"
                        f"<td>{esc(str(texts.order_action_words(str(ev.action))))}</td>"
                        f"<td>{esc(self._name(ev.actor))}</td><td>{text}{photos}</td></tr>")
        forms = []
        for a in sorted(self._may(link, order), key=lambda a: list(OrderAction).index(a)):
            fields = ""
            if a in NEEDS_REASON:
                fields += ('<label>原因 Reason<textarea name="reason" required '
                           'maxlength="1000"></textarea></label>')
            else:
                req = " required" if a in NEEDS_NOTE else ""
                fields += (f'<label>说明 Note<textarea name="note"{req} maxlength="2000">'
                           f"</textarea></label>")
            if a is OrderAction.REPORT:
                fields += (f'<label>现场照片 Photos (JPEG/PNG/WebP, ≤ '
                           f'{self.settings.upload_max_bytes // (1 << 20)} MB, at most '
                           f'{self.settings.upload_max_files})<input type="file" name="photos" '
                           f'accept="image/jpeg,image/png,image/webp" multiple></label>')
            forms.append(f'<form method="post" enctype="multipart/form-data" id="form-{a.value}">'
                         f'<fieldset><legend>{esc(STEP_WORDS[a])}</legend>{fields}'
                         f'<input type="hidden" name="action" value="{a.value}">'
                         f'<button type="submit" id="do-{a.value}">{esc(STEP_WORDS[a])}</button>'
                         f"</fieldset></form>")
        notice = (f'<p id="done" class="note">已完成 done: '
                  f'{esc(str(texts.order_action_words(done)))}</p>' if done else "")
        body = (f'<h1>工单 Work order <small>{esc(order.order_id)}</small></h1>{notice}'
                f'<h2 id="facility">{names}</h2>'
                f'<p><span class="lv {esc(colour)}" id="level">{esc(str(level))}</span></p>'
                f"<table>{''.join(rows)}</table>"
                f"<h2>处置记录 History</h2><table id='history'>{''.join(hist)}</table>"
                + ("".join(forms) if forms else self.VIEW_ONLY if link.role == "view" else
                   '<p class="note" id="no-steps">当前无可执行操作 nothing to do here now</p>')
                + f'<p class="note">{esc(self._name(link.person))} · '
                  f"{ROLE_WORDS[link.role]}</p>")
        return shell(f"工单 {order.order_id}", body,
                     "img.ph{max-width:6rem;max-height:6rem;margin:.2rem;border-radius:4px}"
                     "label{display:block;margin:.4rem 0}h2{font-size:1.05rem}")

    # ------------------------------------------------------------ photos
    async def photo(self, request: web.Request) -> web.StreamResponse:
        try:
            link = self._link(request)
            found = await (await self._s()).upload(request.match_info["upload_id"][:64])
        except Refused as exc:
            return self._message(exc.status, "无法打开 Cannot open", exc.text)
        except (StoreUnavailable, StoreRefused):
            return self._message(503, "暂时不可用 Unavailable", "请稍后再试 please try again shortly")
        if found is None or found["order_id"] != link.order_id:
            return self._message(404, "无此照片 No such photo", "")
        return web.Response(body=bytes(found["data"]), content_type=found["content_type"],
                            headers={**SECURITY_HEADERS, "Content-Security-Policy": CSP})

    # ------------------------------------------------------------ POST
    async def _read(self, request: web.Request) -> tuple[dict[str, str], list[bytes]]:
        fields: dict[str, str] = {}
        photos: list[bytes] = []
        if not request.content_type.startswith("multipart/"):
            data = await request.post()
            return {k: str(v) for k, v in data.items() if isinstance(v, str)}, []
        reader = await request.multipart()
        limit = self.settings.upload_max_bytes
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "photos":
                if not part.filename:
                    await part.release()
                    continue
                buf = bytearray()
                while chunk := await part.read_chunk(65536):
                    buf += chunk
                    if len(buf) > limit:
                        raise Refused(413, f"照片过大 photo too large: over {limit:,} bytes")
                if buf:
                    photos.append(bytes(buf))
                    if len(photos) > self.settings.upload_max_files:
                        raise Refused(413, f"照片过多 too many photos: at most "
                                           f"{self.settings.upload_max_files}")
            elif part.name in ("action", "note", "reason"):
                fields[part.name] = (await part.text())[:4000]
            else:
                await part.release()
        return fields, photos

    async def post(self, request: web.Request) -> web.Response:
        oid: str | None = None
        try:
            link = self._link(request)
            oid = link.order_id
            order = await self._order(link)
            fields, photos = await self._read(request)
            try:
                action = OrderAction(fields.get("action", ""))
            except ValueError as exc:
                raise Refused(400, "未知操作 unknown step") from exc
            if action not in self._may(link, order):
                allowed = ", ".join(sorted(str(a) for a in self._may(link, order))) or "none"
                raise Refused(409, f"当前状态（{texts.order_state_words(str(order.state))}）"
                                   f"不允许此操作 cannot {action} an order that is "
                                   f"{order.state} (you may: {allowed})")
            note = fields.get("note", "").strip() or None
            reason = fields.get("reason", "").strip() or None
            if action in NEEDS_NOTE and not note:
                raise Refused(400, "请填写说明 a report needs a note of what was done")
            if action in NEEDS_REASON and not reason:
                raise Refused(400, "请填写原因 this step needs a reason")
            if photos and action is not OrderAction.REPORT:
                raise Refused(400, "只有反馈可附照片 photos go with a report")
            checked = [check_photo(p, self.settings.upload_max_bytes) for p in photos]
            evidence = []
            store = await self._s()
            for data, (ctype, w, h) in zip(photos, checked, strict=True):
                # Per order: the same picture sent for two orders is each one's evidence.
                uid = "UP-" + hashlib.sha256(order.order_id.encode() + b"\0" + data
                                             ).hexdigest()[:24]
                await store.add_upload(uid, order.order_id, ctype, w, h, link.person, data)
                evidence.append(uid)
            await act(store, self.producer(), order.order_id, action, link.person,
                      note=note if action not in NEEDS_REASON else None,
                      reason=reason if action in NEEDS_REASON else None,
                      evidence=tuple(dict.fromkeys(evidence)))
        except Refused as exc:
            self.counters.inc("page_refused")
            log.info("orders.page_refused", status=exc.status, reason=exc.text, order_id=oid)
            return self._message(exc.status, "未执行 Not done", exc.text)
        except TransitionRefused as exc:
            self.counters.inc("page_refused")
            return self._message(409, "未执行 Not done", str(exc))
        except (NotApplied, StoreUnavailable) as exc:
            return self._message(503, "暂时不可用 Unavailable", str(exc))
        except (StoreRefused, KafkaError, RuntimeError) as exc:  # the server's side, not yours
            log.warning("orders.page_failed", order_id=oid, error=f"{type(exc).__name__}: "
                        f"{str(exc)[:200]}")
            return self._message(503, "暂时不可用 Unavailable", "请稍后再试 please try again shortly")
        except ValueError as exc:  # the event's own validation (a note too long …)
            self.counters.inc("page_refused")
            return self._message(400, "未执行 Not done", str(exc).splitlines()[0][:300])
        self.counters.inc("page_steps")
        log.info("orders.page_step", order_id=order.order_id, facility_id=order.facility_id,
                 sensor_id=order.sensor_id, action=str(action), person=link.person,
                 photos=len(evidence))
        raise web.HTTPSeeOther(f"/order/{request.match_info['token']}?done={action.value}")
