"""On-call contracts, rotas, routing and the escalation engine (pure, with our own clock)."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.oncall import OnCallConfig, RecordType, load_oncall
from services.notifier.escalation import FacilityOnCall, route
from services.notifier.rota import on_duty, schedule
from tests.support.oncall_helpers import T0, Run, alarm, config, later, ms

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------------ contracts


def test_shipped_oncall_file_is_valid() -> None:
    cfg = load_oncall("deploy/oncall/wenzhou-bay.yaml")
    assert {t.id for t in cfg.teams} == {
        "drainage-duty", "structures-duty", "instruments", "dust-inspection", "plant-operators",
        "housing-duty", "site-cs-kg-001", "site-cs-kg-002", "site-cs-kg-003"}
    for c in cfg.channels:  # secrets are named, never written down
        assert c.model_dump().keys() >= {"secret_env", "token_env"}
    assert cfg.urgent_channels == ["sms"] and cfg.warnings() == []  # crew leaders reachable


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["teams"][0]["layers"][0]["members"].append("nobody"), "unknown person nobody"),
    (lambda d: d["teams"][0]["escalation"][0]["channels"].append("fax"), "unknown channel fax"),
    (lambda d: d["routes"].append({"team": "ghosts"}), "unknown team ghosts"),
    (lambda d: d["teams"][0]["start_step"].update(red=7), "start_step for red is 7"),
    (lambda d: d["teams"][0]["escalation"][1].update(notify="person:x"), "unknown person x"),
    (lambda d: d["channels"].append({"id": "dt", "type": "dingtalk", "url": "http://x"}),
     "a robot needs token_env"),
    (lambda d: d.update(timezone="Mars/Olympus"), "unknown time zone"),
    (lambda d: d.update(urgent_channels=["pager"]), "urgent_channels: unknown channel pager"),
    (lambda d: d.update(urgent_channels=["hook", "hook"]), "listed twice"),
])
def test_oncall_config_refuses_broken_references(change: Any, expected: str) -> None:
    data = config().model_dump(mode="json", by_alias=True)
    change(data)
    with pytest.raises(ValidationError, match=expected):
        OnCallConfig.model_validate(data)


# ------------------------------------------------------------------------ rotas


def rota_config() -> OnCallConfig:
    data = config().model_dump(mode="json", by_alias=True)
    data["teams"][0]["layers"] = [
        {"name": "day", "members": ["ann", "bob"], "handover": "2026-07-01T08:00:00+08:00",
         "shift_hours": 24, "daily_from": "08:00", "daily_to": "20:00"},
        {"name": "night", "members": ["chief"], "handover": "2026-07-01T20:00:00+08:00",
         "shift_hours": 168, "daily_from": "20:00", "daily_to": "08:00"},
    ]
    data["teams"][0]["overrides"] = [{"person": "boss", "starts": "2026-07-03T12:00:00+08:00",
                                      "ends": "2026-07-03T14:00:00+08:00", "reason": "swap"}]
    return OnCallConfig.model_validate(data)


@pytest.mark.parametrize(("local", "who"), [
    ("2026-07-01T08:00:00", "ann"),   # handover instant: the new shift
    ("2026-07-01T19:59:59", "ann"),
    ("2026-07-01T20:00:00", "chief"),  # night layer, across midnight
    ("2026-07-02T03:00:00", "chief"),
    ("2026-07-02T07:59:59", "chief"),
    ("2026-07-02T08:00:00", "bob"),   # next day's day shift
    ("2026-07-03T08:00:00", "ann"),
    ("2026-07-03T12:30:00", "boss"),  # override beats every layer
    ("2026-07-03T14:00:00", "ann"),   # override over (end exclusive)
])
def test_who_is_on_duty(local: str, who: str) -> None:
    cfg = rota_config()
    at = datetime.fromisoformat(local).replace(tzinfo=cfg.zone)
    assert on_duty(cfg.team("duty"), at, cfg.zone) == who


def test_schedule_lists_exact_handovers() -> None:
    cfg = rota_config()
    start = datetime(2026, 7, 1, 6, 0, tzinfo=cfg.zone)
    shifts = schedule(cfg.team("duty"), start, start + timedelta(hours=48), cfg.zone)
    got = [(s.starts.astimezone(cfg.zone).strftime("%d %H:%M"), s.person) for s in shifts]
    # Before the day layer's first handover, the night layer's previous turn applies.
    assert got == [("01 06:00", "chief"), ("01 08:00", "ann"), ("01 20:00", "chief"),
                   ("02 08:00", "bob"), ("02 20:00", "chief")]
    for a, b in itertools.pairwise(shifts):
        assert a.ends == b.starts


def test_routes_first_match_and_continue() -> None:
    cfg = config()
    assert route(cfg, {"category": "sensor", "kind": "drainage", "facility_id": "F",
                       "district": "d", "level": "blue"}) == ["maint"]
    assert route(cfg, {"category": "facility", "kind": "drainage", "facility_id": "F",
                       "district": "d", "level": "blue"}) == ["duty"]
    data = cfg.model_dump(mode="json", by_alias=True)
    data["routes"] = [{"match": {"min_level": "orange"}, "team": "maint", "continue": True},
                      {"match": {"district": ["d"]}, "team": "duty"}]
    cfg2 = OnCallConfig.model_validate(data)
    base = {"category": "facility", "kind": "drainage", "facility_id": "F", "district": "d"}
    assert route(cfg2, {**base, "level": "red"}) == ["maint", "duty"]
    assert route(cfg2, {**base, "level": "yellow"}) == ["duty"]
    assert route(cfg2, {**base, "district": "other", "level": "yellow"}) == []


# ------------------------------------------------------------------------ escalation


def test_raise_pages_the_person_on_duty_once() -> None:
    r = Run()
    r.alarm(ms(T0))
    r.alarm(ms(T0))  # Kafka redelivers the same event
    assert r.pages() == [("ann", "page", 0, 0)]
    assert [x.type for x in r.records] == [RecordType.NOTIFICATION]


def test_unacknowledged_alarm_repeats_then_climbs_the_chain_and_never_stops() -> None:
    r = Run(config(wait_s=60))
    r.alarm(ms(T0))
    r.deliver_all(later(1))
    r.tick(later(59))
    assert len(r.sent) == 1  # not yet
    r.tick(later(60))
    r.tick(later(60.5))  # the same instant twice: one repeat
    for t in (120, 180, 240, 300, 360):
        r.tick(later(t))
    assert r.pages() == [("ann", "page", 0, 0), ("ann", "repeat", 0, 1), ("chief", "page", 1, 0),
                         ("boss", "page", 2, 0), ("boss", "repeat", 2, 1), ("boss", "repeat", 2, 2),
                         ("boss", "repeat", 2, 3)]
    assert len({n.notification_id for n in r.sent}) == len(r.sent)
    assert sum(x.type is RecordType.ESCALATED for x in r.records) == 6


def test_acknowledgement_stops_the_escalation() -> None:
    r = Run()
    r.alarm(ms(T0))
    r.tick(later(60))  # repeat
    out = r.ack(later(70), by="ann", token="tok-1")
    acked = [x for x in out.records if x.type is RecordType.ACKNOWLEDGED]
    assert len(acked) == 1 and acked[0].person == "ann"
    assert acked[0].state_ts is not None and acked[0].state_ts >= T0
    assert any(x.type is RecordType.STOPPED for x in out.records)
    for t in range(120, 3600, 60):
        r.tick(later(t))
    assert r.pages() == [("ann", "page", 0, 0), ("ann", "repeat", 0, 1)]
    # A second ack and a replayed link change nothing and are recorded as such.
    assert [x.type for x in r.ack(later(80), by="bob").records] == [RecordType.IGNORED]
    replay = r.ack(later(81), by="ann", token="tok-1").records
    assert replay[0].type is RecordType.IGNORED and "already used" in replay[0].detail


def test_red_starts_at_the_section_chief() -> None:
    r = Run()
    r.alarm(ms(T0), level="red")
    assert r.pages() == [("chief", "page", 1, 0)]


def test_worse_level_reopens_an_acknowledged_alarm() -> None:
    r = Run()
    r.alarm(ms(T0), level="yellow")
    r.ack(later(10))
    r.alarm(later(20), event="escalated", level="red", at=T0 + timedelta(seconds=20))
    assert r.pages() == [("ann", "page", 0, 0), ("chief", "page", 1, 0)]
    r.tick(later(80))  # the reopened chain runs again
    assert r.pages()[-1] == ("boss", "page", 2, 0)
    # A lower level is recorded but pages nobody.
    r.alarm(later(90), event="deescalated", level="orange", at=T0 + timedelta(seconds=90))
    assert len(r.sent) == 3


def test_cleared_sends_one_message_per_recipient_and_closes() -> None:
    r = Run()
    r.alarm(ms(T0))
    r.tick(later(60))
    r.tick(later(120))  # chief paged too
    cleared = alarm("cleared", None, at=T0 + timedelta(seconds=130))
    r._take(r.esc.on_alarm(r.fs, cleared, later(130)))
    r._take(r.esc.on_alarm(r.fs, cleared, later(131)))  # redelivered
    msgs = [(n.person, n.kind) for n in r.sent if n.kind == "cleared"]
    assert msgs == [("ann", "cleared"), ("chief", "cleared")]
    r.deliver_all(later(132))
    assert r.fs.episodes == {} and alarm().alarm_id in r.fs.closed
    r.alarm(later(133))  # the raise redelivered after the episode closed
    r.tick(later(1000))
    assert len(r.sent) == 5


@pytest.mark.parametrize("quiet", [{"silenced": True}, {"suppressed_by": "gw-alarm"},
                                   {"grouped_into": "rainstorm"}])
def test_silenced_suppressed_or_grouped_alarms_page_nobody(quiet: dict[str, Any]) -> None:
    r = Run()
    r.alarm(ms(T0), **quiet)
    r.tick(later(600))
    assert r.sent == [] and r.fs.episodes == {}


def test_a_district_alarm_is_routed_by_its_district_and_paged() -> None:
    """A district alarm's facility id is the district's own (not in the registry): its
    route reads the district from the event (decision 0023)."""
    r = Run(config(routes=[{"match": {"category": ["district"], "district": ["east"]},
                            "team": "duty"}]))
    r.alarm(ms(T0), category="district", fid="district-east", sensor="district-east",
            rule="rainstorm", level="orange", district="east")
    assert [(n.person, n.team) for n in r.sent] == [("ann", "duty")]


@pytest.mark.parametrize(("fid", "kind", "category", "teams"), [
    ("CS-KG-002", "site", "facility", ["site-cs-kg-002", "dust-inspection"]),
    ("PL-OF-001", "plant", "facility", ["plant-operators", "drainage-duty"]),
    ("OF-OF-001", "outfall", "facility", ["drainage-duty"]),
    ("HB-LW-003", "building", "facility", ["housing-duty", "structures-duty"]),
    ("CS-KG-002", "site", "sensor", ["instruments"]),
    ("district-Longwan", "drainage", "district", ["drainage-duty"]),
])
def test_the_shipped_file_routes_each_duty_to_its_people(fid: str, kind: str, category: str,
                                                         teams: list[str]) -> None:
    """A site's alarm pages its contractor's responsible person and the bureau's dust
    inspector; a plant's its operators and the drainage duty; a house's the housing section
    and the structures duty (decision 0023)."""
    cfg = load_oncall("deploy/oncall/wenzhou-bay.yaml")
    assert route(cfg, {"facility_id": fid, "kind": kind, "category": category,
                       "district": "Airport New Area", "level": "yellow"}) == teams


def test_sensor_faults_go_to_maintenance() -> None:
    r = Run()
    r.alarm(ms(T0), category="sensor", rule="sensor-stuck", level="blue")
    assert [(n.person, n.team) for n in r.sent] == [("bob", "maint")]


def test_undeliverable_page_escalates_at_once() -> None:
    r = Run(config(wait_s=600))
    r.alarm(ms(T0))
    r.deliver_all(later(5), ok=False)
    r.tick(later(6))  # not 600 s later
    assert r.pages() == [("ann", "page", 0, 0), ("ann", "repeat", 0, 1)]


def test_gap_in_the_rota_moves_to_the_next_step() -> None:
    data = config().model_dump(mode="json", by_alias=True)
    data["teams"][0]["layers"][0].update(daily_from="08:00", daily_to="09:00")  # 10:00 is a gap
    r = Run(OnCallConfig.model_validate(data))
    r.alarm(ms(T0))
    assert r.sent == [] and r.records[0].type is RecordType.FAILED
    r.tick(later(1))
    assert r.pages() == [("chief", "page", 1, 0)]


def test_unrouted_alarm_is_recorded() -> None:
    data = config().model_dump(mode="json", by_alias=True)
    data["routes"] = [{"match": {"kind": ["bridge"]}, "team": "duty"}]
    r = Run(OnCallConfig.model_validate(data))
    r.alarm(ms(T0))
    assert r.sent == [] and [x.type for x in r.records] == [RecordType.UNROUTED]


def test_restored_state_continues_exactly() -> None:
    """Kill after any step: the state from the table continues as if nothing happened."""
    ref = Run(config(wait_s=60))
    ref.alarm(ms(T0))
    for t in (60, 120):
        ref.tick(later(t))
    for cut in range(3):
        r = Run(config(wait_s=60))
        r.alarm(ms(T0))
        times = (60, 120)
        for t in times[:cut]:
            r.tick(later(t))
        restored = Run(config(wait_s=60))
        restored.fs = FacilityOnCall.from_json(json.loads(json.dumps(r.fs.to_json())))
        restored.alarm(ms(T0))  # redelivered after the restart
        for t in times[cut:]:
            restored.tick(later(t))
        assert r.pages() + restored.pages() == ref.pages()
        # The notifications not yet delivered are still pending after the restore.
        assert {n.notification_id for n in restored.fs.pending()} == {
            n.notification_id for n in ref.fs.pending()}


def test_ack_page_shows_the_alarm_its_readings_and_escapes_everything() -> None:
    from zoneinfo import ZoneInfo

    from services.notifier.links import AckLink, LinkError, Signer
    from services.notifier.web import SECURITY_HEADERS, alarm_page

    link = AckLink("a-1", "F-1", "ann", "n-1")
    alarm_ = {"facility_id": "F-1", "kind": "drainage", "district": "d", "sensor": "L1",
              "metric": "water_level", "rule": "value-upper", "level": "red", "value": 3.1,
              "threshold": 2.95, "unit": "m", "message": "<script>alert(1)</script>",
              "ts": "2026-07-01T02:00:00+00:00"}
    readings = [(f"2026-07-01 01:{m:02d}:00", 2.0 + m / 60) for m in range(60)]
    html_ = alarm_page(link, "tok", alarm_, {"status": "", "open": True}, readings,
                       ZoneInfo("Asia/Shanghai"))
    assert "<script>" not in html_ and "&lt;script&gt;" in html_
    assert "2026-07-01 10:00:00" in html_  # local time
    assert "<svg" in html_ and "polyline" in html_  # the recent readings, drawn
    assert 'action="/ack/tok"' in html_ and 'id="acknowledge"' in html_
    closed = alarm_page(link, "tok", alarm_, {"status": "已处理 Resolved by ann",
                                              "open": False}, [], ZoneInfo("UTC"))
    assert 'id="acknowledge"' not in closed and "Resolved by ann" in closed
    assert "frame-ancestors 'none'" in SECURITY_HEADERS["Content-Security-Policy"]
    signer = Signer("x" * 32, 60)
    token = signer.sign(link)
    assert signer.verify(token) == link
    with pytest.raises(LinkError) as err:
        Signer("y" * 32, 60).verify(token)  # another server's secret
    assert err.value.status == 403
    with pytest.raises(ValueError, match="16 characters"):
        Signer("short", 60)
