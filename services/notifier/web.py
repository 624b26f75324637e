"""The acknowledgement page's HTML: ``GET /ack/<token>`` shows the alarm with its recent
readings; ``POST /ack/<token>`` (a form: action, comment) acknowledges or resolves it. The
handlers are in services.notifier.ackpage, served on the notifier's public port only.

GET never changes anything: chat apps (DingTalk, WeCom) fetch links to preview them, and a
preview must not acknowledge a page nobody has read. The token is signed and expires
(services.notifier.links), and a used link is refused; a link posted in a shared channel
also needs a one-time code sent to the acting person's own phone. Responses carry a strict
Content-Security-Policy, no referrer (the token is in the URL), no caching and no framing.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from schemas import texts
from schemas.oncall import Person
from schemas.storage import Measurement
from services.core.influx import QueryError, query, quote_str
from services.core.settings import InfluxSettings
from services.notifier.links import AckLink
from services.notifier.messages import standing, what

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_STYLE = """
body{font-family:system-ui,"PingFang SC","Microsoft YaHei",sans-serif;margin:0;background:#f4f5f7;
color:#1d2129}
main{max-width:40rem;margin:1.5rem auto;padding:1rem 1.5rem;background:#fff;border-radius:8px}
h1{font-size:1.25rem}.lv{display:inline-block;padding:.1rem .6rem;border-radius:4px;color:#fff}
.red{background:#d4380d}.orange{background:#fa8c16}.yellow{background:#d4b106}.blue{background:#1677ff}
.none{background:#8c8c8c}table{border-collapse:collapse;width:100%}td,th{padding:.25rem .4rem;
text-align:left;border-bottom:1px solid #eee;font-size:.9rem}textarea{width:100%;min-height:4rem}
button{font-size:1rem;padding:.5rem 1rem;margin:.5rem .5rem 0 0}.note{color:#555;font-size:.9rem}
fieldset{border:1px solid #ddd;border-radius:6px;margin:.5rem 0}label.who{display:block;padding:.2rem 0}
.off{color:#8c8c8c}input.code{font-size:1.4rem;letter-spacing:.3rem;width:9rem}
.warn{color:#d4380d}
"""


def shell(title: str, body: str, style: str = "") -> str:
    """A whole page in the look of the acknowledgement page (the order page uses it too)."""
    return (f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}{style}</style></head>"
            f"<body><main>{body}</main></body></html>")


def map_links(lat: float, lon: float, name: str) -> str:
    """Coordinates and two map links (HTML): the place on a phone in the street."""
    amap, osm = texts.map_urls(lat, lon, name)
    return (f'{lat:.5f}, {lon:.5f} · <a id="map" href="{html.escape(amap)}" rel="noreferrer">'
            f'高德地图 map</a> · <a href="{html.escape(osm)}" rel="noreferrer">OpenStreetMap</a>')


def _page(title: str, body: str) -> str:
    return shell(title, body)


def message_page(title: str, text: str, status_id: str) -> str:
    return _page(title, f'<h1 id="{status_id}">{html.escape(title)}</h1>'
                        f"<p>{html.escape(text)}</p>")


def _sparkline(points: list[tuple[str, float]], threshold: float | None) -> str:
    values = [v for _, v in points if math.isfinite(v)]
    if len(values) < 2:
        return ""
    lo, hi = min(values + ([threshold] if threshold is not None else [])), max(
        values + ([threshold] if threshold is not None else []))
    span = (hi - lo) or 1.0
    w, h = 560, 120

    def y(v: float) -> float:
        return h - 5 - (v - lo) / span * (h - 10)

    step = w / (len(values) - 1)
    path = " ".join(f"{i * step:.1f},{y(v):.1f}" for i, v in enumerate(values))
    line = (f'<line x1="0" x2="{w}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
            f'stroke="#d4380d" stroke-dasharray="4"/>' if threshold is not None else "")
    return (f'<svg viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="recent readings">'
            f'<polyline fill="none" stroke="#1677ff" stroke-width="2" points="{path}"/>{line}</svg>')


def ack_form(token: str, hidden: dict[str, str] | None = None, code: bool = False) -> str:
    """Comment and the two buttons (with ``code``: the one-time code field first)."""
    fields = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                     for k, v in (hidden or {}).items())
    code_html = ('<label for="code">验证码 One-time code</label><br>'
                 '<input class="code" id="code" name="code" inputmode="numeric" '
                 'autocomplete="one-time-code" maxlength="6" pattern="[0-9]{6}" required><br>'
                 if code else "")
    return (f'<form method="post" action="/ack/{html.escape(token)}">{fields}{code_html}'
            f'<label for="comment">备注 Comment</label>'
            f'<textarea id="comment" name="comment" maxlength="2000"></textarea>'
            f'<button id="acknowledge" name="action" value="acknowledge">确认 Acknowledge'
            f'</button><button id="resolve" name="action" value="resolve">已处理 Resolve'
            f"</button></form>")


def masked_phone(phone: str) -> str:
    return f"尾号 …{phone[-4:]}"


def identify_form(token: str, people: list[Person], addressee: str, code_possible: bool,
                  message: str = "") -> str:
    """A link from a shared channel: who is acting? A code goes to that person's phone."""
    rows = []
    for p in people:
        pid = html.escape(p.id)
        name = html.escape(p.name)
        if p.phone and code_possible:
            checked = " checked" if p.id == addressee else ""
            rows.append(f'<label class="who"><input type="radio" name="person" value="{pid}" '
                        f'id="person-{pid}"{checked} required> {name} '
                        f'<span class="note">({html.escape(masked_phone(p.phone))})</span></label>')
        else:
            why = ("无手机号 no phone number: cannot receive a code — acknowledge by phone "
                   "with the duty room or with `lifeline oncall ack`") if not p.phone else (
                "no SMS channel for codes is configured")
            rows.append(f'<label class="who off"><input type="radio" disabled '
                        f'id="person-{pid}"> {name} — {html.escape(why)}</label>')
    warn = f'<p id="message" class="warn">{html.escape(message)}</p>' if message else ""
    if not code_possible:
        return (warn + '<p id="nocode" class="warn">此链接发送到群组 This link was posted in a '
                "shared channel and this notifier has no SMS channel for one-time codes: "
                "acknowledge with `lifeline oncall ack`.</p>")
    return (f'{warn}<form method="post" action="/ack/{html.escape(token)}">'
            "<fieldset><legend>你是谁？ Who is acknowledging?</legend>"
            '<p class="note">此链接发送到群组，任何人都能看到。验证码将发送到所选人员的手机。 '
            "This link was posted in a shared channel: choose yourself, and a one-time code "
            "is sent to your own phone.</p>"
            f"{''.join(rows)}</fieldset>"
            '<button id="send_code" name="action" value="send_code">发送验证码 Send code'
            "</button></form>")


def code_page_body(token: str, challenge: str, person: Person, ttl_s: float,
                   message: str = "") -> str:
    """After a code was sent: enter it, then acknowledge or resolve."""
    warn = f'<p id="message" class="warn">{html.escape(message)}</p>' if message else ""
    phone = masked_phone(person.phone or "")
    return (f'<h1 id="code_sent">验证码已发送 Code sent</h1>{warn}'
            f'<p class="note">A 6-digit code was sent to {html.escape(person.name)} '
            f"({html.escape(phone)}); it is valid {ttl_s / 60:g} minutes. "
            "只有正确的验证码才能确认 Only the right code acknowledges.</p>"
            + ack_form(token, {"challenge": challenge}, code=True))


def code_page(token: str, challenge: str, person: Person, ttl_s: float,
              message: str = "") -> str:
    return _page("Lifeline code", code_page_body(token, challenge, person, ttl_s, message))


ATTENTION = "注意 Attention"  # the rows of the alarm's standing (messages.standing)


def alarm_page(link: AckLink, token: str, alarm: dict[str, Any] | None, state: dict[str, Any],
               readings: list[tuple[str, float]], zone: ZoneInfo,
               form: str | None = None,
               place: tuple[float, float, str] | None = None) -> str:
    """The alarm, what is known of its state, its recent readings and the form (``form``:
    another form in place of the acknowledgement form, e.g. who-is-acting)."""
    if alarm is None:
        head = (f"<h1>告警 Alarm {html.escape(link.alarm_id[:8])}</h1>"
                f'<p class="note">设施 Facility {html.escape(link.facility_id)}. '
                f"The alarm's details are kept by another notifier worker.</p>")
    else:
        lv = alarm.get("level") or "none"
        when = texts.local_time(datetime.fromisoformat(alarm["ts"]), zone, seconds=True)
        level = texts.level_words(alarm.get("level"))
        kind = texts.kind_words(alarm["kind"])
        district = texts.region_words(alarm.get("district") if alarm.get("district") != "unknown"
                                      else None, alarm.get("district_zh"))
        category = texts.category_words(str(alarm.get("category", "facility")))
        value = texts.value_words(str(alarm.get("rule", "")), alarm.get("value"),
                                  alarm.get("threshold"), str(alarm.get("unit") or ""))
        rows = [("级别 Level", f"{level.zh} {level.en}"),
                # What a page carries beside it (entry in progress, held by a fault, stale).
                *((ATTENTION, note) for note in standing(alarm, zone)),
                ("设施 Facility", f"{texts.place_of(alarm)} [{alarm['facility_id']}]"),
                ("类型 Kind", f"{kind.zh} {kind.en}"),
                *([("区域 District", str(district))] if district.en else []),
                ("告警 Alarm", f"{category.zh} {category.en}：{what(alarm)}"),
                *([("数值 Value", value)] if value else []),
                ("时间 Time", when), ("说明 Message", alarm.get("message", ""))]
        warn = ' class="warn"'
        table = "".join(f"<tr{warn if k == ATTENTION else ''}>"
                        f"<th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                        for k, v in rows)
        if place is not None:
            table += (f"<tr><th>位置 Location</th><td>{map_links(*place)}</td></tr>")
        name = alarm.get("facility_name_zh") or alarm.get("facility_name") or alarm["facility_id"]
        head = (f'<h1><span class="lv {html.escape(lv)}">{html.escape(level.zh)} '
                f"{html.escape(level.en)}</span> "
                f'<span id="facility">{html.escape(str(name))}</span></h1>'
                f"<table>{table}</table>")
    status = state.get("status", "")
    status_html = f'<p id="status" class="note">{html.escape(status)}</p>' if status else ""
    spark = _sparkline(readings, alarm.get("threshold") if alarm else None)
    recent = ""
    if readings:
        last = "".join(f"<tr><td>{html.escape(_local(t, zone))}</td><td>{v:g}</td></tr>"
                       for t, v in readings[-8:])
        unit = str(alarm.get("unit") or "") if alarm else ""
        recent = (f"<h2>最近读数 Recent readings</h2>{spark}"
                  f'<table id="readings"><tr><th>时间 Time ({html.escape(zone.key)})</th>'
                  f"<th>数值 Value{html.escape(f' ({unit})' if unit else '')}</th></tr>"
                  f"{last}</table>")
    shown = ""
    if state.get("open", True):
        shown = ack_form(token) if form is None else form
    who = f'<p class="note">For 发送给 {html.escape(link.person)}</p>'
    return _page("Lifeline alarm", head + status_html + recent + shown + who)


def _local(when: str, zone: ZoneInfo) -> str:
    """A reading's time (ISO 8601; without an offset it is UTC) in the page's time zone."""
    t = datetime.fromisoformat(when)
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(zone).strftime(
        "%Y-%m-%d %H:%M:%S")


async def recent_readings(influx: InfluxSettings, facility: str, sensor: str,
                          minutes: int = 60) -> list[tuple[str, float]]:
    """The sensor's readings of the last ``minutes``, oldest first, each with its time in
    ISO 8601 UTC (the page shows it local); empty if InfluxDB cannot answer."""
    q = (f'SELECT "value" FROM "{Measurement.READING}" WHERE "facility" = '  # noqa: S608 — quoted literals
         f"{quote_str(facility)} AND "
         f'"sensor" = {quote_str(sensor)} AND time > now() - {int(minutes)}m '
         "ORDER BY time DESC LIMIT 200")
    try:
        series = await query(influx, q, timeout_s=3.0)
    except QueryError:
        return []
    if not series:
        return []
    return [(datetime.fromtimestamp(t / 1000, UTC).isoformat(timespec="seconds"), float(v))
            for t, v in reversed(series[0]["values"]) if v is not None]
