"""Maintenance windows (silences) evaluated on event time in the registry's time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from schemas.registry import WEEKDAYS, MaintenanceWindow


def in_window(w: MaintenanceWindow, ts_ms: int, tz: ZoneInfo) -> bool:
    at = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    if w.starts is not None and w.ends is not None:
        return w.starts <= at < w.ends
    assert w.daily_from is not None and w.daily_to is not None
    local = at.astimezone(tz)
    t = local.time()
    if w.daily_from <= w.daily_to:
        start_day = local if w.daily_from <= t < w.daily_to else None
    elif t >= w.daily_from:
        start_day = local  # evening part: the window started today
    elif t < w.daily_to:
        start_day = local - timedelta(days=1)  # after midnight: it started yesterday
    else:
        start_day = None
    if start_day is None:
        return False
    return w.days is None or WEEKDAYS[start_day.weekday()] in w.days


def silenced(windows: list[MaintenanceWindow], ts_ms: int, tz: ZoneInfo) -> bool:
    return any(in_window(w, ts_ms, tz) for w in windows)
