"""Threshold rules with four levels and hysteresis, as a pure state machine.

State is one JSON-able dict per facility (the Faust table entry), holding only the active
alarms: ``{"alarms": {"<sensor>|<rule>": {"alarm_id", "level", "since", "last"}}}`` with
times in epoch ms. It changes only on a transition, so the table is written only then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.alarm import AlarmEvent, AlarmEventType, alarm_id_for, event_id_for
from schemas.common import to_epoch_ms
from schemas.kinds import AlarmLevel
from schemas.reading import Reading, ReadingBatch
from schemas.registry import Direction, Registry, Threshold

FacilityState = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    direction: Direction
    levels: tuple[Threshold, ...]  # least to most severe


def level_for(rule_levels: tuple[Threshold, ...], direction: Direction, value: float,
              current: AlarmLevel | None) -> Threshold | None:
    """The most severe level whose condition holds, with hysteresis for held levels.

    A level is held while the value has not passed its clear point, provided the alarm
    currently sits at that level or above.
    """
    held_severity = current.severity if current is not None else 0
    found: Threshold | None = None
    for t in rule_levels:
        if direction is Direction.UPPER:
            on = value >= t.raise_at or (held_severity >= t.level.severity and value >= t.clear_value)
        else:
            on = value <= t.raise_at or (held_severity >= t.level.severity and value <= t.clear_value)
        if on:
            found = t
    return found


class ThresholdEngine:
    """Evaluates readings of one facility against its sensors' threshold rules."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._rules: dict[tuple[str, str], list[_Rule]] = {}
        for f in registry.facilities:
            for s in f.sensors:
                rules = []
                for d in Direction:
                    lv = tuple(sorted((t for t in s.thresholds if t.direction is d),
                                      key=lambda t: t.level.severity))
                    if lv:
                        rules.append(_Rule(f"threshold-{d.value}", d, lv))
                self._rules[(f.id, s.id)] = rules

    def evaluate(self, batch: ReadingBatch,
                 state: FacilityState | None) -> tuple[FacilityState | None, list[AlarmEvent]]:
        """Return the new state (the same object if unchanged) and the events to emit."""
        events: list[AlarmEvent] = []
        alarms: dict[str, Any] = dict(state["alarms"]) if state else {}
        changed = False
        for reading in sorted(batch.readings, key=lambda r: r.ts):
            for rule in self._rules.get((batch.facility_id, reading.sensor), ()):
                key = f"{reading.sensor}|{rule.name}"
                active = alarms.get(key)
                ts_ms = to_epoch_ms(reading.ts)
                if active is not None and ts_ms < active["last"]:
                    continue  # older than what decided the current state: late data
                current = AlarmLevel(active["level"]) if active else None
                hit = level_for(rule.levels, rule.direction, reading.value, current)
                new = hit.level if hit else None
                if new == current:
                    continue
                ev, entry = self._transition(batch, reading, rule, active, current, hit, ts_ms)
                events.append(ev)
                changed = True
                if entry is None:
                    alarms.pop(key, None)
                else:
                    alarms[key] = entry
        if not changed:
            return state, events
        return ({"alarms": alarms} if alarms else None), events

    def _transition(self, batch: ReadingBatch, reading: Reading, rule: _Rule,
                    active: dict[str, Any] | None, current: AlarmLevel | None,
                    hit: Threshold | None, ts_ms: int
                    ) -> tuple[AlarmEvent, dict[str, Any] | None]:
        new = hit.level if hit else None
        if active is None:
            kind = AlarmEventType.RAISED
            alarm_id = alarm_id_for(batch.facility_id, reading.sensor, rule.name, reading.ts)
            since = ts_ms
        else:
            alarm_id, since = active["alarm_id"], active["since"]
            if new is None:
                kind = AlarmEventType.CLEARED
            elif current is not None and new.severity > current.severity:
                kind = AlarmEventType.ESCALATED
            else:
                kind = AlarmEventType.DEESCALATED
        # Cleared means below the least severe level's clear point.
        threshold = hit.raise_at if hit is not None else rule.levels[0].clear_value
        sign = ">=" if rule.direction is Direction.UPPER else "<="
        if new is None:
            text = (f"{reading.sensor} {reading.metric} back to {reading.value:g} {reading.unit} "
                    f"(clear point {threshold:g}); alarm cleared")
        else:
            text = (f"{reading.sensor} {reading.metric} {reading.value:g} {reading.unit} "
                    f"{sign} {threshold:g}: {new.value} ({new.grade}) {kind.value}")
        ev = AlarmEvent(
            event_id=event_id_for(alarm_id, kind, new, reading.ts), alarm_id=alarm_id,
            event=kind, level=new, previous_level=current, facility_id=batch.facility_id,
            kind=batch.kind, sensor=reading.sensor, metric=reading.metric, rule=rule.name,
            value=reading.value, threshold=threshold, unit=reading.unit, ts=reading.ts,
            message=text,
        )
        entry = None if new is None else {"alarm_id": alarm_id, "level": new.value,
                                          "since": since, "last": ts_ms}
        return ev, entry


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
