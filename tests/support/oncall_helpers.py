"""A small on-call configuration and alarm events for the notifier's tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.alarm import AlarmCategory, AlarmEvent, AlarmEventType, alarm_id_for, event_id_for
from schemas.kinds import AlarmLevel, FacilityKind, Metric
from schemas.oncall import AckAction, AckRequest, OnCallConfig, OnCallRecord, RecordType
from services.notifier.escalation import Escalator, FacilityOnCall, Outcome

T0 = datetime(2026, 7, 1, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai


def config(channels: list[dict[str, Any]] | None = None, *, window_s: float = 30.0,
           wait_s: float = 60.0, **extra: Any) -> OnCallConfig:
    data: dict[str, Any] = {
        "people": [
            {"id": "ann", "name": "Ann", "phone": "13800000001", "email": "ann@example.org",
             "wecom_user": "Ann"},
            {"id": "bob", "name": "Bob", "phone": "13800000002", "email": "bob@example.org"},
            {"id": "chief", "name": "Chief", "phone": "13800000009", "email": "chief@example.org"},
            {"id": "boss", "name": "Boss", "phone": "13800000010", "email": "boss@example.org"},
        ],
        "channels": channels or [{"id": "hook", "type": "webhook", "url": "http://127.0.0.1:9/x"}],
        "teams": [
            {"id": "duty", "name": "Duty",
             "layers": [{"name": "daily", "members": ["ann", "bob"],
                         "handover": "2026-07-01T08:00:00+08:00", "shift_hours": 24}],
             "escalation": [
                 {"notify": "on_duty", "channels": ["hook"], "wait_s": wait_s, "repeat": 1},
                 {"notify": "person:chief", "channels": ["hook"], "wait_s": wait_s},
                 {"notify": "person:boss", "channels": ["hook"], "wait_s": wait_s}],
             "start_step": {"red": 1}},
            {"id": "maint", "name": "Maintenance",
             "layers": [{"name": "w", "members": ["bob"], "handover": "2026-07-01T08:00:00+08:00",
                         "shift_hours": 168}],
             "escalation": [{"notify": "on_duty", "channels": ["hook"], "wait_s": wait_s}]},
        ],
        "routes": [{"match": {"category": ["sensor", "gateway"]}, "team": "maint"},
                   {"match": {}, "team": "duty"}],
        "grouping": {"window_s": window_s},
        **extra,
    }
    return OnCallConfig.model_validate(data)


# A confined-space entry in progress (井下作业): the crew leader is not in the on-call file.
ENTRY = {"reason": "清淤 dredging", "crew_leader": "李强", "crew_phone": "13800000031"}
CREW = "crew:13800000031"
SMS = {"id": "sms", "type": "sms", "url": "http://127.0.0.1:9/sms"}
HOOK = {"id": "hook", "type": "webhook", "url": "http://127.0.0.1:9/x"}


def life_config(urgent: list[str] | None = None, **kw: Any) -> OnCallConfig:
    """The test configuration with an SMS gateway as the urgent channel (steps page on the
    webhook, so life-safety pages are told apart by their channel)."""
    return config([HOOK, SMS], urgent_channels=["sms"] if urgent is None else urgent, **kw)


def alarm(event: str = "raised", level: str | None = "yellow", *, fid: str = "F-1",
          sensor: str = "lvl", rule: str = "value-upper", started: datetime = T0,
          at: datetime | None = None, category: str = "facility", **extra: Any) -> AlarmEvent:
    aid = alarm_id_for(fid, sensor, rule, started)
    ts = at or started
    lv = AlarmLevel(level) if level else None
    return AlarmEvent(
        event_id=event_id_for(aid, AlarmEventType(event), lv, ts), alarm_id=aid,
        event=AlarmEventType(event), level=lv, previous_level=None,
        category=AlarmCategory(category), facility_id=fid, kind=FacilityKind.DRAINAGE,
        sensor=sensor, metric=Metric.WATER_LEVEL, rule=rule, value=2.5, threshold=2.0, unit="m",
        ts=ts, message=f"{sensor} {event}", **extra)


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def later(seconds: float, base: datetime = T0) -> int:
    return ms(base + timedelta(seconds=seconds))


class Run:
    """One facility's on-call state driven by events and a clock of the test's own."""

    def __init__(self, cfg: OnCallConfig | None = None) -> None:
        self.esc = Escalator(cfg or config(), {"F-1": "d"})
        self.fs = FacilityOnCall(partition=0)
        self.sent: list[Any] = []
        self.records: list[OnCallRecord] = []

    def _take(self, out: Outcome) -> Outcome:
        self.sent += out.notifications
        self.records += out.records
        return out

    def alarm(self, now: int, **kw: Any) -> Outcome:
        return self._take(self.esc.on_alarm(self.fs, alarm(**kw), now))

    def tick(self, now: int) -> Outcome:
        return self._take(self.esc.tick(self.fs, now))

    def ack(self, now: int, by: str = "ann", action: str = "acknowledge", token: str | None = None,
            alarm_id: str | None = None) -> Outcome:
        req = AckRequest(alarm_id=alarm_id or alarm().alarm_id, facility_id="F-1",
                         action=AckAction(action), by=by, via="cli", token_id=token,
                         ts=datetime.fromtimestamp(now / 1000, UTC))
        return self._take(self.esc.on_ack(self.fs, req, now))

    def deliver_all(self, now: int, ok: bool = True) -> None:
        for n in self.fs.pending():
            rec = OnCallRecord(record_id=f"r-{n.notification_id}",
                               type=RecordType.DELIVERED if ok else RecordType.FAILED,
                               ts=datetime.fromtimestamp(now / 1000, UTC), alarm_id=n.alarm_id,
                               facility_id=n.facility_id, notification_id=n.notification_id)
            self._take(self.esc.on_outcome(self.fs, rec, now))

    def pages(self) -> list[tuple[str, str, int, int]]:
        return [(n.person, n.kind, n.step, n.repeat) for n in self.sent]


# ---------------------------------------------------------------- the notifier app, no broker

LINK_SECRET = "unit-test-link-secret-0123456789"


def build_notifier(monkeypatch: Any, tmp_path: Any, cfg: OnCallConfig | None = None,
                   **env: str) -> Any:
    """The notifier's Faust app (services.notifier.app.build) for test_context: no broker,
    its own state dir, a stub deliverer that only collects what it is handed."""
    from services.notifier.app import build
    from services.notifier.config import NotifierConfig

    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LIFELINE_NOTIFIER_LINK_SECRET", LINK_SECRET)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from schemas.registry import Registry

    n = build(NotifierConfig(), cfg or config(), Registry.model_construct(facilities=[]))

    class Stub:
        def __init__(self) -> None:
            self.submitted: list[Any] = []
            self.latencies: list[float] = []

        def submit(self, note: Any) -> None:
            self.submitted.append(note)

    n.delivery = Stub()
    return n


async def put_on(agent: Any, topic: str, value: bytes, key: bytes, offset: int,
                 partition: int = 0) -> None:
    """``agent.put`` for an agent of several topics: the record arrives from ``topic``
    (test_context names the agent's channel ``<internal>`` otherwise)."""
    import time

    from faust.types import Message

    channel = agent.stream().channel
    message = Message(topic=topic, partition=partition, offset=offset, timestamp=time.time(),
                      timestamp_type=0, headers=None, key=key, value=value, checksum=b"",
                      serialized_key_size=0, serialized_value_size=0,
                      generation_id=agent.app.consumer_generation_id)
    event = await channel.decode(message)
    await channel.put(event)
    async with agent.new_value_processed:
        await agent.new_value_processed.wait()
        if agent._crash_reason:
            raise agent._crash_reason
