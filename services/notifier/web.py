"""The acknowledgement page: ``GET /ack/<token>`` shows the alarm with its recent readings;
``POST /ack/<token>`` (a form: action, comment) acknowledges or resolves it.

GET never changes anything: chat apps (DingTalk, WeCom) fetch links to preview them, and a
preview must not acknowledge a page nobody has read. The token is the only credential: it
is signed and expires (services.notifier.links), and a used link is refused. Responses
carry a strict Content-Security-Policy, no referrer (the token is in the URL), no caching
and no framing.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from services.core.influxql import QueryError, query, quote_str
from services.core.settings import InfluxSettings
from services.notifier.links import AckLink
from services.notifier.messages import KIND_ZH, LEVEL_ZH

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
"""


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><main>{body}</main></body></html>")


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


def alarm_page(link: AckLink, token: str, alarm: dict[str, Any] | None, state: dict[str, Any],
               readings: list[tuple[str, float]], zone: ZoneInfo) -> str:
    """The alarm, what is known of its state, its recent readings and the form."""
    if alarm is None:
        head = (f"<h1>告警 Alarm {html.escape(link.alarm_id[:8])}</h1>"
                f'<p class="note">设施 Facility {html.escape(link.facility_id)}. '
                f"The alarm's details are kept by another notifier worker.</p>")
    else:
        lv = alarm.get("level") or "none"
        when = datetime.fromisoformat(alarm["ts"]).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
        rows = [("设施 Facility", f"{alarm['facility_id']} ({KIND_ZH.get(alarm['kind'], '')} "
                                   f"{alarm['kind']}, {alarm.get('district', '')})"),
                ("传感器 Sensor", f"{alarm['sensor']} {alarm.get('metric') or ''}"),
                ("规则 Rule", alarm["rule"]),
                ("数值 Value", f"{alarm.get('value')} {alarm.get('unit', '')} "
                               f"(threshold {alarm.get('threshold')})"),
                ("时间 Time", when), ("说明 Message", alarm.get("message", ""))]
        table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                        for k, v in rows)
        head = (f'<h1><span class="lv {html.escape(lv)}">{html.escape(LEVEL_ZH.get(lv, lv))} '
                f"{html.escape(lv.upper())}</span> {html.escape(alarm['facility_id'])}</h1>"
                f"<table>{table}</table>")
    status = state.get("status", "")
    status_html = f'<p id="status" class="note">{html.escape(status)}</p>' if status else ""
    spark = _sparkline(readings, alarm.get("threshold") if alarm else None)
    recent = ""
    if readings:
        last = "".join(f"<tr><td>{html.escape(t)}</td><td>{v:g}</td></tr>"
                       for t, v in readings[-8:])
        recent = (f"<h2>最近读数 Recent readings</h2>{spark}"
                  f"<table><tr><th>time (UTC)</th><th>value</th></tr>{last}</table>")
    form = ""
    if state.get("open", True):
        form = (f'<form method="post" action="/ack/{html.escape(token)}">'
                f'<label for="comment">备注 Comment</label>'
                f'<textarea id="comment" name="comment" maxlength="2000"></textarea>'
                f'<button id="acknowledge" name="action" value="acknowledge">确认 Acknowledge'
                f'</button><button id="resolve" name="action" value="resolve">已处理 Resolve'
                f"</button></form>")
    who = f'<p class="note">For 发送给 {html.escape(link.person)}</p>'
    return _page("Lifeline alarm", head + status_html + recent + form + who)


async def recent_readings(influx: InfluxSettings, facility: str, sensor: str,
                          minutes: int = 60) -> list[tuple[str, float]]:
    """The sensor's readings of the last ``minutes`` (empty if InfluxDB cannot answer)."""
    q = (f'SELECT "value" FROM "reading" WHERE "facility" = {quote_str(facility)} AND '  # noqa: S608 — quoted literals
         f'"sensor" = {quote_str(sensor)} AND time > now() - {int(minutes)}m '
         "ORDER BY time DESC LIMIT 200")
    try:
        series = await query(influx, q, timeout_s=3.0)
    except QueryError:
        return []
    if not series:
        return []
    return [(datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S"), float(v))
            for t, v in reversed(series[0]["values"]) if v is not None]
