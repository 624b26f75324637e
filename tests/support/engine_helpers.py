"""Build small registries and feed readings to the alarm engine in tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.alarm import AlarmEvent
from schemas.reading import Reading, ReadingBatch
from schemas.registry import Registry
from services.processor.engine import AlarmEngine, FacilityState, Outcome

T0 = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)  # 08:00 in Asia/Shanghai
UNITS = {"water_level": "m", "rainfall": "mm", "pump_state": "state", "h2s": "mg/m³",
         "acceleration": "m/s²", "o2": "%vol", "flow": "L/s"}


def lv(level: str, raise_at: float, clear_at: float | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"level": level, "raise_at": raise_at, "source": "test"}
    if clear_at is not None:
        d["clear_at"] = clear_at
    return d


def sensor(sid: str, metric: str, *rules: dict[str, Any], rng: tuple[float, float] = (0, 100),
           interval: float = 60, **extra: Any) -> dict[str, Any]:
    return {"id": sid, "metric": metric, "unit": UNITS[metric], "range": list(rng),
            "interval_s": interval, "rules": list(rules), **extra}


def make_registry(*sensors: dict[str, Any], kind: str = "drainage", fid: str = "F-1",
                  composites: list[dict[str, Any]] | None = None,
                  maintenance: list[dict[str, Any]] | None = None,
                  policy: dict[str, Any] | None = None) -> Registry:
    return Registry.model_validate({
        "name": "test", "policy": policy or {},
        "facilities": [{"id": fid, "kind": kind, "name": fid, "district": "d", "lat": 27.9,
                        "lon": 120.8, "sensors": list(sensors),
                        "composites": composites or [], "maintenance": maintenance or []}]})


class Feeder:
    """Feeds one facility's readings, one report each, with increasing gateway seq."""

    def __init__(self, registry: Registry, fid: str = "F-1") -> None:
        self.registry = registry
        self.engine = AlarmEngine(registry)
        self.fid = fid
        self.state = FacilityState()
        self.seq = 0
        self.events: list[AlarmEvent] = []
        self.outcomes: list[Outcome] = []

    def kind(self) -> str:
        f = self.registry.facility(self.fid)
        assert f is not None
        return f.kind.value

    def metric(self, sid: str) -> str:
        s = self.registry.sensor(self.fid, sid)
        assert s is not None
        return s.metric.value

    def report(self, t_s: float, *values: tuple[str, float], seq: int | None = None,
               received_s: float | None = None) -> list[AlarmEvent]:
        self.seq = self.seq + 1 if seq is None else seq
        ts = T0 + timedelta(seconds=t_s)
        batch = ReadingBatch(
            facility_id=self.fid, kind=self.kind(), seq=self.seq,
            received_at=T0 + timedelta(seconds=t_s if received_s is None else received_s),
            readings=[Reading(sensor=sid, metric=self.metric(sid), value=v,
                              unit=UNITS[self.metric(sid)], ts=ts) for sid, v in values])
        out = self.engine.evaluate(batch, self.state)
        if out.checkpoint:  # a caller with an unlimited write budget saves at once
            self.state.mark_saved()
        self.outcomes.append(out)
        self.events.extend(out.events)
        return out.events

    def series(self, sid: str, values: list[float], start_s: float = 0, step_s: float = 60
               ) -> list[AlarmEvent]:
        got: list[AlarmEvent] = []
        for i, v in enumerate(values):
            got.extend(self.report(start_s + i * step_s, (sid, v)))
        return got

    def tick(self, now_s: float) -> list[AlarmEvent]:
        out = self.engine.tick(self.fid, self.state, int((T0 + timedelta(seconds=now_s))
                                                         .timestamp() * 1000))
        self.events.extend(out.events)
        return out.events


def path(events: list[AlarmEvent]) -> list[tuple[str, str | None]]:
    return [(e.event.value, e.level.value if e.level else None) for e in events]


def by_rule(events: list[AlarmEvent], rule: str) -> list[AlarmEvent]:
    return [e for e in events if e.rule == rule]
