"""Life-safety paging: confined-space entries, ``updated`` events, resolve-then-worse, and
the saved state's format version (the escalation engine with a clock of the test's own;
channels against the local receivers)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from schemas.oncall import OnCallConfig, RecordType
from services.core.health import Counters
from services.notifier import handlers as notifier_app
from services.notifier.escalation import (
    STATE_VERSION,
    FacilityOnCall,
    Notification,
    OnCallStateError,
    crew_phone,
)
from services.notifier.messages import Item, render
from tests.notifier.test_notifier_channels import SECRETS, Harness, channels, note
from tests.support.oncall_helpers import (
    CREW,
    ENTRY,
    HOOK,
    T0,
    Run,
    config,
    later,
    life_config,
    ms,
)
from tests.support.receivers import Receiver

pytestmark = pytest.mark.unit

GAS = {"sensor": "h2s", "rule": "value-upper", "entry": ENTRY}


def entries(notes: list[Notification]) -> list[tuple[str, list[str]]]:
    return [(n.person, n.channels) for n in notes if n.kind == "entry"]


# ------------------------------------------------------------------------ entry pages


def test_entry_alarm_pages_crew_leader_and_duty_engineer_at_once_on_sms() -> None:
    r = Run(life_config())
    out = r.alarm(ms(T0), level="orange", **GAS)
    # In the same tick: the crew leader and the person on duty, on the urgent channel; the
    # duty team's chain starts as usual on its own channel.
    assert entries(out.notifications) == [(CREW, ["sms"]), ("ann", ["sms"])]
    assert [(n.person, n.kind, n.channels) for n in out.notifications
            if n.kind != "entry"] == [("ann", "page", ["hook"])]
    crew = next(n for n in out.notifications if n.person == CREW)
    assert crew.contact == {"name": "李强", "phone": "13800000031"}
    assert crew.team == ""  # not anyone's team: an ad-hoc recipient
    recs = [x for x in out.records if x.kind == "entry"]
    assert [(x.type, x.person) for x in recs] == [(RecordType.NOTIFICATION, CREW),
                                                  (RecordType.NOTIFICATION, "ann")]
    assert "crew leader via sms" in recs[0].detail
    # Deterministic ids: the same event in another worker decides the same notifications.
    again = Run(life_config()).alarm(ms(T0), level="orange", **GAS)
    assert [n.notification_id for n in again.notifications] == [
        n.notification_id for n in out.notifications]
    # Kafka redelivers the event: nobody is paged twice.
    assert r.alarm(later(1), level="orange", **GAS).notifications == []


def test_entry_crew_leader_not_repaged_on_repeats_but_on_a_worse_level() -> None:
    r = Run(life_config(wait_s=60))
    r.alarm(ms(T0), level="orange", **GAS)
    for t in (60, 120):
        r.tick(later(t))  # repeat to ann, then the chief: the chain runs as usual
    assert [(p, k) for p, k, _, _ in r.pages() if k != "entry"] == [
        ("ann", "page"), ("ann", "repeat"), ("chief", "page")]
    assert entries(r.sent) == [(CREW, ["sms"]), ("ann", ["sms"])]  # not again
    # A lower level and the same level again page nobody new …
    r.alarm(later(130), event="deescalated", level="yellow", at=T0 + timedelta(seconds=130),
            **GAS)
    r.alarm(later(140), event="escalated", level="orange", at=T0 + timedelta(seconds=140),
            **GAS)
    assert len(entries(r.sent)) == 2
    # … a worse level pages the crew leader and the duty engineer again.
    first_crew = next(n.notification_id for n in r.sent if n.person == CREW)
    out = r.alarm(later(150), event="escalated", level="red", at=T0 + timedelta(seconds=150),
                  **GAS)
    assert entries(out.notifications) == [(CREW, ["sms"]), ("ann", ["sms"])]
    assert next(n.notification_id for n in out.notifications
                if n.person == CREW) != first_crew
    assert all(n.alarm["level"] == "red" for n in out.notifications)


def test_entry_sensor_fault_reaches_the_duty_team() -> None:
    r = Run(life_config())
    out = r.alarm(ms(T0), category="sensor", rule="sensor-stuck", level="blue", sensor="h2s",
                  entry=ENTRY)
    # Routed as a facility alarm (the duty team) and as what it is (maintenance).
    assert entries(out.notifications) == [(CREW, ["sms"]), ("ann", ["sms"]), ("bob", ["sms"])]
    assert {c.team for c in r.fs.episodes[out.notifications[0].alarm_id].chains} == {
        "duty", "maint"}
    assert [(n.person, n.team) for n in out.notifications if n.kind == "page"] == [
        ("ann", "duty"), ("bob", "maint")]
    # Without an entry the same fault goes to maintenance only.
    plain = Run(life_config()).alarm(ms(T0), category="sensor", rule="sensor-stuck",
                                     level="blue", sensor="h2s")
    assert [(n.person, n.team) for n in plain.notifications] == [("bob", "maint")]


def test_entry_gateway_outage_pages_even_when_its_category_does_not() -> None:
    r = Run(life_config(page_categories=["facility"]))
    out = r.alarm(ms(T0), category="gateway", rule="gateway-offline", level="orange",
                  sensor="F-1", entry=ENTRY)
    assert entries(out.notifications) == [(CREW, ["sms"]), ("ann", ["sms"]), ("bob", ["sms"])]


def test_entry_is_not_silenced_by_a_maintenance_window() -> None:
    r = Run(life_config())
    out = r.alarm(ms(T0), level="orange", silenced=True, **GAS)
    assert entries(out.notifications) == [(CREW, ["sms"]), ("ann", ["sms"])]
    # A suppressed alarm stays quiet: the fault that suppresses it pages (with its entry).
    assert Run(life_config()).alarm(ms(T0), level="orange", suppressed_by="f",
                                    **GAS).notifications == []


def test_entry_that_begins_during_an_open_alarm_pages_then() -> None:
    r = Run(life_config())
    r.alarm(ms(T0), category="sensor", rule="sensor-stuck", level="blue", sensor="h2s")
    out = r.alarm(later(30), event="updated", category="sensor", rule="sensor-stuck",
                  level="blue", sensor="h2s", at=T0 + timedelta(seconds=30), entry=ENTRY)
    assert entries(out.notifications) == [(CREW, ["sms"]), ("ann", ["sms"]), ("bob", ["sms"])]
    assert [(n.person, n.team) for n in out.notifications if n.kind == "page"] == [
        ("ann", "duty")]  # the duty team's chain joins; maintenance's is running already


def test_crew_leader_unreachable_without_a_phone_channel_is_a_recorded_failure() -> None:
    cfg = config([HOOK])  # no urgent channels and no sms anywhere
    assert cfg.warnings() and "crew leader" in cfg.warnings()[0]
    r = Run(cfg)
    out = r.alarm(ms(T0), level="orange", **GAS)
    failed = [x for x in out.records if x.type is RecordType.FAILED]
    assert [(x.person, x.kind, x.ok) for x in failed] == [(CREW, "entry", False)]
    assert "no urgent channel reaches a phone" in failed[0].detail
    # The duty engineer falls back to the first step's channels.
    assert entries(out.notifications) == [("ann", ["hook"])]
    assert r.alarm(later(1), level="orange", **GAS).records == []  # recorded once
    data = life_config().model_dump(mode="json", by_alias=True)
    data["urgent_channels"] = ["hook"]
    assert OnCallConfig.model_validate(data).warnings()  # valid, but said at start


def test_crew_phone_is_normalised_or_refused() -> None:
    assert crew_phone("138 0000-0031") == "13800000031"
    assert crew_phone("+86 (138) 0000 0031") == "+8613800000031"
    assert crew_phone("ask the foreman") is None
    r = Run(life_config())
    out = r.alarm(ms(T0), level="orange", **{**GAS, "entry": {**ENTRY, "crew_phone": "n/a"}})
    failed = [x for x in out.records if x.type is RecordType.FAILED]
    assert len(failed) == 1 and "not a phone number" in failed[0].detail
    assert entries(out.notifications) == [("ann", ["sms"])]


def test_cleared_reaches_the_crew_leader_too() -> None:
    r = Run(life_config())
    r.alarm(ms(T0), level="orange", **GAS)
    out = r.alarm(later(60), event="cleared", level=None, at=T0 + timedelta(seconds=60),
                  **{**GAS, "entry": None})
    cleared = [(n.person, n.channels, n.contact) for n in out.notifications]
    assert cleared == [("ann", ["hook"], None),
                       (CREW, ["sms"], {"name": "李强", "phone": "13800000031"})]


def test_entry_message_names_the_crew_leader() -> None:
    r = Run(life_config())
    out = r.alarm(ms(T0), level="orange", **GAS)
    n = next(n for n in out.notifications if n.person == CREW)
    msg = render([Item(n.notification_id, n.kind, n.alarm_id, n.alarm, None)], n.person,
                 ZoneInfo("Asia/Shanghai"))
    assert "井下作业进行中 confined-space entry in progress — crew leader 李强 13800000031" in msg.text
    assert "井下作业告警" in msg.title
    assert "crew leader 李强" in msg.markdown
    page = next(n for n in out.notifications if n.kind == "page")  # the chain's page says so too
    assert "crew leader 李强 13800000031" in render(
        [Item(page.notification_id, page.kind, page.alarm_id, page.alarm, None)], "ann",
        ZoneInfo("Asia/Shanghai")).text


# ------------------------------------------------------------------------ updated events


def test_updated_after_suppression_opens_and_pages() -> None:
    r = Run()
    r.alarm(ms(T0), suppressed_by="gw-alarm")  # raised during a gateway outage: recorded
    assert r.sent == [] and r.fs.episodes == {}
    out = r.alarm(later(300), event="updated", at=T0 + timedelta(seconds=300))
    assert [(n.person, n.kind) for n in out.notifications] == [("ann", "page")]
    r.alarm(later(301), event="updated", at=T0 + timedelta(seconds=300))  # redelivered
    r.tick(later(359))
    assert len(r.sent) == 1
    r.tick(later(360))  # the chain runs from the update on
    assert r.pages()[-1] == ("ann", "repeat", 0, 1)


@pytest.mark.parametrize("quiet", [{"silenced": True}, {"suppressed_by": "gw-alarm"}])
def test_quiet_updated_without_an_episode_does_nothing(quiet: dict[str, Any]) -> None:
    r = Run()
    out = r.alarm(ms(T0), event="updated", **quiet)
    assert out.notifications == [] and out.records == [] and not out.save
    assert r.fs.episodes == {}


def test_updated_on_an_open_episode_refreshes_without_paging() -> None:
    r = Run()
    r.alarm(ms(T0), level="orange")
    stale = T0 + timedelta(seconds=20)
    out = r.alarm(later(30), event="updated", level="orange", at=T0 + timedelta(seconds=30),
                  held_by_fault="fault-1", stale_since=stale)
    assert out.notifications == [] and out.records == []
    ep = next(iter(r.fs.episodes.values()))
    assert ep.alarm["held_by_fault"] == "fault-1" and ep.alarm["event"] == "updated"
    r.tick(later(60))  # the repeat shows the alarm as it stands now
    n = r.sent[-1]
    assert n.kind == "repeat"
    text = render([Item(n.notification_id, n.kind, n.alarm_id, n.alarm, None)], "ann",
                  ZoneInfo("Asia/Shanghai")).text
    assert "held: the gauge failed while the level was serious — treat as still at this level" \
        in text
    assert "data stale since 10:00 local" in text  # 02:00:20 UTC in Asia/Shanghai


def test_level_reached_while_suppressed_is_paged_when_no_longer_suppressed() -> None:
    r = Run()
    r.alarm(ms(T0), level="yellow")
    r.alarm(later(10), event="escalated", level="red", at=T0 + timedelta(seconds=10),
            suppressed_by="fault-1")
    assert r.pages() == [("ann", "page", 0, 0)]
    r.alarm(later(20), event="updated", level="red", at=T0 + timedelta(seconds=20))
    assert r.pages() == [("ann", "page", 0, 0), ("chief", "page", 1, 0)]


# ------------------------------------------------------------------------ resolve


def test_resolve_then_escalate_to_red_pages_again() -> None:
    r = Run()
    r.alarm(ms(T0), level="yellow")
    r.ack(later(10), action="resolve")
    r.tick(later(600))
    assert r.pages() == [("ann", "page", 0, 0)]  # resolved: the escalation stopped
    out = r.alarm(later(700), event="escalated", level="red", at=T0 + timedelta(seconds=700))
    assert r.pages() == [("ann", "page", 0, 0), ("chief", "page", 1, 0)]
    reopened = [x for x in out.records if x.type is RecordType.REOPENED]
    assert len(reopened) == 1 and "resolved by ann" in reopened[0].detail
    ep = next(iter(r.fs.episodes.values()))
    assert not ep.resolved and ep.acked_by is None
    r.tick(later(760))
    assert r.pages()[-1] == ("boss", "page", 2, 0)  # and the chain runs again
    acked = r.ack(later(770), by="chief").records
    assert RecordType.ACKNOWLEDGED in [x.type for x in acked]


# ------------------------------------------------------------------------ saved state


def test_state_v1_is_migrated_and_continues_without_paging_twice() -> None:
    r = Run(config(wait_s=60))
    r.alarm(ms(T0), level="orange")
    v2 = r.fs.to_json()
    assert v2["v"] == STATE_VERSION == 2
    v1 = json.loads(json.dumps(v2))  # what a v1 notifier saved: no version, no new fields
    del v1["v"]
    for ep in v1["episodes"].values():
        for key in ("paged_severity", "entry_paged", "contacts"):
            del ep[key]
        for n in ep["pending"].values():
            del n["contact"]
    restored = Run(config(wait_s=60))
    restored.fs = FacilityOnCall.from_json(v1)
    ep = next(iter(restored.fs.episodes.values()))
    assert ep.paged_severity == 3 and ep.entry_paged == {} and ep.contacts == {}
    assert [n.notification_id for n in restored.fs.pending()] == [
        n.notification_id for n in r.sent]
    restored.alarm(later(5), level="orange")  # redelivered after the restart
    restored.alarm(later(10), event="updated", level="orange", at=T0 + timedelta(seconds=10))
    assert restored.sent == []
    restored.tick(later(60))
    assert restored.pages() == [("ann", "repeat", 0, 1)]
    assert restored.fs.to_json()["v"] == 2


@pytest.mark.parametrize(("data", "why"), [
    ({"v": 3, "partition": 0, "episodes": {}, "closed": {}}, "version 3; this notifier reads"),
    ({"v": "2", "episodes": {}}, "invalid version"),
    ({"v": 2, "episodes": {"a": {"alarm_id": "a"}}}, "damaged"),
    (["not", "an", "object"], "not an object"),
])
def test_unreadable_state_is_refused(data: Any, why: str) -> None:
    with pytest.raises(OnCallStateError, match=why):
        FacilityOnCall.from_json(data)


def test_app_starts_an_unreadable_facility_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def error(self, event: str, **kw: Any) -> None:
            logged.append((event, kw))

    monkeypatch.setattr(notifier_app, "log", Log())
    counters = Counters()
    newer = json.dumps({"v": 99, "partition": 0, "episodes": {}, "closed": {}})
    assert notifier_app.load_state("F-7", newer, counters) is None
    assert notifier_app.load_state("F-8", "{not json", counters) is None
    assert [(e, kw["facility_id"]) for e, kw in logged] == [("oncall.state_unreadable", "F-7"),
                                                            ("oncall.state_unreadable", "F-8")]
    assert "version 99" in logged[0][1]["error"]
    assert counters.get("state_unreadable") == 2
    ok = notifier_app.load_state("F-1", json.dumps(FacilityOnCall(partition=3).to_json()),
                                 counters)
    assert ok is not None and ok.partition == 3


# ------------------------------------------------------------------------ channels


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver(SECRETS).start()
    yield r
    await r.stop()


async def test_sms_to_the_crew_leader_carries_his_phone(receiver: Receiver) -> None:
    data = config(channels(receiver)).model_dump(mode="json", by_alias=True)
    data["urgent_channels"] = ["sms"]
    data["grouping"]["window_s"] = 30  # life-safety pages are never held back
    cfg = OnCallConfig.model_validate(data)
    r = Run(cfg)
    out = r.alarm(ms(T0), level="orange", **GAS)
    async with aiohttp.ClientSession() as s:
        h = Harness(cfg, s)
        for n in out.notifications:
            h.d.submit(n)
        await h.d.drain()
    sms = {rx.body["to"]: rx.body for rx in receiver.received if rx.channel == "sms"}
    assert set(sms) == {"13800000031", "13800000001"}  # the crew leader and ann
    assert all(rx.problems == [] for rx in receiver.received)
    text = sms["13800000031"]["text"]
    assert "井下作业进行中 confined-space entry in progress — crew leader 李强 13800000031" in text
    assert "/ack/" not in text  # the crew leader's answer must not stop the duty chain
    assert "/ack/" in sms["13800000001"]["text"]
    delivered = [(x.person, x.channel, x.kind) for x in h.records
                 if x.type is RecordType.DELIVERED]
    assert (CREW, "sms", "entry") in delivered and ("ann", "sms", "entry") in delivered


async def test_entry_pages_are_never_held_back_by_grouping(receiver: Receiver) -> None:
    data = config(channels(receiver)).model_dump(mode="json", by_alias=True)
    data["grouping"].update(window_s=30, burst=3)
    cfg = OnCallConfig.model_validate(data)
    async with aiohttp.ClientSession() as s:
        h = Harness(cfg, s)
        for i in range(3):
            h.d.submit(note(i, ["sms"]))  # ann's burst for this window is used up …
        h.d.submit(note(3, ["sms"], kind="entry"))  # … a life-safety page goes out anyway
        await h.d.drain(2.0)
    assert len(receiver.received) == 4
    assert any("井下作业告警" in rx.body["text"] for rx in receiver.received)
