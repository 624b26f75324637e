"""What a notification says: one text for one alarm or a grouped storm, in Chinese and
English, with an acknowledgement link per alarm.

Below an alarm's line come its standing: a confined-space entry in progress (with the crew
leader's name and phone), a level held because the gauge failed while it was serious, and
data gone stale when the facility's gateway went silent.

Words come from schemas.texts: facility names (Chinese and English), district, level and
rule in words — never a rule key; ids only in brackets, for the duty room."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from schemas import texts

TITLE = {"page": "告警 Alarm", "repeat": "未确认告警 Unacknowledged alarm",
         "cleared": "告警解除 Cleared", "update": "告警更新 Update",
         "entry": "井下作业告警 Confined-space entry alarm"}
HELD = ("保持此级别：仪表在严重级别时故障 held: the gauge failed while the level was serious — "
        "treat as still at this level")


@dataclass(frozen=True)
class Item:
    """One alarm in a message."""

    notification_id: str
    kind: str
    alarm_id: str
    alarm: dict[str, Any]
    ack_url: str | None


@dataclass(frozen=True)
class Message:
    title: str
    text: str  # plain text (SMS, e-mail body)
    markdown: str  # robots
    items: list[Item]
    person: str

    @property
    def delivery_id(self) -> str:
        """Derived from the notifications it carries: the same message, the same id."""
        ids = "|".join(sorted(i.notification_id for i in self.items))
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "lifeline:" + ids))

    def as_json(self) -> dict[str, Any]:
        return {"type": "lifeline.notification", "delivery_id": self.delivery_id,
                "title": self.title, "text": self.text, "person": self.person,
                "alarms": [{**i.alarm, "notification_id": i.notification_id,
                            "notification": i.kind, "alarm_id": i.alarm_id,
                            "ack_url": i.ack_url} for i in self.items]}


def what(alarm: dict[str, Any]) -> str:
    """The alarm in words: the rule, and the sensor when it is one sensor's alarm."""
    rule = texts.rule_words(str(alarm.get("rule", "")), alarm.get("metric"))
    sensor = alarm.get("sensor")
    where = ""
    if sensor and sensor != alarm.get("facility_id"):
        where = f" [{sensor}]"
    return f"{rule.zh} {rule.en}{where}"


def line(alarm: dict[str, Any], zone: ZoneInfo) -> str:
    """One alarm on one line: level, facility (names, district, [id]), what, value, time."""
    a = alarm
    when = datetime.fromisoformat(a["ts"]).astimezone(zone).strftime("%m-%d %H:%M:%S")
    value = texts.value_words(str(a.get("rule", "")), a.get("value"), a.get("threshold"),
                              str(a.get("unit") or ""))
    kind = texts.kind_words(a["kind"])
    return (f"[{texts.level_words(a.get('level'))}] {texts.place_of(a)} [{a['facility_id']}] "
            f"{kind.zh} — {what(a)}{' ' + value if value else ''} @ {when}")


def _line(item: Item, zone: ZoneInfo) -> str:
    return line(item.alarm, zone)


def standing(alarm: dict[str, Any], zone: ZoneInfo) -> list[str]:
    """The alarm's standing, one line each (most urgent first)."""
    lines = []
    entry = alarm.get("entry")
    if entry:
        reason = f" ({entry['reason']})" if entry.get("reason") else ""
        lines.append(f"井下作业进行中 confined-space entry in progress — crew leader "
                     f"{entry.get('crew_leader', '?')} {entry.get('crew_phone', '?')}{reason}")
    if alarm.get("held_by_fault"):
        lines.append(HELD)
    if alarm.get("stale_since"):
        since = datetime.fromisoformat(alarm["stale_since"]).astimezone(zone).strftime("%H:%M")
        lines.append(f"数据自 {since} 起中断 data stale since {since} local")
    return lines


def render(items: list[Item], person: str, zone: ZoneInfo, max_listed: int = 20) -> Message:
    kinds = {i.kind for i in items}
    head = TITLE[items[0].kind] if len(kinds) == 1 else TITLE["update"]
    title = (f"Lifeline {head}: {texts.short_place(items[0].alarm)}" if len(items) == 1
             else f"Lifeline {head}: {len(items)} 条 alarms")
    shown = items[:max_listed]
    more = len(items) - len(shown)
    text_lines = [title]
    md_lines = [f"### {title}"]
    for i in shown:
        line = _line(i, zone)
        msg = i.alarm.get("message", "")
        notes = standing(i.alarm, zone)
        text_lines.append(f"- {line}" + "".join(f"\n  {x}" for x in notes) + f"\n  {msg}"
                          + (f"\n  确认 Ack: {i.ack_url}" if i.ack_url else ""))
        md_lines.append(f"- **{line}**" + "".join(f"  \n  **{x}**" for x in notes)
                        + f"  \n  {msg}" + (f"  \n  [确认 Acknowledge]({i.ack_url})"
                                             if i.ack_url else ""))
    if more:
        text_lines.append(f"… 另有 {more} 条 and {more} more")
        md_lines.append(f"… 另有 {more} 条 and {more} more")
    return Message(title, "\n".join(text_lines), "\n".join(md_lines), items, person)
