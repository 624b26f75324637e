"""Who is on duty: layered rotas with daily windows and overrides (see schemas.oncall)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from schemas.oncall import OnCallConfig, RotaLayer, Team


def _in_daily_window(local: time, start: time, end: time) -> bool:
    if start <= end:
        return start <= local < end
    return local >= start or local < end  # crosses midnight


def layer_member(layer: RotaLayer, at: datetime, zone: ZoneInfo) -> str | None:
    """The member of ``layer`` on duty at ``at``, or None outside its daily window."""
    if layer.daily_from is not None and layer.daily_to is not None:
        local = at.astimezone(zone).time().replace(tzinfo=None)
        if not _in_daily_window(local, layer.daily_from, layer.daily_to):
            return None
    turns = math.floor((at - layer.handover).total_seconds() / (layer.shift_hours * 3600))
    return layer.members[turns % len(layer.members)]


def on_duty(team: Team, at: datetime, zone: ZoneInfo) -> str | None:
    """The person on duty for ``team`` at ``at``: an override, else the last active layer."""
    for o in reversed(team.overrides):
        if o.starts <= at < o.ends:
            return o.person
    for layer in reversed(team.layers):
        member = layer_member(layer, at, zone)
        if member is not None:
            return member
    return None


@dataclass(frozen=True)
class Shift:
    starts: datetime
    ends: datetime
    person: str | None


def _change_points(team: Team, start: datetime, end: datetime, zone: ZoneInfo) -> list[datetime]:
    points = {start, end}
    for layer in team.layers:
        step = timedelta(hours=layer.shift_hours)
        n = math.floor((start - layer.handover) / step)
        t = layer.handover + n * step
        while t < end:
            if t > start:
                points.add(t)
            t += step
        if layer.daily_from is not None and layer.daily_to is not None:
            day = start.astimezone(zone).date() - timedelta(days=1)
            while True:
                edges = [datetime.combine(day, x, zone) for x in (layer.daily_from, layer.daily_to)]
                if edges[0] > end:
                    break
                points.update(e.astimezone(UTC) for e in edges if start < e < end)
                day += timedelta(days=1)
    for o in team.overrides:
        points.update(x for x in (o.starts, o.ends) if start < x < end)
    return sorted(points)


def schedule(team: Team, start: datetime, end: datetime, zone: ZoneInfo) -> list[Shift]:
    """Who is on duty from ``start`` to ``end``, as consecutive shifts (handovers exact)."""
    pts = _change_points(team, start, end, zone)
    out: list[Shift] = []
    for a, b in itertools.pairwise(pts):
        who = on_duty(team, a, zone)
        if out and out[-1].person == who:
            out[-1] = Shift(out[-1].starts, b, who)
        else:
            out.append(Shift(a, b, who))
    return out


def resolve_target(cfg: OnCallConfig, team: Team, notify: str, at: datetime) -> str | None:
    """The person a step's ``notify`` names at ``at`` (None: nobody on duty)."""
    what, _, ref = notify.partition(":")
    if what == "person":
        return ref
    if what == "team":
        return on_duty(cfg.team(ref), at, cfg.zone)
    return on_duty(team, at, cfg.zone)
